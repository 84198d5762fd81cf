"""The loader workers' receive path with pinned memory (the CUDA default), forced on CPU with
TRIMODAL_PIN_MEMORY=1: every batch is copied out of its shared-memory slot into a fresh pinned
tensor (never lent) and the slot freed at once. A CPU-only torch has no pinned allocator, so here
the copy lands in plain memory (`counts["pin_fallback"]`); with CUDA the tensors are pinned."""

import pickle

import numpy as np
import torch

from tests.mixer.conftest import mix_cfg
from trimodal.mixer import Mixer, transport

KEYS = ("tokens", "modality", "segment_ids", "positions")


def test_forced_pinned_receive_copies_every_batch_and_frees_its_slot(mix_data, monkeypatch):
    from trimodal.mixer.torch_dataset import _ShmIter

    monkeypatch.setenv(transport.PIN_ENV, "1")
    monkeypatch.setattr(transport, "_pin", None)  # read the setting again
    cfg = mix_cfg(mix_data, global_batch=8)
    m = Mixer(cfg)
    ref = [next(m) for _ in range(12)]
    it = _ShmIter(Mixer(cfg))
    before = dict(transport.counts)
    got = [pickle.loads(pickle.dumps(next(it))) for _ in ref]  # what a DataLoader worker sends
    assert transport._pin is True
    for g, r in zip(got, ref, strict=True):
        assert all(np.array_equal(g[k].numpy(), np.asarray(r[k])) for k in KEYS)
    delta = {k: transport.counts[k] - before[k] for k in transport.counts}
    assert delta["lent"] == 0 and delta["copied"] == len(ref)  # never lent: copied, slot freed
    if torch.cuda.is_available():
        assert all(t.is_pinned() for g in got for t in g.values())
    else:
        assert delta["pin_fallback"] == len(ref) * len(ref[0])  # every array tried the pinned allocator


def test_the_setting_turns_pinning_off_and_unset_follows_cuda(monkeypatch):
    monkeypatch.setenv(transport.PIN_ENV, "0")
    assert transport.pin_setting() is False
    monkeypatch.delenv(transport.PIN_ENV)
    assert transport.pin_setting() is torch.cuda.is_available()
