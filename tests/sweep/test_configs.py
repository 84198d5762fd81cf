"""The example sweeps load and expand: configs/sweep_tiny_cpu.yaml (run for real by hand; its
data comes from `trimodal demo`) and configs/sweep_paper.yaml (a GPU cluster's study, not run),
with the stream measured by a stand-in of the right size."""

import os

import pytest

from trimodal.model.config import ModelConfig
from trimodal.model.transformer import count_params
from trimodal.sweep.config import load_sweep
from trimodal.sweep.points import StreamStats, expand

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name each other relative to the repository root


def test_paper_sweep_expands_to_320m_class_isoflop_points():
    cfg = load_sweep("configs/sweep_paper.yaml")
    assert cfg.sweep_dir == "s3://my-bucket/sweeps/isoflop-320m" and cfg.split_name == "heldout"
    # 0.5M-token steps, ~3% padding, documents of ~1k tokens, a 52k vocabulary
    tokens = 256 * 2048 * 0.97
    points, dropped = expand(cfg, stats=lambda mix, b: StreamStats(tokens, tokens * 1024, 52_000))
    assert len(points) + len(dropped) == 4 * 5 * 2 and len(points) >= 30
    sizes = {}
    for p in points:
        t = p.train
        assert t["use_gpu"] and t["num_workers"] == 1 and t["model"]["parameterization"] == "completep"
        assert t["eval"]["mix"]["sources"][0]["dataset"].startswith("s3://") and t["steps"] >= 50
        m = ModelConfig(**t["model"])
        sizes[p.settings["size"]] = count_params(m, 52_000)["non_embedding"]
    assert 3.0e8 < sizes["320m"] < 3.5e8 and 3.5e7 < sizes["40m"] < 4.5e7
    assert any(p.eval_at for p in points)  # larger budgets evaluate at the smaller ones too


def test_tiny_cpu_sweep_expands_to_twelve_short_trials():
    cfg = load_sweep("configs/sweep_tiny_cpu.yaml")
    assert cfg.split_name == "eval" and cfg.resources.cpus_per_trial == 1.0  # the base mix's holdout
    # what measure_stream gives on the demo's data (8 × 320 rows, vocabulary 5,664)
    points, dropped = expand(cfg, stats=lambda mix, b: StreamStats(2309.1, 212935.9, 5664))
    assert len(points) == 12 and not dropped
    assert all(p.train["num_workers"] == 1 and 20 <= p.train["steps"] <= 200 for p in points)
    assert points[0].name == "p000-d48L2-C4e11-b8-lr3e-3-m0-s0"
    assert points[1].name == "p001-tiny-C4e11-b8-lr3e-3-m0-s0"
