"""The torch IterableDataset (DataLoader workers, StatefulDataLoader resume) and the Ray Train
worker stream."""

import json

import numpy as np
import pytest
import torch

from tests.mixer.conftest import mix_cfg
from trimodal.mixer import Mixer, MixerDataset, rank_stream

KEYS = ("tokens", "modality", "segment_ids", "positions")


def reference(cfg, n, rank=0, world=1):
    m = Mixer(cfg, rank=rank, world_size=world)
    return [next(m) for _ in range(n)]


def same(a, b):
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in KEYS)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # 2: worker processes
def test_dataloader_workers_keep_the_rank_stream(mix_data, workers):
    cfg = mix_cfg(mix_data, global_batch=8)
    ref = reference(cfg, 9, rank=1, world=2)
    ds = MixerDataset(cfg, rank=1, world_size=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    got = []
    for b in loader:
        got.append(b)
        if len(got) == 9:
            break
    assert len(got) == len(ref) == 9  # an empty or short loader fails here, not in zip
    assert isinstance(got[0]["tokens"], torch.Tensor) and got[0]["tokens"].shape == (4, 128)
    assert all(same(g, r) for g, r in zip(got, ref))


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # 2: worker processes
def test_stateful_dataloader_resumes_exactly(mix_data, workers):
    from torchdata.stateful_dataloader import StatefulDataLoader

    cfg = mix_cfg(mix_data, global_batch=4)
    ref = reference(cfg, 12)
    dl = StatefulDataLoader(MixerDataset(cfg), batch_size=None, num_workers=workers)
    it = iter(dl)
    for _ in range(5):
        next(it)
    state = dl.state_dict()
    del it, dl
    dl2 = StatefulDataLoader(MixerDataset(cfg), batch_size=None, num_workers=workers)
    dl2.load_state_dict(state)
    it2 = iter(dl2)
    got = [next(it2) for _ in range(7)]
    assert all(same(g, r) for g, r in zip(got, ref[5:]))


def test_dataset_state_loads_into_a_plain_mixer(mix_data):
    cfg = mix_cfg(mix_data, global_batch=4)
    ds = MixerDataset(cfg)
    it = iter(ds)
    for _ in range(3):
        next(it)
    state = ds.state_dict()
    m = Mixer(cfg)
    m.load_state_dict(state)
    assert same(next(m), reference(cfg, 4)[3])
    # and back into a fresh dataset (its own load_state_dict): it continues from batch 3 too
    ds2 = MixerDataset(cfg)
    ds2.load_state_dict(state)
    assert same(next(iter(ds2)), reference(cfg, 4)[3])


def _train_loop(config):
    import ray.train

    from tests.mixer.resume_child import digest

    m = rank_stream(config["cfg"])  # rank and world size from the Ray Train context
    ctx = ray.train.get_context()
    with open(f"{config['out']}/rank{ctx.get_world_rank()}.json", "w") as f:
        json.dump(
            {
                "world": m.world_size,
                "digests": [digest([next(m)]) for _ in range(3)],
                "tokens": [next(m)["tokens"].tolist()],
            },
            f,
        )


@pytest.mark.slow  # starts Ray (Ray Train)
def test_ray_train_workers_build_their_rank_streams(mix_data, ray_cluster, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tests.mixer.resume_child import digest

    cfg = mix_cfg(mix_data, global_batch=4)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"cfg": cfg, "out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(tmp_path / "ray")),
    )
    trainer.fit()
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    for r in range(2):
        assert ranks[r]["digests"] == [digest([b]) for b in reference(cfg, 3, rank=r, world=2)]
    whole = reference(cfg, 4)[3]["tokens"]
    assert np.array_equal(np.concatenate([np.array(ranks[r]["tokens"][0]) for r in range(2)]), whole)
    # given explicitly, no Ray context is needed
    assert rank_stream(cfg, rank=1, world_size=2).per_rank == 2


def test_iterating_again_continues_the_stream(mix_data):
    cfg = mix_cfg(mix_data, global_batch=4)
    ref = reference(cfg, 6)
    loader = torch.utils.data.DataLoader(MixerDataset(cfg), batch_size=None)
    got = []
    for _ in range(3):  # three "epochs" of two batches each
        for b in loader:
            got.append(b)
            if len(got) % 2 == 0:
                break
    assert len(got) == len(ref) == 6
    assert all(same(g, r) for g, r in zip(got, ref))


def test_worker_batches_travel_as_small_handles_to_shared_memory(mix_data):
    """What a loader worker sends: a ~200-byte handle; unpickled, the batch as tensors, and the
    slot free again (8 slots carry 12 batches)."""
    import os
    import pickle

    from trimodal.mixer.torch_dataset import _ShmIter
    from trimodal.mixer.transport import ShmBatch

    cfg = mix_cfg(mix_data, global_batch=8)
    ref = reference(cfg, 12)
    it = _ShmIter(Mixer(cfg))
    for r in ref:
        handle = next(it)
        assert isinstance(handle, ShmBatch)
        blob = pickle.dumps(handle)
        assert len(blob) < 1000
        got = pickle.loads(blob)
        assert isinstance(got["tokens"], torch.Tensor) and same(got, r)
    assert not os.path.exists(it.ring.path)  # the receiver removed the name once mapped


def test_received_batches_the_loop_keeps_are_never_overwritten(mix_data):
    """The training process copies batches into arrays of earlier batches only when no tensor,
    view or array of them is alive: kept batches and views keep their values; a loop that
    drops its batches reuses a few arrays."""
    import pickle

    from trimodal.mixer import transport
    from trimodal.mixer.torch_dataset import _ShmIter

    cfg = mix_cfg(mix_data, global_batch=8)
    ref = reference(cfg, 24)
    it = _ShmIter(Mixer(cfg))
    before = dict(transport.counts)
    kept, views = [], []
    for i, r in enumerate(ref):
        got = pickle.loads(pickle.dumps(next(it)))
        assert same(got, r)
        if i % 4 == 0:
            kept.append((got, r))
        elif i % 4 == 1:
            views.append((got["positions"][:, 1:7], torch.as_tensor(r["positions"][:, 1:7])))
    assert all(same(g, r) for g, r in kept)
    assert all(torch.equal(v, w) for v, w in views)
    lent, copied, reused = (transport.counts[k] - before[k] for k in ("lent", "copied", "reused"))
    assert lent == transport.HOLD + 2  # two lent batches were dropped, so two more were lent
    assert lent + copied == len(ref)
    # Once the kept batches hold the lent slots, batches are copied; each one received two
    # after a dropped copied batch (8 of them) finds all that batch's arrays free.
    assert reused >= 8 * len(ref[0])


@pytest.mark.slow
def test_dataloader_worker_batches_through_shared_memory_leave_nothing_behind(mix_data):
    import glob

    before = set(glob.glob("/dev/shm/trimodal-batches-*"))
    cfg = mix_cfg(mix_data, global_batch=8)
    ref = reference(cfg, 10)
    loader = torch.utils.data.DataLoader(MixerDataset(cfg), batch_size=None, num_workers=1)
    got = []
    for b in loader:
        got.append(b)
        if len(got) == 10:
            break
    assert len(got) == len(ref) == 10
    assert all(same(g, r) for g, r in zip(got, ref))
    del loader
    assert set(glob.glob("/dev/shm/trimodal-batches-*")) <= before


@pytest.mark.slow
def test_loader_state_moves_to_another_number_of_workers(mix_data):
    from torchdata.stateful_dataloader import StatefulDataLoader

    from trimodal.errors import ConfigError
    from trimodal.mixer import MixerLoader

    cfg = mix_cfg(mix_data, global_batch=4)
    ref = reference(cfg, 12)
    dl = StatefulDataLoader(MixerDataset(cfg), batch_size=None, num_workers=2)
    it = iter(dl)
    for _ in range(5):
        next(it)
    state = dl.state_dict()
    del it, dl
    # torchdata alone cannot map 2 workers' states onto 3: refused, saying what to do
    plain = StatefulDataLoader(MixerDataset(cfg), batch_size=None, num_workers=3)
    plain.load_state_dict(state)
    with pytest.raises(ConfigError, match="2 DataLoader workers.*MixerLoader"):
        next(iter(plain))
    del plain
    # MixerLoader maps it onto 3 workers, or onto the training process itself
    for workers in (3, 0):
        dl = MixerLoader(MixerDataset(cfg), batch_size=None, num_workers=workers)
        dl.load_state_dict(state)
        it = iter(dl)
        got = [next(it) for _ in range(4)]
        assert all(same(g, r) for g, r in zip(got, ref[5:9]))
        again = dl.state_dict()  # ... and its own state resumes exactly on the same count
        del it, dl
        dl = MixerLoader(MixerDataset(cfg), batch_size=None, num_workers=workers)
        dl.load_state_dict(again)
        it = iter(dl)
        got = [next(it) for _ in range(3)]
        assert all(same(g, r) for g, r in zip(got, ref[9:12]))
        del it, dl
    # a plain StatefulDataLoader resumes from the global position on a fresh dataset
    ds = MixerDataset(cfg)
    ds.load_state_dict(ds.position(state))
    it = iter(StatefulDataLoader(ds, batch_size=None, num_workers=3))
    got = [next(it) for _ in range(7)]
    assert all(same(g, r) for g, r in zip(got, ref[5:12]))
