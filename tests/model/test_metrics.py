"""The run's progress and records (model/metrics.py): the checkpointed state keeps its format
(an older checkpoint without compute counters still loads), and evaluation records have their
place beside the step records."""

import json
import os

from tests.model.test_trainer import config
from trimodal.config import from_dict
from trimodal.model.config import TrainConfig
from trimodal.model.metrics import MetricsLog, RunProgress


def test_progress_state_dict_keeps_its_format_and_loads_older_checkpoints():
    p = RunProgress(step=5, first_loss=4.0, loss=3.0, tokens_real=10.0, tokens_padded=12.0, flops=1e9)
    d = p.state_dict()
    assert d["step"] == 5 and d["metrics"]["loss"] == 3.0 and d["metrics"]["first_loss"] == 4.0
    q = RunProgress()
    q.load_state_dict(json.loads(json.dumps(d)))  # state.json round trip
    assert q == p
    old = RunProgress()
    old.load_state_dict({"step": 7, "metrics": {"loss": 2.0, "first_loss": 5.0}})  # before compute counters
    assert (old.step, old.loss, old.first_loss, old.flops, old.tokens_real) == (7, 2.0, 5.0, 0.0, 0.0)


def test_eval_records_carry_the_compute_and_reach_tensorboard(tmp_path):
    cfg = from_dict(TrainConfig, config(tmp_path / "run", tensorboard=True))
    log = MetricsLog(cfg, rank=0, log_dir=str(tmp_path / "logs"))
    log.open()
    rec = log.eval_record(10, {"eval.loss": 2.5, "eval.text.nelbo": 3.0}, {"flops": 1e12})
    log.close()
    assert rec == {"event": "eval", "step": 10, "eval.loss": 2.5, "eval.text.nelbo": 3.0, "flops": 1e12}
    lines = [json.loads(l_) for l_ in open(tmp_path / "logs" / "metrics.jsonl")]
    assert lines == [rec]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "logs" / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"eval/loss", "eval/text/nelbo", "flops"}
    quiet = MetricsLog(cfg, rank=1, log_dir=str(tmp_path / "other"))
    quiet.open()
    quiet.eval_record(1, {"eval.loss": 1.0})
    assert not os.path.exists(tmp_path / "other")  # only rank 0 writes
