"""Image-text and audio-text readers: WebDataset tars (plain, .tar.gz, .tgz, .tar.zst) and
Parquet with media bytes, on local files: grouping as webdataset does it, planted bad records,
damaged tars, and re-reading by origin."""

import pyarrow as pa
import pytest

from trimodal.config import from_dict
from trimodal.errors import InputError
from trimodal.pipeline.readers import list_inputs, read_input, read_origin, read_origins
from trimodal.pipeline.sources import CorpusSource

from ._data import IMAGE_EXPECTED, compress, flac, image_members, parquet_bytes, png, tar_bytes


def source(kind, paths, **kw) -> CorpusSource:
    return from_dict(CorpusSource, {"name": "pairs", "kind": kind, "paths": [str(p) for p in paths], **kw})


def _wkey(rec):
    return rec["origin"].split("#", 1)[1]


@pytest.mark.parametrize("suffix, comp", [(".tar", None), (".tar.gz", "gz"), (".tgz", "gz"), (".tar.zst", "zst")])
def test_image_tar_records_and_planted_errors(tmp_path, suffix, comp):
    members = image_members()
    f = tmp_path / f"shard-0{suffix}"
    f.write_bytes(compress(tar_bytes(members), comp))
    src = source("image_text", [tmp_path])
    assert list_inputs(src) == [str(f)]
    recs = list(read_input(src, str(f)))
    got = {_wkey(r): (r["error_reason"], r["text"] if r["error_reason"] is None else None) for r in recs}
    assert got == IMAGE_EXPECTED
    by_key = {_wkey(r): r for r in recs}
    img = dict(members)["good0.png"]
    assert by_key["good0"]["image"] == img and by_key["good0"]["audio"] is None
    assert by_key["dir.v2/good1"]["id"] == "pairs/shard-0/dir.v2/good1"
    assert by_key["zero"]["image"] == b""  # handed over: the image tokenizer judges empty media
    assert by_key["nocap"]["image"] == img  # kept with the rejection, for the quarantine record
    assert "members: png" in by_key["nocap"]["error_message"]
    assert all(r["origin"] == f"{f}#{_wkey(r)}" for r in recs)
    # Records come in tar order, and re-reading by origin returns the same dicts.
    assert [_wkey(r) for r in recs] == list(IMAGE_EXPECTED)
    wanted = [by_key[k]["origin"] for k in ("emptycap", "good0", "dir.v2/good1")]
    assert read_origins(src, wanted) == {o: by_key[o.rsplit("#", 1)[1]] for o in wanted}


def test_caption_and_json_field_choices(tmp_path):
    img = png()
    f = tmp_path / "s.tar"
    f.write_bytes(
        tar_bytes(
            [
                ("a.jpg", img),
                ("a.txt", b"from txt"),
                ("a.json", b'{"caption": "from json"}'),
                ("b.jpg", img),
                ("b.json", b'{"alt": "alt text", "caption": null}'),
                ("c.jpg", img),
                ("c.json", b'{"caption": 7}'),
                ("d.JPG", img),
                ("d.json", b'{"caption": "upper-case extension"}'),
                ("e.webp", img),
                ("e.json", b'{"other": 1}'),
            ]
        )
    )
    default = {_wkey(r): (r["error_reason"], r["text"]) for r in read_input(source("image_text", [f]), str(f))}
    assert default == {
        "a": (None, "from txt"),
        "b": ("missing_caption", None),
        "c": ("bad_field", None),
        "d": (None, "upper-case extension"),
        "e": ("missing_caption", None),
    }
    custom = source(
        "image_text", [f], caption_keys=["json"], json_caption_fields=["alt", "caption"], image_keys=["jpg"]
    )
    got = {_wkey(r): (r["error_reason"], r["text"]) for r in read_input(custom, str(f))}
    assert got["a"] == (None, "from json") and got["b"] == (None, "alt text")
    assert got["e"][0] == "missing_image"  # .webp is not among the configured image_keys


def test_duplicate_keys_and_members(tmp_path):
    img = png()
    f = tmp_path / "dup.tar"
    f.write_bytes(
        tar_bytes(
            [
                ("x.png", img),
                ("x.txt", b"first"),
                ("y.png", img),
                ("y.txt", b"one"),
                ("y.txt", b"two"),
                ("x.png", img),
                ("x.txt", b"again, not adjacent"),
            ]
        )
    )
    got = [(_wkey(r), r["error_reason"]) for r in read_input(source("image_text", [f]), str(f))]
    assert got == [("x", None), ("y", "duplicate_member"), ("x", "duplicate_key")]
    assert len({r["id"] for r in read_input(source("image_text", [f]), str(f)) if not r["error_reason"]}) == 1


@pytest.mark.parametrize("ext", ["flac", "wav", "mp3", "ogg"])
def test_audio_tar(tmp_path, ext):
    clip = flac(fmt="WAV") if ext == "wav" else flac() if ext == "flac" else b"\xff\xfbnot-really-" + ext.encode()
    f = tmp_path / "speech.tar"
    f.write_bytes(
        tar_bytes(
            [
                (f"u1.{ext}", clip),
                ("u1.txt", b"hello world"),
                (f"u2.{ext}", clip),
                ("u2.json", b'{"text": "transcript in json"}'),
                (f"u3.{ext}", clip),
                ("u4.png", png()),
                ("u4.txt", b"a picture in an audio shard"),
                (f"u5.{ext}", clip),
                ("u5.txt", b"\xfe\xff"),
            ]
        )
    )
    src = source("audio_text", [f])
    recs = list(read_input(src, str(f)))
    assert [(_wkey(r), r["error_reason"]) for r in recs] == [
        ("u1", None),
        ("u2", None),
        ("u3", "missing_transcript"),
        ("u4", "missing_audio"),
        ("u5", "invalid_utf8"),
    ]
    assert recs[0]["audio"] == clip and recs[0]["image"] is None and recs[1]["text"] == "transcript in json"
    assert read_origin(recs[1]["origin"], src) == recs[1]
    # Without the source, the kind is guessed from the sample's members.
    guessed = read_origin(recs[0]["origin"])
    assert guessed["audio"] == clip and guessed["text"] == "hello world"


def _six_pairs():
    import io
    import tarfile

    img = png(size=64) + bytes(range(256)) * 8  # > 2 KB, so members span several blocks
    data = tar_bytes([m for i in range(6) for m in ((f"k{i}.png", img), (f"k{i}.txt", f"caption {i}".encode()))])
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        headers = [m.offset for m in tf.getmembers()]  # header offsets, 2 members per sample
    return img, data, headers


@pytest.mark.parametrize(
    "damage", ["cut_in_data", "cut_between_members", "cut_in_header", "bad_header", "no_end_marker"]
)
def test_damaged_tars_are_reported_not_silently_short(tmp_path, damage):
    img, data, headers = _six_pairs()
    h = headers[6]  # sample k3's first header: k0..k2 lie whole before it
    cut = {
        "cut_in_data": data[: h + 512 + 700],
        "cut_between_members": data[:h],
        "cut_in_header": data[: h + 200],
        "bad_header": data[:h] + b"\x07" * 512 + data[h + 512 :],
        "no_end_marker": data[: headers[-1] + 1024],  # every member whole, the zero blocks gone
    }[damage]
    f = tmp_path / "damaged.tar"
    f.write_bytes(cut)
    got = []
    with pytest.raises(InputError, match=r"damaged.tar.*after \d+ record") as ei:
        for r in read_input(source("image_text", [f]), str(f)):
            got.append(r)
    # Samples before the damage are kept, except the last one: nothing after it was read intact,
    # so it may be missing members (webdataset groups adjacent members without a count).
    expected = 5 if damage == "no_end_marker" else 2
    assert [r["text"] for r in got] == [f"caption {i}" for i in range(expected)]
    assert all(r["image"] == img for r in got) and ei.value.records_read == expected


@pytest.mark.parametrize("comp", ["gz", "zst"])
def test_damaged_compressed_tar_yields_no_sample(tmp_path, comp):
    # Unlike a plain tar cut short (above), damage inside a compressed tar is only known at the
    # end of the gzip member / zstd frame, after the samples before it were decoded from it.
    import zstandard

    img, data, _ = _six_pairs()
    if comp == "gz":
        blob = bytearray(compress(data, "gz"))
    else:
        blob = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(data))
    blob[len(blob) // 2] ^= 0x01
    f = tmp_path / f"damaged.tar.{comp}"
    f.write_bytes(bytes(blob))
    got = []
    with pytest.raises(InputError, match=r"damaged.tar.*whole input is left out") as ei:
        for r in read_input(source("image_text", [f]), str(f)):
            got.append(r)
    assert got == [] and ei.value.records_read == 0


@pytest.mark.parametrize("name", ["e.tar", "e.tar.gz", "e.tgz", "e.tar.zst", "e.parquet"])
def test_zero_byte_pair_inputs_fail(tmp_path, name):
    f = tmp_path / name
    f.write_bytes(b"")
    with pytest.raises(InputError, match=rf"{name}: empty file \(0 bytes\)"):
        list(read_input(source("audio_text", [tmp_path]), str(f)))


def test_valid_tar_variants_read_to_the_end(tmp_path):
    img, data, _ = _six_pairs()
    for name, blob in [("padded.tar", data + bytes(10240)), ("two.tar", data)]:
        f = tmp_path / name
        f.write_bytes(blob)
        assert len(list(read_input(source("image_text", [f]), str(f)))) == 6
    cat = tmp_path / "concatenated.tar"
    cat.write_bytes(data + data)  # webdataset alone would stop after the first archive, silently
    with pytest.raises(InputError, match=r"concatenated.tar.*concatenated tars"):
        list(read_input(source("image_text", [cat]), str(cat)))


def test_unreadable_tars(tmp_path):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(InputError, match=r"garbage.tar.*at the start"):
        list(read_input(source("image_text", [garbage]), str(garbage)))
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty.tar"):
        list(read_input(source("image_text", [empty]), str(empty)))
    with pytest.raises(InputError, match=r"missing.tar"):
        list(read_input(source("image_text", [tmp_path]), str(tmp_path / "missing.tar")))
    fake_gz = tmp_path / "fake.tar.gz"
    fake_gz.write_bytes(b"\x1f\x8b but not gzip really" * 30)
    with pytest.raises(InputError, match=r"fake.tar.gz"):
        list(read_input(source("image_text", [fake_gz]), str(fake_gz)))


def test_parquet_image_and_audio(tmp_path):
    img, clip = png(), flac()
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = pa.array(
        [
            {"bytes": img, "path": "a.png"},
            {"bytes": None, "path": "remote/b.png"},
            None,
            {"bytes": img, "path": None},
            {"bytes": b"", "path": "e.png"},
        ],
        struct,
    )
    f = tmp_path / "train-00000.parquet"
    f.write_bytes(parquet_bytes({"image": images, "caption": ["one", "two", "three", None, "five"]}))
    src = source("image_text", [f], text_field="caption")
    recs = list(read_input(src, str(f)))
    assert [r["error_reason"] for r in recs] == [None, "missing_image", "missing_image", "missing_caption", None]
    assert recs[0]["image"] == img and recs[0]["text"] == "one" and recs[4]["image"] == b""
    assert "only a path ('remote/b.png')" in recs[1]["error_message"]
    assert read_origin(recs[3]["origin"], src) == recs[3]
    g = tmp_path / "speech.parquet"
    g.write_bytes(parquet_bytes({"audio": pa.array([clip, clip], pa.binary()), "text": ["hi", " "]}))
    asrc = source("audio_text", [g])
    recs = list(read_input(asrc, str(g)))
    assert [(r["id"], r["error_reason"]) for r in recs] == [
        ("pairs/speech/0", None),
        ("pairs/speech/1", "missing_transcript"),
    ]
    assert recs[0]["audio"] == clip and recs[0]["image"] is None
    assert read_origin(recs[0]["origin"])["audio"] == clip  # kind guessed from the columns
    with pytest.raises(InputError, match=r"no column 'audio' \(set audio_field\)"):
        list(read_input(source("audio_text", [f], text_field="caption"), str(f)))
    bad = tmp_path / "ints.parquet"
    bad.write_bytes(parquet_bytes({"image": [1, 2], "text": ["a", "b"]}))
    with pytest.raises(InputError, match=r"column 'image' has type int64"):
        list(read_input(source("image_text", [bad]), str(bad)))


def test_image_text_source_skips_text_files_in_its_directory(tmp_path):
    (tmp_path / "s-0.tar").write_bytes(tar_bytes([("a.png", png()), ("a.txt", b"cap")]))
    (tmp_path / "notes.txt").write_text("a README beside the shards")
    src = source("image_text", [tmp_path])
    assert list_inputs(src) == [str(tmp_path / "s-0.tar")]
    with pytest.raises(InputError, match=r"notes.txt: cannot read as image_text"):
        list_inputs(source("image_text", [tmp_path / "notes.txt"]))
