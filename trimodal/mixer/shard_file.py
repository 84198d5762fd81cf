"""One open shard, checked against its manifest entry, read by one access strategy.

MAPPED: a memory map (MADV_RANDOM), read in place; PREAD: a local file read by `os.pread`;
REMOTE: pyarrow's S3 file, one GET per read. Why a local dataset is mapped or read by pread:
shard_reader.py and docs/mixer.md.
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from trimodal.dataset.dataset import Dataset
from trimodal.dataset.digest import file_sha256, sha256_of
from trimodal.dataset.shards import check_shard
from trimodal.errors import IntegrityError

MAPPED, PREAD, REMOTE = "mapped", "pread", "remote"


class ShardFile:
    """Shard `shard` of a dataset, opened and checked as the dataset's `verify_mode` says: size
    always (unless "none"), sha256 once per process. Its footer (`blocks`, `starts`) and, in a
    map, its column positions are filled in by the reader (shard_data.py)."""

    def __init__(self, dataset: Dataset, shard: int, entry: dict, strategy: str):
        loc = dataset.root.join(entry["path"])
        self.uri, self.path, self.strategy = loc.uri, loc.path, strategy
        self.local = isinstance(loc.fs, pafs.LocalFileSystem)
        self.mm = self.fd = self.remote = None  # a map, a file read by pread, or an S3 file
        self.blocks: np.ndarray | None = None  # per record batch (offset, metadata, body length)
        self.starts: np.ndarray | None = None  # batch row starts when not cut in BATCH_ROWS
        self.flat: np.ndarray | None = None  # the map as int32 (spans), made on first use
        self.at_table: np.ndarray | None = None  # column positions per record batch (spans)
        self.at_rows: dict[int, list] = {}  # the same as lists, for the piece-by-piece path
        verify = dataset.verify_mode(shard)
        try:
            size = self._open(loc)
            hashed = (lambda: file_sha256(loc.path)) if self.local else (lambda: sha256_of(self.remote.read_at, size))
            check_shard(self.uri, entry, verify, size, hashed)
        except IntegrityError:
            raise
        except (OSError, ValueError) as e:
            raise IntegrityError(f"shard {self.uri} listed in the manifest cannot be opened: {e}") from e
        dataset.verified(shard)
        self.size = size
        self.rows = int(entry["rows"])

    def _open(self, loc) -> int:
        if self.strategy == REMOTE:
            self.remote = loc.fs.open_input_file(loc.path)
            return self.remote.size()
        fd = os.open(loc.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size and self.strategy == MAPPED:
                self.mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                if hasattr(mmap, "MADV_RANDOM"):
                    self.mm.madvise(mmap.MADV_RANDOM)
        finally:
            if self.strategy == PREAD:
                self.fd = fd
            else:
                os.close(fd)
        return size

    def read(self, offset: int, length: int):
        """Bytes [offset, offset + length): a memoryview of the map, a pread, or one GET."""
        if self.mm is not None:
            return memoryview(self.mm)[offset : offset + length] if length else b""
        if self.fd is not None:
            return os.pread(self.fd, length, offset)
        return self.remote.read_at(length, offset)

    def as_int32(self) -> np.ndarray:
        """The whole map as int32 (made once): pieces are located in it by position."""
        if self.flat is None:
            self.flat = np.frombuffer(self.mm, np.int32, self.size // 4)
        return self.flat

    def arrow_batch(self, b: int) -> pa.RecordBatch:
        """Record batch `b` read by pyarrow (a file this reader cannot parse by range)."""
        src = pa.py_buffer(self.mm) if self.mm is not None else (pa.OSFile(self.path) if self.local else self.remote)
        return pa.ipc.open_file(src).get_batch(b)

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
