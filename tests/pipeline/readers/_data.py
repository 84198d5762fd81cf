"""Small raw corpora built by the reader tests: tars, JSONL, Parquet, text, plain or compressed."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import numpy as np


def png(colour=(200, 30, 30), size=8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def flac(seconds=0.05, rate=16000, fmt="FLAC") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format=fmt)
    return buf.getvalue()


def tar_bytes(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def jsonl_bytes(lines: list) -> bytes:
    """Each item: a dict (dumped), or raw bytes (written as is)."""
    out = b""
    for x in lines:
        out += (x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n"
    return out


def compress(data: bytes, how: str | None) -> bytes:
    if how == "gz":
        return gzip.compress(data, mtime=0)
    if how == "zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def parquet_bytes(columns: dict, schema=None, row_group_size: int | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


def image_members() -> list[tuple[str, bytes]]:
    """An image-text tar's members: good pairs and one of every per-record problem."""
    img = png()
    return [
        ("good0.png", img),
        ("good0.txt", b"a red square"),
        ("dir.v2/good1.jpg", img),
        ("dir.v2/good1.json", b'{"caption": "caption from json", "w": 8}'),
        ("nocap.png", img),
        ("badutf.png", img),
        ("badutf.txt", b"caf\xe9 \xff"),
        ("emptycap.png", img),
        ("emptycap.txt", b"   \n"),
        ("badjson.png", img),
        ("badjson.json", b"{not json"),
        ("noimage.txt", b"a caption without a picture"),
        ("zero.png", b""),
        ("zero.txt", b"zero-byte image member"),
    ]


# Expected (webdataset key -> (error_reason, text)) for `image_members`.
IMAGE_EXPECTED = {
    "good0": (None, "a red square"),
    "dir.v2/good1": (None, "caption from json"),
    "nocap": ("missing_caption", None),
    "badutf": ("invalid_utf8", None),
    "emptycap": ("missing_caption", None),
    "badjson": ("bad_json", None),
    "noimage": ("missing_image", None),
    "zero": (None, "zero-byte image member"),
}
