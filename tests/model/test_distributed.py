"""The trainer under a torch process group without Ray (2 CPU processes, gloo): FSDP2 sharding
gives the same loss curve as one process; checkpoints are sharded (each rank writes its own
file) and resume on another world size, 2 → 1 and 1 → 2, bit for bit.
(The DDP path runs under Ray Train in tests/jobs/test_train.py.)"""

import os

import pytest
import torch
import torch.multiprocessing as mp

from trimodal.jobs.train import load_train_config, loss_curve, read_metrics, run_train
from trimodal.model.checkpoint import load_model

from .test_trainer import config

pytestmark = pytest.mark.slow  # spawns worker processes


def _worker(rank, world, store, cfg_dict):
    import torch.distributed as dist

    from trimodal.model.trainer import Trainer, WorkerContext

    torch.set_num_threads(1)
    # a FileStore rendezvous: no MASTER_PORT found free and bound later (another test may take it)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        cfg = load_train_config(cfg_dict)
        Trainer(cfg, WorkerContext(rank=rank, world_size=world, distributed=True)).run()
    finally:
        dist.destroy_process_group()


def test_fsdp_over_two_processes_matches_one_process(tmp_path):
    # eval: 3 batches of 2 rows over 2 ranks: rank 1 runs a throwaway batch to keep FSDP's
    # collective forwards in step
    ev = {"mix": dict(config("x")["mix"], pool=6, seed=5), "tokens": 6 * 32, "n_t": 2, "seeds": 2, "batch": 2}
    cfg = config(tmp_path / "fsdp", steps=6, checkpoint_every=3, num_workers=2, physical_batch=4, fsdp=True, eval=ev)
    mp.start_processes(_worker, args=(2, _store(), cfg), nprocs=2, join=True, start_method="spawn")
    solo = run_train(config(tmp_path / "solo", steps=6, checkpoint_every=3, eval=ev), in_process=True)
    # the eval of 2 ranks equals `trimodal eval` of the same weights in one process
    from trimodal.jobs.eval import run_eval
    from trimodal.jobs.train import read_summary

    two = read_summary(str(tmp_path / "fsdp"))["eval"]
    one = run_eval(str(tmp_path / "fsdp"), mix=ev["mix"], tokens=6 * 32, n_t=2, seeds=2, batch=2, in_process=True)
    assert two["rows"] == one["rows"] == 6
    assert two["all"]["nelbo"] == pytest.approx(one["all"]["nelbo"], rel=1e-5)
    assert two["task"].keys() == one["task"].keys()
    assert solo["eval"]["all"]["nelbo"] == pytest.approx(one["all"]["nelbo"], rel=1e-3)
    a, b = loss_curve(str(tmp_path / "fsdp")), loss_curve(solo["log_dir"])
    assert sorted(a) == list(range(1, 7))
    assert a == pytest.approx(b, rel=1e-4)
    m_fsdp, _, _ = load_model(str(tmp_path / "fsdp"))
    m_solo, _, _ = load_model(str(tmp_path / "solo"))
    for (n, p), (_, q) in zip(m_fsdp.state_dict().items(), m_solo.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5, msg=n)


def _store() -> str:
    """A fresh FileStore path (the file must not exist before the group forms)."""
    import tempfile

    return os.path.join(tempfile.mkdtemp(prefix="trimodal-store-"), "store")


def _spawn(world, cfg):
    mp.start_processes(_worker, args=(world, _store(), cfg), nprocs=world, join=True, start_method="spawn")


def test_resume_on_another_world_size_continues_bit_for_bit(tmp_path):
    """A checkpoint written by 2 FSDP ranks (one file each, no gather) resumes in 1 process, and
    one written by 1 process resumes on 2 ranks; both continuations equal an uninterrupted
    1-process run exactly: losses and final weights. (Clipping is off: a clipped step depends on
    the grad norm, whose sum over shards rounds differently with the number of shards.)"""
    base = {"steps": 4, "checkpoint_every": 2, "physical_batch": 4, "fsdp": True}
    base["optim"] = {"warmup_steps": 2, "grad_clip": 0.0}
    ref = run_train(config(tmp_path / "ref", **base), in_process=True)
    ref_curve = loss_curve(ref["log_dir"])

    _spawn(2, config(tmp_path / "a", num_workers=2, stop_at_step=2, **base))  # 2 ranks to step 2 ...
    shards = sorted(os.listdir(tmp_path / "a" / "checkpoints" / "step-00000002" / "model"))
    assert [f for f in shards if f.endswith(".distcp")] == ["__0_0.distcp", "__1_0.distcp"]
    two_to_one = run_train(config(tmp_path / "a", **base), in_process=True, resume=True)  # ... 1 process on
    assert two_to_one["start_step"] == 2 and two_to_one["world_size"] == 1

    run_train(config(tmp_path / "b", stop_at_step=2, **base), in_process=True)  # 1 process to step 2 ...
    _spawn(2, config(tmp_path / "b", num_workers=2, **base))  # ... 2 ranks on
    starts = [r for r in read_metrics(str(tmp_path / "b")) if r.get("event") == "start"]
    assert [(s["start_step"], s["world_size"]) for s in starts] == [(0, 1), (2, 2)]

    m_ref, _, _ = load_model(str(tmp_path / "ref"))
    for run in ("a", "b"):
        assert loss_curve(str(tmp_path / run)) == ref_curve  # exact, not approx
        m, _, _ = load_model(str(tmp_path / run))
        for (n, p), (_, q) in zip(m.state_dict().items(), m_ref.state_dict().items()):
            assert torch.equal(p, q), (run, n)
