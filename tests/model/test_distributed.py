"""The trainer under a torch process group without Ray (2 CPU processes, gloo): FSDP2 sharding
gives the same loss curve as one process, and its checkpoint is a plain full state dict.
(The DDP path runs under Ray Train in tests/jobs/test_train.py.)"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from trimodal.jobs.train import load_train_config, loss_curve, run_train
from trimodal.model.checkpoint import load_model

from .test_trainer import config

pytestmark = pytest.mark.slow  # spawns worker processes


def _worker(rank, world, port, cfg_dict):
    import torch.distributed as dist

    from trimodal.model.trainer import Trainer, WorkerContext

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = load_train_config(cfg_dict)
        Trainer(cfg, WorkerContext(rank=rank, world_size=world, distributed=True)).run()
    finally:
        dist.destroy_process_group()


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp_over_two_processes_matches_one_process(tmp_path):
    cfg = config(tmp_path / "fsdp", steps=6, checkpoint_every=3, num_workers=2, physical_batch=4, fsdp=True)
    mp.start_processes(_worker, args=(2, _port(), cfg), nprocs=2, join=True, start_method="spawn")
    solo = run_train(config(tmp_path / "solo", steps=6, checkpoint_every=3), in_process=True)
    a, b = loss_curve(str(tmp_path / "fsdp")), loss_curve(solo["log_dir"])
    assert sorted(a) == list(range(1, 7))
    assert a == pytest.approx(b, rel=1e-4)
    m_fsdp, _, _ = load_model(str(tmp_path / "fsdp"))
    m_solo, _, _ = load_model(str(tmp_path / "solo"))
    for (n, p), (_, q) in zip(m_fsdp.state_dict().items(), m_solo.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5, msg=n)
