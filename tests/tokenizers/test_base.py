"""The Tokenizer contract's shared parts: storage layout, fingerprint ids, the registry, and the
default `encode_each` that isolates bad items for tokenizers that do not override it."""

import numpy as np
import pytest

from trimodal.errors import ConfigError, SampleError
from trimodal.tokenizers.base import Tokenizer, fingerprint_id, from_storage, load_tokenizer, to_storage


class Upper(Tokenizer):
    """Toy tokenizer: code = ord(c) - 65 for A..Z; anything else fails the whole batch."""

    modality, codebook_size = "text", 26

    def __init__(self):
        self.calls = 0

    def encode(self, batch):
        self.calls += 1
        for i, s in enumerate(batch):
            if not s.isupper():
                raise SampleError("bad_text", f"input #{i}: {s!r} is not upper case")
        return [np.array([ord(c) - 65 for c in s], np.int32) for s in batch]

    def decode(self, codes):
        return ["".join(chr(c + 65) for c in cs) for cs in codes]

    def fingerprint(self):
        return {"kind": "upper", "codebook_size": 26}


def test_default_encode_each_isolates_bad_items():
    tok = Upper()
    out = tok.encode_each(["AB", "nope", "CD"])
    assert [o.tolist() if isinstance(o, np.ndarray) else o.reason for o in out] == [[0, 1], "bad_text", [2, 3]]
    named = tok.encode_each(["AB", "nope"], names=["doc-1", "doc-2"])
    assert "'doc-2'" in str(named[1]) and named[1].reason == "bad_text"
    tok.calls = 0
    assert len(tok.encode_each(["AB", "CD"])) == 2 and tok.calls == 1  # the good path is one batch call


def test_storage_layout():
    audio = np.arange(12, dtype=np.int64).reshape(3, 4)  # 3 levels x 4 frames
    flat = to_storage("audio", audio)
    assert flat.dtype == np.int32 and flat.tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    np.testing.assert_array_equal(from_storage("audio", flat, {"levels": 3}), audio)
    assert from_storage("audio", flat[:6], {"levels": 3}).shape == (3, 2)  # a prefix is a prefix in time
    grid = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(from_storage("image", to_storage("image", grid), {"code_grid": [2, 3]}), grid)
    np.testing.assert_array_equal(from_storage("text", to_storage("text", [5, 6]), {}), [5, 6])


def test_fingerprint_id_is_order_independent_and_sensitive():
    a = {"kind": "dac", "levels": 4, "weights_sha256": "x"}
    assert fingerprint_id(a) == fingerprint_id(dict(reversed(list(a.items()))))
    assert fingerprint_id(a) != fingerprint_id(dict(a, levels=3))
    assert len(fingerprint_id(a)) == 16


def test_unknown_kind_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown tokenizer kind 'bpe'.*dac"):
        load_tokenizer("bpe", str(tmp_path))


@pytest.mark.slow  # spawns a subprocess
def test_text_kind_does_not_import_torch(text_tokenizer_path):
    import subprocess
    import sys

    code = (
        "import sys; from trimodal.tokenizers.base import load_tokenizer; "
        f"t = load_tokenizer('sentencepiece', {text_tokenizer_path!r}); t.encode(['hi there']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
