"""Reading in place from memory maps: a local dataset that fits `cache_batches` record batches'
worth of bytes (the maps can then never hold more than that).

Zero-copy: each map is viewed as int32 and each record batch's column positions are kept in a
per-file table (48 bytes per record batch while the file is open), so `spans` locates a whole
batch's pieces with two gathers of their offsets per column and no Python per piece; a batch
spread over many shards (a global shuffle of a large dataset) is located piece by piece, where
a handful of array calls per shard would cost more (~30 µs per shard against ~2 µs per piece).
"""

from __future__ import annotations

import numpy as np

from trimodal.dataset.schema import MODALITIES
from trimodal.dataset.shards import BATCH_ROWS
from trimodal.mixer.record_batches import Batch
from trimodal.mixer.render import Spans
from trimodal.mixer.shard_data import ShardData
from trimodal.mixer.shard_file import MAPPED, ShardFile

PIECES_PER_SHARD = 12  # spans: fewer pieces per shard than this in a batch: piece by piece
_UNKNOWN, _UNADDRESSABLE = -2, -3  # ShardFile.at_table entries not (yet) positions


class MappedShards(ShardData):
    strategy = MAPPED

    def batches(self, wanted: list[tuple[int, int]]) -> list[Batch]:
        """Layouts of (shard, batch) pairs, in order, each looked up in turn in the LRU of
        `cache_batches` (a pair evicted by the ones before it is parsed again: the cost follows
        the order's locality, what `shuffle_window` buys)."""
        out = [None] * len(wanted)
        for k, key in enumerate(wanted):
            bt = self._slots.get(key)
            if bt is None:
                f = self._files[key[0]]
                o, m, _ = f.blocks[key[1]].tolist()
                bt = self._slots[key] = self._batch_from(f, key[1], self.read_raw(f, o, m))
                while len(self._slots) > self.cache_batches:
                    self._slots.popitem(last=False)
            else:
                self._slots.move_to_end(key)
            out[k] = bt
        return out

    def spans(self, shard, row, kind, lo, hi, nt, nm) -> Spans | None:
        """Where the codes of many document pieces lie (`Spans`): the text codes [lo, hi) of
        each, and a pair's image or audio codes (`kind`: layout.TEXT, IMAGE, AUDIO), each
        sample's counts checked against the length index (`nt`, `nm`). None when a record
        batch is not addressable in place (pyarrow's fallback, unaligned buffers): use `fetch`
        then."""
        return self._pinned_call(self._spans, shard, row, kind, lo, hi, nt, nm)

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
                    mstart[into] = self._codes_at(f, MODALITIES[c], at[which, c], r[which], nm[into])
                mwidth[idx] = nm[idx]
            fid[sel] = len(flats)
            flats.append(f.as_int32())
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
        """`_spans` piece by piece."""
        n = len(shard)
        files, slot = [], {}
        start, fid, mstart, mwidth = [0] * n, [0] * n, [0] * n, [0] * n
        shards, rows, kinds, text_lo, texts, medias = (x.tolist() for x in (shard, row, kind, lo, nt, nm))
        for k in range(n):
            s, r = shards[k], rows[k]
            j = slot.get(s)
            if j is None:
                j = slot[s] = len(files)
                files.append(self._files.get(s) or self.file(s))
            f = files[j]
            flat = f.as_int32()
            if f.starts is None:
                b, r = divmod(r, BATCH_ROWS)
            else:
                b = int(np.searchsorted(f.starts, r, side="right")) - 1
                r -= int(f.starts[b])
            at = self._batch_positions(f, s, b)
            if at is None:
                return None
            start[k], fid[k] = at[0][1] + self._count_at(f, flat, at[0][0], "text", r, texts[k]) + text_lo[k], j
            if kinds[k]:
                offsets, values = at[kinds[k]]
                mstart[k] = values + self._count_at(f, flat, offsets, MODALITIES[kinds[k]], r, medias[k])
                mwidth[k] = medias[k]
        start, fid = np.array(start, dtype=np.int64), np.array(fid, dtype=np.int64)
        mstart, mwidth = np.array(mstart, dtype=np.int64), np.array(mwidth, dtype=np.int64)
        return self._counted([f.as_int32() for f in files], fid, start, mstart, mwidth, kind, lo, hi)

    def _batch_positions(self, f: ShardFile, s: int, b: int) -> list | None:
        """`_positions` of one record batch, as lists (kept per file)."""
        at = f.at_rows.get(b)
        if at is None:
            at = self._positions(f, s, np.array([b]))
            if at is None:
                return None
            at = f.at_rows[b] = at[0].tolist()
        return at

    def _count_at(self, f: ShardFile, flat: np.ndarray, offsets: int, col: str, r: int, want: int) -> int:
        """The first code of row r of a column (offsets at `offsets` in the map, -1: a batch
        without a value in it), its count checked against the length index."""
        first = int(flat[offsets + r]) if offsets >= 0 else 0
        got = int(flat[offsets + r + 1]) - first if offsets >= 0 else 0
        if got != want:
            self._mismatch(f, col, r, got, want)
        return first

    def _positions(self, f: ShardFile, s: int, b: np.ndarray) -> np.ndarray | None:
        """Column positions ([k, column, (offsets, values)], int32 units of the map) of record
        batches `b` of a mapped shard, from the file's table (filled from the layouts the first
        time a batch is met: 48 bytes per record batch, kept while the file is open)."""
        if f.at_table is None:
            f.at_table = np.full((len(f.blocks), len(MODALITIES), 2), _UNKNOWN, dtype=np.int64)
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
        flat = f.as_int32()
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
