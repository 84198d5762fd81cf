"""The service on a real multi-node Ray cluster (a head and two worker nodes on this machine, in
a child process: multinode_child.py): with direct ingress the ingress replica answers on the head
node while the codec replicas run on the worker nodes (`resources: {codec: ...}`), codes equal
the codecs' in-process codes, and when a worker node dies under load every request gets an
answer (200, or 503 for those the lost replicas held) and the service recovers on the node left.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.children import run_child

pytestmark = pytest.mark.slow

CHILD = os.path.join(os.path.dirname(__file__), "multinode_child.py")
CODEC = {"resources": {"codec": 0.01}}


@pytest.fixture(scope="module")
def run(tokenizer_specs, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("service_multinode")
    conf = {
        "tokenizers": tokenizer_specs,
        "serve": {
            "text": CODEC,
            "image": {"replicas": 2, **CODEC},
            "audio": CODEC,
        },
    }
    (tmp / "serve.json").write_text(json.dumps(conf))
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    proc = run_child([sys.executable, CHILD, str(tmp / "serve.json"), str(tmp / "result.json")], env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp / "result.json").read_text())


def test_ingress_on_the_head_codecs_on_worker_nodes(run):
    before = run["before"]
    assert before["head"] == ["ingress"]
    codecs = sorted(before["worker0"] + before["worker1"])
    assert codecs == ["audio_codec", "image_codec", "image_codec", "text_codec"]


def test_codes_equal_the_in_process_codecs(run):
    assert set(run["codes"]) == {"text", "image", "audio"}
    for m, codes in run["codes"].items():
        assert codes == run["local"][m], m


def test_a_lost_worker_node_fails_only_what_it_held_and_the_service_recovers(run):
    during = run["during"]
    assert during.count(200) >= 3
    # every request got an answer: codes, or 503 for one a lost replica held (none hangs or 500s)
    assert all(s == 200 or str(s).startswith("503:") for s in during), during
    assert run["replaced_s"] is not None, run  # all replicas back within RECOVER_S
    assert run["codes_after"] == run["codes"], run["last_error"]
    after = run["after"]
    assert after["head"] == ["ingress"]  # the ingress was never on the lost node
    assert sorted(after[run["survivor"]]) == ["audio_codec", "image_codec", "image_codec", "text_codec"]
