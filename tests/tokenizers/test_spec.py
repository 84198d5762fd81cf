"""TokenizerSpec: one class for every config that names a tokenizer; its checks name the key."""

import pytest

from trimodal.config import from_dict
from trimodal.errors import ConfigError
from trimodal.tokenizers.spec import TokenizerSpec


@pytest.mark.parametrize(
    "over, match",
    [
        ({"kind": ""}, r"^kind: must not be empty$"),
        ({"path": ""}, r"^path: must not be empty$"),
        ({"levels": 0}, r"^levels: must be >= 1, got 0$"),
        ({"batch_size": -1}, r"^batch_size: must be >= 1, got -1$"),
        ({"device": "tpu"}, r"^device: 'tpu' is not one of auto, cpu, cuda$"),
        ({"levles": 2}, r"levles: unknown key \(did you mean 'levels'\?\)"),
    ],
)
def test_checks_name_the_key(over, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(TokenizerSpec, {"kind": "dac", "path": "/models/dac.pth", **over})


def test_a_missing_path_is_only_refused_where_it_is_loaded(tmp_path):
    spec = from_dict(TokenizerSpec, {"kind": "dac", "path": str(tmp_path / "none.pth"), "device": "cuda:1"})
    with pytest.raises(ConfigError, match=r"^path: tokenizer not found: .*none\.pth$"):
        spec.check_path()
    (tmp_path / "none.pth").write_bytes(b"x")
    spec.check_path()


def test_options_without_limits_are_the_typed_fields():
    spec = TokenizerSpec("dac", "p", levels=3, batch_size=2, device="cpu", options={"n_levels": 5, "x": 1})
    assert spec.load_options("audio") == {"n_levels": 5, "x": 1, "batch_size": 2, "device": "cpu"}
    assert TokenizerSpec("sentencepiece", "p", threads=2, device="cuda").load_options("text") == {"num_threads": 2}
