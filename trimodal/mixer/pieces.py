"""The piece table: what planning hands to reading and rendering.

A planned row is a run of document pieces; a batch's pieces, all rows together, are one numpy
structured array of `PIECE` records in row order (a few array operations per batch instead of
a tuple per document). `segments` gives the per-row form, for audits, id checks and tests.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

PIECE = np.dtype(
    [
        ("row", np.int64),  # the row's place in the batch (or in the rows asked of a source)
        ("epoch", np.int64),
        ("sample", np.int64),  # the sample's index in its source's dataset addressing
        ("shard", np.int64),
        ("shard_row", np.int64),  # the sample's row in its shard
        ("kind", np.int64),  # layout.TEXT / IMAGE / AUDIO
        ("reverse", np.int64),  # 1: a pair rendered media first
        ("start", np.int64),  # the piece covers positions [start, stop) of the rendered document
        ("stop", np.int64),
        ("text_codes", np.int64),
        ("media_codes", np.int64),
    ]
)


def column(dtype: np.dtype, name: str) -> int:
    """The column of field `name` in the int64 matrix view of records of `dtype` (`matrix`)."""
    return dtype.names.index(name)


def matrix(records: np.ndarray) -> np.ndarray:
    """Contiguous all-int64 records as an int64 matrix [records, fields] (a view): bulk column
    copies cost one fancy index instead of one call per field."""
    # through the buffer: a structured `view` runs numpy's Python-level safety check each time
    return np.ndarray((len(records), records.dtype.itemsize // 8), np.int64, records)


def records(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The inverse of `matrix`: a C-contiguous int64 matrix viewed as records of `dtype`."""
    return np.ndarray((len(values),), dtype, values)


def take(table: np.ndarray, index) -> np.ndarray:
    """table[index] (integer or boolean index) through the matrix view: numpy gathers whole
    records of a structured dtype ~5× slower than rows of a matrix."""
    return records(matrix(table)[index], table.dtype)


class Segment(NamedTuple):
    """One document piece of a planned row (a `PIECE` record without its row)."""

    epoch: int
    sample: int
    shard: int
    row: int  # the sample's row in its shard
    kind: int
    reverse: bool
    start: int
    stop: int
    text_codes: int
    media_codes: int


def segments(table: np.ndarray, rows: int) -> list[list[Segment]]:
    """A piece table as `rows` lists of `Segment`s (the per-row form)."""
    out: list[list[Segment]] = [[] for _ in range(rows)]
    for at, epoch, sample, shard, row, kind, reverse, start, stop, text, media in table.tolist():
        out[at].append(Segment(epoch, sample, shard, row, kind, reverse == 1, start, stop, text, media))
    return out
