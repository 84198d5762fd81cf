"""Reading only the rows a rank renders: byte ranges of shards, locally or on S3, in bounded memory.

A mix source addresses its dataset's samples by a global index in [0, N) (shards in manifest
order, only those holding its `dataset_sources` when it names some). Planning needs nothing but
their code counts, from the length index (index.py). Rendering needs the codes of the rank's
own rows, and this module reads exactly those:

- Where a row lives: the shard's footer gives each record batch's place (offset, metadata
  length, body length); the batch's message gives its buffers' places in the body (ipc.py).
  Both are parsed once and cached (`cache_files` open shards, `cache_batches` batch layouts).
- What is read per document: the two list offsets of its row in each code column it uses
  (8 bytes each), then the values it renders (a split text document: only its piece). The code
  counts are checked against the length index (a shard and an index that disagree are an
  IntegrityError naming both).
- Locally, for a dataset that fits `cache_batches` record batches' worth of bytes, in place
  through memory maps of its shards (MADV_RANDOM), zero-copy: the maps can never hold more
  than the dataset, so resident memory stays within that budget. `spans` locates a whole
  batch's pieces with array operations: each map is viewed as int32 and each record batch's
  column positions are kept in a per-file table (48 bytes per record batch while the file
  is open), so a piece costs two gathers of its offsets and no Python of its own. A larger dataset is read by
  `pread` of the same ranges instead: on this machine's kernel (6.18) a one-byte touch of a
  file map makes a whole 2 MB page-cache folio resident, so reading a 2.4 KB document through
  a map of a dataset far beyond the budget costs a 2 MB fault each time and file-backed RSS
  grows to the dataset (measured: 8 sources streaming a 2.5 GB dataset held 300 MB of maps
  resident between MADV_DONTNEED drops, and dropping per row cost 17 ms per batch in faults);
  with pread it costs a system call per range and nothing stays resident.
- On S3 through pyarrow's S3 file: a HEAD and two tail reads (footer length, then the footer:
  ~500 bytes + 24 per record batch) per shard opened, one read per batch layout (~600 bytes),
  then per global batch two rounds of ranged GETs (offsets, then values), each round's ranges
  sorted and merged when less than `GAP` bytes apart or when the merged span reads at most
  `WASTE` (25%) more than it holds (dense reads), and issued concurrently. The mixer
  prefetches the next global batches' rounds on a background thread (read-ahead), so a rank
  waits on S3 only when it renders faster than GETs return.
- Ranged reads (S3, pread): a record batch of which the rank has asked a quarter by ranges
  (few ranks, a block order: it will use the rest soon) is read whole once and kept
  (`cache_batches` / `cache_batches_remote` of them), as the old whole-batch reader did.

One `SharedDataset` (the index and these files) serves every mix source over the same dataset,
so memory is bounded by the caches whatever the number of sources. Measured with
`bench/bench_mixer.py --only scaling`: at W = 64 a rank reads 1.1-1.25× the code bytes it renders
(the rest: offsets, batch layouts, footers), against every record batch of the dataset before.

Trade-off: a document costs two dependent reads (offsets, then values) instead of one whole
record batch; on S3 that is two request rounds per global batch and a few hundred bytes of
layout per record batch touched, in exchange for reading 1/W of the data per rank. Files this
reader cannot parse by range (compressed bodies) fall back to pyarrow's whole-batch read.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from trimodal.dataset.dataset import Dataset
from trimodal.dataset.shards import BATCH_ROWS, SCHEMA, file_sha256
from trimodal.dataset.storage import filesystem_for
from trimodal.errors import IntegrityError
from trimodal.mixer import ipc
from trimodal.mixer.index import DatasetIndex
from trimodal.mixer.render import Spans

COLUMNS = ("text", "image", "audio")
# Buffer numbers (offsets, values) in a record batch of the shard schema: id (validity, offsets,
# data), source (validity, indices), then per list column (validity, offsets, child validity,
# child values), then origin.
_BUFFERS = {"id": (1, 2), "text": (6, 8), "image": (10, 12), "audio": (14, 16)}
_NUM_BUFFERS = 20
_COL_INDEX = {c: SCHEMA.get_field_index(c) for c in ("id", *COLUMNS)}
GAP = 256  # ranges of one shard closer than this are read by one request, and so are ranges
WASTE = 0.25  # whose merged span reads at most this fraction more than they hold
MAX_SPAN = 8 << 20
WHOLE = 0.25  # S3: a record batch is fetched whole once a rank has asked this part of it by ranges
_HASH_CHUNK = 16 << 20
_EMPTY = np.zeros(0, dtype=np.int32)
_UNKNOWN, _UNADDRESSABLE = -2, -3  # ShardFile.at_table entries not (yet) positions
PIECES_PER_SHARD = 12  # spans: fewer pieces per shard than this in a batch: piece by piece


def is_remote(uri: str) -> bool:
    return not isinstance(filesystem_for(uri), pafs.LocalFileSystem)


class ShardFile:
    """One open shard, verified against its manifest entry: size always (unless verify is
    "none"), sha256 once per process with verify "sha256", schema and footer always."""

    def __init__(self, data: ShardData, s: int):
        ds = data.dataset
        entry = data.index.entry(s)
        loc = ds._root.join(entry["path"])
        self.uri = loc.uri
        self.local = isinstance(loc.fs, pafs.LocalFileSystem)
        self.path = loc.path
        self.mm = self.f = self.fd = None  # a map, or a file read by pread (local), or an S3 file
        self.flat: np.ndarray | None = None  # the map as int32 (spans), made on first use
        self.at_table: np.ndarray | None = None  # column positions per record batch (spans)
        self.at_rows: dict[int, list] = {}  # the same as lists, for the piece-by-piece path
        verify = ds._mode(s)
        try:
            if self.local:
                fd = os.open(loc.path, os.O_RDONLY)
                try:
                    size = os.fstat(fd).st_size
                    if size and not data.pread:
                        self.mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                        if hasattr(mmap, "MADV_RANDOM"):
                            self.mm.madvise(mmap.MADV_RANDOM)
                finally:
                    if data.pread:
                        self.fd = fd
                    else:
                        os.close(fd)
                if verify == "sha256" and size == entry["bytes"]:
                    digest = file_sha256(loc.path)
            else:
                self.f = loc.fs.open_input_file(loc.path)
                with data._count:
                    data.requests += 1  # the HEAD that gives the size
                size = self.f.size()
                if verify == "sha256" and size == entry["bytes"]:
                    h = hashlib.sha256()
                    for at in range(0, size, _HASH_CHUNK):
                        h.update(memoryview(self.f.read_at(min(_HASH_CHUNK, size - at), at)))
                    digest = h.hexdigest()
        except (OSError, ValueError) as e:
            raise IntegrityError(f"shard {self.uri} listed in the manifest cannot be opened: {e}") from e
        if verify != "none" and size != entry["bytes"]:
            raise IntegrityError(f"shard {self.uri}: size {size} bytes, manifest says {entry['bytes']}")
        if verify == "sha256" and digest != entry["sha256"]:
            raise IntegrityError(f"shard {self.uri}: sha256 {digest[:12]}… does not match the manifest's")
        ds._verified.add(s)
        self.size = size
        self.rows = int(entry["rows"])
        try:
            if size < 8 + ipc.TAIL:
                raise ipc.LayoutError("file too short")
            n = ipc.footer_length(data.read_raw(self, size - ipc.TAIL, ipc.TAIL))
            if n + ipc.TAIL + 8 > size:
                raise ipc.LayoutError("footer longer than the file")
            footer = bytes(data.read_raw(self, size - n - ipc.TAIL, n + ipc.TAIL))
            schema = pa.ipc.open_file(pa.py_buffer(b"ARROW1\x00\x00" + footer)).schema
            self.blocks = ipc.parse_footer(footer[:n]).blocks
        except (ipc.LayoutError, pa.ArrowInvalid, struct.error) as e:
            raise IntegrityError(f"shard {self.uri} is not a readable Arrow IPC file: {e}") from e
        if not schema.equals(SCHEMA):
            raise IntegrityError(f"shard {self.uri}: schema differs from the dataset schema")
        # Batch row starts when the shard is not cut in BATCH_ROWS batches (another writer)
        self.starts: np.ndarray | None = None
        if len(self.blocks) != -(-self.rows // BATCH_ROWS):
            self.starts = data.scan(self)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Batch:
    """A record batch's layout, and zero-copy views of its columns' buffers: locally over the
    map; on S3 over its fetched body once the rank has asked for a good part of it."""

    __slots__ = ("layout", "views", "rows", "asked", "at")

    def __init__(self, layout, views, rows, at=None):
        self.layout, self.views, self.rows = layout, views, rows
        self.asked = 0  # code bytes asked of this batch by ranges (S3, pread)
        # in a mapped shard: per code column (text, image, audio), its offsets and values as
        # int32 positions in the whole map, (-1, -1) for a column without values
        self.at = at


def _views(layout: ipc.BatchLayout, mem, base: int) -> dict:
    """(offsets, values) per column of a record batch whose body starts at `base` in `mem`."""
    rows, views = layout.rows, {}
    for c, (ob, vb) in _BUFFERS.items():
        (oo, on), (vo, vn) = layout.buffers[ob].tolist(), layout.buffers[vb].tolist()
        if on < 4 * (rows + 1):  # a column without a single value: no offsets buffer
            views[c] = (np.zeros(rows + 1, np.int32), _EMPTY if c != "id" else b"")
            continue
        off = np.frombuffer(mem, np.int32, rows + 1, base + oo)
        if c == "id":
            views[c] = (off, memoryview(mem)[base + vo : base + vo + vn])
        else:
            views[c] = (off, np.frombuffer(mem, np.int32, vn // 4, base + vo))
    return views


def _positions(layout: ipc.BatchLayout) -> tuple | None:
    """(offsets, values) of each code column as int32 positions in the file; (-1, -1) for a
    column without values; None when a buffer is not 4-byte aligned (not addressable as int32)."""
    out = []
    for c in COLUMNS:
        ob, vb = _BUFFERS[c]
        (oo, on), (vo, _) = layout.buffers[ob].tolist(), layout.buffers[vb].tolist()
        if on < 4 * (layout.rows + 1):
            out.append((-1, -1))
            continue
        oo, vo = layout.body + oo, layout.body + vo
        if oo % 4 or vo % 4:
            return None
        out.append((oo // 4, vo // 4))
    return tuple(out)


class _Relocate(Exception):
    """A shard turned out not to be BATCH_ROWS-regular; its batch starts were scanned, so the
    rows are located again."""


class ShardData:
    """The shard files of one dataset: open files, batch layouts, byte-range reads."""

    def __init__(self, dataset: Dataset, index: DatasetIndex, cache_files: int = 64, cache_batches: int = 64):
        self.dataset, self.index = dataset, index
        self.uri = dataset.uri
        self.remote = is_remote(dataset.uri)
        self.cache_files, self.cache_batches = max(1, cache_files), max(1, cache_batches)
        self._files: OrderedDict[int, ShardFile] = OrderedDict()
        self._slots: OrderedDict[tuple[int, int], _Batch] = OrderedDict()
        self._pinned = 0
        self._lock = threading.RLock()
        self._count = threading.Lock()  # counters are updated from the read threads too
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="trimodal-s3") if self.remote else None
        # Locally: memory-mapped when the whole dataset fits `cache_batches` record batches' worth
        # of bytes (the maps can then never hold more), read by pread beyond (a touch of a map
        # makes a whole 2 MB page-cache folio resident: see the module docstring).
        total = dataset.manifest.totals.get("bytes") or int(index.table.bytes.sum())
        rows = max(1, index.num_rows)
        self.budget = int(self.cache_batches * total / max(1.0, rows / BATCH_ROWS))
        self.pread = not self.remote and total > self.budget
        self.fetches = 0  # batch layouts loaded (cache misses)
        self.opens = 0  # shard files opened
        self.bytes_read = 0  # bytes read from shards (ranges; locally: the bytes touched)
        self.code_bytes = 0  # of which code values handed to the renderer
        self.requests = 0  # S3 requests (GETs and HEADs); 0 locally

    @property
    def ranged(self) -> bool:
        """Read by ranges (S3, or pread locally), not in place from maps."""
        return self.remote or self.pread

    # raw reads ------------------------------------------------------------------------------
    def read_raw(self, f: ShardFile, offset: int, length: int):
        """Bytes [offset, offset + length) of a shard: a memoryview of the map, or one GET."""
        with self._count:
            self.bytes_read += length
            self.requests += not f.local
        if f.mm is not None:
            return memoryview(f.mm)[offset : offset + length] if length else b""
        if f.fd is not None:
            return os.pread(f.fd, length, offset)
        return f.f.read_at(length, offset)

    def read_ranges(self, ranges: list[tuple[ShardFile, int, int]]) -> list:
        """Many ranges at once: per shard sorted and merged when closer than GAP bytes, the merged
        spans read concurrently (S3) or sliced from the map (locally)."""
        out: list = [None] * len(ranges)
        if not ranges:
            return out
        by_file: dict[int, list[int]] = {}
        for k, (f, _, n) in enumerate(ranges):
            if n <= 0:
                out[k] = b""
            else:
                by_file.setdefault(id(f), []).append(k)
        spans = []  # (file, start, end, [range ids], useful bytes)
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
        if self._pool is not None and len(spans) > 1:
            bufs = list(self._pool.map(lambda sp: self.read_raw(sp[0], sp[1], sp[2] - sp[1]), spans))
        else:
            bufs = [self.read_raw(sp[0], sp[1], sp[2] - sp[1]) for sp in spans]
        for (_, start, _, ks, _), buf in zip(spans, bufs):
            mv = memoryview(buf)
            for k in ks:
                _, off, n = ranges[k]
                out[k] = mv[off - start : off - start + n]
        return out

    # files and layouts ----------------------------------------------------------------------
    def file(self, s: int) -> ShardFile:
        with self._lock:
            f = self._files.get(s)
            if f is not None:
                self._files.move_to_end(s)
                return f
            f = self._files[s] = ShardFile(self, s)
            self.opens += 1
            if not self._pinned:
                self._trim()
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
                counts.append(self._pyarrow_batch(f, len(counts)).num_rows)
        starts = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        if starts[-1] != f.rows:
            raise IntegrityError(f"shard {f.uri}: {starts[-1]} rows, manifest says {f.rows}")
        f.starts = starts
        return starts

    def _pyarrow_batch(self, f: ShardFile, b: int) -> pa.RecordBatch:
        src = pa.py_buffer(f.mm) if f.mm is not None else (pa.OSFile(f.path) if f.local else f.f)
        return pa.ipc.open_file(src).get_batch(b)

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

    def _batch_from(self, f: ShardFile, s: int, b: int, msg) -> _Batch:
        o, m, body = (int(x) for x in f.blocks[b])
        try:
            layout = ipc.parse_batch_message(bytes(msg), o, m, body)
            if len(layout.buffers) != _NUM_BUFFERS:
                raise ipc.LayoutError(f"{len(layout.buffers)} buffers in a record batch of the shard schema")
            rows = layout.rows
            views = _views(layout, f.mm, layout.body) if f.mm is not None else None
            at = _positions(layout) if f.mm is not None else None
        except ipc.LayoutError:
            layout = at = None
            rb = self._pyarrow_batch(f, b)
            rows = rb.num_rows
            views = {}
            for c, i in _COL_INDEX.items():
                arr = rb.column(i)
                bufs = arr.buffers()
                off = np.frombuffer(bufs[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
                if c == "id":
                    views[c] = (off, memoryview(bufs[2]) if bufs[2] is not None else b"")
                else:
                    vals = arr.values.to_numpy(zero_copy_only=True) if len(arr.values) else _EMPTY
                    views[c] = (off, vals)
        if rows != self._expected_rows(f, b):
            if f.starts is not None:
                raise IntegrityError(f"shard {f.uri}: record batch {b} has {rows} rows, its footer says otherwise")
            self.scan(f)
            raise _Relocate()
        self.fetches += 1
        return _Batch(layout, views, rows, at)

    def batches(self, wanted: list[tuple[int, int]]) -> list[_Batch]:
        """Layouts of (shard, batch) pairs, in order. Locally each is looked up in turn in the
        LRU of `cache_batches` (a pair evicted by the ones before it is parsed again: the cost
        follows the order's locality, what `shuffle_window` buys); on S3 the missing ones are
        read together, concurrently."""
        out = [None] * len(wanted)
        if not self.ranged:
            for k, key in enumerate(wanted):
                bt = self._slots.get(key)
                if bt is None:
                    f = self._files[key[0]]
                    o, m, _ = f.blocks[key[1]].tolist()
                    bt = self._slots[key] = self._batch_from(f, key[0], key[1], self.read_raw(f, o, m))
                    while len(self._slots) > self.cache_batches:
                        self._slots.popitem(last=False)
                else:
                    self._slots.move_to_end(key)
                out[k] = bt
            return out
        missing: dict[tuple[int, int], None] = {}
        for key in wanted:
            if key in self._slots:
                self._slots.move_to_end(key)
            else:
                missing[key] = None
        if missing:
            keys = list(missing)
            files = {s: self._files[s] for s, _ in keys}
            msgs = self.read_ranges(
                [(files[s], int(files[s].blocks[b][0]), int(files[s].blocks[b][1])) for s, b in keys]
            )
            for (s, b), msg in zip(keys, msgs):
                missing[s, b] = self._batch_from(files[s], s, b, msg)
        for k, key in enumerate(wanted):
            bt = self._slots.get(key) or missing[key]
            out[k] = bt
        for key, bt in missing.items():
            self._slots[key] = bt
        return out

    # reading codes ---------------------------------------------------------------------------
    def fetch(self, reqs: list) -> list[list[np.ndarray]]:
        """Code windows of many documents at once. `reqs[k]` is (shard, row in shard, cols) with
        cols a list of (column, lo, hi, count): codes [lo, hi) of that column, whose row must
        hold `count` codes (from the length index). Returns per request one int32 array per col
        (zero-copy views of the map locally; slices of the fetched spans on S3)."""
        return self._pinned_call(self._fetch, reqs)

    def spans(self, shard, row, kind, lo, hi, nt, nm) -> Spans | None:
        """Locally from maps, where the codes of many document pieces lie (`Spans`): the text
        codes [lo, hi) of each, and a pair's image or audio codes (`kind`: render.TEXT, IMAGE,
        AUDIO), each sample's counts checked against the length index (`nt`, `nm`). Computed
        with array operations per shard and record batch, not per piece. None when a record
        batch is not addressable in place (pyarrow's fallback, unaligned buffers): use
        `fetch` then."""
        return self._pinned_call(self._spans, shard, row, kind, lo, hi, nt, nm)

    def _pinned_call(self, fn, *args):
        """fn(*args) under the lock with the caches pinned (no file or layout is closed while
        it runs), again after a relocation (a shard found not BATCH_ROWS-regular)."""
        with self._lock:
            self._pinned += 1
            try:
                while True:
                    try:
                        return fn(*args)
                    except _Relocate:
                        continue
            finally:
                self._pinned -= 1
                if not self._pinned:
                    self._trim()

    def _spans(self, shard, row, kind, lo, hi, nt, nm) -> Spans | None:
        n = len(shard)
        start = np.empty(n, dtype=np.int64)
        fid = np.zeros(n, dtype=np.int64)
        mstart, mwidth = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        s0 = int(shard[0]) if n else 0
        shards = [s0] if n == 0 or (shard == s0).all() else np.unique(shard).tolist()
        if len(shards) * PIECES_PER_SHARD > n:  # few pieces per shard: array calls cost more
            return self._spans_each(shard, row, kind, lo, hi, nt, nm)
        flats = []
        for s in shards:
            sel = slice(None) if len(shards) == 1 else np.flatnonzero(shard == s)
            f = self._files.get(s) or self.file(s)
            if f.flat is None:
                f.flat = np.frombuffer(f.mm, np.int32, f.size // 4)
            b, r = self.locate(f, row[sel])
            at = self._positions(f, s, b)
            if at is None:
                return None
            start[sel] = self._codes_at(f, "text", at[:, 0], r, nt[sel]) + lo[sel]
            k = kind[sel]
            pk = np.flatnonzero(k)
            if len(pk):  # pairs: the image or audio column (column index = kind)
                idx = pk if len(shards) == 1 else sel[pk]
                cols = k[pk]
                for c in np.unique(cols).tolist():
                    which = pk[cols == c]
                    into = which if len(shards) == 1 else sel[which]
                    mstart[into] = self._codes_at(f, COLUMNS[c], at[which, c], r[which], nm[into])
                mwidth[idx] = nm[idx]
            fid[sel] = len(flats)
            flats.append(f.flat)
        return self._counted(flats, fid, start, mstart, mwidth, kind, lo, hi)

    def _counted(self, flats, fid, start, mstart, mwidth, kind, lo, hi) -> Spans:
        """The spans, their bytes counted as the ranged reads count them (8 bytes of offsets per
        column read, then the codes)."""
        width = hi - lo
        codes = 4 * int(width.sum() + mwidth.sum())
        self.bytes_read += 8 * len(fid) + 8 * int(np.count_nonzero(kind)) + codes
        self.code_bytes += codes
        return Spans(flats, fid, start, start + width, fid, mstart, mstart + mwidth)

    def _spans_each(self, shard, row, kind, lo, hi, nt, nm) -> Spans | None:
        """`_spans` piece by piece: for a batch spread over many shards (a global shuffle of a
        large dataset), where a handful of array calls per shard would cost more (~30 µs per
        shard against ~2 µs per piece)."""
        n = len(shard)
        flats, slot = [], {}
        start, fid, mstart, mwidth = [0] * n, [0] * n, [0] * n, [0] * n
        S, R, K, LO, NT, NM = (x.tolist() for x in (shard, row, kind, lo, nt, nm))
        for k in range(n):
            s, r = S[k], R[k]
            j = slot.get(s)
            if j is None:
                f = self._files.get(s) or self.file(s)
                if f.flat is None:
                    f.flat = np.frombuffer(f.mm, np.int32, f.size // 4)
                j = slot[s] = len(flats)
                flats.append(f)
            f = flats[j]
            if f.starts is None:
                b, r = divmod(r, BATCH_ROWS)
            else:
                b = int(np.searchsorted(f.starts, r, side="right")) - 1
                r -= int(f.starts[b])
            at = f.at_rows.get(b)
            if at is None:
                at = f.at_rows[b] = self._positions(f, s, np.array([b]))
                if at is None:
                    return None
                at = f.at_rows[b] = at[0].tolist()
            flat = f.flat
            (to, tv), kk = at[0], K[k]
            o0 = int(flat[to + r]) if to >= 0 else 0
            got = int(flat[to + r + 1]) - o0 if to >= 0 else 0
            if got != NT[k]:
                self._mismatch(f, "text", r, got, NT[k])
            start[k], fid[k] = tv + o0 + LO[k], j
            if kk:
                mo, mv = at[kk]
                m0 = int(flat[mo + r]) if mo >= 0 else 0
                got = int(flat[mo + r + 1]) - m0 if mo >= 0 else 0
                if got != NM[k]:
                    self._mismatch(f, COLUMNS[kk], r, got, NM[k])
                mstart[k], mwidth[k] = mv + m0, got
        start, fid = np.array(start, dtype=np.int64), np.array(fid, dtype=np.int64)
        mstart, mwidth = np.array(mstart, dtype=np.int64), np.array(mwidth, dtype=np.int64)
        return self._counted([f.flat for f in flats], fid, start, mstart, mwidth, kind, lo, hi)

    def _positions(self, f: ShardFile, s: int, b: np.ndarray) -> np.ndarray | None:
        """Column positions ([k, column, (offsets, values)], int32 units of the map) of record
        batches `b` of a mapped shard, from the file's table (filled from the layouts the first
        time a batch is met: 48 bytes per record batch, kept while the file is open)."""
        if f.at_table is None:
            f.at_table = np.full((len(f.blocks), len(COLUMNS), 2), _UNKNOWN, dtype=np.int64)
        at = f.at_table[b]
        if (at[:, 0, 0] <= _UNKNOWN).any():
            for x in np.unique(b[at[:, 0, 0] == _UNKNOWN]).tolist():
                (bt,) = self.batches([(s, x)])
                f.at_table[x] = _UNADDRESSABLE if bt.at is None else bt.at
            at = f.at_table[b]
            if (at[:, 0, 0] == _UNADDRESSABLE).any():
                return None
        return at

    def _codes_at(self, f: ShardFile, col: str, pos: np.ndarray, r: np.ndarray, want: np.ndarray) -> np.ndarray:
        """Where the codes of rows `r` of one column start in the map, their counts checked
        against the length index (`want`); pos: the rows' batches' (offsets, values)."""
        flat = f.flat
        none = pos[:, 0] < 0  # a batch without a single value in this column: offsets are 0
        op = np.where(none, 0, pos[:, 0] + r)
        o0 = flat[op].astype(np.int64)
        got = flat[op + 1] - o0
        if none.any():
            o0[none] = got[none] = 0
        bad = got != want
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            self._mismatch(f, col, int(r[j]), int(got[j]), int(want[j]))
        return pos[:, 1] + o0

    def _open_all(self, shards: list[int]) -> dict[int, ShardFile]:
        need = [s for s in dict.fromkeys(shards) if s not in self._files]
        if self._pool is not None and len(need) > 1:
            opened = list(self._pool.map(lambda s: ShardFile(self, s), need))
            for s, f in zip(need, opened):
                self._files[s] = f
                self.opens += 1
        files = {}
        for s in dict.fromkeys(shards):
            files[s] = self.file(s)
        return files

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
        remote = []  # (request, col slot, column, lo, hi, count, batch, file, row in batch)
        for k, (s, _, cols) in enumerate(reqs):
            b, r = loc[k]
            bt = batches[k]
            for c, lo, hi, count in cols:
                if bt.views is not None:
                    off, vals = bt.views[c]
                    o0 = int(off[r])
                    if int(off[r + 1]) - o0 != count:
                        self._mismatch(files[s], c, r, int(off[r + 1]) - o0, count)
                    out[k].append(vals[o0 + lo : o0 + hi])
                    n = 4 * (hi - lo)
                    self.bytes_read += 8 + n
                    self.code_bytes += n
                else:
                    remote.append((k, len(out[k]), c, lo, hi, count, bt, files[s], r))
                    out[k].append(None)
        if remote:
            remote = self._whole_bodies(remote, out)
        if remote:
            self._fetch_remote(remote, out)
        return out

    def _whole_bodies(self, remote: list, out: list) -> list:
        """S3: a record batch whose documents this rank has asked for, by ranges, a good part
        of (`WHOLE` of its body: few ranks, a block order) is fetched whole with one GET and
        kept with its layout (`cache_batches_remote` of them); its documents are then served
        from it. Returns the requests still to read by range."""
        asked: dict[int, int] = {}
        for _, _, _, lo, hi, _, bt, _, _ in remote:
            asked[id(bt)] = asked.get(id(bt), 0) + 4 * (hi - lo)
        dense = {}
        for _, _, _, _, _, _, bt, f, _ in remote:
            if (
                id(bt) not in dense
                and bt.layout is not None
                and bt.asked + asked[id(bt)] >= WHOLE * bt.layout.body_length
            ):
                dense[id(bt)] = (bt, f)
        for bt, _ in dense.values():
            bt.asked = 0
        for _, _, _, lo, hi, _, bt, _, _ in remote:
            if id(bt) not in dense:
                bt.asked += 4 * (hi - lo)
        if not dense:
            return remote
        bodies = self.read_ranges([(f, bt.layout.body, bt.layout.body_length) for bt, f in dense.values()])
        for (bt, _), body in zip(dense.values(), bodies):
            bt.views = _views(bt.layout, body, 0)
        rest = []
        for k, i, c, lo, hi, count, bt, f, r in remote:
            if bt.views is None:
                rest.append((k, i, c, lo, hi, count, bt, f, r))
                continue
            off, vals = bt.views[c]
            o0 = int(off[r])
            if int(off[r + 1]) - o0 != count:
                self._mismatch(f, c, r, int(off[r + 1]) - o0, count)
            out[k][i] = vals[o0 + lo : o0 + hi]
            self.code_bytes += 4 * (hi - lo)
        return rest

    def _fetch_remote(self, remote: list, out: list) -> None:
        """Two rounds of ranged reads: the list offsets of each row, then the code windows."""
        offs = self.read_ranges(
            [
                (f, bt.layout.body + int(bt.layout.buffers[_BUFFERS[c][0]][0]) + 4 * r, 8)
                for _, _, c, *_, bt, f, r in remote
            ]
        )
        vals = []
        for (_, _, c, lo, hi, count, bt, f, r), ob in zip(remote, offs):
            o0, o1 = struct.unpack("<ii", ob)
            if o1 - o0 != count:
                self._mismatch(f, c, r, o1 - o0, count)
            vals.append((f, bt.layout.body + int(bt.layout.buffers[_BUFFERS[c][1]][0]) + 4 * (o0 + lo), 4 * (hi - lo)))
        got = self.read_ranges(vals)
        for (k, i, _, lo, hi, *_), buf in zip(remote, got):
            out[k][i] = np.frombuffer(buf, np.int32) if len(buf) else _EMPTY
            self.code_bytes += 4 * (hi - lo)

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
            (ob,) = self.read_ranges([(f, bt.layout.body + int(bt.layout.buffers[1][0]) + 4 * r, 8)])
            o0, o1 = struct.unpack("<ii", ob)
            (data,) = self.read_ranges([(f, bt.layout.body + int(bt.layout.buffers[2][0]) + o0, o1 - o0)])
            return bytes(data).decode()

    def stats(self) -> dict:
        return {
            "bytes_read": self.bytes_read,
            "code_bytes": self.code_bytes,
            "requests": self.requests,
            "opens": self.opens,
            "batch_layouts": self.fetches,
        }


class SharedDataset:
    """Everything one process reads of one dataset, shared by the mix sources over it."""

    def __init__(self, dataset: Dataset, cache_files: int = 64, cache_batches: int = 64):
        self.dataset = dataset
        self.index = DatasetIndex(dataset, cache_files=cache_files)
        self.data = ShardData(dataset, self.index, cache_files=cache_files, cache_batches=cache_batches)


class ShardReader:
    """One mix source's view of a dataset: its sample addressing (every shard, or the shards
    holding its `sources`), its corpus filter, over the dataset's shared index and files."""

    def __init__(
        self,
        dataset: Dataset,
        cache_files: int = 64,
        cache_batches: int = 64,
        sources: list[str] | None = None,
        shared: SharedDataset | None = None,
    ):
        self.shared = shared or SharedDataset(dataset, cache_files=cache_files, cache_batches=cache_batches)
        self.dataset = dataset
        self.index, self.data = self.shared.index, self.shared.data
        self.uri = dataset.uri
        self.sources = frozenset(sources) if sources else None
        self.cache_batches = cache_batches
        if self.sources is None:
            self.shard_ids = None
            self.shard_starts = self.index.starts
        else:
            self.shard_ids = self.index.shards_with(self.sources)
            self.shard_starts = np.zeros(len(self.shard_ids) + 1, dtype=np.int64)
            np.cumsum(self.index.rows[self.shard_ids], out=self.shard_starts[1:])
        self.num_rows = int(self.shard_starts[-1])

    @property
    def fetches(self) -> int:
        return self.data.fetches

    @property
    def _files(self):
        return self.data._files

    @property
    def _slots(self):
        return self.data._slots

    def locate(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample indices → (shard in the dataset, row in that shard)."""
        g = np.asarray(g, dtype=np.int64)
        if len(g) and (g.min() < 0 or g.max() >= self.num_rows):
            raise IndexError(f"sample index out of range [0, {self.num_rows})")
        k = np.searchsorted(self.shard_starts, g, side="right") - 1
        local = g - self.shard_starts[k]
        return (k if self.shard_ids is None else self.shard_ids[k]), local

    def lengths(self, g: np.ndarray):
        """(shard, row in shard, code counts [n, 3], kept-or-None) of sample indices."""
        s, local = self.locate(g)
        lens, keep = self.index.lengths(s, local, self.sources)
        return s, local, lens, keep

    def codes(self, s: int, b: int, r: int):
        """One sample's text, image and audio codes (None where absent)."""
        f = self.data.file(s)
        row = int((b * BATCH_ROWS if f.starts is None else f.starts[b]) + r)
        lens, _ = self.index.lengths(np.array([s]), np.array([row]))
        cols = [(c, 0, int(n), int(n)) for c, n in zip(COLUMNS, lens[0].tolist()) if n >= 0]
        got = iter(self.data.fetch([(s, row, cols)])[0])
        return [next(got) if n >= 0 else None for n in lens[0].tolist()]

    def sample_id(self, s: int, b: int, r: int) -> str:
        return self.data.sample_id(s, b, r)

    def sample_at(self, shard: int, row: int) -> str:
        """The id of the sample at `row` of `shard`."""
        batch, in_batch = (int(x[0]) for x in self.data.locate(self.data.file(shard), np.array([row])))
        return self.data.sample_id(shard, batch, in_batch)

    def shard_uri(self, s: int) -> str:
        return self.dataset.shard_location(s).uri
