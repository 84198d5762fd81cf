"""A tiny real sweep on the session's Ray (slow): two trials at once, held-out eval rows for
each, the documented columns, `trimodal sweep status`; and the crash test: the driver run as a
subprocess is SIGKILLed once the first trial is done and the second has a checkpoint, then
`--resume` reruns no finished trial and ends with the table of the uninterrupted sweep."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from tests.sweep.conftest import sweep_config
from trimodal.cli import main
from trimodal.model.checkpoint import latest_checkpoint
from trimodal.sweep.runner import run_sweep, sweep_status
from trimodal.sweep.table import RESULTS_SCHEMA
from trimodal.sweep.trial import read_jsonl

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHORT, LONG = "p000-tiny-b4-lr3e-3-st4-s0", "p001-tiny-b4-lr3e-3-st60-s0"


def _config(data, storage):
    # two trials of very different lengths, so that the first ends while the second runs
    return sweep_config(
        data,
        storage,
        grid={"steps": [4, 60]},
        set={"checkpoint_every": 4},
        resources={"max_concurrent_trials": 2},
        progress_every_s=2.0,
    )


@pytest.fixture(scope="module")
def reference(sweep_data, ray_cluster, tmp_path_factory):
    storage = tmp_path_factory.mktemp("ref")
    res = run_sweep(_config(sweep_data, storage))
    return {"res": res, "storage": storage, "table": pq.read_table(res["results"])}


def test_tiny_sweep_runs_trials_concurrently_with_eval_rows(reference):
    res, table = reference["res"], reference["table"]
    assert res["done"] == res["trials"] == 2 and not res["errors"]
    # the documented columns, in order, then the base mix's shares
    assert table.schema.names == [*RESULTS_SCHEMA.names, "share.text", "share.pairs"]
    assert table.schema.field("nelbo").type == RESULTS_SCHEMA.field("nelbo").type
    rows = table.to_pylist()
    for trial, steps in ((SHORT, 4), (LONG, 60)):
        mine = [r for r in rows if r["trial"] == trial]
        final = [r for r in mine if r["final"]]
        assert {(r["group_kind"], r["group"]) for r in final} >= {
            ("all", "all"),
            ("modality", "text"),
            ("modality", "image"),
            ("task", "t2i"),
            ("task", "text"),
        }
        for r in final:
            assert r["step"] == steps == r["steps"] and r["split"] == "heldout" and r["nelbo"] > 0
            assert r["se"] is not None and r["unigram"] > 0 and r["bits"] == pytest.approx(r["nelbo"] / np.log(2))
            assert r["tokens"] > 0 and r["flops"] > r["flops_non_embedding"] > 0 and r["params"] > 0
            assert r["share.text"] == pytest.approx(0.6) and json.loads(r["point"]) == {"steps": steps}
            assert r["preset"] == "tiny" and r["dim"] == 64 and r["n_layers"] == 2 and r["schedule"] == "linear"
    # both trials ran at the same time: their training intervals overlap
    done = [json.loads((reference["storage"] / "t" / "trials" / n / "done.json").read_text()) for n in (SHORT, LONG)]
    assert max(d["started"] for d in done) < min(d["ended"] for d in done)


def test_status_lists_every_trial_done(reference, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "status", reference["res"]["sweep_dir"], "--json"])
    assert e.value.code == 0
    st = json.loads(capsys.readouterr().out)
    assert st["counts"]["done"] == 2 and not st["driver_running"] and st["rows"] == reference["table"].num_rows
    assert [(t["name"], t["state"], t["step"]) for t in st["trials"]] == [(SHORT, "done", 4), (LONG, "done", 60)]
    assert st["trials"][1]["last_eval"]["step"] == 60
    with pytest.raises(SystemExit) as e:
        main(["sweep", "status", reference["res"]["sweep_dir"]])
    table = capsys.readouterr().out
    assert e.value.code == 0 and f"{LONG}" in table and "60/60" in table and "results:" in table
    # a second run without --resume is refused: exit 2, the way out named
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(reference["storage"] / "t" / "sweep.json"), "--json"])
    assert e.value.code == 2


def _wait_for(cond, what: str, proc=None, timeout: float = 240.0):
    t0 = time.monotonic()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep driver ended (rc {proc.returncode}) before {what}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a marker file, not a wait for time to pass


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigkilled_driver_resumes_to_the_same_table(sweep_data, ray_cluster, reference, tmp_path):
    cfg = _config(sweep_data, tmp_path / "store")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    trials = tmp_path / "store" / "t" / "trials"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trimodal", "sweep", str(path), "--address", ray_cluster, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(
            lambda: (trials / SHORT / "done.json").exists() and latest_checkpoint(str(trials / LONG)) is not None,
            "the first trial's done marker and a complete checkpoint of the second",
            proc,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert not (trials / LONG / "done.json").exists(), "the long trial ended before the driver was killed"
    short_done = (trials / SHORT / "done.json").read_text()
    # the long trial's process dies with its driver's job; wait for it before resuming
    long_pid = [r for r in read_jsonl(str(trials / LONG / "metrics.jsonl")) if r.get("event") == "start"][0]["pid"]
    _wait_for(lambda: _pid_gone(long_pid), "the killed sweep's trial process to end")
    st = sweep_status(str(path))
    assert {t["name"]: t["state"] for t in st["trials"]} == {SHORT: "done", LONG: "interrupted"}

    res = run_sweep(str(path), address=ray_cluster, resume=True)
    assert res["ran"] == 1 and res["done"] == 2 and not res["errors"]
    # the finished trial was not trained again: one start record, its marker untouched
    short_starts = [r for r in read_jsonl(str(trials / SHORT / "metrics.jsonl")) if r.get("event") == "start"]
    assert len(short_starts) == 1 and (trials / SHORT / "done.json").read_text() == short_done
    # the unfinished one continued from its newest checkpoint
    long_starts = [r for r in read_jsonl(str(trials / LONG / "metrics.jsonl")) if r.get("event") == "start"]
    assert len(long_starts) == 2 and long_starts[1]["resumed_from"] and long_starts[1]["start_step"] >= 4

    got, want = pq.read_table(res["results"]).to_pylist(), reference["table"].to_pylist()
    assert len(got) == len(want)
    exact = ("trial", "step", "final", "split", "group_kind", "group", "tokens", "tokens_padded", "flops", "params")
    for g, w in zip(got, want):
        assert {k: g[k] for k in exact} == {k: w[k] for k in exact}
        for k in ("nelbo", "se", "bits", "unigram"):
            assert g[k] == pytest.approx(w[k], rel=1e-6, abs=1e-9), (g["trial"], g["group"], k)
