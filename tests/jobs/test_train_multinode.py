"""Training through node loss: `trimodal train` on a Ray cluster of this machine (a 0-CPU head and
one-CPU worker nodes, in a child process: train_multinode_child.py), 2 Train workers of 1 CPU,
checkpoints every 10 steps on the S3 test server, the node of a Train worker removed after the
second checkpoint.

- a spare node: the group restarts there from the step-20 checkpoint and the run ends with the
  uninterrupted run's loss curve (clipping off; the reference is one process, the same logical
  batch: equal up to float summation order);
- no spare node, one comes back: the group waits for it (node_wait_s), then finishes the same way;
- no spare node, none comes back: the run fails after node_wait_s with a message that says so.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.children import run_child
from trimodal.jobs.train import loss_curve, run_train

from ..model.conftest import FPS

pytestmark = pytest.mark.slow  # Ray clusters in child processes

CHILD = os.path.join(os.path.dirname(__file__), "train_multinode_child.py")
STEPS, EVERY, PAUSE = 30, 10, 20


def _config(output, log_dir, **kw) -> dict:
    cfg = {
        "mix": {"kind": "synthetic", "fingerprints": FPS, "seq_len": 32, "pool": 12, "seed": 0},
        "output": str(output),
        "log_dir": str(log_dir),
        "steps": STEPS,
        "physical_batch": 2,  # 2 micro-batches per worker per step: accumulation under DDP too
        "logical_batch": 8,
        "checkpoint_every": EVERY,
        "keep_checkpoints": 0,
        "tensorboard": False,
        "prefetch": 1,
        "optim": {"warmup_steps": 2, "grad_clip": 0.0},
        "hyper": {"lr_base": 3e-3, "base_batch_tokens": 256, "base_horizon_tokens": 2048},
        "num_workers": 2,
        "cpus_per_worker": 1,
        "max_failures": 3,
    }
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, float]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    out = run_train(_config(tmp / "run", tmp / "logs"), in_process=True)
    curve = loss_curve(out["log_dir"])
    assert sorted(curve) == list(range(1, STEPS + 1))
    return curve


def _drill(tmp_path, bucket: str, mode: str, **kw) -> dict:
    cfg = _config(f"s3://{bucket}/{mode}", tmp_path / "logs", **kw)
    (tmp_path / "train.json").write_text(json.dumps(cfg))
    env = dict(os.environ, TRIMODAL_FAULTS=json.dumps({"train_pause_at_step": PAUSE}))
    env["PYTHONPATH"] = os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")
    env.pop("RAY_ADDRESS", None)
    proc = run_child(
        [sys.executable, CHILD, str(tmp_path / "train.json"), str(tmp_path / "result.json"), mode], env=env
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((tmp_path / "result.json").read_text())
    assert "drill_error" not in res, res["drill_error"]
    assert res["removed"]["rank"] == 1 and not res["survivor_same_node"]
    print(f"{mode}: {json.dumps({k: v for k, v in res.items() if k != 'summary'})}")
    return res


def _finished_like_the_reference(res: dict, log_dir, reference: dict[int, float]) -> None:
    s = res["summary"]
    assert s["step"] == STEPS and s["start_step"] == PAUSE, s  # resumed from the step-20 checkpoint
    assert s["resumed_from"].endswith(f"step-{PAUSE:08d}")
    curve = loss_curve(str(log_dir))
    assert sorted(curve) == list(range(1, STEPS + 1))
    assert curve == pytest.approx(reference, rel=1e-4)


def test_losing_a_train_workers_node_restarts_on_the_spare_node(tmp_path, s3_bucket, reference):
    res = _drill(tmp_path, s3_bucket, "spare")
    assert "error" not in res, res["error"]
    _finished_like_the_reference(res, tmp_path / "logs", reference)


def test_without_a_spare_node_the_group_waits_for_one_to_come_back(tmp_path, s3_bucket, reference):
    res = _drill(tmp_path, s3_bucket, "comeback", node_wait_s=60)
    assert "error" not in res, res["error"]
    assert res["added_back_at_s"] > res["removed"]["at_s"]
    _finished_like_the_reference(res, tmp_path / "logs", reference)


def test_without_a_spare_node_and_none_coming_back_the_run_fails_and_says_so(tmp_path, s3_bucket):
    res = _drill(tmp_path, s3_bucket, "never", node_wait_s=10)
    assert "summary" not in res
    err = res["error"]
    assert err.startswith("NodeWaitTimeout: training stopped"), err
    assert "node_wait_s = 10 s" in err and "--resume" in err and f"step-{PAUSE:08d}" in err, err
    # bounded by node_wait_s, not a hang: NodeWaitTimeout is raised only when Ray Train's one
    # wait for the group's resources ran out (run_child's timeout would fail the test otherwise)
