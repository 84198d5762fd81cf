"""The shard files of one dataset as the reader sees them: one interface, a strategy per access.

`ShardData` holds what every strategy shares: the LRU of open shards (`cache_files`) and of
record batch layouts (`cache_batches`), the footer and batch parsing (ipc.py,
record_batches.py), byte-range reads merged per shard, the checks of code counts against the
length index, and the counters. A strategy says how a record batch is found and its codes read:
`MappedShards` (mapped.py: in place from memory maps, located with array operations),
`RangedShards` and `PreadShards` (ranged.py: by ranges, concurrently on S3). `open_shard_data`
(shard_reader.py) picks one per dataset.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict

import numpy as np
import pyarrow as pa

from trimodal.dataset.dataset import Dataset
from trimodal.dataset.shards import BATCH_ROWS, check_schema
from trimodal.errors import IntegrityError
from trimodal.mixer import ipc
from trimodal.mixer.index import DatasetIndex
from trimodal.mixer.record_batches import NUM_BUFFERS, Batch, arrow_views, offsets_at, positions, values_at, views
from trimodal.mixer.shard_file import ShardFile

GAP = 256  # ranges of one shard closer than this are read by one request, and so are ranges
WASTE = 0.25  # whose merged span reads at most this fraction more than they hold
MAX_SPAN = 8 << 20


class Relocate(Exception):
    """A shard turned out not to be BATCH_ROWS-regular; its batch starts were scanned, so the
    rows are located again."""


def merge_ranges(ranges: list[tuple[object, int, int]]) -> list[list]:
    """Ranges (file, offset, length > 0) merged per file: sorted, and joined when closer than
    GAP bytes or when the joined span reads at most WASTE more than it holds. Returns
    [file, start, end, [range ids], useful bytes] per span to read."""
    by_file: dict[int, list[int]] = {}
    for k, (f, _, _) in enumerate(ranges):
        by_file.setdefault(id(f), []).append(k)
    spans = []
    for ks in by_file.values():
        ks.sort(key=lambda k: ranges[k][1])
        f = ranges[ks[0]][0]
        cur = None
        for k in ks:
            _, off, n = ranges[k]
            if cur is not None:
                gap = off - cur[2]
                waste = cur[2] - cur[1] - cur[4] + max(gap, 0)
                if gap <= GAP or (waste <= WASTE * (cur[4] + n) and off + n - cur[1] <= MAX_SPAN):
                    cur[2] = max(cur[2], off + n)
                    cur[3].append(k)
                    cur[4] += n
                    continue
            cur = [f, off, off + n, [k], n]
            spans.append(cur)
    return spans


class ShardData:
    """The shard files of one dataset: open files, batch layouts, byte-range reads."""

    strategy = ""  # shard_file.MAPPED / PREAD / REMOTE
    remote = pread = False

    def __init__(self, dataset: Dataset, index: DatasetIndex, cache_files: int, cache_batches: int, budget: int):
        self.dataset, self.index = dataset, index
        self.uri = dataset.uri
        self.cache_files, self.cache_batches = max(1, cache_files), max(1, cache_batches)
        self.budget = budget  # bytes the maps may hold (shard_reader.open_shard_data)
        self._files: OrderedDict[int, ShardFile] = OrderedDict()
        self._slots: OrderedDict[tuple[int, int], Batch] = OrderedDict()
        self._pinned = 0
        self._lock = threading.RLock()
        self._count = threading.Lock()  # counters are updated from the read threads too
        self._pool = None  # a thread pool for concurrent reads (S3)
        self.fetches = 0  # batch layouts loaded (cache misses)
        self.opens = 0  # shard files opened
        self.bytes_read = 0  # bytes read from shards (ranges; locally: the bytes touched)
        self.code_bytes = 0  # of which code values handed to the renderer
        self.requests = 0  # S3 requests (GETs and HEADs); 0 locally

    @property
    def ranged(self) -> bool:
        """Read by ranges (S3, or pread locally), not in place from maps."""
        return self.remote or self.pread

    @property
    def open_shards(self) -> list[int]:
        """The shards with an open file (at most `cache_files` between calls)."""
        return list(self._files)

    @property
    def cached_batches(self) -> list[tuple[int, int]]:
        """(shard, record batch) of the layouts held (at most `cache_batches` between calls)."""
        return list(self._slots)

    # raw reads ------------------------------------------------------------------------------
    def read_raw(self, f: ShardFile, offset: int, length: int):
        """Bytes [offset, offset + length) of a shard: a memoryview of the map, or one read."""
        with self._count:
            self.bytes_read += length
            self.requests += self.remote
        return f.read(offset, length)

    def read_ranges(self, ranges: list[tuple[ShardFile, int, int]]) -> list:
        """Many ranges at once, merged per shard (`merge_ranges`), the merged spans read
        concurrently (S3) or one after the other."""
        out: list = [b"" if n <= 0 else None for _, _, n in ranges]
        spans = merge_ranges([r for r in ranges if r[2] > 0])
        wanted = [k for k, (_, _, n) in enumerate(ranges) if n > 0]
        if self._pool is not None and len(spans) > 1:
            bufs = list(self._pool.map(lambda sp: self.read_raw(sp[0], sp[1], sp[2] - sp[1]), spans))
        else:
            bufs = [self.read_raw(sp[0], sp[1], sp[2] - sp[1]) for sp in spans]
        for (_, start, _, ks, _), buf in zip(spans, bufs):
            mv = memoryview(buf)
            for k in ks:
                _, off, n = ranges[wanted[k]]
                out[wanted[k]] = mv[off - start : off - start + n]
        return out

    # files and layouts ----------------------------------------------------------------------
    def file(self, s: int) -> ShardFile:
        with self._lock:
            f = self._files.get(s)
            if f is not None:
                self._files.move_to_end(s)
                return f
            f = self._files[s] = self._open(s)
            self.opens += 1
            if not self._pinned:
                self._trim()
            return f

    def _open(self, s: int) -> ShardFile:
        """Shard s opened, checked, and its footer read (and its batch starts scanned when it is
        not cut in BATCH_ROWS batches: another writer's layout)."""
        f = ShardFile(self.dataset, s, self.index.entry(s), self.strategy)
        with self._count:
            self.requests += self.remote  # the HEAD that gives the size
        try:
            if f.size < 8 + ipc.TAIL:
                raise ipc.LayoutError("file too short")
            n = ipc.footer_length(self.read_raw(f, f.size - ipc.TAIL, ipc.TAIL))
            if n + ipc.TAIL + 8 > f.size:
                raise ipc.LayoutError("footer longer than the file")
            footer = bytes(self.read_raw(f, f.size - n - ipc.TAIL, n + ipc.TAIL))
            schema = pa.ipc.open_file(pa.py_buffer(b"ARROW1\x00\x00" + footer)).schema
            f.blocks = ipc.parse_footer(footer[:n]).blocks
        except (ipc.LayoutError, pa.ArrowInvalid, struct.error) as e:
            raise IntegrityError(f"shard {f.uri} is not a readable Arrow IPC file: {e}") from e
        check_schema(f.uri, schema)
        if len(f.blocks) != -(-f.rows // BATCH_ROWS):
            self.scan(f)
        return f

    def _trim(self) -> None:
        """Close the least recently used files beyond the bound, with their batch layouts (a
        local batch's views keep the map alive)."""
        while len(self._files) > self.cache_files:
            old, f = self._files.popitem(last=False)
            for key in [k for k in self._slots if k[0] == old]:
                del self._slots[key]
            f.close()
        while len(self._slots) > self.cache_batches:
            self._slots.popitem(last=False)

    def scan(self, f: ShardFile) -> np.ndarray:
        """Batch row starts of a shard not cut in BATCH_ROWS batches (every batch message read)."""
        counts = []
        msgs = self.read_ranges([(f, int(o), int(m)) for o, m, _ in f.blocks.tolist()])
        for (o, m, body), msg in zip(f.blocks.tolist(), msgs):
            try:
                counts.append(ipc.parse_batch_message(bytes(msg), o, m, body).rows)
            except ipc.LayoutError:
                counts.append(f.arrow_batch(len(counts)).num_rows)
        starts = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        if starts[-1] != f.rows:
            raise IntegrityError(f"shard {f.uri}: {starts[-1]} rows, manifest says {f.rows}")
        f.starts = starts
        return starts

    def locate(self, f: ShardFile, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of one shard → (record batch, row in batch)."""
        if f.starts is None:
            return np.divmod(row, BATCH_ROWS)
        b = np.searchsorted(f.starts, row, side="right") - 1
        return b, row - f.starts[b]

    def _expected_rows(self, f: ShardFile, b: int) -> int:
        if f.starts is not None:
            return int(f.starts[b + 1] - f.starts[b])
        return min(BATCH_ROWS, f.rows - b * BATCH_ROWS)

    def _batch_from(self, f: ShardFile, b: int, msg) -> Batch:
        o, m, body = (int(x) for x in f.blocks[b])
        try:
            layout = ipc.parse_batch_message(bytes(msg), o, m, body)
            if len(layout.buffers) != NUM_BUFFERS:
                raise ipc.LayoutError(f"{len(layout.buffers)} buffers in a record batch of the shard schema")
            rows = layout.rows
            batch_views = views(layout, f.mm, layout.body) if f.mm is not None else None
            at = positions(layout) if f.mm is not None else None
        except ipc.LayoutError:
            layout = at = None
            rb = f.arrow_batch(b)
            rows, batch_views = rb.num_rows, arrow_views(rb)
        if rows != self._expected_rows(f, b):
            if f.starts is not None:
                raise IntegrityError(f"shard {f.uri}: record batch {b} has {rows} rows, its footer says otherwise")
            self.scan(f)
            raise Relocate()
        self.fetches += 1
        return Batch(layout, batch_views, rows, at)

    def batches(self, wanted: list[tuple[int, int]]) -> list[Batch]:
        """Layouts of (shard, batch) pairs, in order (a strategy's)."""
        raise NotImplementedError

    # reading codes ---------------------------------------------------------------------------
    def fetch(self, reqs: list) -> list[list[np.ndarray]]:
        """Code windows of many documents at once. `reqs[k]` is (shard, row in shard, cols) with
        cols a list of (column, lo, hi, count): codes [lo, hi) of that column, whose row must
        hold `count` codes (from the length index). Returns per request one int32 array per col
        (zero-copy views of the map locally; slices of the fetched spans by ranges)."""
        return self._pinned_call(self._fetch, reqs)

    def _pinned_call(self, fn, *args):
        """fn(*args) under the lock with the caches pinned (no file or layout is closed while
        it runs), again after a relocation (a shard found not BATCH_ROWS-regular)."""
        with self._lock:
            self._pinned += 1
            try:
                while True:
                    try:
                        return fn(*args)
                    except Relocate:
                        continue
            finally:
                self._pinned -= 1
                if not self._pinned:
                    self._trim()

    def _open_all(self, shards: list[int]) -> dict[int, ShardFile]:
        need = [s for s in dict.fromkeys(shards) if s not in self._files]
        if self._pool is not None and len(need) > 1:
            opened = list(self._pool.map(self._open, need))
            for s, f in zip(need, opened):
                self._files[s] = f
                self.opens += 1
        return {s: self.file(s) for s in dict.fromkeys(shards)}

    def _fetch(self, reqs: list) -> list[list[np.ndarray]]:
        files = self._open_all([s for s, _, _ in reqs])
        loc = [None] * len(reqs)
        by_shard: dict[int, list[int]] = {}
        for k, (s, _, _) in enumerate(reqs):
            by_shard.setdefault(s, []).append(k)
        for s, ks in by_shard.items():
            b, r = self.locate(files[s], np.array([reqs[k][1] for k in ks], dtype=np.int64))
            for k, bb, rr in zip(ks, b.tolist(), r.tolist()):
                loc[k] = (bb, rr)
        batches = self.batches([(s, loc[k][0]) for k, (s, _, _) in enumerate(reqs)])
        out: list[list] = [[] for _ in reqs]
        by_range = []  # (request, col slot, column, lo, hi, count, batch, file, row in batch)
        for k, (s, _, cols) in enumerate(reqs):
            b, r = loc[k]
            bt = batches[k]
            for c, lo, hi, count in cols:
                if bt.views is not None:
                    out[k].append(self._window(bt, files[s], c, r, lo, hi, count))
                    self.bytes_read += 8 + 4 * (hi - lo)
                else:
                    by_range.append((k, len(out[k]), c, lo, hi, count, bt, files[s], r))
                    out[k].append(None)
        if by_range:
            self._read_by_ranges(by_range, out)
        return out

    def _window(self, bt: Batch, f: ShardFile, c: str, r: int, lo: int, hi: int, count: int) -> np.ndarray:
        """Codes [lo, hi) of row r of column c from a batch's views, the count checked."""
        off, vals = bt.views[c]
        o0 = int(off[r])
        if int(off[r + 1]) - o0 != count:
            self._mismatch(f, c, r, int(off[r + 1]) - o0, count)
        self.code_bytes += 4 * (hi - lo)
        return vals[o0 + lo : o0 + hi]

    def _read_by_ranges(self, by_range: list, out: list) -> None:
        """The windows of batches without views (a strategy's)."""
        raise NotImplementedError

    def _mismatch(self, f: ShardFile, c: str, r: int, got: int, want: int):
        raise IntegrityError(
            f"shard {f.uri}: row {r} of a record batch has {got} {c} codes, its length index says {want} "
            "(the shard and its index/ file disagree)"
        )

    def sample_id(self, s: int, b: int, r: int) -> str:
        with self._lock:
            f = self.file(s)
            (bt,) = self.batches([(s, b)])
            if bt.views is not None:
                off, data = bt.views["id"]
                return bytes(data[int(off[r]) : int(off[r + 1])]).decode()
            (ob,) = self.read_ranges([(f, offsets_at(bt.layout, "id", r), 8)])
            o0, o1 = struct.unpack("<ii", ob)
            (data,) = self.read_ranges([(f, values_at(bt.layout, "id", o0, 1), o1 - o0)])
            return bytes(data).decode()

    def stats(self) -> dict:
        counters = ("bytes_read", "code_bytes", "requests", "opens")
        return {**{name: getattr(self, name) for name in counters}, "batch_layouts": self.fetches}
