"""Text readers (JSONL, Parquet, .txt; plain, .gz, .zst) on local files: records, planted bad
records, ids and origins, listing, unreadable inputs, and re-reading by origin."""

import gzip

import pyarrow as pa
import pytest

from trimodal.config import from_dict
from trimodal.errors import InputError
from trimodal.pipeline.readers import list_inputs, read_input, read_origin, read_origins
from trimodal.pipeline.sources import SourceConfig

from ._data import compress, jsonl_bytes, parquet_bytes

JSONL_LINES = [
    {"text": "first document", "meta": 1},
    b"",  # blank line: skipped, but counted in numbering
    {"text": "second \u00e9t\u00e9 document"},
    b"{broken json",
    b'{"text": "caf\xe9"}',  # Latin-1 byte inside the JSON: not UTF-8
    {"text": "   "},
    {"body": "no text field"},
    {"text": 42},
    b"[1, 2]",
    b'{"text": "lone \\ud800 surrogate"}',
    {"text": "last document"},
]
# line number -> (reason, text)
JSONL_EXPECTED = {
    1: (None, "first document"),
    3: (None, "second \u00e9t\u00e9 document"),
    4: ("bad_json", None),
    5: ("invalid_utf8", None),
    6: ("empty_text", None),
    7: ("missing_text", None),
    8: ("bad_field", None),
    9: ("bad_json", None),
    10: ("invalid_utf8", None),
    11: (None, "last document"),
}


def source(paths, **kw) -> SourceConfig:
    return from_dict(SourceConfig, {"name": "web", "kind": "text", "paths": [str(p) for p in paths], **kw})


def _summary(recs):
    return {
        r["origin"].rsplit("#L", 1)[1] if "#L" in r["origin"] else r["origin"]: (r["error_reason"], r["text"])
        for r in recs
    }


@pytest.mark.parametrize("comp", [None, "gz", "zst"])
def test_jsonl_records_and_planted_errors(tmp_path, comp):
    name = "part-0.jsonl" + (f".{comp}" if comp else "")
    (tmp_path / "c").mkdir()
    f = tmp_path / "c" / name
    f.write_bytes(compress(jsonl_bytes(JSONL_LINES), comp))
    src = source([tmp_path / "c"])
    assert list_inputs(src) == [str(f)]
    recs = list(read_input(src, str(f)))
    got = {int(k): (r, t if r is None else None) for k, (r, t) in _summary(recs).items()}
    assert got == JSONL_EXPECTED
    for r in recs:
        n = r["origin"].rsplit("#L", 1)[1]
        assert r["id"] == f"web/part-0/{n}" and r["source"] == "web"
        assert r["origin"] == f"{f}#L{n}"
        assert r["image"] is None and r["audio"] is None
        if r["error_reason"]:
            assert r["error_message"].startswith(r["origin"]), r["error_message"]
        else:
            assert r["error_message"] is None
    # Every record, good or bad, is found again from its origin, in one pass.
    again = read_origins(src, [r["origin"] for r in recs])
    assert [again[r["origin"]] for r in recs] == recs


def test_jsonl_custom_field_and_bom(tmp_path):
    f = tmp_path / "docs.ndjson"
    f.write_bytes(b"\xef\xbb\xbf" + jsonl_bytes([{"body": "with bom"}, {"body": "plain"}]))
    recs = list(read_input(source([f], text_field="body"), str(f)))
    assert [(r["id"], r["text"]) for r in recs] == [("web/docs/1", "with bom"), ("web/docs/2", "plain")]


def test_ids_are_relative_to_the_listed_directory_and_deterministic(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "c" / sub).mkdir(parents=True)
        (tmp_path / "c" / sub / "part.jsonl").write_bytes(jsonl_bytes([{"text": sub}]))
    (tmp_path / "c" / "README.md").write_text("not data for a jsonl corpus? .md is text, so it is read")
    (tmp_path / "c" / "index.csv").write_text("skipped: no text reader")
    src = source([tmp_path / "c"])
    uris = list_inputs(src)
    assert uris == sorted(uris) and uris == list_inputs(src)
    assert [u.rsplit("/c/", 1)[1] for u in uris] == ["README.md", "a/part.jsonl", "b/part.jsonl"]
    ids = [r["id"] for u in uris for r in read_input(src, u)]
    assert ids == ["web/README", "web/a/part/1", "web/b/part/1"]
    assert ids == [r["id"] for u in list_inputs(src) for r in read_input(src, u)]
    # Through a glob, keys are relative to the glob's static part: the same ids.
    g = source([f"{tmp_path}/c/*/*.jsonl"])
    assert [r["id"] for u in list_inputs(g) for r in read_input(g, u)] == ids[1:]


def test_colliding_input_keys_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "part.jsonl").write_bytes(jsonl_bytes([{"text": d}]))
    with pytest.raises(InputError, match=r"both have the key 'part'"):
        list_inputs(source([tmp_path / "a" / "part.jsonl", tmp_path / "b" / "part.jsonl"]))


def test_listing_errors_name_the_path(tmp_path):
    with pytest.raises(InputError, match="nothing-here"):
        list_inputs(source([tmp_path / "nothing-here"]))
    f = tmp_path / "table.csv"
    f.write_text("a,b\n")
    with pytest.raises(InputError, match=r"table.csv: cannot read as text"):
        list_inputs(source([f]))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.csv").write_text("a\n")
    with pytest.raises(InputError, match=r"no readable text inputs"):
        list_inputs(source([tmp_path / "d"]))


def test_unreadable_inputs_raise_input_error_naming_the_path(tmp_path):
    missing = tmp_path / "gone.jsonl"
    with pytest.raises(InputError, match="gone.jsonl"):
        list(read_input(source([tmp_path]), str(missing)))
    notgz = tmp_path / "fake.jsonl.gz"
    notgz.write_bytes(b"plain bytes, not gzip\n")
    with pytest.raises(InputError, match=r"fake.jsonl.gz.*at the start"):
        list(read_input(source([notgz]), str(notgz)))
    badpq = tmp_path / "bad.parquet"
    badpq.write_bytes(b"PAR1 garbage")
    with pytest.raises(InputError, match=r"bad.parquet"):
        list(read_input(source([badpq]), str(badpq)))


def test_truncated_gzip_keeps_complete_records_then_raises(tmp_path):
    data = gzip.compress(jsonl_bytes([{"text": f"document number {i} " * 20} for i in range(400)]), mtime=0)
    f = tmp_path / "cut.jsonl.gz"
    f.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(InputError, match=r"cut.jsonl.gz.*after \d+ record") as ei:
        for r in read_input(source([f]), str(f)):
            got.append(r)
    assert 0 < len(got) < 400 and ei.value.records_read == len(got)
    assert all(r["error_reason"] is None for r in got)


@pytest.mark.parametrize("comp", [None, "gz", "zst"])
def test_txt_line_and_file_modes(tmp_path, comp):
    ext = ".txt" + (f".{comp}" if comp else "")
    body = "first line doc\n\n  \nthird doc \u2713\nbad \xff\n".encode("utf-8").replace(b"\xc3\xbf", b"\xff")
    f = tmp_path / f"notes{ext}"
    f.write_bytes(compress(body, comp))
    lines = list(read_input(source([f], txt_mode="line"), str(f)))
    assert [(r["id"], r["error_reason"], r["text"]) for r in lines] == [
        ("web/notes/1", None, "first line doc"),
        ("web/notes/4", None, "third doc \u2713"),
        ("web/notes/5", "invalid_utf8", None),
    ]
    assert lines[1]["origin"] == f"{f}#L4"
    assert read_origin(lines[1]["origin"], source([f], txt_mode="line")) == lines[1]
    # File mode: the whole file is one document, and one bad byte spoils it.
    (rec,) = read_input(source([f]), str(f))
    assert rec["error_reason"] == "invalid_utf8" and rec["origin"] == str(f) and rec["id"] == "web/notes"
    good = tmp_path / f"book{ext}"
    good.write_bytes(compress(b"Chapter 1\n\nIt was a dark night.\n", comp))
    (rec,) = read_input(source([good]), str(good))
    assert (rec["error_reason"], rec["text"]) == (None, "Chapter 1\n\nIt was a dark night.\n")
    assert read_origin(rec["origin"], source([good])) == rec
    empty = tmp_path / f"empty{ext}"
    empty.write_bytes(compress(b" \n\n", comp))
    (rec,) = read_input(source([empty]), str(empty))
    assert rec["error_reason"] == "empty_text"


def test_parquet_text(tmp_path):
    texts = [b"row zero", None, b"bad \xff utf8", b"  ", "row four \u00e9".encode()] * 3
    f = tmp_path / "docs.parquet"
    f.write_bytes(parquet_bytes({"content": pa.array(texts, pa.binary()), "n": list(range(15))}, row_group_size=4))
    src = source([f], text_field="content")
    recs = list(read_input(src, str(f)))
    assert [r["error_reason"] for r in recs[:5]] == [None, "missing_text", "invalid_utf8", "empty_text", None]
    assert [r["origin"].rsplit("#", 1)[1] for r in recs] == [f"row={i}" for i in range(15)]
    assert recs[14]["text"] == "row four \u00e9" and recs[14]["id"] == "web/docs/14"
    # Re-reading touches only the row groups of the wanted rows and gives identical records.
    wanted = [recs[i]["origin"] for i in (14, 0, 6)]
    assert read_origins(src, wanted) == {o: recs[int(o.rsplit("=", 1)[1])] for o in wanted}
    # A string column works the same way.
    g = tmp_path / "strings.parquet"
    g.write_bytes(parquet_bytes({"text": ["a", "b"]}))
    assert [r["text"] for r in read_input(source([g]), str(g))] == ["a", "b"]
    with pytest.raises(InputError, match=r"no column 'body' \(set text_field\); columns: text"):
        list(read_input(source([g], text_field="body"), str(g)))


def test_read_origin_errors_and_guessed_source(tmp_path):
    f = tmp_path / "part.jsonl"
    f.write_bytes(jsonl_bytes([{"text": "a"}, {"text": "b"}]))
    src = source([f])
    with pytest.raises(InputError, match=r"#L9: no such record"):
        read_origin(f"{f}#L9", src)
    with pytest.raises(InputError, match=r"no longer exists"):
        read_origin(f"{tmp_path}/other.jsonl#L1", src)
    # Without a source, defaults are guessed from the file: same text, placeholder source name.
    rec = read_origin(f"{f}#L2")
    assert (rec["text"], rec["origin"], rec["id"]) == ("b", f"{f}#L2", "origin/part/2")
