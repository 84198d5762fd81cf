"""URI resolution and glob expansion, on local disk and against the S3 test server."""

import pytest

from trimodal.dataset.storage import boto3_client, expand, resolve
from trimodal.errors import InputError


def test_local_expand(tmp_path):
    for rel in ["a/x.jsonl", "a/y.jsonl", "a/sub/z.jsonl", "a/w.txt", "a/.hidden.jsonl"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}")
    base = str(tmp_path / "a")
    assert expand(f"{base}/*.jsonl") == [f"{base}/x.jsonl", f"{base}/y.jsonl"]
    assert expand(f"{base}/**/*.jsonl") == [f"{base}/sub/z.jsonl", f"{base}/x.jsonl", f"{base}/y.jsonl"]
    assert len(expand(base)) == 4  # a directory expands to every visible file below it
    assert expand(f"{base}/w.txt") == [f"{base}/w.txt"]
    with pytest.raises(InputError, match="nothing.jsonl"):
        expand(f"{base}/nothing.jsonl")
    with pytest.raises(InputError, match=r"no files match .*\*\.parquet"):
        expand(f"{base}/*.parquet")


def test_local_expand_lists_dangling_symlinks_and_stops_at_loops(tmp_path):
    import os

    base = tmp_path / "a"
    (base / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "r.jsonl").write_text("{}")
    (base / "x.jsonl").write_text("{}")
    os.symlink(tmp_path / "gone.jsonl", base / "dangling.jsonl")
    os.symlink(tmp_path / "elsewhere", base / "linked")  # a linked directory is followed
    os.symlink("..", base / "sub" / "up")  # a loop back into an ancestor is not
    os.symlink(base / "_hidden", base / "_hidden.jsonl")  # hidden names stay hidden
    assert expand(str(base)) == [str(base / n) for n in ("dangling.jsonl", "linked/r.jsonl", "x.jsonl")]
    assert expand(f"{base}/*.jsonl") == [str(base / "dangling.jsonl"), str(base / "x.jsonl")]
    with pytest.raises(InputError, match=r"input not found: .*dangling.jsonl \(a symlink to .*gone.jsonl"):
        expand(str(base / "dangling.jsonl"))


def test_s3_expand_and_atomic_write(s3_bucket):
    s3 = boto3_client()
    for key in ["c/p1.tar", "c/p2.tar", "c/q/p3.tar", "c/readme.md"]:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    assert expand(f"s3://{s3_bucket}/c/*.tar") == [f"s3://{s3_bucket}/c/p1.tar", f"s3://{s3_bucket}/c/p2.tar"]
    assert len(expand(f"s3://{s3_bucket}/c")) == 4
    loc = resolve(f"s3://{s3_bucket}/out/obj.bin")
    loc.write_bytes_atomic(b"hello")
    assert loc.exists() and loc.read_bytes() == b"hello"
    with pytest.raises(InputError, match="missing.bin"):
        resolve(f"s3://{s3_bucket}/missing.bin").read_bytes()
