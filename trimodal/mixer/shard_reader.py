"""Reading only the rows a rank renders: one reader per dataset, one view of it per mix source.

A mix source addresses its dataset's samples by a global index in [0, N) (shards in manifest
order, only those holding its `dataset_sources` when it names some): `ShardReader`. Planning
needs only their code counts (the length index, index.py); rendering needs the codes of the
rank's own rows, read through one `SharedDataset` per dataset (its index and shard files,
shared by every source over it, so memory is bounded by the caches whatever the number of
sources). How a dataset's shards are read is chosen here, once: by ranges on S3; locally in
place from memory maps when the whole dataset fits `cache_batches` record batches' worth of
bytes (the maps can then never hold more), by pread beyond. docs/mixer.md has the figures.
"""

from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs

from trimodal.dataset.dataset import Dataset
from trimodal.dataset.schema import MODALITIES
from trimodal.dataset.shards import BATCH_ROWS
from trimodal.dataset.storage import filesystem_for
from trimodal.mixer.holdout import Split
from trimodal.mixer.index import DatasetIndex
from trimodal.mixer.mapped import MappedShards
from trimodal.mixer.ranged import PreadShards, RangedShards
from trimodal.mixer.shard_data import ShardData


def is_remote(uri: str) -> bool:
    return not isinstance(filesystem_for(uri), pafs.LocalFileSystem)


def open_shard_data(dataset: Dataset, index: DatasetIndex, cache_files: int, cache_batches: int) -> ShardData:
    """The reader of a dataset's shards, by the strategy that suits where it lives and its size:
    locally, maps may hold `cache_batches` record batches' worth of bytes (`budget`)."""
    cache_batches = max(1, cache_batches)
    total = dataset.manifest.totals.get("bytes") or int(index.table.bytes.sum())
    budget = int(cache_batches * total / max(1.0, max(1, index.num_rows) / BATCH_ROWS))
    if is_remote(dataset.uri):
        kind = RangedShards
    else:
        kind = PreadShards if total > budget else MappedShards
    return kind(dataset, index, cache_files, cache_batches, budget)


class SharedDataset:
    """Everything one process reads of one dataset, shared by the mix sources over it."""

    def __init__(self, dataset: Dataset, cache_files: int = 64, cache_batches: int = 64):
        self.dataset = dataset
        self.index = DatasetIndex(dataset, cache_files=cache_files)
        self.data = open_shard_data(dataset, self.index, cache_files, cache_batches)


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
        split: Split | None = None,
    ):
        self.shared = shared or SharedDataset(dataset, cache_files=cache_files, cache_batches=cache_batches)
        self.dataset = dataset
        self.index, self.data = self.shared.index, self.shared.data
        self.uri = dataset.uri
        self.sources = frozenset(sources) if sources else None
        self.split = split  # the held-out split's side this reader's planning keeps (holdout.py)
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
        lens, keep = self.index.lengths(s, local, self.sources, self.split)
        return s, local, lens, keep

    def codes(self, s: int, b: int, r: int):
        """One sample's text, image and audio codes (None where absent)."""
        f = self.data.file(s)
        row = int((b * BATCH_ROWS if f.starts is None else f.starts[b]) + r)
        lens, _ = self.index.lengths(np.array([s]), np.array([row]))
        cols = [(c, 0, int(n), int(n)) for c, n in zip(MODALITIES, lens[0].tolist()) if n >= 0]
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
