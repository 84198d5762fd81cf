"""build.py's distributed branches over 2 gloo ranks on CPU, WITH gradient accumulation (2
micro-batches per rank per step): FSDP2 built on the meta device (gradient sync only on the last
micro-batch, `set_requires_gradient_sync`) and DDP (`no_sync` on all but the last), each against
one process with the same logical batch (4 micro-batches). Clipping off; equal up to float
summation order. The rendezvous is a FileStore: no port to find free and bind later."""

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from trimodal.jobs.train import load_train_config, loss_curve, run_train
from trimodal.model.checkpoint import load_model

from .test_trainer import config

pytestmark = pytest.mark.slow  # spawns worker processes

BASE = {"steps": 4, "checkpoint_every": 4, "physical_batch": 2, "optim": {"warmup_steps": 2, "grad_clip": 0.0}}


def _worker(rank, world, store, cfg_dict, out_dir):
    import torch.distributed as dist

    from trimodal.model.trainer import Trainer, WorkerContext

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        tr = Trainer(load_train_config(cfg_dict), WorkerContext(rank=rank, world_size=world, distributed=True))
        syncs = []
        setup = tr.setup

        def spied_setup():  # record, per micro-batch, whether gradients were to be synced
            setup()
            m = tr.model
            if hasattr(m, "set_requires_gradient_sync"):
                f = m.set_requires_gradient_sync
                m.set_requires_gradient_sync = lambda s, **kw: (syncs.append(bool(s)), f(s, **kw))[1]
            else:
                f = m.no_sync
                m.no_sync = lambda: (syncs.append(False), f())[1]

        tr.setup = spied_setup
        tr.run()
        with open(os.path.join(out_dir, f"syncs-{rank}.json"), "w") as f:
            json.dump(syncs, f)
    finally:
        dist.destroy_process_group()


def _two_ranks(tmp_path, cfg) -> dict:
    """Each rank's sync calls, written to a file per rank (no multiprocessing Manager: its server
    process would be forked from this process, which holds Ray's gRPC threads)."""
    store = tmp_path / "store"
    mp.start_processes(_worker, args=(2, str(store), cfg, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    return {r: json.loads((tmp_path / f"syncs-{r}.json").read_text()) for r in range(2)}


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("solo")
    out = run_train(config(tmp / "solo", **BASE), in_process=True)
    assert out["world_size"] == 1
    return tmp / "solo", loss_curve(out["log_dir"])


@pytest.mark.parametrize("fsdp", [True, False], ids=["fsdp2", "ddp"])
def test_two_ranks_with_accumulation_match_one_process(tmp_path, solo, fsdp):
    solo_dir, solo_curve = solo
    run = tmp_path / "run"
    calls = _two_ranks(tmp_path, config(run, num_workers=2, fsdp=fsdp, bf16=False, **BASE))
    # 4 steps × 2 micro-batches per rank: FSDP2 told sync off, then on; DDP in no_sync for the first
    expected = [False, True] * 4 if fsdp else [False] * 4
    assert calls == {0: expected, 1: expected}
    curve = loss_curve(str(run))
    assert sorted(curve) == [1, 2, 3, 4]
    assert curve == pytest.approx(solo_curve, rel=1e-4)
    a, _, _ = load_model(str(run))
    b, _, _ = load_model(str(solo_dir))
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5, msg=n)
    if fsdp:  # one shard per rank: the model was sharded, not replicated
        shards = os.listdir(run / "checkpoints" / "step-00000004" / "model")
        assert sorted(f for f in shards if f.endswith(".distcp")) == ["__0_0.distcp", "__1_0.distcp"]


def test_fsdp2_with_the_bf16_mixed_precision_policy_and_autocast_on_cpu(tmp_path, solo):
    """The CUDA default precision branch on CPU (`bf16: true`): FSDP2's MixedPrecisionPolicy
    (bf16 parameters in compute, fp32 gradient reduce-scatter over gloo) and bf16 autocast around
    the step, with accumulation: fp32 master weights and the fp32 run's losses to bf16 precision."""
    _, solo_curve = solo
    run = tmp_path / "run"
    _two_ranks(tmp_path, config(run, num_workers=2, fsdp=True, bf16=True, **BASE))
    from trimodal.jobs.train import read_metrics

    start = next(r for r in read_metrics(str(run)) if r.get("event") == "start")
    assert start["bf16"] is True
    curve = loss_curve(str(run))
    assert sorted(curve) == [1, 2, 3, 4]
    assert curve == pytest.approx(solo_curve, rel=3e-2)
    assert curve != pytest.approx(solo_curve, rel=1e-6)  # bf16 did change the arithmetic
    m, _, _ = load_model(str(run))
    assert all(p.dtype == torch.float32 for p in m.parameters())  # master weights stay fp32
