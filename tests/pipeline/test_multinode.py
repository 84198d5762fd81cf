"""The tokenize job on a real multi-node Ray cluster (a head and three worker nodes on this
machine, input and output on the test S3 server): the same dataset as a single-node run, also
when a worker node dies mid-job with its running tasks and actors, and through `ray job submit`.

Each cluster runs in a child process (multinode_child.py): a process can only belong to one Ray
cluster, and the test session's own local Ray makes the single-node reference run.
"""

from __future__ import annotations

import copy
import json
import os
import sys

import pytest
import yaml

from tests.children import run_child
from tests.fixtures.datasets import job_config
from trimodal.dataset.dataset import Dataset
from trimodal.dataset.manifest import Manifest
from trimodal.dataset.storage import boto3_client
from trimodal.pipeline.job import run_tokenize

pytestmark = pytest.mark.slow

CHILD = os.path.join(os.path.dirname(__file__), "multinode_child.py")


@pytest.fixture(scope="module")
def s3_corpus(tiny_corpus, tokenizer_specs, s3_server):
    """The tiny corpus uploaded to a bucket; the job config template (output filled per run)."""
    bucket = f"trimodal-multinode-{os.getpid()}"
    client = boto3_client()
    client.create_bucket(Bucket=bucket)
    corpus = copy.deepcopy(tiny_corpus)
    for src in corpus["sources"]:
        paths = []
        for p in src["paths"]:
            rel = os.path.relpath(p, tiny_corpus["root"])
            client.upload_file(p, bucket, f"corpus/{rel}")
            paths.append(f"s3://{bucket}/corpus/{rel}")
        src["paths"] = paths
    return bucket, corpus


@pytest.fixture(scope="module")
def single_node(s3_corpus, tokenizer_specs, ray_cluster):
    bucket, corpus = s3_corpus
    out = f"s3://{bucket}/single"
    run_tokenize(job_config(corpus, tokenizer_specs, out), address=ray_cluster, quiet=True)
    return out


def _shards(uri: str) -> list[tuple[str, str, int]]:
    m = Manifest.load(uri)
    return [(e["path"], e["sha256"], e["rows"]) for e in m.shards]


def _run_child(tmp_path, cfg: dict, *flags: str) -> dict:
    job = tmp_path / "job.json"
    job.write_text(json.dumps(cfg))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    result = tmp_path / "result.json"
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    proc = run_child([sys.executable, CHILD, str(job), str(result), *flags], env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(result.read_text())


def test_multi_node_run_equals_single_node(s3_corpus, tokenizer_specs, single_node, tmp_path):
    bucket, corpus = s3_corpus
    out = f"s3://{bucket}/multi"
    res = _run_child(tmp_path, job_config(corpus, tokenizer_specs, out, ray={"resources": {"worker": 0.01}}))
    assert res["nodes"] == 4 and res["summary"]["inputs_failed"] == 0
    assert _shards(out) == _shards(single_node)
    assert Dataset.open(out).verify_all() == [] and Dataset.open(out).unreferenced_files() == []
    print(f"multi-node run: {res['wall_s']} s")


def test_losing_a_worker_node_mid_job_loses_and_doubles_nothing(s3_corpus, tokenizer_specs, single_node, tmp_path):
    bucket, corpus = s3_corpus
    out = f"s3://{bucket}/killed"
    res = _run_child(tmp_path, job_config(corpus, tokenizer_specs, out), "--kill-node")
    assert res["killed"]["titles"], "a worker node should have been removed while it ran work"
    assert res["summary"]["inputs_failed"] == 0
    # Same shard names, rows and bytes (sha256) as the single-node run: no row lost or doubled.
    assert _shards(out) == _shards(single_node)
    ds = Dataset.open(out)
    assert ds.verify_all() == [] and ds.unreferenced_files() == []
    print(f"node killed at {res['killed']['at_s']} s running {res['killed']['titles']}; run {res['wall_s']} s")


def test_ray_job_submit_runs_the_job_on_the_cluster(s3_corpus, tokenizer_specs, single_node, tmp_path):
    bucket, corpus = s3_corpus
    out = f"s3://{bucket}/submitted"
    res = _run_child(tmp_path, job_config(corpus, tokenizer_specs, out), "--submit")
    assert res["submit_rc"] == 0, res["submit_tail"]
    assert _shards(out) == _shards(single_node)
