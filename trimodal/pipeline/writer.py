"""One input's kept rows → its shards, written by the process that made them.

`InputWriter` receives an input's accepted rows in order (as SCHEMA tables, chunk by chunk)
and cuts them into shards of at most `shard_rows` rows and about `shard_bytes` bytes of codes,
writing each shard (and its length index) as soon as it is complete. The cut points depend
only on the rows, never on how they arrived in chunks, so a retried task, a rerun after a crash
and an uninterrupted run write the same shard names with the same bytes
(`part-<input key>-NNNN`): `split_points` over the whole input gives the same pieces, which a
test checks. Memory: at most one shard's rows (≤ `shard_bytes` of codes, 256 MiB by default)
plus one chunk are held.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trimodal.dataset.quarantine import write_quarantine
from trimodal.dataset.schema import MODALITIES
from trimodal.dataset.shards import SCHEMA, SHARDS_DIR, write_shard
from trimodal.dataset.storage import TMP_MARK, resolve

ROW_OVERHEAD = 64  # bytes counted per row besides its codes (id, origin, offsets)


def row_bytes(t: pa.Table) -> np.ndarray:
    """Estimated stored bytes of each row: its codes (4 bytes each) plus a fixed overhead."""
    sizes = np.full(t.num_rows, ROW_OVERHEAD, dtype=np.int64)
    for m in MODALITIES:
        if m in t.column_names:
            sizes += 4 * pc.list_value_length(t.column(m)).fill_null(0).to_numpy()
    return sizes


def split_points(sizes: np.ndarray, max_rows: int, max_bytes: int) -> list[tuple[int, int]]:
    """Cut rows into consecutive pieces of <= max_rows rows and <= ~max_bytes (at least 1 row)."""
    n = len(sizes)
    cum = np.cumsum(sizes, dtype=np.int64)
    out, start = [], 0
    while start < n:
        base = cum[start - 1] if start else 0
        by_bytes = int(np.searchsorted(cum, base + max_bytes, side="right"))
        end = max(start + 1, min(start + max_rows, by_bytes, n))
        out.append((start, end))
        start = end
    return out


def shard_name(key: str, piece: int) -> str:
    return f"part-{key}-{piece:04d}"


class InputWriter:
    """Streams one input's kept rows into shards; `close()` returns the shard entries."""

    def __init__(self, dataset_uri: str, key: str, shard_rows: int, shard_bytes: int, faults: dict | None = None):
        self.uri, self.key = dataset_uri, key
        self.max_rows, self.max_bytes = shard_rows, shard_bytes
        self.buf: list[pa.Table] = []
        self.sizes: list[np.ndarray] = []
        self.entries: list[dict] = []
        self.faults = faults or {}

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.buf.append(table)
        self.sizes.append(row_bytes(table))
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.buf:
            return
        sizes = np.concatenate(self.sizes)
        pieces = split_points(sizes, self.max_rows, self.max_bytes)
        # The last piece may still grow unless the input is over or no further row could join
        # it (every row counts at least ROW_OVERHEAD bytes). Earlier pieces are final: a later
        # row never changes a cut before it, so the cuts equal split_points over the whole input.
        if not final:
            a, b = pieces[-1]
            full = (b - a) >= self.max_rows or int(sizes[a:b].sum()) + ROW_OVERHEAD > self.max_bytes
            if not full:
                pieces = pieces[:-1]
        if not pieces:
            return
        table = pa.concat_tables(self.buf).combine_chunks() if len(self.buf) > 1 else self.buf[0]
        end = pieces[-1][1]
        for a, b in pieces:
            self._write(table.slice(a, b - a))
        rest = table.slice(end)
        self.buf = [rest] if rest.num_rows else []
        self.sizes = [sizes[end:]] if rest.num_rows else []

    def _write(self, piece: pa.Table) -> None:
        name = shard_name(self.key, len(self.entries))
        self._maybe_die_mid_write(name)
        self.entries.append(write_shard(self.uri, name, piece))

    def _maybe_die_mid_write(self, name: str) -> None:
        # Test-only (TRIMODAL_FAULTS `kill_writer: {flag}`): leave a half-written temp file of
        # this shard behind and SIGKILL the process, once (the flag file makes it once).
        f = self.faults.get("kill_writer")
        if not f:
            return
        try:
            fd = os.open(f["flag"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        loc = resolve(self.uri).join(f"{SHARDS_DIR}/{name}.arrow{TMP_MARK}{os.getpid()}-0")
        if loc.uri.startswith("s3://"):
            loc.write_bytes_atomic(b"partial")  # on S3 a dead PUT leaves nothing; plant one anyway
        else:
            os.makedirs(os.path.dirname(loc.path), exist_ok=True)
            with open(loc.path, "wb") as fh:
                fh.write(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)

    def close(self, quarantine: list[dict]) -> tuple[list[dict], dict[str, int]]:
        """Write what is left and the quarantine file; (shard entries, counts by reason)."""
        self._flush(final=True)
        return self.entries, write_quarantine(self.uri, self.key, quarantine)


def shard_table(rows: list[dict], columns: dict[str, pa.Array]) -> pa.Table:
    """Accepted rows (dicts with id, source, origin) plus code columns → a SCHEMA table."""
    n = len(rows)
    cols = {
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "source": pa.array([r["source"] for r in rows], pa.string())
        .dictionary_encode()
        .cast(SCHEMA.field("source").type),
    }
    for m in MODALITIES:
        cols[m] = columns.get(m, pa.nulls(n, pa.list_(pa.int32())))
    cols["origin"] = pa.array([r.get("origin") for r in rows], pa.string())
    return pa.table(cols, schema=SCHEMA)
