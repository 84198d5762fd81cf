"""Where things lie in an Arrow IPC file, without reading record batch bodies.

A shard is an Arrow IPC file: magic, schema, dictionary batches, record batches (each a small
flatbuffer `Message` followed by its body), then a footer listing every record batch as
(offset, metadata length, body length), then the footer's length and the magic again. To read
the codes of a few rows from object storage, a reader needs the byte ranges of their list
offsets and values inside one record batch body; pyarrow only exposes whole batches (a
2.6 MB ranged GET for a 1024-row batch of 640-token documents, to use one row of it).

This module reads the two flatbuffers involved, the footer and a record batch's message, with
a minimal flatbuffer walker (~100 lines, no dependency), and returns plain numbers:
`Footer.blocks` (int64 [batches, 3]: offset, metadata length, body length) and
`BatchLayout` (row count and (offset, length) of every buffer, relative to the body). The
format is Arrow's stable IPC format (columnar format 1.0); compressed bodies, and anything this
walker does not recognize, raise `LayoutError`, and the reader then falls back to pyarrow's
whole-batch read.

Costs: a footer is ~500 bytes + 24 bytes per record batch; a batch message of the shard schema
is ~600 bytes. Both are parsed in ~10 µs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"ARROW1"
TAIL = 10  # int32 footer length + magic
_HEADER_RECORD_BATCH = 3
_CONTINUATION = 0xFFFFFFFF


class LayoutError(Exception):
    """The bytes are not an Arrow IPC structure this module reads (the caller falls back)."""


class _Table:
    """A flatbuffer table: fields by index through its vtable."""

    __slots__ = ("buf", "pos", "vt", "vt_len")

    def __init__(self, buf: memoryview, pos: int):
        self.buf, self.pos = buf, pos
        try:
            (soff,) = struct.unpack_from("<i", buf, pos)
            self.vt = pos - soff
            (self.vt_len,) = struct.unpack_from("<H", buf, self.vt)
        except struct.error as e:
            raise LayoutError(f"flatbuffer table out of bounds: {e}") from None

    def _field(self, i: int) -> int:
        at = 4 + 2 * i
        if at >= self.vt_len:
            return 0
        (off,) = struct.unpack_from("<H", self.buf, self.vt + at)
        return off

    def scalar(self, i: int, fmt: str, default=0):
        off = self._field(i)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0] if off else default

    def table(self, i: int) -> _Table | None:
        off = self._field(i)
        if not off:
            return None
        at = self.pos + off
        (rel,) = struct.unpack_from("<I", self.buf, at)
        return _Table(self.buf, at + rel)

    def struct_vector(self, i: int, width: int) -> tuple[int, int]:
        """(start, count) of a vector of inline structs of `width` bytes (count 0 if absent)."""
        off = self._field(i)
        if not off:
            return 0, 0
        at = self.pos + off
        (rel,) = struct.unpack_from("<I", self.buf, at)
        vec = at + rel
        (count,) = struct.unpack_from("<I", self.buf, vec)
        if vec + 4 + count * width > len(self.buf):
            raise LayoutError("flatbuffer vector out of bounds")
        return vec + 4, count


def _root(buf: memoryview) -> _Table:
    if len(buf) < 8:
        raise LayoutError("flatbuffer too short")
    (rel,) = struct.unpack_from("<I", buf, 0)
    return _Table(buf, rel)


@dataclass
class Footer:
    blocks: np.ndarray  # int64 [record batches, 3]: offset, metadata length, body length


def footer_length(tail: bytes) -> int:
    """The footer's byte length from the file's last 10 bytes."""
    if len(tail) < TAIL or bytes(tail[-6:]) != MAGIC:
        raise LayoutError("not an Arrow IPC file (no trailing magic)")
    (n,) = struct.unpack_from("<i", tail, len(tail) - TAIL)
    if n <= 0:
        raise LayoutError(f"bad footer length {n}")
    return n


def parse_footer(data: bytes) -> Footer:
    """The footer flatbuffer (exactly its bytes, without the trailing length and magic)."""
    buf = memoryview(data)
    root = _root(buf)
    start, count = root.struct_vector(3, 24)  # recordBatches: [Block]
    blocks = np.empty((count, 3), dtype=np.int64)
    for k in range(count):
        off, meta, _pad, body = struct.unpack_from("<qiiq", buf, start + 24 * k)
        blocks[k] = (off, meta, body)
    if count and ((blocks[:, 0] < 8).any() or (blocks[:, 1] <= 0).any() or (blocks[:, 2] < 0).any()):
        raise LayoutError("footer lists a record batch at an impossible place")
    return Footer(blocks)


@dataclass
class BatchLayout:
    rows: int
    buffers: np.ndarray  # int64 [buffers, 2]: offset, length, relative to the body
    body: int  # absolute file offset of the body
    body_length: int


def parse_batch_message(data: bytes, block_offset: int, meta_length: int, body_length: int) -> BatchLayout:
    """A record batch's layout from its encapsulated message (the `meta_length` bytes at
    `block_offset`: continuation marker, length, flatbuffer)."""
    buf = memoryview(data)
    if len(buf) < 8:
        raise LayoutError("record batch message too short")
    (first,) = struct.unpack_from("<I", buf, 0)
    skip = 8 if first == _CONTINUATION else 4  # pre-1.0 files have no continuation marker
    msg = _root(buf[skip:])
    if msg.scalar(1, "B") != _HEADER_RECORD_BATCH:
        raise LayoutError("message is not a record batch")
    rb = msg.table(2)
    if rb is None:
        raise LayoutError("record batch message without a header")
    if rb.table(3) is not None:
        raise LayoutError("compressed record batch bodies are not read by range")
    rows = rb.scalar(0, "q")
    start, count = rb.struct_vector(2, 16)  # buffers: [Buffer]
    raw = np.frombuffer(msg.buf, dtype="<i8", count=2 * count, offset=start).reshape(count, 2)
    buffers = raw.astype(np.int64)
    if count and ((buffers < 0).any() or (buffers[:, 0] + buffers[:, 1] > body_length).any()):
        raise LayoutError("record batch buffers lie outside the body")
    return BatchLayout(int(rows), buffers, block_offset + meta_length, body_length)
