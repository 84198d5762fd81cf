"""The input writer: streamed chunks cut into the same shards as the whole input at once."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from trimodal.dataset.dataset import Dataset
from trimodal.dataset.manifest import Manifest
from trimodal.dataset.shards import rows_to_table
from trimodal.pipeline.writer import InputWriter, row_bytes, split_points


def _rows(n: int, seed: int = 0) -> pa.Table:
    rng = random.Random(seed)
    return rows_to_table(
        [
            {
                "id": f"s/{i}",
                "source": "s",
                "text": np.arange(rng.randint(0, 300), dtype=np.int32),
                "image": None if i % 3 else np.arange(rng.randint(1, 50), dtype=np.int32),
                "origin": f"f#{i}",
            }
            for i in range(n)
        ]
    )


def test_split_points_respect_rows_and_bytes():
    sizes = np.array([10, 10, 50, 5, 5, 5, 100, 1], dtype=np.int64)
    pieces = split_points(sizes, max_rows=3, max_bytes=30)
    assert pieces[0] == (0, 2)  # 10+10 fits, +50 would not
    assert all(b - a <= 3 for a, b in pieces)
    assert pieces[-1][1] == len(sizes) and all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))
    for a, b in pieces:
        assert b - a == 1 or sizes[a:b].sum() <= 30  # a lone oversize row is its own piece


@pytest.mark.parametrize("max_rows,max_bytes", [(7, 1 << 20), (1000, 2000), (5, 900), (1, 1024)])
def test_streamed_chunks_give_the_same_shards_as_one_pass(tmp_path, max_rows, max_bytes):
    table = _rows(97)
    expect = split_points(row_bytes(table), max_rows, max_bytes)
    for seed in range(3):
        out = tmp_path / f"run{seed}"
        w = InputWriter(str(out), "key", max_rows, max_bytes)
        rng = random.Random(seed)
        at = 0
        while at < table.num_rows:  # chunks of random sizes, as reads and encodes deliver them
            n = rng.randint(1, 20)
            w.add(table.slice(at, n))
            at += n
        entries, counts = w.close([])
        assert counts == {}
        assert [e["rows"] for e in entries] == [b - a for a, b in expect]
        Manifest(shards=entries).save(str(out))
        ds = Dataset.open(str(out))
        got = pa.concat_tables(ds.iter_tables())
        assert got.equals(table)
        # Every shard has its length index, matching the codes it holds.
        for i in range(len(entries)):
            idx = ds.read_index(i)
            shard = ds.read_shard(i)
            assert idx.column("text").to_pylist() == [len(v) for v in shard.column("text").to_pylist()]
            assert idx.column("image").to_pylist() == [
                -1 if v is None else len(v) for v in shard.column("image").to_pylist()
            ]
        if seed:
            prev = sorted((tmp_path / f"run{seed - 1}" / "shards").iterdir())
            now = sorted((out / "shards").iterdir())
            assert [p.name for p in prev] == [p.name for p in now]
            assert all(p.read_bytes() == q.read_bytes() for p, q in zip(prev, now))
