"""A sweep on s3:// storage whose one trial has two workers (slow): the trial launches a Ray
Train TorchTrainer (Train V2 cannot hand a trainer to a Tuner), checkpoints and rows go to S3,
and the table and `status` are read back from there."""

import pytest

from tests.sweep.conftest import sweep_config
from trimodal.sweep.runner import run_sweep, sweep_status
from trimodal.sweep.table import read_table

pytestmark = pytest.mark.slow


def test_multi_worker_trial_on_s3(sweep_data, ray_cluster, s3_bucket, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an s3:// sweep keeps Tune's local state under ./trimodal_logs
    cfg = sweep_config(
        sweep_data,
        f"s3://{s3_bucket}/sweeps",
        set={"num_workers": 2, "physical_batch": 2, "checkpoint_every": 2},
    )
    res = run_sweep(cfg)
    assert res["done"] == 1 and not res["errors"], res
    assert res["results"].startswith(f"s3://{s3_bucket}/sweeps/t/")
    table = read_table(res["results"]).to_pylist()
    final = [r for r in table if r["final"]]
    assert final and {r["step"] for r in final} == {4} and all(r["nelbo"] > 0 for r in final)
    assert (tmp_path / "trimodal_logs" / "sweeps" / "t" / "tune").is_dir()
    st = sweep_status(res["sweep_dir"])
    assert st["counts"]["done"] == 1 and st["trials"][0]["step"] == 4
    # the trial's run dir (checkpoints) is on S3 with the rest
    from trimodal.model.checkpoint import latest_checkpoint

    assert latest_checkpoint(f"{res['sweep_dir']}/trials/{st['trials'][0]['name']}").endswith("step-00000004")
