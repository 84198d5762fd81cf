"""The on-disk dataset: shard/manifest round trips (local and S3), integrity checks, inspect."""

import json

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from trimodal.cli import cli
from trimodal.dataset.dataset import Dataset, build_dataset, summarize
from trimodal.dataset.manifest import Manifest
from trimodal.dataset.quarantine import read_quarantine
from trimodal.dataset.shards import SCHEMA, rows_to_table
from trimodal.errors import IntegrityError

FPS = {
    "text": {
        "kind": "sentencepiece",
        "name": "t",
        "modality": "text",
        "codebook_size": 100,
        "levels": 1,
        "weights_sha256": "a",
    },
    "image": {
        "kind": "vqmodel",
        "name": "i",
        "modality": "image",
        "codebook_size": 64,
        "levels": 1,
        "code_grid": [4, 4],
        "image_size": 32,
        "weights_sha256": "b",
    },
    "audio": {
        "kind": "dac",
        "name": "a",
        "modality": "audio",
        "codebook_size": 32,
        "levels": 2,
        "sample_rate": 16000,
        "frame_rate": 62.5,
        "weights_sha256": "c",
    },
}


def make_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = i % 3
        rows.append(
            {
                "id": f"src{kind}/{i}",
                "source": f"src{kind}",
                "text": rng.integers(0, 100, rng.integers(1, 50)).astype(np.int32),
                "image": rng.integers(0, 64, 16).astype(np.int32) if kind == 1 else None,
                "audio": rng.integers(0, 32, 2 * rng.integers(1, 20)).astype(np.int32) if kind == 2 else None,
                "origin": f"file:///raw/{i}.tar#{i}",
            }
        )
    return rows


def assert_same_rows(table: pa.Table, rows):
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    for col in ("text", "image", "audio"):
        got = table.column(col).to_pylist()
        for g, r in zip(got, rows):
            if r[col] is None:
                assert g is None
            else:
                assert g == list(r[col])


def test_rows_to_table_schema_and_nulls():
    rows = make_rows(7)
    t = rows_to_table(rows)
    assert t.schema.equals(SCHEMA)
    assert_same_rows(t, rows)


def test_local_round_trip_and_manifest(tmp_path):
    rows = make_rows(25)
    uri = str(tmp_path / "ds")
    m = build_dataset(
        uri,
        rows,
        FPS,
        shard_rows=10,
        quarantine=[{"id": "x/1", "source": "x", "origin": "o", "reason": "corrupt_image", "message": "m"}],
    )
    assert [s["rows"] for s in m.shards] == [10, 10, 5]
    ds = Dataset.open(uri)
    assert ds.num_rows == 25
    assert ds.fingerprints == FPS
    table = pa.concat_tables(ds.iter_tables())
    assert_same_rows(table, rows)
    total_text = sum(len(r["text"]) for r in rows)
    assert ds.manifest.totals["tokens"]["text"] == total_text
    assert ds.manifest.totals["by_source"]["src1"]["rows"] == sum(1 for r in rows if r["source"] == "src1")
    assert ds.manifest.quarantine == {"corrupt_image": 1}
    assert read_quarantine(uri)[0]["id"] == "x/1"


def test_flipped_byte_is_detected_naming_the_shard(tmp_path):
    uri = str(tmp_path / "ds")
    m = build_dataset(uri, make_rows(30), FPS, shard_rows=10)
    path = tmp_path / "ds" / m.shards[1]["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    ds = Dataset.open(uri)
    ds.read_shard(0)  # untouched shards still read
    with pytest.raises(IntegrityError, match="part-00001"):
        ds.read_shard(1)
    assert len(ds.verify_all()) == 1


def test_truncated_shard_is_detected_even_without_hashing(tmp_path):
    uri = str(tmp_path / "ds")
    m = build_dataset(uri, make_rows(10), FPS, shard_rows=10)
    path = tmp_path / "ds" / m.shards[0]["path"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match="part-00000.*size"):
        Dataset.open(uri, verify="size").read_shard(0)


def test_missing_manifest_is_refused(tmp_path):
    with pytest.raises(IntegrityError, match="no manifest.json"):
        Dataset.open(str(tmp_path))


def test_s3_round_trip(s3_bucket):
    rows = make_rows(12)
    uri = f"s3://{s3_bucket}/datasets/demo"
    build_dataset(uri, rows, FPS, shard_rows=5)
    ds = Dataset.open(uri)
    assert ds.num_rows == 12
    assert_same_rows(pa.concat_tables(ds.iter_tables()), rows)
    assert Manifest.load(uri).totals["shards"] == 3


def test_s3_corruption_is_detected(s3_bucket):
    from trimodal.dataset.storage import boto3_client

    uri = f"s3://{s3_bucket}/ds"
    m = build_dataset(uri, make_rows(6), FPS, shard_rows=6)
    key = f"ds/{m.shards[0]['path']}"
    s3 = boto3_client()
    data = bytearray(s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    data[100] ^= 0x01
    s3.put_object(Bucket=s3_bucket, Key=key, Body=bytes(data))
    with pytest.raises(IntegrityError, match="part-00000"):
        Dataset.open(uri).read_shard(0)


def test_inspect_cli_human_and_json(tmp_path):
    uri = str(tmp_path / "ds")
    build_dataset(
        uri,
        make_rows(9),
        FPS,
        shard_rows=4,
        quarantine=[{"id": "a", "source": "s", "origin": "o", "reason": "empty_text", "message": "m"}] * 2,
    )
    runner = CliRunner()
    res = runner.invoke(cli, ["inspect", uri])
    assert res.exit_code == 0, res.output
    assert "9 in 3 shards" in res.output and "empty_text 2" in res.output
    res = runner.invoke(cli, ["inspect", uri, "--json"])
    s = json.loads(res.output)
    assert s == json.loads(json.dumps(summarize(Dataset.open(uri))))
    assert s["samples"] == 9 and s["quarantine"] == {"empty_text": 2}


def test_inspect_text_shows_failed_inputs(tmp_path):
    # The text output used to hide them: only --json (through stats) named a failed input.
    uri = str(tmp_path / "ds")
    inputs = [
        {"key": "k0", "uri": "/c/good.jsonl", "source": "web", "status": "done", "error": None},
        {"key": "k1", "uri": "/c/bad.jsonl.gz", "source": "web", "status": "failed", "error": "damaged gzip data"},
    ]
    build_dataset(uri, make_rows(3), FPS, shard_rows=3, inputs=inputs)
    for args in (["inspect", uri], ["inspect", uri, "--verify"]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
        assert "inputs    2, 1 FAILED" in res.output
        assert "FAILED INPUT /c/bad.jsonl.gz: damaged gzip data" in res.output
    s = json.loads(CliRunner().invoke(cli, ["inspect", uri, "--json"]).output)
    assert s["failed_inputs"] == [{"uri": "/c/bad.jsonl.gz", "key": "k1", "error": "damaged gzip data"}]


@pytest.mark.slow  # spawns a subprocess
def test_inspect_verify_exit_code(tmp_path):
    uri = str(tmp_path / "ds")
    m = build_dataset(uri, make_rows(5), FPS, shard_rows=5)
    path = tmp_path / "ds" / m.shards[0]["path"]
    data = bytearray(path.read_bytes())
    data[50] ^= 1
    path.write_bytes(bytes(data))
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "trimodal", "inspect", uri, "--verify"], capture_output=True, text=True)
    assert res.returncode == 3
    assert "part-00000" in res.stderr


def test_format_1_datasets_stay_readable_and_migrate_in_place(tmp_path):
    """A dataset written with the format-1 manifest (shards and inputs inline, no length index)
    reads the same; `migrate` adds the indexes and tables and keeps every shard byte."""
    import json

    import numpy as np

    from trimodal.dataset.dataset import Dataset, build_dataset
    from trimodal.dataset.migrate import migrate

    uri = str(tmp_path / "old")
    rows = [
        {"id": f"s/{i}", "source": "s", "text": np.arange(i % 7 + 1, dtype=np.int32), "origin": f"o{i}"}
        for i in range(25)
    ]
    build_dataset(uri, rows, {"text": {"kind": "sentencepiece"}}, shard_rows=10)
    new = Dataset.open(uri)
    entries = list(new.shards)
    for e in entries:  # write it as a format-1 dataset would have been: no index files
        e.pop("index")
        (tmp_path / "old" / "index" / e["path"].split("/")[-1]).unlink()
    v1 = {
        "format_version": 1,
        "fingerprints": new.fingerprints,
        "shards": entries,
        "inputs": [],
        "quarantine": {},
        "stats": {},
        "job": {},
        "totals": {},
        "created": "2026-01-01T00:00:00Z",
    }
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(v1))
    for t in (tmp_path / "old" / "tables").iterdir():
        t.unlink()

    old = Dataset.open(uri)
    assert old.manifest.format_version == 1 and old.num_rows == 25
    assert old.read_index(0).column("text").to_pylist() == [i % 7 + 1 for i in range(10)]  # computed
    before = [(tmp_path / "old" / e["path"]).read_bytes() for e in entries]

    assert migrate(uri) == {"from": 1, "to": 2, "shards": 3}
    m = Dataset.open(uri)
    assert m.manifest.format_version == 2 and m.verify_all() == [] and m.unreferenced_files() == []
    assert [(tmp_path / "old" / e["path"]).read_bytes() for e in m.shards] == before
    assert m.read_index(2).column("text").to_pylist() == [i % 7 + 1 for i in range(20, 25)]
    assert migrate(uri)["shards"] == 0  # already format 2


def test_length_index_keys_follow_the_ids_and_legacy_indexes_stay_readable(tmp_path):
    """Each length index row carries the key of its sample's id (the same key whatever shard
    holds it); an index written before the key column still opens, and `shard_keys` recovers
    its keys from the shard's ids."""
    import hashlib

    from trimodal.dataset.shards import INDEX_SCHEMA_V1, open_index, sample_keys, shard_keys
    from trimodal.dataset.storage import resolve

    uri = str(tmp_path / "ds")
    rows = [{"id": f"s/{i}", "source": "s", "text": np.arange(3, dtype=np.int32), "origin": "o"} for i in range(25)]
    build_dataset(uri, rows, {"text": {"kind": "sentencepiece"}}, shard_rows=10)
    ds = Dataset.open(uri)
    root = resolve(uri)
    keys = np.concatenate([open_index(root, e).column("key").to_numpy() for e in ds.shards])
    want = [int.from_bytes(hashlib.blake2b(f"s/{i}".encode(), digest_size=8).digest(), "little") for i in range(25)]
    assert keys.tolist() == want
    assert sample_keys(["s/3", "s/4"]).tolist() == want[3:5]
    # an index of the earlier layout: the same rows without the key column
    e = ds.shards[1]
    legacy = open_index(root, e).select(INDEX_SCHEMA_V1.names)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, INDEX_SCHEMA_V1) as w:
        w.write_table(legacy)
    data = sink.getvalue().to_pybytes()
    (tmp_path / "ds" / e["index"]["path"]).write_bytes(data)
    entry = {**e, "index": {**e["index"], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
    assert open_index(root, entry).schema.names == INDEX_SCHEMA_V1.names
    assert shard_keys(root, entry).tolist() == want[10:20]
