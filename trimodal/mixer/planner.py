"""The planner: scheduler + per-source streams → the piece table of each global batch.

For each row the scheduler picks a source (scheduler.py) and that source plans the row from its
shuffled cursor (packer.py); rows are grouped into global batches of `global_batch`. Every rank
plans every row (only the length index is read) and keeps the pieces of its own slice, so the
global stream does not depend on the number of ranks or loader workers.

End of data: when every source with a share is exhausted (`max_epochs`), the last global batch
is completed with all-padding rows (segment id 0 everywhere) and the stream ends.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from trimodal.mixer.config import MixConfig
from trimodal.mixer.packer import SourceStream
from trimodal.mixer.pieces import PIECE, matrix, records, segments, take
from trimodal.mixer.scheduler import Scheduler, normalize


class Planned(NamedTuple):
    """Some rows of one global batch, planned: each row's source (None: an all-padding row)
    and the piece table of them all (`pieces.PIECE`, in row order)."""

    sources: list
    table: np.ndarray

    def rows(self) -> list:
        """Per row None or (source, [Segment, ...]): the per-document form."""
        segs = segments(self.table, len(self.sources))
        return [None if name is None else (name, segs[k]) for k, name in enumerate(self.sources)]


NOTHING = Planned([], np.zeros(0, dtype=PIECE))


class Planner:
    """The global stream's batches, planned one after the other; `step`, `pad_rows` and `ended`
    are its position (with the streams' and the scheduler's states)."""

    def __init__(self, cfg: MixConfig, streams: dict[str, SourceStream]):
        self.cfg, self.streams = cfg, streams
        self.names = list(streams)
        self._list = [streams[n] for n in self.names]
        self.scheduler = Scheduler(self.names, cfg.seq_len)
        self.step = 0  # global batches planned
        self.pad_rows = 0  # all-padding rows that completed the last batch
        self.ended = False
        self._touched: set[int] = set()  # sources that handed out rows since their last release
        self._shares_span: tuple[int, int, dict] | None = None
        self._weights_for: dict | None = None  # the shares the scheduler's weights were made from
        self._active: set[str] = set()

    def reset(self, step: int, pad_rows: int, ended: bool) -> None:
        """After the streams and the scheduler were loaded from a state."""
        self.step, self.pad_rows, self.ended = step, pad_rows, ended
        self._weights_for = None
        self._touched = set(range(len(self._list)))

    def plan(self, own: range | None = None) -> Planned | None:
        """Plan the next global batch; returns the rows in `own` (none without), or None when
        the stream has ended."""
        if self.ended:
            return None
        for i in self._touched:
            self._list[i].release()
        self._touched.clear()
        shares = self._shares(self.step)
        if shares is not self._weights_for:  # a schedule entry starts here, or a resume
            self._active = {n for n, st in zip(self.names, self._list) if not st.exhausted}
            self.scheduler.set_weights(normalize(shares, self._active))
            self._weights_for = shares
        sources, serials, filled = self._fill(shares)
        if filled == 0:
            self.ended = True
            return None
        if not self.scheduler.live:
            self.ended = True  # this batch is the last one; it was completed with padding rows
        self.pad_rows += self.cfg.global_batch - filled
        self.step += 1
        return NOTHING if own is None else self._own(sources, serials, own)

    def _fill(self, shares: dict) -> tuple[list, list, int]:
        """Choose the rows of one global batch: per row its source's index (-1: padding) and its
        serial in that source; and how many rows were filled."""
        rows, seq_len = self.cfg.global_batch, self.cfg.seq_len
        by_tokens = self.cfg.share_unit == "tokens"
        sources, serials = [-1] * rows, [0] * rows
        sched, streams, touch, step = self.scheduler, self._list, self._touched.add, self.step
        single = sched.single
        r = 0
        while r < rows:
            i = sched.pick()
            if i < 0:
                break
            stream = streams[i]
            stream.clock = step
            touch(i)
            if single < 0:  # the common case: one row
                amount = stream.take()
                if amount >= 0:
                    sched.commit_index(i, amount if by_tokens else seq_len)
                    sources[r], serials[r] = i, stream.taken - 1
                    r += 1
            else:  # one source with a share: its rows in bulk
                fills = stream.take_many(rows - r)
                if fills:
                    sched.commit_index(i, sum(fills) if by_tokens else seq_len * len(fills))
                    sources[r : r + len(fills)] = [i] * len(fills)
                    serials[r : r + len(fills)] = range(stream.taken - len(fills), stream.taken)
                    r += len(fills)
            if stream.exhausted:  # its share passes to the others
                self._active.discard(self.names[i])
                sched.set_weights(normalize(shares, self._active))
                single = sched.single
        return sources, serials, r

    def _own(self, sources: list, serials: list, own: range) -> Planned:
        """The piece table of the rows in `own`."""
        mine = sources[own.start : own.stop]
        tables = []
        for i in sorted(set(mine) - {-1}):
            at = [k for k, x in enumerate(mine) if x == i]
            table = self._list[i].piece_table([serials[own.start + k] for k in at])
            table["row"] = np.asarray(at, dtype=np.int64)[table["row"]]
            tables.append(table)
        if len(tables) == 1:
            table = tables[0]
        elif tables:
            table = records(np.concatenate([matrix(t) for t in tables]), PIECE)
            table = take(table, np.argsort(table["row"], kind="stable"))
        else:
            table = NOTHING.table
        return Planned([None if i < 0 else self.names[i] for i in mine], table)

    def _shares(self, step: int) -> dict:
        """The raw shares in force at `step`: the same dict object for every step until the
        next schedule entry (so that weights are only recomputed when they change)."""
        span = self._shares_span
        if span is None or not span[0] <= step < span[1]:
            starts = [e.step for e in self.cfg.schedule or []]
            lo = max([0, *[x for x in starts if x <= step]])
            hi = min([*[x for x in starts if x > step], 1 << 62])
            span = self._shares_span = (lo, hi, self.cfg.shares_at(step))
        return span[2]
