"""CorpusSource validation (errors name the key) and format detection."""

import pytest

from trimodal.config import from_dict
from trimodal.errors import ConfigError
from trimodal.pipeline.sources import CorpusSource, detect_format, split_compression


def _src(**kw):
    return from_dict(CorpusSource, {"name": "c", "kind": "text", "paths": ["x.jsonl"], **kw})


def test_defaults_and_round_trip():
    s = _src()
    assert s.format == "auto" and s.text_field == "text" and s.txt_mode == "file"
    assert "json" in s.caption_keys and "flac" in s.audio_keys and "jpg" in s.image_keys
    assert _src(kind="audio_text").missing_caption_reason == "missing_transcript"
    assert _src(kind="image_text").missing_caption_reason == "missing_caption"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"kind": "video"}, r"kind: 'video' is not one of"),
        ({"paths": []}, r"paths: at least one"),
        ({"paths": "x.jsonl"}, r"paths: expected a list"),
        ({"paths": [""]}, r"paths\[0\]"),
        ({"name": "a/b"}, r"name: 'a/b'"),
        ({"name": ""}, r"name: ''"),
        ({"format": "webdataset"}, r"format: 'webdataset' cannot hold text"),
        ({"format": "csv"}, r"format: 'csv' is not one of"),
        ({"txt_mode": "para"}, r"txt_mode"),
        ({"kind": "image_text", "image_keys": [".jpg"]}, r"image_keys\[0\]: '.jpg'"),
        ({"kind": "image_text", "caption_keys": []}, r"caption_keys: at least one"),
        ({"kind": "audio_text", "audio_keys": []}, r"audio_keys: at least one"),
        ({"kind": "image_text", "json_caption_fields": []}, r"json_caption_fields"),
        ({"text_field": ""}, r"text_field: must not be empty"),
    ],
)
def test_bad_values_name_the_key(kw, match):
    with pytest.raises(ConfigError, match=match):
        _src(**kw)


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"text_feild: unknown key \(did you mean 'text_field'\?\)"):
        _src(text_feild="body")


def test_format_detection():
    s = _src()
    assert split_compression("a/b.jsonl.gz") == ("a/b.jsonl", "gzip")
    assert split_compression("a/b.tar.zst") == ("a/b.tar", "zstd")
    assert split_compression("a/b.parquet") == ("a/b.parquet", None)
    assert [detect_format(s, u) for u in ["x.jsonl.gz", "x.json", "x.TXT.zst", "x.parquet", "x.tgz", "x.csv"]] == [
        "jsonl",
        "jsonl",
        "txt",
        "parquet",
        "webdataset",
        None,
    ]
    assert detect_format(_src(format="txt"), "notes.log") == "txt"
