"""Held-out splits (mixer/holdout.py): the train split never yields a held-out sample, the eval
split yields exactly them in one finite pass, membership follows the sample id alone, and a
resume under another holdout is refused."""

from __future__ import annotations

import numpy as np
import pytest

from trimodal.errors import ConfigError
from trimodal.mixer import Mixer
from trimodal.mixer.holdout import Split
from trimodal.mixer.shuffle import derive_key, uniform

from .conftest import build, image_rows, mix_cfg, text_rows

HOLD = {"fraction": 0.2, "seed": 3}


@pytest.fixture(scope="module")
def split_data(tmp_path_factory):
    """The same 400 text documents and 120 pairs, cut into shards two ways."""
    root = tmp_path_factory.mktemp("holdout")
    text, pairs = text_rows(400, hi=60, seed=5), image_rows(120, seed=6)
    return {
        "small": {
            "text": build(root / "t7", text, shard_rows=7),
            "image": build(root / "i7", pairs, fps=("text", "image"), shard_rows=7),
        },
        "large": {
            "text": build(root / "t400", text, shard_rows=400),
            "image": build(root / "i400", pairs, fps=("text", "image"), shard_rows=120),
        },
    }


def cfg(data, split="train", holdout=HOLD, epochs=1, **kw):
    opts = {n: {"max_epochs": epochs} for n in ("text", "image")}
    c = mix_cfg(data, shares={"text": 0.6, "image": 0.4}, seq_len=96, source_opts=opts, **kw)
    return {**c, "holdout": holdout, "split": split}


def documents(mixer) -> dict[str, list[tuple[int, int]]]:
    """source -> [(epoch, sample)] of every document start the stream yields, to its end."""
    out: dict[str, list] = {"text": [], "image": []}
    for b in mixer:
        for row in b["docs"]:
            for src, ep, g, start, _ in row:
                if start == 0:
                    out[src].append((ep, g))
    return out


def ids(data, source, samples) -> set[str]:
    return {f"{'web' if source == 'text' else 'img'}/{g}" for g in samples}


def test_splits_are_disjoint_complete_and_the_eval_pass_ends(split_data):
    data = split_data["small"]
    train = documents(Mixer(cfg(data), with_docs=True))
    held = documents(Mixer(cfg(data, split="eval"), with_docs=True))
    for src, n in (("text", 400), ("image", 120)):
        t = [g for _, g in train[src]]
        e = [g for _, g in held[src]]
        assert len(set(e)) == len(e) and len(set(t)) == len(t)  # one pass: each once
        assert not set(t) & set(e)
        assert set(t) | set(e) == set(range(n))
        assert 0.1 * n < len(e) < 0.3 * n  # about `fraction` of every source
        # exactly the samples whose key falls under the fraction
        keys = np.array(sorted(ids(data, src, range(n))), dtype=object)
        from trimodal.dataset.shards import sample_keys

        inside = uniform(derive_key(3, "holdout"), sample_keys(keys)) < 0.2
        assert set(keys[inside]) == ids(data, src, e)


def test_training_never_yields_a_held_out_sample_in_any_epoch(split_data):
    data = split_data["small"]
    held = {(s, g) for s, docs in documents(Mixer(cfg(data, split="eval"), with_docs=True)).items() for _, g in docs}
    train = documents(Mixer(cfg(data, epochs=3), with_docs=True))
    epochs = {ep for docs in train.values() for ep, _ in docs}
    assert epochs == {0, 1, 2}
    assert not {(s, g) for s, docs in train.items() for _, g in docs} & held


def test_membership_ignores_shards_and_world_size(split_data):
    small = documents(Mixer(cfg(split_data["small"], split="eval"), with_docs=True))
    large = documents(Mixer(cfg(split_data["large"], split="eval"), with_docs=True))
    for src in ("text", "image"):
        assert ids(None, src, [g for _, g in small[src]]) == ids(None, src, [g for _, g in large[src]])
    # two ranks of the eval split together render the one-rank stream, row for row
    one = list(Mixer(cfg(split_data["small"], split="eval")))
    ranks = [list(Mixer(cfg(split_data["small"], split="eval"), rank=r, world_size=2)) for r in (0, 1)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) > 0
    for whole, a, b in zip(one, *ranks):
        assert np.array_equal(whole["tokens"], np.concatenate([a["tokens"], b["tokens"]]))


def test_a_resume_under_another_holdout_or_split_is_refused(split_data):
    data = split_data["small"]
    m = Mixer(cfg(data, epochs=None))
    for _ in range(3):
        next(m)
    state = m.state_dict()
    for other in (cfg(data, epochs=None, holdout={"fraction": 0.3, "seed": 3}), cfg(data, epochs=None, holdout=None)):
        with pytest.raises(ConfigError, match="holdout"):
            Mixer(other).load_state_dict(state)
    same = Mixer(cfg(data, epochs=None))
    same.load_state_dict(state)
    assert np.array_equal(next(same)["tokens"], next(m)["tokens"])


def test_an_eval_split_with_no_held_out_sample_is_an_empty_pass(split_data):
    tiny = {"fraction": 1e-9, "seed": 0}
    assert list(Mixer(cfg(split_data["small"], split="eval", holdout=tiny))) == []


def test_split_keys_are_checked():
    keys = np.arange(10_000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    a, b = Split(0.25, 1, True).keep(keys), Split(0.25, 1, False).keep(keys)
    assert not (a & b).any() and (a | b).all()
    assert 0.23 < a.mean() < 0.27
    assert not np.array_equal(a, Split(0.25, 2, True).keep(keys))  # the seed decides
    with pytest.raises(ConfigError, match="fraction"):
        Mixer(cfg({"text": "x", "image": "y"}, holdout={"fraction": 1.5}))
    with pytest.raises(ConfigError, match="split"):
        Mixer(cfg({"text": "x", "image": "y"}, split="test"))
