"""Text readers (JSONL, Parquet, .txt; plain, .gz, .zst) on local files: records, planted bad
records, ids and origins, listing, unreadable inputs, and re-reading by origin."""

import gzip

import pyarrow as pa
import pytest

from trimodal.config import from_dict
from trimodal.errors import InputError
from trimodal.pipeline.readers import list_inputs, read_input, read_origin, read_origins
from trimodal.pipeline.sources import CorpusSource

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


def source(paths, **kw) -> CorpusSource:
    return from_dict(CorpusSource, {"name": "web", "kind": "text", "paths": [str(p) for p in paths], **kw})


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
    with pytest.raises(InputError, match=r"fake.jsonl.gz: damaged gzip data .*Not a gzipped file"):
        list(read_input(source([notgz]), str(notgz)))
    badpq = tmp_path / "bad.parquet"
    badpq.write_bytes(b"PAR1 garbage")
    with pytest.raises(InputError, match=r"bad.parquet"):
        list(read_input(source([badpq]), str(badpq)))


def _docs(n: int = 930) -> bytes:
    return jsonl_bytes([{"text": f"document number {i} " + "lorem ipsum dolor sit amet " * 8} for i in range(n)])


def _read_all(src, f) -> tuple[list[dict], InputError | None]:
    got = []
    try:
        for r in read_input(src, str(f)):
            got.append(r)
    except InputError as e:
        return got, e
    return got, None


def _flip(data: bytes, at: int, n: int = 8) -> bytes:
    b = bytearray(data)
    for j in range(at, at + n):
        b[j] ^= 0x55
    return bytes(b)


@pytest.mark.parametrize(
    "damage",
    ["gz_flip", "gz_flip_second_member", "gz_truncated", "zst_flip_checksummed", "zst_truncated", "zst_cut_frames"],
)
def test_damaged_compressed_input_yields_nothing(tmp_path, damage):
    # gzip checks CRC and length only at the end of a member, zstd its checksum at the end of a
    # frame: records decoded before the check may already be damaged (a run over a .jsonl.gz with
    # bytes flipped mid-stream kept 740 of 930 records, 261 of them garbled into bad_json), so a
    # damaged compressed input must give no record at all. A cut zstd stream used to read as a
    # shorter, valid file.
    import zstandard

    data = _docs()
    half = data[: len(data) // 2].rindex(b"\n") + 1
    gz = gzip.compress(data, mtime=0)
    zst = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    two_frames = zstandard.ZstdCompressor().compress(data[:half]) + zstandard.ZstdCompressor().compress(data[half:])
    first_gz = gzip.compress(data[:half], mtime=0)
    blob, name = {
        "gz_flip": (_flip(gz, len(gz) // 2), "d.jsonl.gz"),
        "gz_flip_second_member": (first_gz + _flip(gzip.compress(data[half:], mtime=0), 200), "d.jsonl.gz"),
        "gz_truncated": (gz[: len(gz) // 2], "d.jsonl.gz"),
        "zst_flip_checksummed": (_flip(zst, len(zst) // 2, 1), "d.jsonl.zst"),
        "zst_truncated": (zst[: len(zst) * 2 // 3], "d.jsonl.zst"),
        "zst_cut_frames": (two_frames[: len(two_frames) - 40], "d.jsonl.zst"),
    }[damage]
    f = tmp_path / name
    f.write_bytes(blob)
    got, err = _read_all(source([f]), f)
    assert got == [] and err is not None and err.records_read == 0
    assert str(f) in str(err) and "whole input is left out" in str(err), str(err)
    # Re-reading origins of a damaged input fails the same way instead of returning records.
    with pytest.raises(InputError, match="whole input is left out"):
        read_origin(f"{f}#L1", source([f]))


def test_intact_multi_member_and_multi_frame_inputs_read_whole(tmp_path):
    import zstandard

    data = _docs(50)
    half = data[: len(data) // 2].rindex(b"\n") + 1
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    for name, blob in [
        ("m.jsonl.gz", gzip.compress(data[:half], mtime=0) + gzip.compress(data[half:], mtime=0)),
        (
            "f.jsonl.zst",
            zstandard.ZstdCompressor(write_checksum=True).compress(data[:half])
            + skippable
            + zstandard.ZstdCompressor().compress(data[half:]),
        ),
        ("e.jsonl.gz", gzip.compress(b"", mtime=0)),  # a valid empty file: no records, no error
    ]:
        f = tmp_path / name
        f.write_bytes(blob)
        got, err = _read_all(source([f]), f)
        assert err is None and len(got) == (0 if name.startswith("e") else 50), name


def test_uncompressed_input_cut_short_keeps_the_records_before(tmp_path):
    # Nothing before a cut in plain JSONL is altered: those records are kept; the cut line is not
    # valid JSON and is quarantined, not silently dropped.
    f = tmp_path / "cut.jsonl"
    data = _docs(400)
    f.write_bytes(data[: len(data) // 2])
    got, err = _read_all(source([f]), f)
    assert err is None and 150 < len(got) < 400
    assert all(r["error_reason"] is None for r in got[:-1]) and got[-1]["error_reason"] == "bad_json"


@pytest.mark.parametrize("name", ["e.jsonl", "e.jsonl.gz", "e.jsonl.zst", "e.txt", "e.txt.gz", "e.parquet"])
def test_zero_byte_inputs_fail_in_every_format(tmp_path, name):
    # One rule: zero bytes is what a failed upload leaves, and no compressed or container format
    # is valid at 0 bytes (tars: test_pair_readers); it is a failed input, never a done one.
    f = tmp_path / name
    f.write_bytes(b"")
    src = source([tmp_path])
    assert list_inputs(src) == [str(f)]
    got, err = _read_all(src, f)
    assert got == [] and err is not None and err.records_read == 0
    assert f"{f}: empty file (0 bytes)" in str(err)


def test_dangling_symlink_in_a_listed_directory_is_a_failed_input(tmp_path):
    import os

    d = tmp_path / "c"
    (d / "sub").mkdir(parents=True)
    (d / "a.jsonl").write_bytes(jsonl_bytes([{"text": "a"}]))
    os.symlink(tmp_path / "moved-away.jsonl", d / "b.jsonl")
    os.symlink("../a.jsonl", d / "sub" / "same-as-a.jsonl")  # a live link is an ordinary input
    os.symlink("..", d / "sub" / "loop")  # a link back up is not followed round and round
    src = source([d])
    uris = list_inputs(src)
    assert uris == [str(d / "a.jsonl"), str(d / "b.jsonl"), str(d / "sub" / "same-as-a.jsonl")]
    with pytest.raises(InputError, match=r"b\.jsonl: a symlink to .*moved-away\.jsonl, which does not exist"):
        list(read_input(src, str(d / "b.jsonl")))
    assert [r["text"] for r in read_input(src, str(d / "sub" / "same-as-a.jsonl"))] == ["a"]
    # Through a glob as well; named explicitly, it fails the listing like any missing file.
    assert str(d / "b.jsonl") in list_inputs(source([f"{d}/*.jsonl"]))
    with pytest.raises(InputError, match=r"input not found: .*b\.jsonl \(a symlink to .*moved-away"):
        list_inputs(source([d / "b.jsonl"]))


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
