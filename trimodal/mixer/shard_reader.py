"""Random access to the samples of one dataset, lazily, with small bounded caches.

The mixer addresses a dataset's samples by a global index in [0, N) (shards in manifest order).
This reader maps indices to (shard, record batch, row) with arithmetic — the shard writer cuts
record batches of `BATCH_ROWS` rows, which is checked on every batch fetched, with a scan of the
shard's batch headers as the fallback for other layouts — and hands out zero-copy numpy views
of the code lists: locally over a memory map, on S3 through pyarrow's random-access file (a
record batch is fetched by a ranged read: the IPC footer says where it lives). Lengths come
from the Arrow list offsets, so planning a sequence never touches the codes themselves.

Memory is bounded whatever the dataset size: an LRU of open shard files, an LRU of record
batches held as views (each with its per-sample lengths in one preallocated slab, so the lengths
of a window of samples are one vectorized gather), and the batch layout of touched shards
(one integer per shard when regular). Trade-off: a global shuffle hits a new record batch for
nearly every sample once a dataset is much larger than the batch cache; each miss costs a batch
header parse (tens of µs locally, one ranged GET on S3). The caches make small and medium
datasets free and keep memory flat for any size.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pyarrow as pa

from trimodal.dataset.dataset import Dataset
from trimodal.dataset.schema import MODALITIES
from trimodal.dataset.shards import BATCH_ROWS, SCHEMA
from trimodal.errors import IntegrityError

COLUMNS = MODALITIES
_COL_INDEX = tuple(SCHEMA.get_field_index(c) for c in COLUMNS)
_EMPTY = np.zeros(0, dtype=np.int32)


def _list_views(arr: pa.ListArray):
    """(offsets, values, valid-or-None) numpy views of a list<int32> column."""
    bufs = arr.buffers()  # [validity, offsets, child validity, child values]
    off = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    vals = arr.values.to_numpy(zero_copy_only=True) if len(arr.values) else _EMPTY
    valid = None
    if arr.null_count:
        valid = ~arr.is_null().to_numpy(zero_copy_only=False)
    return off, vals, valid


class ShardReader:
    def __init__(
        self, dataset: Dataset, cache_files: int = 64, cache_batches: int = 1024, sources: list[str] | None = None
    ):
        if cache_batches < 4:
            raise ValueError("cache_batches must be >= 4")
        self.dataset = dataset
        self.uri = dataset.uri
        # With a `sources` filter, only shards whose manifest entry lists one of them are
        # addressed, and the other samples in those shards are reported as filtered out.
        self.sources = set(sources) if sources else None
        self.shard_ids = np.array(
            [
                i
                for i, e in enumerate(dataset.shards)
                if self.sources is None or "by_source" not in e or self.sources & set(e["by_source"])
            ],
            dtype=np.int64,
        )
        rows = np.array([dataset.shards[i]["rows"] for i in self.shard_ids], dtype=np.int64)
        self.shard_starts = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(rows, out=self.shard_starts[1:])
        self.num_rows = int(self.shard_starts[-1])
        self.cache_batches = cache_batches
        self._cache_files = cache_files
        self._files: OrderedDict[int, pa.ipc.RecordBatchFileReader] = OrderedDict()
        self._irregular: dict[int, np.ndarray] = {}  # shard -> batch row starts, when not BATCH_ROWS-regular
        self._checked: set[int] = set()  # shards whose file layout was checked once
        self._slots: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._views: list = [None] * cache_batches
        self._free = list(range(cache_batches - 1, -1, -1))  # unused slots
        self._pinned = False  # while a lookup gathers from the slab, no file (and slot) is released
        self._width = BATCH_ROWS
        self._lens = np.zeros((cache_batches, self._width, 4), dtype=np.int32)  # text, image, audio, kept
        self.fetches = 0  # record batches read (cache misses), for benchmarks

    # files -----------------------------------------------------------------------------
    def _file(self, s: int) -> pa.ipc.RecordBatchFileReader:
        f = self._files.get(s)
        if f is not None:
            self._files.move_to_end(s)
            return f
        reader = self.dataset.open_shard_file(s)  # verified, schema checked
        if s not in self._checked:
            rows = int(self.dataset.shards[s]["rows"])
            if reader.num_record_batches != -(-rows // BATCH_ROWS):
                self._scan(s, reader)
            self._checked.add(s)
        self._files[s] = reader
        if not self._pinned:
            self._trim_files()
        return reader

    def _trim_files(self) -> None:
        """Close the least recently used files beyond the bound, with their cached batches: a
        batch view keeps its file's memory map alive, so closing a file without them would
        leave mappings (and their resident pages) behind."""
        while len(self._files) > self._cache_files:
            old, _ = self._files.popitem(last=False)
            for key in [k for k in self._slots if k[0] == old]:
                slot = self._slots.pop(key)
                self._views[slot] = None
                self._free.append(slot)

    def _scan(self, s: int, reader) -> None:
        """Record the batch row starts of a shard not cut in BATCH_ROWS batches (reads every
        batch header once)."""
        counts = [reader.get_batch(k).num_rows for k in range(reader.num_record_batches)]
        starts = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        if starts[-1] != self.dataset.shards[s]["rows"]:
            raise IntegrityError(
                f"shard {self.dataset.shard_location(s).uri}: {starts[-1]} rows, "
                f"manifest says {self.dataset.shards[s]['rows']}"
            )
        self._irregular[s] = starts

    # addressing ------------------------------------------------------------------------
    def locate(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample indices → (shard, record batch, row in batch) arrays."""
        g = np.asarray(g, dtype=np.int64)
        if len(g) and (g.min() < 0 or g.max() >= self.num_rows):
            raise IndexError(f"sample index out of range [0, {self.num_rows})")
        k = np.searchsorted(self.shard_starts, g, side="right") - 1
        local = g - self.shard_starts[k]
        s = self.shard_ids[k]
        for shard in np.unique(s).tolist():
            if shard not in self._checked:
                self._file(shard)  # learn its layout before computing batch indices
        b, r = np.divmod(local, BATCH_ROWS)
        if self._irregular:
            for shard, starts in self._irregular.items():
                sel = s == shard
                if sel.any():
                    bb = np.searchsorted(starts, local[sel], side="right") - 1
                    b[sel], r[sel] = bb, local[sel] - starts[bb]
        return s, b, r

    # record batches --------------------------------------------------------------------
    def _slot(self, s: int, b: int) -> int:
        key = (s, b)
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            return slot
        reader = self._file(s)
        rb = reader.get_batch(b)
        self.fetches += 1
        if s not in self._irregular:
            want = min(BATCH_ROWS, int(self.dataset.shards[s]["rows"]) - b * BATCH_ROWS)
            if rb.num_rows != want:
                self._scan(s, reader)
                raise _Relocate()
        n = rb.num_rows
        if self._free:
            slot = self._free.pop()
        else:
            _, slot = self._slots.popitem(last=False)
        if n > self._width:  # a writer with larger batches: widen the slab once
            grown = np.zeros((self.cache_batches, n, 4), dtype=np.int32)
            grown[:, : self._width] = self._lens
            self._lens, self._width = grown, n
        cols = tuple(_list_views(rb.column(i)) for i in _COL_INDEX)
        lens = self._lens[slot]
        for c, (off, _, valid) in enumerate(cols):
            np.subtract(off[1:], off[:-1], out=lens[:n, c])
            if valid is not None:
                lens[:n, c][~valid] = -1
        if self.sources is None:
            lens[:n, 3] = 1
        else:
            src = rb.column(1)
            if isinstance(src, pa.DictionaryArray):
                names = np.array([v in self.sources for v in src.dictionary.to_pylist()] + [False])
                idx = src.indices.fill_null(len(src.dictionary)).to_numpy(zero_copy_only=False)
                lens[:n, 3] = names[idx]
            else:
                lens[:n, 3] = [v in self.sources for v in src.to_pylist()]
        self._views[slot] = (cols, rb.column(0))
        self._slots[key] = slot
        return slot

    def lookup(self, g: np.ndarray):
        """For sample indices `g` (at most cache_batches // 2 of them): their (shard, batch, row)
        and [n, 4]: code counts (text, image, audio; -1 where null) and 1 if the sample passes
        the `sources` filter, else 0."""
        while True:
            try:
                s, b, r = self.locate(g)
                if not len(g):
                    return s, b, r, np.zeros((0, 4), dtype=np.int32)
                keys = s * (1 << 32) + b
                uniq, inv = np.unique(keys, return_inverse=True)
                if len(uniq) > self.cache_batches:
                    raise ValueError("lookup window larger than the batch cache")
                self._pinned = True
                try:
                    slots = np.fromiter(
                        (self._slot(int(k >> 32), int(k & 0xFFFFFFFF)) for k in uniq.tolist()),
                        dtype=np.int64,
                        count=len(uniq),
                    )
                    lens = self._lens[slots[inv], r]
                finally:
                    self._pinned = False
                    self._trim_files()
                return s, b, r, lens
            except _Relocate:
                continue

    def views(self, s: int, b: int) -> tuple:
        """Per column (offsets, values, valid-or-None) numpy views of record batch b of shard s."""
        slot = self._slots.get((s, b))
        if slot is None:
            slot = self._slot(s, b)
        return self._views[slot][0]

    def codes(self, s: int, b: int, r: int):
        """Zero-copy views of one sample's text, image and audio codes (None where null)."""
        while True:
            try:
                slot = self._slot(s, b)
                break
            except _Relocate:
                raise IntegrityError(
                    f"shard {self.dataset.shard_location(s).uri}: record batch layout changed while reading"
                ) from None
        cols, _ = self._views[slot]
        out = []
        for off, vals, valid in cols:
            if valid is not None and not valid[r]:
                out.append(None)
            else:
                out.append(vals[off[r] : off[r + 1]])
        return out

    def sample_id(self, s: int, b: int, r: int) -> str:
        return self._views[self._slot(s, b)][1][r].as_py()

    def shard_uri(self, s: int) -> str:
        return self.dataset.shard_location(s).uri


class _Relocate(Exception):
    """A shard turned out not to be BATCH_ROWS-regular; its batch starts were scanned, so the
    lookup is redone."""
