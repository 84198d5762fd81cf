"""What planning reads: per-sample code counts from the shards' length indexes, never the codes.

Each shard has a length index (`index/<shard file>`, written by the pipeline): per row the
number of text, image and audio codes (-1 where absent), the corpus name (`source`) and the id
key a held-out split hashes (holdout.py), about 24 bytes per sample against ~2.4 KB of codes
for a 600-token document. Every rank plans every row of the global stream from it, so every
rank reads it; that is ~1% of what the ranks together render, and a rank renders (and reads the codes of) only its own rows.

`DatasetIndex` is one dataset's: the shard table's `rows` column (memory-mapped, so a
million-shard table costs its 8 MB `rows` column and the 8 MB of shard starts, not its 190 MB)
and an LRU of loaded shard indexes, at most `cache_files` of them, each memory-mapped locally
(only the rows looked up become resident) or fetched whole (one GET) from S3. Every mix source
over the same dataset shares it. Lookups are vectorized: a window of sample indices is grouped
by shard (one argsort) and gathered shard by shard.

Trade-off: with a per-sample global shuffle over many more shards than `cache_files`, nearly
every sample loads a shard index (tens of µs locally, a GET on S3); `shuffle_window` keeps the
shards in flight few (see docs/mixer.md).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trimodal.dataset.dataset import Dataset
from trimodal.dataset.schema import MODALITIES
from trimodal.dataset.shards import open_index, shard_keys
from trimodal.errors import IntegrityError
from trimodal.mixer.holdout import Split


class _ShardIndex:
    __slots__ = ("lens", "codes", "names", "keep", "keys")

    def __init__(self, table: pa.Table):
        table = table.combine_chunks()
        # the samples' id keys (holdout.py); None for indexes written before the key column
        self.keys = table.column("key").chunk(0).to_numpy() if "key" in table.column_names and table.num_rows else None
        self.lens = tuple(table.column(m).chunk(0).to_numpy(zero_copy_only=False) for m in MODALITIES)
        src = table.column("source").chunk(0) if table.num_rows else None
        if src is None:
            self.codes, self.names = np.zeros(0, np.int32), []
        elif isinstance(src, pa.DictionaryArray):
            self.codes = src.indices.to_numpy(zero_copy_only=False)
            self.names = src.dictionary.to_pylist()
        else:
            names, codes = np.unique(src.to_numpy(zero_copy_only=False), return_inverse=True)
            self.codes, self.names = codes.astype(np.int32), list(names)
        self.keep: dict[frozenset, np.ndarray] = {}

    def kept(self, rows: np.ndarray, sources: frozenset) -> np.ndarray:
        table = self.keep.get(sources)
        if table is None:
            table = self.keep[sources] = np.array([n in sources for n in self.names] + [False])
        return table[self.codes[rows]]


class DatasetIndex:
    def __init__(self, dataset: Dataset, cache_files: int = 64, verify: str | None = None):
        self.dataset = dataset
        self.uri = dataset.uri
        self.verify = verify or dataset.verify
        self.table = dataset.manifest.load_shards("sha256" if self.verify == "sha256" else self.verify)
        self.rows = self.table.rows  # int64 per shard (a view over the memory-mapped table)
        self.starts = np.zeros(len(self.rows) + 1, dtype=np.int64)
        np.cumsum(self.rows, out=self.starts[1:])
        self.num_rows = int(self.starts[-1])
        self.cache_files = cache_files
        self._cache: OrderedDict[int, _ShardIndex] = OrderedDict()
        self._hashed: set[int] = set()  # indexes whose sha256 was checked by this process
        self._lock = threading.Lock()
        self.loads = 0  # shard indexes loaded (cache misses), for benchmarks

    @property
    def loaded(self) -> list[int]:
        """The shards whose length index is held (at most `cache_files`)."""
        return list(self._cache)

    def entry(self, s: int) -> dict:
        return self.table[int(s)]

    def shards_with(self, sources: frozenset) -> np.ndarray:
        """The shards whose manifest entry counts samples of one of `sources` (shards with no
        per-source counts are kept: their rows are filtered per sample). One vectorized scan of
        the `by_source` column."""
        col = self.table.table.column("by_source")
        hit = pc.equal(col, "{}")  # no per-source counts: keep
        hit = pc.or_(pc.is_null(col), hit)
        for name in sorted(sources):
            # by_source is JSON with sorted keys whose values are objects: '"name":{' only
            # matches a top-level key
            hit = pc.or_(hit, pc.match_substring(col, json.dumps(name) + ":{"))
        return np.nonzero(hit.to_numpy(zero_copy_only=False))[0].astype(np.int64)

    def _shard(self, s: int) -> _ShardIndex:
        si = self._cache.get(s)
        if si is not None:
            self._cache.move_to_end(s)
            return si
        verify = self.verify
        if verify == "sha256" and s in self._hashed:
            verify = "size"
        entry = self.entry(s)
        root = self.dataset.root
        t = open_index(root, entry, verify=verify)
        if t.num_rows != int(self.rows[s]):
            raise IntegrityError(f"length index of {entry['path']}: {t.num_rows} rows, manifest says {self.rows[s]}")
        self._hashed.add(s)
        si = self._cache[s] = _ShardIndex(t)
        self.loads += 1
        while len(self._cache) > self.cache_files:
            self._cache.popitem(last=False)
        return si

    def _keys(self, s: int, si: _ShardIndex) -> np.ndarray:
        """The id keys of shard `s`'s samples; an index without them gets them from the shard's
        ids once (kept with the index: the whole shard is read over S3, its id column locally)."""
        if si.keys is None:
            si.keys = shard_keys(self.dataset.root, self.entry(s), verify=self.verify)
        return si.keys

    def lengths(self, shard: np.ndarray, row: np.ndarray, sources: frozenset | None = None, split: Split | None = None):
        """Code counts [n, 3] (text, image, audio; -1 where absent) of the samples at (shard,
        row in shard), and, with `sources` or `split`, whether each belongs to one of those
        corpora and to that side of the held-out split."""
        n = len(shard)
        out = np.empty((n, 3), dtype=np.int32)
        keep = np.ones(n, dtype=bool) if sources is not None or split is not None else None
        if not n:
            return out, keep
        with self._lock:
            if shard[0] == shard[-1] and (shard == shard[0]).all():  # one shard (block order)
                groups = [(int(shard[0]), slice(None))]
            else:
                order = np.argsort(shard, kind="stable")
                sorted_s = shard[order]
                cut = np.flatnonzero(sorted_s[1:] != sorted_s[:-1]) + 1
                bounds = np.concatenate(([0], cut, [n]))
                groups = [(int(sorted_s[a]), order[a:b]) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
            for s, sel in groups:
                si = self._shard(s)
                r = row[sel]
                for c in range(3):
                    out[sel, c] = si.lens[c][r]
                if sources is not None:
                    keep[sel] = si.kept(r, sources)
                if split is not None:
                    keep[sel] &= split.keep(self._keys(s, si)[r])
        return out, keep
