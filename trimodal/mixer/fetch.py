"""Where the codes of a planned batch lie: piece table → `Spans`, over the sources' readers.

Only what each piece shows is read. Pieces on memory-mapped shards are located in place with
array operations (`MappedShards.spans`); read by ranges (S3, pread) each code run becomes one
fetched array (`ShardData.fetch`: on S3 two request rounds per batch, offsets then values).
"""

from __future__ import annotations

import numpy as np

from trimodal.mixer.layout import MEDIA, TEXT, text_windows
from trimodal.mixer.pieces import take
from trimodal.mixer.planner import Planned
from trimodal.mixer.render import Spans
from trimodal.mixer.shard_reader import SharedDataset

_NO_CODES = np.zeros(0, dtype=np.int32)


def _merge_spans(parts: list, n: int) -> Spans:
    """Spans of pieces on several datasets, each computed for its pieces (`sel`), as one."""
    flats: list = []
    fid, start, stop, mfid, mstart, mstop = (np.empty(n, dtype=np.int64) for _ in range(6))
    for sel, got in parts:
        fid[sel], mfid[sel] = got.fid + len(flats), got.mfid + len(flats)
        start[sel], stop[sel], mstart[sel], mstop[sel] = got.start, got.stop, got.mstart, got.mstop
        flats.extend(got.flats)
    return Spans(flats, fid, start, stop, mfid, mstart, mstop)


class CodeFetcher:
    """The readers of a mix's sources (`shared`: source name → its dataset's reader), and
    which of them are read in place from maps (`mapped`: their batches take the array path)."""

    def __init__(self, shared: dict[str, SharedDataset]):
        self.shared = shared
        self.mapped = {name: not sh.data.ranged for name, sh in shared.items()}

    def spans(self, planned: Planned) -> Spans:
        names = {x for x in planned.sources if x is not None}
        if names and all(self.mapped[x] for x in names):
            got = self._mapped(planned, names)
            if got is not None:
                return got
        return self._ranges(planned)

    def _mapped(self, planned: Planned, names: set) -> Spans | None:
        """On memory-mapped shards, the pieces' places in the maps; None when a record batch is
        not addressable in place."""
        table = planned.table
        lo, hi = text_windows(table["kind"], table["start"], table["stop"], table["text_codes"])
        by_data = {id(self.shared[x]): self.shared[x] for x in names}
        key = None
        if len(by_data) > 1:
            key = np.array([-1 if x is None else id(self.shared[x]) for x in planned.sources])[table["row"]]
        parts = []
        for k, shared in by_data.items():
            sel = slice(None) if key is None else np.flatnonzero(key == k)
            pieces = table if key is None else take(table, sel)
            got = shared.data.spans(
                pieces["shard"], pieces["shard_row"], pieces["kind"], lo[sel], hi[sel],
                pieces["text_codes"], pieces["media_codes"],
            )  # fmt: skip
            if got is None:
                return None
            parts.append((sel, got))
        return parts[0][1] if key is None else _merge_spans(parts, len(table))

    def _ranges(self, planned: Planned) -> Spans:
        """The code windows of every piece by ranged reads, batched per dataset (ShardData.fetch),
        as one array per code run."""
        table = planned.table
        n = len(table)
        lo, hi = text_windows(table["kind"], table["start"], table["stop"], table["text_codes"])
        flats: list = [_NO_CODES]
        fid, mfid = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        requests: dict[int, tuple[SharedDataset, list, list]] = {}
        readers = [None if x is None else self.shared[x] for x in planned.sources]
        pieces = zip(
            table["row"].tolist(), table["shard"].tolist(), table["shard_row"].tolist(), table["kind"].tolist(),
            lo.tolist(), hi.tolist(), table["text_codes"].tolist(), table["media_codes"].tolist(),
        )  # fmt: skip
        for k, (row, shard, shard_row, kind, text_lo, text_hi, text, media) in enumerate(pieces):
            shared = readers[row]
            _, want, where = requests.setdefault(id(shared), (shared, [], []))
            if kind == TEXT:
                if text_hi <= text_lo:  # only <bos> or <eos> of it shows
                    continue
                want.append((shard, shard_row, [("text", text_lo, text_hi, text)]))
            else:
                want.append((shard, shard_row, [("text", 0, text, text), (MEDIA[kind], 0, media, media)]))
            where.append(k)
        for shared, want, where in requests.values():
            for k, arrays in zip(where, shared.data.fetch(want)):
                fid[k] = len(flats)
                flats.append(arrays[0])
                if len(arrays) > 1:
                    mfid[k] = len(flats)
                    flats.append(arrays[1])
        size = np.array([len(x) for x in flats], dtype=np.int64)
        zero = np.zeros(n, dtype=np.int64)
        return Spans(flats, fid, zero, size[fid], mfid, zero, size[mfid])
