"""Driver-side assembly: regroup the tokenized stream by input, then write each input's shards,
quarantine file and completion marker.

Ray Data streams blocks without regard to input files, may reorder them, and re-runs tasks
after failures. Every record carries (input key, seq) and each input ends with a sentinel
giving its record count, so the driver buffers records per input, drops duplicate seqs, and
finalizes an input once all of its seqs are in. The output of an input is therefore a pure
function of the input (rows sorted by seq, shards cut the same way, Arrow written from one
contiguous table) whatever the cluster did, which is what makes reruns byte-identical.

Trade-off: shards are written by the driver, not by workers. Codes are small next to raw media
(a 256 px image is ~1 KB of codes; a second of audio a few hundred bytes), so the driver's
writes are cheap relative to decoding and encoding, and in exchange shard naming, dedupe and
markers need no coordination. Writes run on a small thread pool so uploads overlap the stream.
The driver holds the codes of the inputs in flight (with `ray.preserve_order`, about one).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trimodal.dataset.quarantine import write_quarantine
from trimodal.dataset.schema import MODALITIES
from trimodal.dataset.shards import SCHEMA, write_shard


def _tokens(t: pa.Table) -> dict:
    out = {}
    for m in MODALITIES:
        c = f"{m}_codes"
        if c in t.column_names and t.num_rows:
            out[m] = int(pc.sum(pc.list_value_length(t[c])).as_py() or 0)
    return out


class Assembler:
    """Collects stream batches per input key and hands complete inputs to `finalize`."""

    def __init__(
        self, keys: list[str], finalize: Callable[[str, pa.Table, dict], dict], progress=None, writer_threads: int = 2
    ):
        self.expected = list(keys)
        self.finalize = finalize
        self.progress = progress
        self.buffers: dict[str, list[pa.Table]] = {}
        self.ends: dict[str, dict] = {}
        self.futures: dict[str, Future] = {}
        self.pool = ThreadPoolExecutor(max_workers=writer_threads, thread_name_prefix="shard-writer")

    def add(self, batch: pa.Table) -> None:
        if batch.num_rows == 0:
            return
        keys = batch.column("key")
        uniq = pc.unique(keys).to_pylist()
        for k in uniq:
            sub = batch if len(uniq) == 1 else batch.filter(pc.equal(keys, k))
            if k in self.futures:
                continue  # a late duplicate (task retry) of an input that is already complete
            self._add(k, sub)
        self._raise_failed_writes()

    def _add(self, k: str, sub: pa.Table) -> None:
        is_end = sub.column("end")
        recs = sub.filter(pc.invert(is_end))
        if recs.num_rows:
            self.buffers.setdefault(k, []).append(recs)
            if self.progress:
                rejected = int(pc.sum(pc.is_valid(recs.column("reason"))).as_py() or 0)
                self.progress.add_records(recs.num_rows, rejected, _tokens(recs))
        ends = sub.filter(is_end)
        if ends.num_rows:
            e = ends.slice(0, 1).to_pylist()[0]
            self.ends[k] = {"count": int(e["seq"]), "reason": e["reason"], "message": e["message"]}
        if k in self.ends:
            self._try_finish(k)

    def _try_finish(self, k: str) -> None:
        n = self.ends[k]["count"]
        tables = self.buffers.get(k, [])
        if sum(t.num_rows for t in tables) < n:
            return
        if tables:
            t = pa.concat_tables(tables)
            seq = t.column("seq").to_numpy()
            uniq, first = np.unique(seq, return_index=True)
            if len(uniq) < n:
                return
            if len(uniq) != n or uniq[0] != 0 or uniq[-1] != n - 1:
                raise RuntimeError(f"input {k}: sequence numbers do not match its record count {n}")
            t = t.take(pa.array(first)).combine_chunks()  # in seq order, one row per seq
        else:
            t = None
        self.buffers.pop(k, None)
        self.futures[k] = self.pool.submit(self._finalize, k, t, self.ends[k])

    def _finalize(self, k, t, end):
        marker = self.finalize(k, t, end)
        if self.progress:
            self.progress.input_done()
        return marker

    def _raise_failed_writes(self) -> None:
        for f in self.futures.values():
            if f.done() and f.exception() is not None:
                raise f.exception()

    def finish(self) -> dict[str, dict]:
        """Wait for the writes; every expected input must have completed. key -> marker."""
        self.pool.shutdown(wait=True)
        self._raise_failed_writes()
        missing = [k for k in self.expected if k not in self.futures]
        if missing:
            raise RuntimeError(
                f"{len(missing)} inputs never completed (first: {missing[0]}); no manifest written, rerun to resume"
            )
        return {k: f.result() for k, f in self.futures.items()}


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


def shard_table(good: pa.Table) -> pa.Table:
    """Stream records (already filtered to accepted rows) → a contiguous SCHEMA table."""
    n = good.num_rows
    cols = {
        "id": good.column("id").combine_chunks(),
        "source": good.column("source").combine_chunks().dictionary_encode().cast(SCHEMA.field("source").type),
    }
    for m in MODALITIES:
        c = f"{m}_codes"
        cols[m] = good.column(c).combine_chunks() if c in good.column_names else pa.nulls(n, pa.list_(pa.int32()))
    cols["origin"] = good.column("origin").combine_chunks()
    return pa.table(cols, schema=SCHEMA)


def row_bytes(t: pa.Table) -> np.ndarray:
    sizes = np.full(t.num_rows, 64, dtype=np.int64)
    for m in MODALITIES:
        if m in t.column_names:
            sizes += 4 * pc.list_value_length(t.column(m)).fill_null(0).to_numpy()
    return sizes


def write_input(
    dataset_uri: str, key: str, good: pa.Table, bad: list[dict], shard_rows: int, shard_bytes: int
) -> tuple[list[dict], dict]:
    """One input's kept rows (a SCHEMA table) → shards ``part-<key>-NNNN``, and its rejected
    records → ``quarantine/<key>.jsonl``. Names depend only on the key and the rows, so a rerun
    overwrites exactly what an interrupted run left. Returns (shard entries, counts by reason)."""
    entries = []
    for piece, (a, b) in enumerate(split_points(row_bytes(good), shard_rows, shard_bytes)):
        entries.append(write_shard(dataset_uri, f"part-{key}-{piece:04d}", good.slice(a, b - a)))
    return entries, write_quarantine(dataset_uri, key, bad)


class Faults:
    """Test-only fault injection, set through the TRIMODAL_FAULTS environment variable (JSON):
    `kill_before_marker: N` SIGKILLs the driver after the N-th input's shards are written but
    before its marker; `kill_actor: {modality, flag, after_calls}` is passed to the actors."""

    def __init__(self, spec: dict | None):
        self.spec = spec or {}
        self.markers = 0
        self.lock = threading.Lock()

    def before_marker(self) -> None:
        n = self.spec.get("kill_before_marker")
        if not n:
            return
        with self.lock:
            self.markers += 1
            if self.markers >= int(n):
                os.kill(os.getpid(), signal.SIGKILL)


class InputWriter:
    """finalize() for the tokenize job: one input's records → shards + quarantine + marker."""

    def __init__(
        self,
        dataset_uri: str,
        job: str,
        plan: dict,
        store,
        shard_rows: int,
        shard_bytes: int,
        faults: Faults | None = None,
    ):
        self.uri = dataset_uri
        self.job = job
        self.plan = plan  # key -> {uri, source, index}
        self.store = store
        self.shard_rows = shard_rows
        self.shard_bytes = shard_bytes
        self.faults = faults or Faults(None)

    def __call__(self, key: str, t: pa.Table | None, end: dict) -> dict:
        entries, counts = [], {}
        records = 0 if t is None else t.num_rows
        if t is not None:
            ok = pc.is_null(t.column("reason"))
            bad = t.filter(pc.invert(ok)).select(["id", "source", "origin", "reason", "message"])
            entries, counts = write_input(
                self.uri, key, shard_table(t.filter(ok)), bad.to_pylist(), self.shard_rows, self.shard_bytes
            )
        self.faults.before_marker()
        marker = self.marker(key, entries, counts, records, end)
        self.store.write(key, marker)
        return marker

    def marker(self, key, entries, counts, records, end) -> dict:
        info = self.plan[key]
        return {
            "job": self.job,
            "key": key,
            "uri": info["uri"],
            "source": info["source"],
            "status": "failed" if end.get("reason") else "done",
            "error": end.get("message"),
            "records": records,
            "rows": sum(e["rows"] for e in entries),
            "shards": entries,
            "quarantine": counts,
            "tokens": {m: sum(e["tokens"].get(m, 0) for e in entries) for m in MODALITIES},
            "bytes": sum(e["bytes"] for e in entries),
        }
