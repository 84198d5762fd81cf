"""The driver-side regrouping (no Ray): out-of-order blocks, retried duplicates, sentinels."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from trimodal.dataset.schema import list_column as codes_column
from trimodal.pipeline.assemble import Assembler, split_points
from trimodal.pipeline.encode import RECORD_SCHEMA


def _block(key: str, seqs: list[int], end: int | None = None) -> pa.Table:
    rows = [
        {
            "key": key,
            "seq": s,
            "end": False,
            "id": f"{key}/{s}",
            "source": "src",
            "origin": f"{key}#{s}",
            "text": None,
            "image": None,
            "audio": None,
            "reason": "empty_text" if s % 5 == 4 else None,
            "message": None,
        }
        for s in seqs
    ]
    if end is not None:
        rows.append({"key": key, "seq": end, "end": True, "source": "src", "origin": key})
    t = pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)
    return t.drop_columns(["text"]).append_column(
        "text_codes",
        codes_column([None if r.get("end") else np.arange(r["seq"] % 3 + 1, dtype=np.int32) for r in rows]),
    )


def test_blocks_in_any_order_with_duplicates_give_each_input_once_in_seq_order():
    got = {}

    def finalize(key, table, end):
        assert key not in got, "an input was finalized twice"
        got[key] = (table, end)
        return {"key": key}

    counts = {"a": 23, "b": 7, "c": 0}
    blocks = []
    for key, n in counts.items():
        seqs = list(range(n))
        for i in range(0, n, 4):
            blocks.append(_block(key, seqs[i : i + 4]))
        blocks.append(_block(key, [], end=n))
    # A retried task re-emits some blocks (sentinel included) and Ray may reorder everything.
    rng = random.Random(0)
    blocks += [blocks[1], blocks[2], blocks[-1]]
    rng.shuffle(blocks)
    # Batches may also mix inputs.
    mixed = [pa.concat_tables(blocks[i : i + 3]) for i in range(0, len(blocks), 3)]
    asm = Assembler(list(counts), finalize)
    for b in mixed:
        asm.add(b)
    markers = asm.finish()
    assert set(markers) == set(counts)
    for key, n in counts.items():
        table, end = got[key]
        assert end["count"] == n and end["reason"] is None
        if n == 0:
            assert table is None
            continue
        assert table.column("seq").to_pylist() == list(range(n))
        assert table.column("id").to_pylist() == [f"{key}/{s}" for s in range(n)]
        assert [len(c) for c in table.column("text_codes").to_pylist()] == [s % 3 + 1 for s in range(n)]


def test_an_input_without_its_sentinel_fails_the_run():
    asm = Assembler(["a", "b"], lambda k, t, e: {"key": k})
    asm.add(_block("a", [0, 1], end=2))
    asm.add(_block("b", [0, 1]))
    with pytest.raises(RuntimeError, match="never completed"):
        asm.finish()


def test_split_points_respect_rows_and_bytes():
    sizes = np.array([10, 10, 10, 50, 10, 10], dtype=np.int64)
    assert split_points(sizes, max_rows=4, max_bytes=10_000) == [(0, 4), (4, 6)]
    assert split_points(sizes, max_rows=100, max_bytes=30) == [(0, 3), (3, 4), (4, 6)]
    assert split_points(np.array([100]), max_rows=5, max_bytes=10) == [(0, 1)]  # one oversize row alone
    assert split_points(np.zeros(0, dtype=np.int64), 5, 10) == []
