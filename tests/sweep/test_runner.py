"""The runner's choices without Ray: each trial's resources, the concurrency the cluster
holds, and the check that a resumed sweep still expands to its points."""

import json

import pytest

from tests.sweep.conftest import sweep_config
from trimodal.errors import ConfigError
from trimodal.sweep.points import StreamStats
from trimodal.sweep.runner import _check_same_points, max_concurrent, plan, trial_resources


def test_resources_and_concurrency_follow_the_cluster(sweep_data, tmp_path):
    from trimodal.sweep.config import load_sweep
    from trimodal.sweep.points import Point

    cfg = load_sweep(sweep_config(sweep_data, tmp_path))
    single = dict(sweep_data["base"], use_gpu=False)
    multi = dict(single, num_workers=2)
    gpu = dict(single, use_gpu=True)
    assert trial_resources(cfg, single) == {"cpu": 0.5}
    assert trial_resources(cfg, multi) == {"cpu": 0.1}
    assert trial_resources(cfg, gpu) == {"cpu": 0.5, "gpu": 1}

    def pts(train, n=10):
        return [Point(i, f"p{i}", {}, train, 0, {}) for i in range(n)]

    assert max_concurrent(cfg, pts(single), {"CPU": 2.0}) == 4  # floor(2 / 0.5)
    assert max_concurrent(cfg, pts(single, 3), {"CPU": 2.0}) == 3  # no more than there are trials
    assert max_concurrent(cfg, pts(multi), {"CPU": 8.0}) == 7  # floor(8 / (0.1 + 2 × 0.5))
    assert max_concurrent(cfg, pts(gpu), {"CPU": 64.0, "GPU": 8.0}) == 8
    cfg.resources.max_concurrent_trials = 2
    assert max_concurrent(cfg, pts(single), {"CPU": 2.0}) == 2


def test_resume_refuses_a_config_that_changed_its_points(sweep_data, tmp_path):
    from trimodal.sweep.config import load_sweep

    stats = lambda m, b: StreamStats(100.0, 1000.0, 80)  # noqa: E731
    cfg = load_sweep(sweep_config(sweep_data, tmp_path, grid={"hyper.lr_base": [1e-3, 3e-3]}))
    points, _ = plan(cfg, stats)
    stored = {"points": [json.loads(json.dumps(p.to_json())) for p in points]}
    _check_same_points(cfg, points, stored)  # the same config: accepted
    assert points[0].train["output"] == str(tmp_path / "t" / "trials" / points[0].name)
    other = load_sweep(sweep_config(sweep_data, tmp_path, grid={"hyper.lr_base": [1e-3, 1e-2]}))
    with pytest.raises(ConfigError, match=r"no longer expands to the sweep's points.*p001-tiny-b4-lr1e-2-s0"):
        _check_same_points(other, plan(other, stats)[0], stored)
