"""A tokenize driver killed with SIGKILL part-way, then rerun, gives the same dataset as a clean run.

The driver is a real subprocess (`python -m trimodal.jobs.tokenize`, joining the session Ray).
It is killed at the worst moment: right after an input's shards were written and before its
completion marker (TRIMODAL_FAULTS kill_before_marker), so the rerun must overwrite orphaned
shards rather than trust them, and must not duplicate or lose any sample.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests.fixtures.datasets import job_config, read_rows
from trimodal.dataset.manifest import Manifest
from trimodal.pipeline.job import run_tokenize

pytestmark = pytest.mark.slow  # starts Ray and a driver subprocess


def test_sigkilled_driver_then_rerun_equals_clean_run(
    tiny_dataset, tiny_corpus, tokenizer_specs, ray_cluster, tmp_path
):
    # The text sources only (no codec actors to start, which is most of a tiny job's time): the
    # kill is in the driver, and the codec stages run the same driver code.
    corpus = copy.deepcopy(tiny_corpus)
    corpus["sources"] = [s for s in corpus["sources"] if s["kind"] == "text"]
    specs = {"text": tokenizer_specs["text"]}
    out = tmp_path / "ds"
    cfg = job_config(corpus, specs, str(out))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    n_inputs = sum(len(s["paths"]) for s in cfg["sources"])
    env = dict(os.environ, TRIMODAL_FAULTS=json.dumps({"kill_before_marker": 3}))
    proc = subprocess.run(
        [sys.executable, "-m", "trimodal.jobs.tokenize", str(path), "--address", ray_cluster, "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    # Killed mid-job: no manifest, some markers, and shards of at least one unmarked input.
    assert not (out / "manifest.json").exists()
    markers = {p.stem for p in (out / "_progress").glob("*.json")} - {"job"}
    assert 2 <= len(markers) < n_inputs
    shard_keys = {p.name[len("part-") :].rsplit("-", 1)[0] for p in (out / "shards").glob("*.arrow")}
    assert shard_keys - markers, "the kill should leave shards of an input without a marker"

    s = run_tokenize(copy.deepcopy(cfg), address=ray_cluster, quiet=True)
    assert s["inputs_resumed"] == len(markers) and s["inputs"] == n_inputs

    clean = read_rows(tiny_dataset["uri"])
    names = {src["name"] for src in corpus["sources"]}
    clean = {i: r for i, r in clean.items() if r["source"] in names}
    resumed = read_rows(str(out))  # asserts no duplicate ids
    assert resumed.keys() == clean.keys()
    for i, r in clean.items():
        assert resumed[i] == r, i
    # Byte-identical shards: same names, same sha256, as the clean run wrote for those inputs.
    clean_manifest = Manifest.load(tiny_dataset["uri"]).to_dict()
    resumed_manifest = Manifest.load(str(out)).to_dict()
    keys = {i["key"] for i in resumed_manifest["inputs"]}
    expect = [
        (e["path"], e["sha256"])
        for e in clean_manifest["shards"]
        if e["path"][len("shards/part-") :].rsplit("-", 1)[0] in keys
    ]
    assert [(e["path"], e["sha256"]) for e in resumed_manifest["shards"]] == expect
    # No orphans: every shard file on disk is in the manifest.
    assert sorted(p.name for p in (out / "shards").glob("*.arrow")) == sorted(
        e["path"].split("/")[-1] for e in resumed_manifest["shards"]
    )


def test_input_task_killed_mid_write_is_retried_and_its_temp_file_removed(
    tiny_dataset, tiny_corpus, tokenizer_specs, ray_cluster, tmp_path, monkeypatch
):
    """An input task's process is SIGKILLed while writing a shard (a half-written temp file is
    left). Ray retries the task, which rewrites the same shards; the commit removes the temp
    file, and the dataset equals the clean run's for those inputs."""
    from trimodal.dataset.dataset import Dataset

    corpus = copy.deepcopy(tiny_corpus)
    corpus["sources"] = [s for s in corpus["sources"] if s["kind"] == "text"]
    flag = tmp_path / "killed"
    monkeypatch.setenv("TRIMODAL_FAULTS", json.dumps({"kill_writer": {"flag": str(flag)}}))
    out = tmp_path / "ds"
    s = run_tokenize(job_config(corpus, {"text": tokenizer_specs["text"]}, str(out)), address=ray_cluster, quiet=True)
    assert flag.exists() and s["inputs_failed"] == 0
    assert s["removed_unreferenced"] >= 1  # the dead attempt's temp file
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    clean = {e["path"]: e["sha256"] for e in Manifest.load(tiny_dataset["uri"]).shards}
    got = {e["path"]: e["sha256"] for e in Manifest.load(str(out)).shards}
    assert got and all(clean[p] == h for p, h in got.items())
    assert Dataset.open(str(out)).unreferenced_files() == []


def test_inspect_verify_lists_unreferenced_files(tiny_dataset, tmp_path):
    import shutil

    from click.testing import CliRunner

    from trimodal.jobs.inspect import inspect_cmd

    ds = tmp_path / "copy"
    shutil.copytree(tiny_dataset["uri"], ds)
    (ds / "shards" / "part-gone-0000.arrow").write_bytes(b"orphan")
    (ds / "index" / "part-x-0000.arrow.tmp-123-4").write_bytes(b"partial")
    res = CliRunner().invoke(inspect_cmd, [str(ds), "--verify", "--json"])
    assert res.exit_code == 0, res.output
    v = json.loads(res.output)["verify"]
    assert v["ok"] and v["unreferenced"] == ["index/part-x-0000.arrow.tmp-123-4", "shards/part-gone-0000.arrow"]
