"""GPU placement with fake GPUs (a child process with `ray.init(num_gpus=2)`: placement_child.py):
the tokenize job's codec actors, the service's codec replicas and the Train workers ask Ray for
the GPUs the config says, get them (each its own GPU ids), and codecs load on `cuda` exactly when
they hold a GPU. (The GPU branch of the tokenizers placement rule; the rule alone is in
tests/tokenizers/test_placement.py.)"""

import json
import os
import sys

import pytest

from tests.children import run_child

pytestmark = pytest.mark.slow  # a Ray of its own, and one Ray Train run

CHILD = os.path.join(os.path.dirname(__file__), "placement_child.py")


@pytest.fixture(scope="module")
def placed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("placement")
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    proc = run_child([sys.executable, CHILD, str(tmp / "result.json")], env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp / "result.json").read_text())


def test_codec_pool_actors_get_the_gpus_the_config_says(placed):
    auto, half, none = (placed["codec_pools"][k] for k in ("auto", "half", "none"))
    # auto: one actor per GPU, each holding a different one, loading on cuda
    assert auto["num_gpus"] == 1.0 and len(auto["actors"]) == 2
    assert sorted(g for a in auto["actors"] for g in a["gpus"]) == ["0", "1"]
    assert all(a["device"] == "cuda" for a in auto["actors"])
    # num_gpus_per_actor 0.5 with 4 actors: two per GPU
    assert half["num_gpus"] == 0.5 and len(half["actors"]) == 4
    assert sorted(a["gpus"][0] for a in half["actors"]) == ["0", "0", "1", "1"]
    # num_gpus_per_actor 0: no GPU, the codec loads where it is told (CPU)
    assert none["num_gpus"] == 0 and all(a["gpus"] == [] and a["device"] is None for a in none["actors"])


def test_service_replicas_get_the_gpus_the_config_says(placed):
    s = placed["service"]
    assert s["image_auto"]["num_gpus"] == 1.0
    assert sorted(g for a in s["image_auto"]["actors"] for g in a["gpus"]) == ["0", "1"]
    assert all(a["device"] == "cuda" for a in s["image_auto"]["actors"])
    assert s["audio_half"]["num_gpus"] == 0.5 and all(len(a["gpus"]) == 1 for a in s["audio_half"]["actors"])
    assert s["text"]["num_gpus"] == 0 and s["text"]["actors"] == [{"gpus": [], "device": None}]


def test_train_workers_get_one_gpu_each(placed):
    ranks = placed["train"]
    assert sorted(r["gpus"][0] for r in ranks) == ["0", "1"] and all(len(r["gpus"]) == 1 for r in ranks)
    assert all(r["cuda_visible"] for r in ranks)  # Ray Train exported the worker's devices
