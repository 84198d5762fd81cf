"""Every reader against the S3 test server (moto in server mode): listing by prefix and glob,
the same records as from local disk (only the URI part of origins differs), re-reading by
origin, and unreadable objects named by their s3:// URI."""

import pyarrow as pa
import pytest

from trimodal.config import from_dict
from trimodal.dataset.storage import boto3_client
from trimodal.errors import InputError
from trimodal.pipeline.readers import list_inputs, read_input, read_origin, read_origins
from trimodal.pipeline.sources import CorpusSource

from ._data import IMAGE_EXPECTED, compress, flac, image_members, jsonl_bytes, parquet_bytes, tar_bytes

FILES = {
    "text/a/part-0.jsonl.gz": compress(jsonl_bytes([{"text": "one"}, b"{bad", {"text": "three"}]), "gz"),
    "text/b/part-0.jsonl.zst": compress(jsonl_bytes([{"text": "four"}]), "zst"),
    "text/notes.txt": b"a whole document\nin two lines\n",
    "text/docs.parquet": parquet_bytes({"text": pa.array([b"p0", b"\xff"], pa.binary())}),
    "text/_SUCCESS": b"",  # hidden marker files are not inputs
    "images/shard-00000.tar": tar_bytes(image_members()),
    "images/shard-00001.tar.gz": compress(tar_bytes(image_members()[:4]), "gz"),
    "audio/speech.parquet": parquet_bytes({"audio": pa.array([flac()], pa.binary()), "text": ["hello"]}),
    "audio/shard.tar": tar_bytes([("u.flac", flac()), ("u.txt", b"a tone")]),
}


@pytest.fixture
def corpus(s3_bucket, tmp_path):
    s3 = boto3_client()
    for key, body in FILES.items():
        s3.put_object(Bucket=s3_bucket, Key=f"corpus/{key}", Body=body)
        local = tmp_path / "corpus" / key
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(body)
    return f"s3://{s3_bucket}/corpus", str(tmp_path / "corpus")


def _src(kind, root, sub):
    return from_dict(CorpusSource, {"name": kind, "kind": kind, "paths": [f"{root}/{sub}"]})


def _read_all(src):
    return [r for u in list_inputs(src) for r in read_input(src, u)]


@pytest.mark.parametrize(
    "kind, sub, n_inputs", [("text", "text", 4), ("image_text", "images", 2), ("audio_text", "audio", 2)]
)
def test_s3_reads_like_local_disk(corpus, kind, sub, n_inputs):
    s3_root, local_root = corpus
    src, local = _src(kind, s3_root, sub), _src(kind, local_root, sub)
    uris = list_inputs(src)
    assert len(uris) == n_inputs and all(u.startswith(f"{s3_root}/{sub}/") for u in uris)
    recs, local_recs = _read_all(src), _read_all(local)
    assert recs, "no records"
    # Same ids, texts, media and reasons; the origin differs only in where the corpus lives.
    assert [{**r, "origin": r["origin"].replace(s3_root, ""), "error_message": None} for r in recs] == [
        {**r, "origin": r["origin"].replace(local_root, ""), "error_message": None} for r in local_recs
    ]
    bad = [r for r in recs if r["error_reason"]]
    assert all(r["error_message"].startswith(f"{s3_root}/") for r in bad)
    again = read_origins(src, [r["origin"] for r in recs])
    assert [again[r["origin"]] for r in recs] == recs


def test_s3_image_tar_records_and_glob(corpus):
    s3_root, _ = corpus
    src = from_dict(CorpusSource, {"name": "img", "kind": "image_text", "paths": [f"{s3_root}/images/*.tar"]})
    (uri,) = list_inputs(src)
    recs = list(read_input(src, uri))
    assert {r["origin"].split("#", 1)[1]: r["error_reason"] for r in recs} == {
        k: reason for k, (reason, _) in IMAGE_EXPECTED.items()
    }
    assert recs[0]["id"] == "img/shard-00000/good0" and recs[0]["image"] == dict(image_members())["good0.png"]
    assert read_origin(recs[1]["origin"], src) == recs[1]


def test_s3_unreadable_objects_are_named(corpus, s3_bucket):
    s3_root, _ = corpus
    s3 = boto3_client()
    s3.put_object(Bucket=s3_bucket, Key="corpus/broken/cut.tar", Body=FILES["images/shard-00000.tar"][:3000])
    src = _src("image_text", s3_root, "broken")
    with pytest.raises(InputError, match=rf"{s3_root}/broken/cut.tar"):
        list(read_input(src, f"{s3_root}/broken/cut.tar"))
    with pytest.raises(InputError, match=rf"{s3_root}/broken/gone.tar"):
        list(read_input(src, f"{s3_root}/broken/gone.tar"))
    with pytest.raises(InputError, match=rf"{s3_root}/nothing"):
        list_inputs(_src("text", s3_root, "nothing"))
