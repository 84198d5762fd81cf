"""Training streams: the synthetic stream's layout and elasticity, and the prefetcher's
checkpoint semantics."""

import numpy as np
import pytest

from trimodal.errors import ConfigError
from trimodal.model.data import Prefetcher, SyntheticStream, open_stream
from trimodal.tokenizers.vocab import MODALITY_IDS

from .conftest import FPS

SPEC = {"kind": "synthetic", "fingerprints": FPS, "seq_len": 32, "pool": 6, "seed": 1}


def test_union_of_ranks_is_the_global_batch():
    one = open_stream(SPEC, 0, 1, 4)
    two = [open_stream(SPEC, r, 2, 4) for r in range(2)]
    for _ in range(3):
        g = next(one)
        parts = [next(s) for s in two]
        for k in g:
            assert np.array_equal(np.concatenate([p[k] for p in parts]), g[k])


def test_layout_matches_the_contract():
    b = next(open_stream(SPEC, 0, 1, 6))
    v = SyntheticStream({k: x for k, x in SPEC.items() if k != "kind"}, 0, 1, 6).vocab
    assert set(b) == {"tokens", "modality", "segment_ids", "positions"} and b["tokens"].shape == (6, 32)
    pad = b["segment_ids"] == 0
    assert np.all(b["tokens"][pad] == v.pad_id) and np.all(b["modality"][pad] == MODALITY_IDS["pad"])
    assert np.array_equal(v.modality_of(b["tokens"]), b["modality"])  # modality tags agree with the ids
    for row_seg, row_pos in zip(b["segment_ids"], b["positions"]):
        for s in set(row_seg.tolist()) - {0}:
            assert row_pos[row_seg == s].tolist() == list(range((row_seg == s).sum()))


def test_resume_on_another_world_size():
    a = open_stream(SPEC, 0, 1, 4)
    next(a)
    state = a.state_dict()
    ref = next(a)
    b = open_stream(SPEC, 1, 2, 4)
    b.load_state_dict(state)
    assert np.array_equal(next(b)["tokens"], ref["tokens"][2:])


def test_unknown_stream_kind_and_key():
    with pytest.raises(ConfigError, match="mix.kind"):
        open_stream({"kind": "nope"}, 0, 1, 1)
    with pytest.raises(ConfigError, match="seq_lenn"):
        open_stream(dict(SPEC, seq_lenn=3), 0, 1, 1)


@pytest.mark.parametrize("depth", [0, 3])
def test_prefetcher_checkpoints_what_was_consumed(depth):
    s = open_stream(SPEC, 0, 1, 2)
    p = Prefetcher(s, depth=depth)
    first = [next(p) for _ in range(2)]
    state = p.state_dict()  # the thread may have produced more; the state must not count those
    nxt = next(p)
    p.close()
    fresh = open_stream(SPEC, 0, 1, 2)
    fresh.load_state_dict(state)
    assert np.array_equal(next(fresh)["tokens"], nxt["tokens"])
    ref = open_stream(SPEC, 0, 1, 2)
    assert np.array_equal(next(ref)["tokens"], first[0]["tokens"])


def test_prefetcher_reraises_stream_errors():
    class Broken:
        def __init__(self):
            self.n = 0

        def __iter__(self):
            return self

        def __next__(self):
            self.n += 1
            if self.n == 2:
                raise RuntimeError("shard 7 unreadable")
            return {"x": self.n}

        def state_dict(self):
            return {"n": self.n}

    p = Prefetcher(Broken(), depth=2)
    assert next(p) == {"x": 1}
    with pytest.raises(RuntimeError, match="shard 7"):
        next(p)
    p.close()
