"""The unified vocabulary: layout from fingerprints, no overlaps, exact maps back, refusal of
mismatched tokenizers, and vocab.json round trips."""

import numpy as np
import pytest

from trimodal.errors import IntegrityError
from trimodal.tokenizers.vocab import MODALITY_IDS, NUM_SPECIALS, Vocabulary

FPS = {
    "text": {"kind": "sentencepiece", "name": "spm", "codebook_size": 500, "levels": 1, "weights_sha256": "t" * 64},
    "image": {
        "kind": "vqmodel",
        "name": "vq",
        "codebook_size": 1024,
        "levels": 1,
        "code_grid": [8, 8],
        "weights_sha256": "i" * 64,
    },
    "audio": {"kind": "dac", "name": "dac", "codebook_size": 1024, "levels": 4, "weights_sha256": "a" * 64},
}


def test_layout_is_contiguous_and_disjoint():
    v = Vocabulary.from_fingerprints(FPS)
    ranges = [v.range("special"), v.range("text"), v.range("image")]
    ranges += [v.range("audio", lvl) for lvl in range(4)]
    assert ranges[0] == (0, NUM_SPECIALS)
    for (_, stop), (start, _) in zip(ranges, ranges[1:]):
        assert stop == start  # no gap, no overlap, in the documented order
    assert ranges[-1][1] == v.size == NUM_SPECIALS + 500 + 1024 + 4 * 1024
    assert v.range("audio") == (v.range("audio", 0)[0], v.range("audio", 3)[1])
    # every id belongs to exactly one modality
    tags = v.modality_of(np.arange(v.size))
    counts = {m: int((tags == t).sum()) for m, t in MODALITY_IDS.items()}
    assert counts == {"pad": 1, "special": NUM_SPECIALS - 1, "text": 500, "image": 1024, "audio": 4096}


def test_specials_are_distinct_and_cover_tasks():
    v = Vocabulary.from_fingerprints(FPS)
    names = [
        "<pad>",
        "<mask>",
        "<bos>",
        "<eos>",
        "<boi>",
        "<eoi>",
        "<boa>",
        "<eoa>",
        "<t2i>",
        "<i2t>",
        "<t2s>",
        "<s2t>",
    ]
    ids = [v.special(n) for n in names]
    assert len(set(ids)) == len(ids) and all(0 <= i < NUM_SPECIALS for i in ids)
    assert v.pad_id == 0 and v.mask_id == v.special("<mask>")


def test_codes_map_to_ids_and_back():
    v = Vocabulary.from_fingerprints(FPS)
    rng = np.random.default_rng(0)
    for modality, fp in FPS.items():
        codes = rng.integers(0, fp["codebook_size"], size=40 * fp["levels"]).astype(np.int32)
        ids = v.codes_to_ids(modality, codes)
        lo, hi = v.range(modality)
        assert ids.min() >= lo and ids.max() < hi
        assert (v.modality_of(ids) == MODALITY_IDS[modality]).all()
        np.testing.assert_array_equal(v.ids_to_codes(modality, ids), codes)


def test_audio_levels_follow_frame_major_order():
    v = Vocabulary.from_fingerprints(FPS)
    codes = np.zeros(4 * 3, np.int32)  # 3 frames x 4 levels, all code 0
    ids = v.codes_to_ids("audio", codes)
    expected = [v.range("audio", lvl)[0] for lvl in range(4)] * 3
    assert ids.tolist() == expected


def test_out_of_range_codes_and_ids_are_refused():
    v = Vocabulary.from_fingerprints(FPS)
    with pytest.raises(IntegrityError, match="image codes outside"):
        v.codes_to_ids("image", np.array([0, 1024]))
    with pytest.raises(ValueError, match="text range"):
        v.ids_to_codes("text", np.array([v.range("image")[0]]))
    with pytest.raises(KeyError):
        v.range("audio", 4)


def test_missing_modality_shifts_nothing_before_it():
    v = Vocabulary.from_fingerprints({"text": FPS["text"], "image": None, "audio": FPS["audio"]})
    assert not v.has("image")
    assert v.range("audio", 0)[0] == v.range("text")[1]
    with pytest.raises(KeyError):
        v.range("image")


def test_check_names_both_tokenizers():
    v = Vocabulary.from_fingerprints(FPS)
    v.check("audio", dict(FPS["audio"]))  # identical: accepted
    other = dict(FPS["audio"], name="dac-v2", weights_sha256="b" * 64)
    with pytest.raises(IntegrityError) as e:
        v.check("audio", other, what="dataset s3://b/ds")
    msg = str(e.value)
    assert "'dac-v2'" in msg and "'dac'" in msg and "weights_sha256" in msg and "s3://b/ds" in msg
    with pytest.raises(IntegrityError, match="no image tokenizer"):
        Vocabulary.from_fingerprints({"text": FPS["text"]}).check("image", FPS["image"])


def test_save_load_round_trip(tmp_path):
    v = Vocabulary.from_fingerprints(FPS)
    path = str(tmp_path / "vocab.json")
    v.save(path)
    w = Vocabulary.load(path)
    assert w.size == v.size and w.specials == v.specials
    for m in FPS:
        assert w.range(m) == v.range(m)
    # same fingerprints → same layout, wherever it is built
    assert Vocabulary.from_fingerprints(dict(reversed(list(FPS.items())))).to_json() == v.to_json()


def test_tampered_vocab_json_is_refused():
    d = Vocabulary.from_fingerprints(FPS).to_dict()
    d["ranges"]["image"]["start"] += 1
    with pytest.raises(IntegrityError, match="image"):
        Vocabulary.from_dict(d)


def test_vocab_from_real_tokenizers(tokenizer_specs):
    from trimodal.tokenizers.base import load_tokenizer

    fps = {m: load_tokenizer(s["kind"], s["path"]).fingerprint() for m, s in tokenizer_specs.items()}
    v = Vocabulary.from_fingerprints(fps)
    assert v.size == NUM_SPECIALS + 512 + 1024 + 4 * 1024
    assert v.levels("audio") == 4 and v.levels("image") == 1
