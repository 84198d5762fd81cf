"""Reading by byte ranges: S3 (`RangedShards`), and local datasets beyond the maps' budget
(`PreadShards`).

Per global batch, two rounds of reads: the list offsets of each document's row in each code
column it uses (8 bytes each), then the code windows; each round's ranges are merged per shard
(shard_data.merge_ranges) and, on S3, issued concurrently. A record batch of which the rank has
asked a quarter by ranges (few ranks, a block order: it will use the rest soon) is read whole
once and kept (`cache_batches` / `cache_batches_remote` of them).
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from trimodal.mixer.record_batches import Batch, offsets_at, values_at, views
from trimodal.mixer.shard_data import ShardData
from trimodal.mixer.shard_file import PREAD, REMOTE

WHOLE = 0.25  # a record batch is fetched whole once a rank has asked this part of it by ranges
_EMPTY = np.zeros(0, dtype=np.int32)


class RangedShards(ShardData):
    """Shards on S3, through pyarrow's S3 file: a HEAD and two tail reads (footer length, then
    the footer: ~500 bytes + 24 per record batch) per shard opened, one read per batch layout
    (~600 bytes), then the two rounds per global batch."""

    strategy, remote = REMOTE, True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.remote:  # GETs are issued concurrently; preads one after the other
            self._pool = ThreadPoolExecutor(16, thread_name_prefix="trimodal-s3")

    def batches(self, wanted: list[tuple[int, int]]) -> list[Batch]:
        """Layouts of (shard, batch) pairs, in order; the missing ones read together."""
        missing: dict[tuple[int, int], Batch | None] = {}
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
                missing[s, b] = self._batch_from(files[s], b, msg)
        out = [self._slots.get(key) or missing[key] for key in wanted]
        for key, bt in missing.items():
            self._slots[key] = bt
        return out

    def _read_by_ranges(self, by_range: list, out: list) -> None:
        rest = self._whole_bodies(by_range, out)
        if rest:
            self._two_rounds(rest, out)

    def _whole_bodies(self, by_range: list, out: list) -> list:
        """A record batch whose documents this rank has asked for, by ranges, a good part of
        (`WHOLE` of its body) is fetched whole with one read and kept with its layout; its
        documents are then served from it. Returns the requests still to read by range."""
        asked: dict[int, int] = {}
        for _, _, _, lo, hi, _, bt, _, _ in by_range:
            asked[id(bt)] = asked.get(id(bt), 0) + 4 * (hi - lo)
        dense = {}
        for _, _, _, _, _, _, bt, f, _ in by_range:
            if (
                id(bt) not in dense
                and bt.layout is not None
                and bt.asked + asked[id(bt)] >= WHOLE * bt.layout.body_length
            ):
                dense[id(bt)] = (bt, f)
        for bt, _ in dense.values():
            bt.asked = 0
        for _, _, _, lo, hi, _, bt, _, _ in by_range:
            if id(bt) not in dense:
                bt.asked += 4 * (hi - lo)
        if not dense:
            return by_range
        bodies = self.read_ranges([(f, bt.layout.body, bt.layout.body_length) for bt, f in dense.values()])
        for (bt, _), body in zip(dense.values(), bodies):
            bt.views = views(bt.layout, body, 0)
        rest = []
        for k, i, c, lo, hi, count, bt, f, r in by_range:
            if bt.views is None:
                rest.append((k, i, c, lo, hi, count, bt, f, r))
            else:
                out[k][i] = self._window(bt, f, c, r, lo, hi, count)
        return rest

    def _two_rounds(self, by_range: list, out: list) -> None:
        """Two rounds of ranged reads: the list offsets of each row, then the code windows."""
        offs = self.read_ranges([(f, offsets_at(bt.layout, c, r), 8) for _, _, c, *_, bt, f, r in by_range])
        wanted = []
        for (_, _, c, lo, hi, count, bt, f, r), ob in zip(by_range, offs):
            o0, o1 = struct.unpack("<ii", ob)
            if o1 - o0 != count:
                self._mismatch(f, c, r, o1 - o0, count)
            wanted.append((f, values_at(bt.layout, c, o0 + lo), 4 * (hi - lo)))
        got = self.read_ranges(wanted)
        for (k, i, _, lo, hi, *_), buf in zip(by_range, got):
            out[k][i] = np.frombuffer(buf, np.int32) if len(buf) else _EMPTY
            self.code_bytes += 4 * (hi - lo)


class PreadShards(RangedShards):
    """A local dataset larger than the maps' budget, read by `pread` of the same ranges: a
    fault on a file map makes a whole page-cache folio resident (docs/mixer.md, "Memory
    bounded by the caches"), a pread costs a system call and keeps nothing resident."""

    strategy, remote, pread = PREAD, False, True
