"""Exact resume in a fresh process, at random steps, on other world sizes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.mixer.conftest import mix_cfg
from tests.mixer.resume_child import digest
from trimodal.mixer import Mixer

pytestmark = pytest.mark.slow  # spawns a subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_resume_at_random_steps_in_a_fresh_process(mix_data, tmp_path):
    cfg = mix_cfg(
        mix_data,
        global_batch=8,
        schedule=[{"step": 25, "shares": {"text": 0.2}}],
        source_opts={"image": {"reverse_prob": 0.5}, "audio": {"max_epochs": 3}},
    )
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    stops = sorted(set(rng.integers(0, 120, 5).tolist()))
    nxt = 6
    m = Mixer(cfg, rank=0, world_size=2)  # saved from rank 0 of 2: the state is the global position
    ref = Mixer(cfg)
    ref_digests = [digest([b]) for b in (next(ref) for _ in range(stops[-1] + nxt))]
    cases, want = [], []
    step = 0
    for s in stops:
        while step < s:
            next(m)
            step += 1
        world = int(rng.choice([1, 2, 4, 8]))
        cases.append({"state": json.loads(json.dumps(m.state_dict())), "world": world})
        want.append(ref_digests[s : s + nxt])
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"cfg": cfg, "cases": cases, "next": nxt}))
    out = subprocess.run(
        [sys.executable, "-m", "tests.mixer.resume_child", str(job)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == want, f"stops {stops}"
