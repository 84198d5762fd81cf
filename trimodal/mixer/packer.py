"""One source's document stream cut into rows: the cursor, the packing rule, the epochs.

A source walks its samples in the shuffled order of its current epoch (shuffle.py). Its whole
state is a cursor — (epoch, position in the epoch, tokens of the current document already
emitted) — plus counters; no token is buffered. Planning a row needs only document lengths,
from the length index (index.py), so every rank plans every row of the global stream and reads
codes only for its own rows.

Packing rules (per source; `pack` default true: every source packed; null: text-only sources
packed, pair sources padded, the paper's layout):
- packed: documents are concatenated until the row is full. A text document that does not fit
  is split: the rest continues at the start of the source's next row. The continuation gets no
  <bos> (the document has one already; <bos> marks a true start) and its positions restart at 0
  (each row is its own attention window). A pair (image-text, audio-text) is never cut: if it
  does not fit the room left, the row is closed with padding and the pair opens the next row.
- padded: one document per row, then padding; a text document longer than the row continues
  in the source's next rows as above.
- a pair longer than seq_len cannot be rendered whole: it is skipped and counted
  (`skipped["too_long"]`), as are samples with both image and audio (`skipped["unsupported"]`).

Epochs: when the cursor passes the end of the epoch, the next epoch starts with a new shuffle
(rows are filled across the boundary); with `max_epochs` the source is exhausted after its last
epoch and the mixer redistributes its share to the others.

How it is computed (vectorized, so that every rank can afford to plan every row): positions are
mapped to samples and their code counts a window at a time (up to 16,384 positions: one
permutation call, one grouped index gather), and the usable documents are laid end to end on a
token axis with cumulative starts `C`. A row is then just an interval [P, Q) of that axis, and
rows tile it: Q of one row is P of the next. Packed rows end at P + seq_len unless a pair
straddles that point (then at the pair's start): pure-text windows are cut arithmetically, with
pairs one `bisect` per row. Padded rows are one per document piece, computed with a few array
operations. The cursor after any row (the state) follows from its end Q by one `bisect`.
Measured (bench/bench_mixer.py --only planning): ~1M rows per CPU-second for one source of
600-token documents at seq_len 2048, against ~80k for the per-document loop this replaced.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import NamedTuple

import numpy as np

from trimodal.dataset.shards import BATCH_ROWS
from trimodal.errors import IntegrityError
from trimodal.mixer.config import MixSource
from trimodal.mixer.render import BOTH, TEXT
from trimodal.mixer.shard_reader import ShardReader
from trimodal.mixer.shuffle import BlockOrder, GlobalOrder, derive_key, uniform

# Positions scanned per refill: starts at FIRST_WINDOW, doubles while refills come within
# FAST_REFILL global batches of each other, halves when one lasted over SLOW_REFILL (a source
# with a small share in a 256-source mix keeps ~1k documents buffered, a lone source 16k).
FIRST_WINDOW, MIN_WINDOW, MAX_WINDOW = 1024, 256, 16384
FAST_REFILL, SLOW_REFILL = 4, 32
TRIM_DOCS = 1024  # documents behind the cursor (and at least as many as ahead) before compaction
# columns of the document buffer (one int64 row per usable document)
EP, POS, G, SH, ROW, KIND, REV, NT, NM, N, TL, UN = range(12)
_NF = 12


class Segment(NamedTuple):
    """One document piece of a planned row (`segments` of a piece table)."""

    epoch: int
    sample: int  # g: the sample's index in its dataset
    shard: int
    row: int  # the sample's row in its shard
    kind: int  # render.TEXT / BOTH / ...
    reverse: bool  # a pair rendered in the reverse direction (media → text)
    start: int  # the piece covers tokens [start, stop) of the rendered document
    stop: int
    text_codes: int
    media_codes: int


# columns of a piece table (`SourceStream.piece_table`): the row's place, then Segment's fields
AT, EPOCH, SAMPLE, SHARD, SROW, SKIND, SREV, START, STOP, NTEXT, NMEDIA = range(11)


def segments(table: np.ndarray, rows: int) -> list[list[Segment]]:
    """A piece table as `rows` lists of `Segment`s (the per-row form)."""
    out: list[list[Segment]] = [[] for _ in range(rows)]
    for at, ep, g, sh, row, kind, rev, start, stop, nt, nm in table.tolist():
        out[at].append(Segment(ep, g, sh, row, kind, rev == 1, start, stop, nt, nm))
    return out


class SourceStream:
    FRESH = {
        "epoch": 0,
        "pos": 0,
        "offset": 0,
        "rows": 0,
        "tokens": 0,
        "docs": 0,
        "skipped": {"too_long": 0, "unsupported": 0},
        "exhausted": False,
    }

    def __init__(
        self,
        cfg: MixSource,
        reader: ShardReader,
        seq_len: int,
        seed: int,
        pack: bool,
        shuffle_window: int | None = None,
    ):
        self.cfg, self.reader, self.seq_len, self.seed, self.pack = cfg, reader, seq_len, seed, pack
        self.name = cfg.name
        self.n = reader.num_rows
        if self.n == 0:
            raise IntegrityError(f"source {cfg.name!r}: dataset {reader.uri} has no samples")
        self.shuffle_window = shuffle_window
        self._order_cache: tuple[int, object] | None = None
        self.domain = self._order(0).domain  # positions per epoch (samples, plus holes in block order)
        self._reset(self.FRESH)

    def _order(self, epoch: int):
        if self._order_cache is None or self._order_cache[0] != epoch:
            key = derive_key(self.seed, self.name, epoch, "order")
            if self.shuffle_window:
                order = BlockOrder(self.n, key, BATCH_ROWS, self.shuffle_window)
            else:
                order = GlobalOrder(self.n, key)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    # state -----------------------------------------------------------------------------
    def _reset(self, st: dict) -> None:
        self._base = {
            "epoch": int(st["epoch"]),
            "pos": int(st["pos"]),
            "offset": int(st["offset"]),
            "rows": int(st["rows"]),
            "tokens": int(st["tokens"]),
            "docs": int(st["docs"]),
            "skipped": {"too_long": 0, "unsupported": 0, **{k: int(v) for k, v in st["skipped"].items()}},
            "exhausted": bool(st["exhausted"]),
        }
        self.exhausted = self._base["exhausted"]
        self._final = dict(self._base) if self.exhausted else None
        # frontier of the scan
        self._fe, self._fp = self._base["epoch"], self._base["pos"]
        self._ftl, self._fun = self._base["skipped"]["too_long"], self._base["skipped"]["unsupported"]
        self._ended = self.exhausted
        self._epoch_whole = self._fp == 0
        self._epoch_docs = self._epoch_skips = 0
        self._win = FIRST_WINDOW // 2
        self.clock = self._scan_clock = 0  # the mixer's step (it sets it), and at the last refill
        # documents: numpy columns, starts on the token axis (a list, for bisect, and an array)
        self._D = np.zeros((0, _NF), dtype=np.int64)
        self._C: list[int] = []
        self._Carr = np.zeros(0, dtype=np.int64)
        self._CE = 0  # end of the last document on the token axis
        self._dbase = 0  # documents dropped from the front of the buffers
        self._kinds = b""  # kind per buffered document (bytes: fast indexing in the packing loop)
        self._pairs = 0  # pairs among the buffered documents
        # rows: boundaries on the token axis; row j (serial) spans [Q[j - q0], Q[j - q0 + 1])
        self._P0 = self._base["offset"]
        self._Q: list[int] = [self._P0]
        self._q0 = 0
        self._next = 0  # rows handed out since the reset
        self._exhaust_at: int | None = None  # serial after which the source is exhausted

    def state(self) -> dict:
        if self.exhausted:
            return {**self._final, "skipped": dict(self._final["skipped"]), "samples": self.n}
        if self._next == 0:
            return {**self._base, "skipped": dict(self._base["skipped"]), "samples": self.n}
        q = self._Q[self._next - self._q0]
        i = bisect_left(self._C, q)  # documents started before q (buffer-relative)
        d = i - 1
        ep, pos, n, tl, un = self._D[d, [EP, POS, N, TL, UN]].tolist()
        cd = self._C[d]
        if q >= cd + n:
            epoch, pos, offset = ep, pos + 1, 0
        else:
            epoch, offset = ep, q - cd
        b = self._base
        return {
            "epoch": epoch,
            "pos": pos,
            "offset": offset,
            "rows": b["rows"] + self._next,
            "tokens": b["tokens"] + q - self._P0,
            "docs": b["docs"] + self._dbase + i - (1 if self._P0 > 0 else 0),
            "skipped": {"too_long": tl, "unsupported": un},
            "exhausted": False,
            "samples": self.n,
        }

    def load(self, d: dict) -> None:
        if int(d.get("samples", self.n)) != self.n:
            raise IntegrityError(
                f"source {self.name!r}: the saved state was made on {d['samples']} samples, "
                f"dataset {self.reader.uri} now has {self.n}; its order cannot be continued"
            )
        self._reset(d)

    # documents -------------------------------------------------------------------------
    def _no_docs_error(self) -> IntegrityError:
        if self._epoch_skips:
            return IntegrityError(
                f"source {self.name!r}: no sample of {self.reader.uri} fits seq_len {self.seq_len} "
                "(pairs longer than the sequence are skipped)"
            )
        return IntegrityError(
            f"source {self.name!r}: no sample of {self.reader.uri} is usable "
            f"(dataset_sources {self.cfg.dataset_sources}, seq_len {self.seq_len})"
        )

    def _scan(self) -> None:
        """Append the usable documents of the next window of positions (none at the end of the
        last epoch: the stream has ended)."""
        if self._fp >= self.domain:
            if self._epoch_whole and not self._epoch_docs:
                raise self._no_docs_error()
            if self.cfg.max_epochs is not None and self._fe + 1 >= self.cfg.max_epochs:
                self._ended = True
                return
            self._fe, self._fp = self._fe + 1, 0
            self._epoch_whole, self._epoch_docs, self._epoch_skips = True, 0, 0
        lasted = self.clock - self._scan_clock
        if lasted < FAST_REFILL:
            self._win = min(2 * self._win, MAX_WINDOW)
        elif lasted > SLOW_REFILL:
            self._win = max(self._win // 2, MIN_WINDOW)
        self._scan_clock = self.clock
        start = self._fp
        stop = min(start + self._win, self.domain)
        self._fp = stop
        posn = np.arange(start, stop, dtype=np.int64)
        g = self._order(self._fe)(posn)
        if self.shuffle_window:  # holes of a block order
            keep = g >= 0
            if not keep.all():
                posn, g = posn[keep], g[keep]
        sh, row, lens, kept = self.reader.lengths(g)
        if kept is not None and not kept.all():
            posn, g, sh, row, lens = posn[kept], g[kept], sh[kept], row[kept], lens[kept]
        m = len(g)
        if not m:
            return
        lens = lens.astype(np.int64)
        t, im, au = lens[:, 0], lens[:, 1], lens[:, 2]
        if t.min() < 0:
            raise IntegrityError(f"source {self.name!r}: a sample of {self.reader.uri} has a null text column")
        has_i, has_a = im >= 0, au >= 0
        kind = has_i + 2 * has_a  # TEXT 0, IMAGE 1, AUDIO 2, BOTH 3
        media = np.maximum(im, 0) + np.maximum(au, 0)
        pair = kind != TEXT
        n = t + 2 + pair * (3 + media)  # rendered length: <bos> .. <eos>, plus <task> <boX> <eoX>
        D = np.empty((m, _NF), dtype=np.int64)
        D[:, TL], D[:, UN] = self._ftl, self._fun
        npairs = int(pair.sum())
        if npairs:
            un = kind == BOTH
            tl = pair & ~un & (n > self.seq_len)
            skip = un | tl
            nskip = int(skip.sum())
            if nskip:
                D[:, TL] += np.cumsum(tl) - tl  # skips before each document
                D[:, UN] += np.cumsum(un) - un
                self._ftl += int(tl.sum())
                self._fun += int(un.sum())
                self._epoch_skips += nskip
                ok = ~skip
                D, posn, g, sh, row, t, media, kind, n, pair = (
                    a[ok] for a in (D, posn, g, sh, row, t, media, kind, n, pair)
                )
                npairs = int(pair.sum())
                m = len(g)
        self._epoch_docs += m
        if not m:
            return
        D[:, EP], D[:, POS], D[:, G], D[:, SH], D[:, ROW] = self._fe, posn, g, sh, row
        D[:, KIND], D[:, NT], D[:, NM], D[:, N] = kind, t, media, n
        if npairs and self.cfg.reverse_prob > 0:
            key = derive_key(self.seed, self.name, self._fe, "reverse")
            D[:, REV] = (uniform(key, g) < self.cfg.reverse_prob) & pair
        else:
            D[:, REV] = 0
        self._D = np.concatenate((self._D, D)) if len(self._D) else D
        starts = np.cumsum(n)
        starts -= n
        starts += self._CE
        self._C.extend(starts.tolist())
        self._Carr = np.concatenate((self._Carr, starts)) if len(self._Carr) else starts
        self._CE = int(starts[-1] + n[-1])
        self._kinds += kind.astype(np.int8).tobytes()
        self._pairs += npairs

    # rows ------------------------------------------------------------------------------
    def _pack(self) -> int:
        """Plan the rows that the buffered documents determine; returns how many."""
        P, CE, L = self._Q[-1], self._CE, self.seq_len
        if P >= CE:
            return 0
        if not self.pack:
            return self._pack_padded(P)
        if P + L > CE and not self._ended:
            return 0
        out = self._Q
        before = len(out)
        if not self._pairs:  # text only: rows are cut every seq_len tokens
            m = (CE - P) // L
            out.extend(range(P + L, P + m * L + 1, L))
            P += m * L
        else:
            C, K = self._C, self._kinds
            j = bisect_right(C, P) - 1
            while True:
                E = P + L
                if E > CE:
                    break
                if E == CE:
                    out.append(E)
                    P = E
                    break
                j = bisect_right(C, E, j) - 1
                cj = C[j]
                P = E if cj == E or K[j] == TEXT else cj  # a pair across E closes the row at its start
                out.append(P)
        if self._ended and P < CE:  # the stream ends inside this row: a last, partial row
            out.append(CE)
            self._exhaust_at = self._q0 + len(out) - 1
        return len(out) - before

    def _pack_padded(self, P: int) -> int:
        """One document (piece) per row: a text document longer than the row takes several."""
        L = self.seq_len
        j0 = bisect_right(self._C, P) - 1
        starts = self._Carr[j0:].copy()
        n = self._D[j0:, N]
        ends = starts + n
        starts[0] = P
        rem = ends - starts
        cnt = np.where(self._D[j0:, KIND] == TEXT, -(-rem // L), 1)
        idx = np.repeat(np.arange(len(cnt)), cnt)
        t = np.arange(len(idx)) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1
        self._Q.extend(np.minimum(starts[idx] + L * t, ends[idx]).tolist())
        return len(idx)

    def _plan(self) -> bool:
        """More rows; False when the stream has ended and every row was handed out."""
        while True:
            if self._pack():
                return True
            if self._ended:
                return False
            self._scan()

    def take(self) -> int:
        """The real tokens of the next row (the row is then consumed), or -1 when the source is
        exhausted with nothing left."""
        if self.exhausted:
            return -1
        nxt = self._next
        i = nxt - self._q0 + 1
        Q = self._Q
        if i >= len(Q) and not self._plan():
            self._exhaust()
            return -1
        self._next = nxt = nxt + 1
        if nxt == self._exhaust_at:
            self._exhaust()
        return Q[i] - Q[i - 1]

    def take_many(self, k: int) -> list[int]:
        """Up to k rows at once (fewer if the source runs out); their real tokens."""
        out = []
        while len(out) < k and not self.exhausted:
            i = self._next - self._q0 + 1
            if i >= len(self._Q) and not self._plan():
                self._exhaust()
                break
            m = min(k - len(out), len(self._Q) - i)
            if self._exhaust_at is not None:
                m = min(m, self._exhaust_at - self._next)
            Q = self._Q[i - 1 : i + m]
            out.extend(b - a for a, b in zip(Q, Q[1:]))
            self._next += m
            if self._exhaust_at is not None and self._next == self._exhaust_at:
                self._exhaust()
        return out

    def _exhaust(self) -> None:
        if self._next:
            st = self.state()
        else:
            st = {**self._base, "skipped": dict(self._base["skipped"])}
        # every document of the last epoch was scanned: all its skips are counted
        self._final = {
            "epoch": self._fe + 1,
            "pos": 0,
            "offset": 0,
            "rows": st["rows"],
            "tokens": st["tokens"],
            "docs": st["docs"],
            "skipped": {"too_long": self._ftl, "unsupported": self._fun},
            "exhausted": True,
        }
        self.exhausted = True

    def piece_table(self, serials: list[int]) -> np.ndarray:
        """The pieces of many rows handed out since the last `release`, as one int64 array
        [pieces, 11]: column 0 the row's place in `serials`, then the `Segment` fields. The
        mixer renders from it directly (a few array operations per batch instead of a tuple
        per document); `segments` turns it into per-row `Segment`s."""
        Q, q1 = self._Q, 1 - self._q0
        P = np.array([Q[s + q1 - 1] for s in serials], dtype=np.int64)
        E = np.array([Q[s + q1] for s in serials], dtype=np.int64)
        C = self._Carr
        a = np.searchsorted(C, P, side="right") - 1
        cnt = np.searchsorted(C, E, side="left") - a
        total = int(cnt.sum())
        first = np.cumsum(cnt) - cnt
        which = np.repeat(np.arange(len(serials), dtype=np.int64), cnt)
        d = np.arange(total, dtype=np.int64) + np.repeat(a - first, cnt)
        docs = self._D[d]
        out = np.empty((total, 11), dtype=np.int64)
        out[:, 0] = which
        out[:, 1:7] = docs[:, [EP, G, SH, ROW, KIND, REV]]
        c = C[d]
        out[:, 7] = np.maximum(P[which], c) - c
        out[:, 8] = np.minimum(E[which], c + docs[:, N]) - c
        out[:, 9:11] = docs[:, [NT, NM]]
        return out

    def release(self) -> None:
        """Rows handed out so far are no longer needed (rendered or skipped): compact the
        buffers behind the cursor."""
        k = self._next - self._q0  # index in Q of the last consumed boundary
        if k > TRIM_DOCS:
            del self._Q[:k]
            self._q0 += k
        if self._next == 0 or len(self._C) < 2 * TRIM_DOCS:
            return
        q = self._Q[self._next - self._q0]
        d = bisect_left(self._C, q) - 1  # the state needs this document
        if d >= TRIM_DOCS and 2 * d >= len(self._C):
            del self._C[:d]
            self._Carr = self._Carr[d:].copy()
            self._D = self._D[d:].copy()
            self._pairs -= sum(1 for x in self._kinds[:d] if x != TEXT)
            self._kinds = self._kinds[d:]
            self._dbase += d
