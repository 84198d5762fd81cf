"""The trainer's wait for Ray Train workers says what it waits on."""

from __future__ import annotations

from types import SimpleNamespace

from trimodal.jobs.train import waiting_line


def test_waiting_line_names_the_resources_and_a_shortfall():
    cfg = SimpleNamespace(num_workers=2, use_gpu=False)
    line = waiting_line(cfg, {"CPU": 1.0}, {"CPU": 0.5}, {"CPU": 2.0}, 30.2)
    assert "30s: waiting for 2 Ray Train worker(s) of 1 CPU each (0.5 of 2 CPU free)" in line
    assert "first step" in line
    short = waiting_line(SimpleNamespace(num_workers=4, use_gpu=True), {"CPU": 1.0}, {}, {"CPU": 8.0}, 10)
    assert "1 CPU, 1 GPU each" in short and "too little GPU" in short
