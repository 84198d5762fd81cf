"""A shard's record batch as the reader sees it: where its columns' buffers lie, and views of them.

The buffer numbers are derived from `dataset.shards.SCHEMA` (the one place the shard layout is
written down), so a change of schema changes them here or fails loudly, never silently reads
the wrong buffer.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from trimodal.dataset.schema import MODALITIES
from trimodal.dataset.shards import SCHEMA
from trimodal.mixer import ipc

_EMPTY = np.zeros(0, dtype=np.int32)
READ_COLUMNS = ("id", *MODALITIES)  # what the reader reads: the sample id and the code columns


def _buffer_count(t: pa.DataType) -> int:
    """Buffers an Arrow IPC record batch holds for a column of type `t`."""
    if pa.types.is_dictionary(t):
        return 2  # validity, indices (the values travel in dictionary batches)
    if pa.types.is_list(t):
        return 2 + _buffer_count(t.value_type)  # validity, offsets, then the child's
    if pa.types.is_string(t) or pa.types.is_binary(t):
        return 3  # validity, offsets, data
    return 2  # validity, values


def _buffer_places(schema: pa.Schema) -> tuple[dict[str, tuple[int, int]], int]:
    """Per string or list column, the numbers of its (offsets, values) buffers; and the count
    of all buffers of a record batch."""
    places, at = {}, 0
    for field in schema:
        if pa.types.is_list(field.type):
            places[field.name] = (at + 1, at + 3)  # the list's offsets, its child's values
        elif pa.types.is_string(field.type):
            places[field.name] = (at + 1, at + 2)
        at += _buffer_count(field.type)
    return places, at


_PLACES, NUM_BUFFERS = _buffer_places(SCHEMA)
BUFFERS = {c: _PLACES[c] for c in READ_COLUMNS}  # (offsets, values) buffer numbers per column
COLUMN_INDEX = {c: SCHEMA.get_field_index(c) for c in READ_COLUMNS}


class Batch:
    """A record batch's layout, and zero-copy views of its columns' buffers: locally over the
    map; read by ranges over its fetched body once the rank has asked for a good part of it."""

    __slots__ = ("layout", "views", "rows", "asked", "at")

    def __init__(self, layout, views, rows, at=None):
        self.layout, self.views, self.rows = layout, views, rows
        self.asked = 0  # code bytes asked of this batch by ranges (S3, pread)
        # in a mapped shard: per code column (text, image, audio), its offsets and values as
        # int32 positions in the whole map, (-1, -1) for a column without values
        self.at = at


def views(layout: ipc.BatchLayout, mem, base: int) -> dict:
    """(offsets, values) per column of a record batch whose body starts at `base` in `mem`."""
    rows, out = layout.rows, {}
    for c, (ob, vb) in BUFFERS.items():
        (oo, on), (vo, vn) = layout.buffers[ob].tolist(), layout.buffers[vb].tolist()
        if on < 4 * (rows + 1):  # a column without a single value: no offsets buffer
            out[c] = (np.zeros(rows + 1, np.int32), _EMPTY if c != "id" else b"")
            continue
        off = np.frombuffer(mem, np.int32, rows + 1, base + oo)
        if c == "id":
            out[c] = (off, memoryview(mem)[base + vo : base + vo + vn])
        else:
            out[c] = (off, np.frombuffer(mem, np.int32, vn // 4, base + vo))
    return out


def arrow_views(rb: pa.RecordBatch) -> dict:
    """The same views of a record batch pyarrow read (files this reader cannot parse by range)."""
    out = {}
    for c, i in COLUMN_INDEX.items():
        arr = rb.column(i)
        bufs = arr.buffers()
        off = np.frombuffer(bufs[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
        if c == "id":
            out[c] = (off, memoryview(bufs[2]) if bufs[2] is not None else b"")
        else:
            out[c] = (off, arr.values.to_numpy(zero_copy_only=True) if len(arr.values) else _EMPTY)
    return out


def positions(layout: ipc.BatchLayout) -> tuple | None:
    """(offsets, values) of each code column as int32 positions in the file; (-1, -1) for a
    column without values; None when a buffer is not 4-byte aligned (not addressable as int32)."""
    out = []
    for c in MODALITIES:
        ob, vb = BUFFERS[c]
        (oo, on), (vo, _) = layout.buffers[ob].tolist(), layout.buffers[vb].tolist()
        if on < 4 * (layout.rows + 1):
            out.append((-1, -1))
            continue
        oo, vo = layout.body + oo, layout.body + vo
        if oo % 4 or vo % 4:
            return None
        out.append((oo // 4, vo // 4))
    return tuple(out)


def offsets_at(layout: ipc.BatchLayout, column: str, row: int) -> int:
    """Where, in the file, the two list offsets of `row` in `column` lie (8 bytes)."""
    return layout.body + int(layout.buffers[BUFFERS[column][0]][0]) + 4 * row


def values_at(layout: ipc.BatchLayout, column: str, first: int, width: int = 4) -> int:
    """Where, in the file, value `first` of `column` lies (`width` bytes per value)."""
    return layout.body + int(layout.buffers[BUFFERS[column][1]][0]) + width * first
