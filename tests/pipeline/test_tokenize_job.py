"""End to end: the tokenize job on the session Ray, over the tiny corpus with planted bad records.

One shared run (`tiny_dataset`) feeds most assertions; the S3 run also kills a codec actor
mid-job, and a text-only run covers an unreadable input.
"""

from __future__ import annotations

import copy
import json
import os

import pytest

from tests.fixtures.datasets import PLANTED, PLANTED_GOOD, job_config, read_rows
from trimodal.config import from_dict
from trimodal.dataset.dataset import Dataset
from trimodal.dataset.manifest import Manifest
from trimodal.dataset.quarantine import read_quarantine
from trimodal.pipeline.job import run_tokenize
from trimodal.pipeline.job_config import JobConfig
from trimodal.pipeline.readers import list_inputs, read_input, read_origin
from trimodal.pipeline.sources import CorpusSource

pytestmark = pytest.mark.slow  # starts Ray (the tokenize job)


def _reader_ids(corpus) -> set[str]:
    ids = set()
    for spec in corpus["sources"]:
        src = from_dict(CorpusSource, spec)
        for uri in list_inputs(src):
            ids.update(r["id"] for r in read_input(src, uri))
    return ids


def test_all_three_kinds_into_one_dataset(tiny_dataset, tiny_corpus, tokenizer_specs):
    ds = Dataset.open(tiny_dataset["uri"])
    assert ds.verify_all() == []
    rows = read_rows(tiny_dataset["uri"])  # asserts unique ids
    expected = _reader_ids(tiny_corpus) - set(PLANTED)
    assert set(rows) == expected
    assert PLANTED_GOOD <= set(rows)
    kinds = {s["name"]: s["kind"] for s in tiny_corpus["sources"]}
    for r in rows.values():
        assert r["text"], r["id"]
        assert (r["image"] is not None) == (kinds[r["source"]] == "image_text"), r["id"]
        assert (r["audio"] is not None) == (kinds[r["source"]] == "audio_text"), r["id"]
    # Fingerprints are the tokenizers' own, for exactly the modalities present.
    from trimodal.tokenizers.base import load_tokenizer

    cfg = from_dict(JobConfig, copy.deepcopy(tiny_dataset["config"]))
    for m, spec in tokenizer_specs.items():
        tok = load_tokenizer(spec["kind"], spec["path"], **cfg.tokenizers[m].load_options(m, cfg.limits))
        assert ds.fingerprints[m] == tok.fingerprint()
    # Summary and manifest stats agree with the shards.
    s = tiny_dataset["summary"]
    totals = ds.manifest.compute_totals()
    assert s["samples"] == len(rows) == totals["rows"]
    assert s["tokens"] == totals["tokens"] and all(s["tokens"][m] > 0 for m in ("text", "image", "audio"))
    assert s["bytes"] == totals["bytes"] and s["inputs_failed"] == 0
    assert ds.manifest.stats["wall_seconds"] > 0 and ds.manifest.stats["tokens"] == s["tokens"]


def test_codes_equal_the_bare_tokenizer(tiny_dataset, tokenizer_specs):
    """The job's decode-on-CPU-tasks + encode-in-actors path gives exactly tokenizer.encode."""
    from trimodal.tokenizers.base import load_tokenizer, to_storage

    cfg = from_dict(JobConfig, copy.deepcopy(tiny_dataset["config"]))
    sources = {s.name: s for s in cfg.sources}
    rows = read_rows(tiny_dataset["uri"])
    picked = {}
    for r in sorted(rows.values(), key=lambda r: r["id"]):
        kind = sources[r["source"]].kind
        picked.setdefault(kind, []).append(r)
    for kind, modality in (("image_text", "image"), ("audio_text", "audio"), ("text", "text")):
        sample = picked[kind][:3] + picked[kind][-2:]
        raw = [read_origin(r["origin"], sources[r["source"]]) for r in sample]
        spec = tokenizer_specs[modality]
        tok = load_tokenizer(spec["kind"], spec["path"], **cfg.tokenizers[modality].load_options(modality, cfg.limits))
        for r, rec, codes in zip(sample, raw, tok.encode([rec[modality] for rec in raw])):
            assert r[modality] == to_storage(modality, codes).tolist(), r["id"]
        if modality != "text":  # captions / transcripts too
            text_tok = load_tokenizer(tokenizer_specs["text"]["kind"], tokenizer_specs["text"]["path"])
            for r, codes in zip(sample, text_tok.encode([rec["text"] for rec in raw])):
                assert r["text"] == codes.tolist()


def test_planted_bad_records_are_quarantined_with_their_reason(tiny_dataset):
    uri = tiny_dataset["uri"]
    q = {r["id"]: r for r in read_quarantine(uri)}
    assert {i: q[i]["reason"] for i in PLANTED if i in q} == PLANTED
    for i in PLANTED:
        assert q[i]["origin"] and q[i]["origin"].split("#")[0].endswith((".tar", ".jsonl"))
        assert i in q[i]["message"] or q[i]["origin"] in q[i]["message"]
    counts: dict[str, int] = {}
    for r in q.values():
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1
    assert Dataset.open(uri).manifest.quarantine == counts
    assert tiny_dataset["summary"]["quarantined"] == counts


def test_each_input_has_its_own_shards_and_marker(tiny_dataset, tiny_corpus):
    uri = tiny_dataset["uri"]
    m = Dataset.open(uri).manifest
    listed = [e["path"] for e in m.shards]
    assert len(listed) == len(set(listed))
    from_inputs = [p for inp in m.inputs for p in inp["shards"]]
    assert from_inputs == listed  # manifest order = input order
    for inp in m.inputs:
        assert inp["status"] == "done"
        assert all(p.startswith(f"shards/part-{inp['key']}-") for p in inp["shards"])
        assert os.path.exists(os.path.join(uri, "_progress", f"{inp['key']}.json"))
    # shard_rows = 16: the 32-image tar is cut into two shards.
    assert max(e["rows"] for e in m.shards) <= 16
    assert sorted(i["uri"] for i in m.inputs) == sorted(p for v in tiny_corpus["paths"].values() for p in v)


def test_rerun_skips_completed_inputs(tiny_dataset):
    before = Manifest.load(tiny_dataset["uri"]).to_dict()
    s = run_tokenize(copy.deepcopy(tiny_dataset["config"]), quiet=True)
    after = Manifest.load(tiny_dataset["uri"]).to_dict()
    assert s["inputs_resumed"] == s["inputs"] == len(before["inputs"])
    assert s["run"]["samples"] == 0
    assert after["shards"] == before["shards"] and after["quarantine"] == before["quarantine"]


def test_changed_job_refuses_old_progress(tiny_dataset):
    from trimodal.errors import ConfigError

    cfg = copy.deepcopy(tiny_dataset["config"])
    cfg["limits"]["max_audio_seconds"] = 5.0
    with pytest.raises(ConfigError, match="limits.max_audio_seconds"):
        run_tokenize(cfg, quiet=True)


def test_s3_input_and_output_with_a_codec_actor_killed(
    tiny_dataset, tiny_corpus, tokenizer_specs, ray_cluster, s3_bucket, tmp_path, monkeypatch
):
    """Image-text corpus and dataset on S3 (moto server); the image actor's process is SIGKILLed
    after its first batch. Ray restarts it and retries the batch: same rows and codes as the
    local run of the same inputs."""
    from trimodal.dataset.storage import boto3_client

    root = tiny_corpus["root"]
    client = boto3_client()
    corpus = copy.deepcopy(tiny_corpus)
    corpus["sources"] = [s for s in corpus["sources"] if s["kind"] == "image_text"]
    specs = {m: tokenizer_specs[m] for m in ("text", "image")}
    for src in corpus["sources"]:
        s3_paths = []
        for p in src["paths"]:
            rel = os.path.relpath(p, root)
            client.upload_file(p, s3_bucket, f"corpus/{rel}")
            s3_paths.append(f"s3://{s3_bucket}/corpus/{rel}")
        src["paths"] = s3_paths
    flag = tmp_path / "killed.pid"
    monkeypatch.setenv(
        "TRIMODAL_FAULTS", json.dumps({"kill_actor": {"modality": "image", "flag": str(flag), "after_calls": 0}})
    )
    out = f"s3://{s3_bucket}/datasets/tiny"
    s = run_tokenize(job_config(corpus, specs, out), address=ray_cluster, quiet=True)
    pid = int(flag.read_text())
    assert pid != os.getpid()  # a Ray worker process was killed, not this one
    assert s["inputs_failed"] == 0
    local = {i: r for i, r in read_rows(tiny_dataset["uri"], root=root).items() if r["source"] == "demo_images"}
    remote = read_rows(out, root=f"s3://{s3_bucket}/corpus")
    assert remote.keys() == local.keys() and len(local) > 16
    for i, r in local.items():
        assert remote[i] == r, i
    q_local = {r["id"]: r["reason"] for r in read_quarantine(tiny_dataset["uri"]) if r["source"] == "demo_images"}
    assert {r["id"]: r["reason"] for r in read_quarantine(out)} == q_local
    assert Dataset.open(out).verify_all() == []


def test_unreadable_input_is_reported_and_retried(tmp_path, text_tokenizer_path, ray_cluster):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(5)))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"this is not gzip data at all")
    cfg = {
        "sources": [{"name": "docs", "kind": "text", "paths": [str(good), str(broken)]}],
        "tokenizers": {"text": {"kind": "sentencepiece", "path": text_tokenizer_path}},
        "output": {"uri": str(tmp_path / "ds")},
        "progress": {"enabled": False},
    }
    s = run_tokenize(copy.deepcopy(cfg), address=ray_cluster, quiet=True)
    assert s["samples"] == 5
    assert [f["uri"] for f in s["failed_inputs"]] == [str(broken)]
    assert str(broken) in s["failed_inputs"][0]["error"]
    m = Dataset.open(str(tmp_path / "ds")).manifest
    assert {i["uri"]: i["status"] for i in m.inputs} == {str(good): "done", str(broken): "failed"}
    assert m.stats["failed_inputs"] == s["failed_inputs"]
    # The next run retries only the failed input.
    s2 = run_tokenize(copy.deepcopy(cfg), address=ray_cluster, quiet=True)
    assert s2["inputs_resumed"] == 1 and s2["samples"] == 5 and len(s2["failed_inputs"]) == 1
