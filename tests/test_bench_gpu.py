"""bench/bench_gpu.py, the GPU acceptance command: without a GPU it says so and exits 6; with
--cpu-smoke it runs every path (train compiled, flex against SDPA, both codecs bare and through
the job's path, generation) at tiny sizes on CPU, prints one table and exits 0."""

import json
import os
import sys

import pytest
import torch

from tests.children import run_child

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "bench_gpu.py")


def _env():
    return dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_exits_6():
    proc = run_child([sys.executable, SCRIPT], timeout=120, env=_env())
    assert proc.returncode == 6, proc.stderr[-2000:]
    assert "no GPU here" in proc.stderr and "--cpu-smoke" in proc.stderr
    assert proc.stdout == ""  # nothing ran, no table


@pytest.mark.slow  # every path at tiny sizes, the train path compiled by inductor (~1-2 min)
def test_cpu_smoke_runs_every_path_and_prints_one_table():
    proc = run_child([sys.executable, SCRIPT, "--cpu-smoke", "--json"], env=_env())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("GPU acceptance on cpu (smoke")
    rows = {r["path"]: r for r in json.loads(lines[-1])["rows"]}
    assert list(rows) == ["train", "attention", "image codec", "audio codec", "generate"]
    assert all(r["status"] in ("ok", "skip") for r in rows.values()), rows
    assert rows["train"]["figures"]["graph breaks"] == 0 and rows["train"]["figures"]["tokens/s"] > 0
    assert rows["attention"]["figures"]["max |flex - sdpa|"] < 1e-5
    assert all(v > 0 for v in rows["generate"]["figures"].values())
    for name in ("train", "attention", "generate"):  # every row of the table printed
        assert any(line.startswith(name) for line in lines[1:-1]), name
