"""Markers and job claims in `_progress/`, locally and on S3 (no Ray needed)."""

from __future__ import annotations

import json

import pytest

from trimodal.dataset.storage import resolve
from trimodal.errors import ConfigError
from trimodal.pipeline.resume import MarkerStore, input_key


@pytest.fixture(params=["local", "s3"])
def out_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "ds")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/ds"


def test_markers_restart_and_refusal(out_uri):
    store = MarkerStore(out_uri)
    parts = {"fingerprints": {"text": {"weights_sha256": "aa"}}, "limits": {"max_text_tokens": 10}}
    store.begin("fp1", parts, "resume")
    store.write("k1", {"job": "fp1", "key": "k1", "status": "done"})
    store.write("k2", {"job": "fp1", "key": "k2", "status": "failed"})  # retried by the next run
    store.write("k3", {"job": "other", "key": "k3", "status": "done"})  # not this job's
    assert set(store.load_all("fp1")) == {"k1"}
    root = resolve(out_uri)
    root.join("manifest.json").write_bytes_atomic(b"{}")
    root.join("shards/part-k1-0000.arrow").write_bytes_atomic(b"x")
    root.join("quarantine/k1.jsonl").write_bytes_atomic(b"{}\n")

    store.begin("fp1", parts, "resume")  # the same job resumes
    assert set(store.load_all("fp1")) == {"k1"} and root.join("manifest.json").exists()

    other = {"fingerprints": {"text": {"weights_sha256": "bb"}}, "limits": {"max_text_tokens": 10}}
    with pytest.raises(ConfigError, match=r"fingerprints\.text\.weights_sha256"):
        store.begin("fp2", other, "resume")
    store.begin("fp2", other, "restart")
    for rel in ("manifest.json", "shards/part-k1-0000.arrow", "quarantine/k1.jsonl", "_progress/k1.json"):
        assert not root.join(rel).exists(), rel
    assert json.loads(root.join("_progress/job.json").read_bytes())["fingerprint"] == "fp2"
    assert store.load_all("fp2") == {}


def test_input_keys_are_stable_and_distinct():
    a = input_key("web", "/data/a/part-0.jsonl.gz", "a/part-0")
    assert a == input_key("web", "/data/a/part-0.jsonl.gz", "a/part-0")
    assert a.startswith("web-a_part-0-")
    assert a != input_key("web", "/data/b/part-0.jsonl.gz", "a/part-0")  # same name, other file
    assert a != input_key("news", "/data/a/part-0.jsonl.gz", "a/part-0")
    assert "/" not in input_key("my source/x", "s3://b/k?x=1", "k?x=1")
