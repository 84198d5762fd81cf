"""One source's document stream cut into rows: the cursor, the packing rule, the epochs.

A source walks its samples in the shuffled order of its current epoch (shuffle.py). Its whole
state is a cursor — (epoch, position in the epoch, tokens of the current document already
emitted) — plus counters; no token is buffered. Planning a row needs only document lengths
(Arrow offsets), so every rank can plan every row of the global stream cheaply and copy tokens
only for its own rows.

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
"""

from __future__ import annotations

import numpy as np

from trimodal.dataset.shards import BATCH_ROWS as BLOCK_ROWS
from trimodal.errors import IntegrityError
from trimodal.mixer.config import MixSource
from trimodal.mixer.render import BOTH, TEXT, doc_kinds, doc_lengths
from trimodal.mixer.shard_reader import ShardReader
from trimodal.mixer.shuffle import BlockOrder, GlobalOrder, derive_key, uniform

MAX_WINDOW = 1024  # documents whose order, location and length are computed at once (vectorized)


class SourceStream:
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
        # Every sample of a window must sit in the batch cache at once (see ShardReader.lookup).
        self.window = max(1, min(MAX_WINDOW, reader.cache_batches // 2))
        self.epoch = self.pos = self.offset = 0
        self.rows = self.tokens = self.docs = 0
        self.skipped = {"too_long": 0, "unsupported": 0}
        self.exhausted = False
        self._order = self._make_order(0)
        self._order_epoch = 0
        self.domain = self._order.domain  # positions per epoch (samples, plus holes in block order)
        self._win = (-1, 0, 0)  # (epoch, start, stop) of the cached window of positions
        self._i = 0  # index of the doc at `pos` in the window lists
        self._whole_epoch, self._epoch_docs = True, 0  # to detect an epoch without a single sample

    def _make_order(self, epoch: int):
        key = derive_key(self.seed, self.name, epoch, "order")
        if self.shuffle_window:
            return BlockOrder(self.n, key, BLOCK_ROWS, self.shuffle_window)
        return GlobalOrder(self.n, key)

    # state -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "pos": self.pos,
            "offset": self.offset,
            "rows": self.rows,
            "tokens": self.tokens,
            "docs": self.docs,
            "skipped": dict(self.skipped),
            "exhausted": self.exhausted,
            "samples": self.n,
        }

    def load(self, d: dict) -> None:
        if int(d.get("samples", self.n)) != self.n:
            raise IntegrityError(
                f"source {self.name!r}: the saved state was made on {d['samples']} samples, "
                f"dataset {self.reader.uri} now has {self.n}; its order cannot be continued"
            )
        self.epoch, self.pos, self.offset = int(d["epoch"]), int(d["pos"]), int(d["offset"])
        self.rows, self.tokens, self.docs = int(d["rows"]), int(d["tokens"]), int(d["docs"])
        self.skipped = {"too_long": 0, "unsupported": 0, **{k: int(v) for k, v in d["skipped"].items()}}
        self.exhausted = bool(d["exhausted"])
        self._win = (-1, 0, 0)
        self._whole_epoch = False

    def epochs(self) -> float:
        """Epochs consumed, fractional (a source exhausted after k epochs reports k)."""
        return self.epoch + self.pos / self.domain

    # documents -------------------------------------------------------------------------
    def _fill_window(self) -> None:
        """Load the documents from `pos` on (up to `window` positions): order, location,
        lengths, kinds, directions. Moves `pos` past holes of a block order."""
        if self._order_epoch != self.epoch:
            self._order, self._order_epoch = self._make_order(self.epoch), self.epoch
        start = self.pos
        while True:  # skip holes of a block order and samples filtered out by dataset_sources
            stop = min(start + self.window, self.domain)
            posn = np.arange(start, stop, dtype=np.int64)
            g = self._order(posn)
            keep = g >= 0
            if not keep.all():
                posn, g = posn[keep], g[keep]
            s, b, r, lens = self.reader.lookup(g)
            if self.reader.sources is not None:
                keep = lens[:, 3] == 1
                if not keep.all():
                    posn, g, s, b, r, lens = posn[keep], g[keep], s[keep], b[keep], r[keep], lens[keep]
            if len(g) or stop >= self.domain:
                break
            start = stop
        lengths = {"text": lens[:, 0], "image": lens[:, 1], "audio": lens[:, 2]}
        kinds = doc_kinds(lengths)
        length = doc_lengths(kinds, lengths)
        if (lens[:, 0] < 0).any():
            raise IntegrityError(f"source {self.name!r}: a sample of {self.reader.uri} has a null text column")
        if self.cfg.reverse_prob > 0:
            rev = (uniform(derive_key(self.seed, self.name, self.epoch, "reverse"), g) < self.cfg.reverse_prob) & (
                kinds != TEXT
            )
        else:
            rev = np.zeros(len(g), dtype=bool)
        self._posn, self._g, self._s, self._b, self._r = posn.tolist(), g.tolist(), s.tolist(), b.tolist(), r.tolist()
        self._kind, self._len, self._rev = kinds.tolist(), length.tolist(), rev.tolist()
        self._win = (self.epoch, self.pos, stop)
        self._i = 0
        self.pos = self._posn[0] if self._posn else stop

    def plan_row(self) -> tuple[list, int] | None:
        """Advance the cursor by one row. Returns (segments, real tokens) where a segment is
        (epoch, g, shard, batch, row, kind, reverse, start, stop) — the document window
        [start, stop) of sample g — or None when the source is exhausted and had nothing left."""
        if self.exhausted:
            return None
        L, fill, segs, skips = self.seq_len, 0, [], 0
        max_epochs = self.cfg.max_epochs
        while fill < L:
            if self.pos >= self.domain:
                if self._whole_epoch and not self._epoch_docs:
                    raise IntegrityError(
                        f"source {self.name!r}: no sample of {self.reader.uri} is usable "
                        f"(dataset_sources {self.cfg.dataset_sources}, seq_len {L})"
                    )
                self._whole_epoch, self._epoch_docs = True, 0
                if max_epochs is not None and self.epoch + 1 >= max_epochs:
                    self.exhausted = True
                    self.epoch, self.pos = self.epoch + 1, 0
                    break
                self.epoch, self.pos, self.offset = self.epoch + 1, 0, 0
            we, ws, wt = self._win
            if we != self.epoch or not ws <= self.pos < wt:
                self._fill_window()
                if self.pos >= self.domain:
                    continue  # only holes were left in this epoch
            i = self._i
            self._epoch_docs += 1
            kind, n = self._kind[i], self._len[i]
            if kind != TEXT:
                if n > L or kind == BOTH:
                    self.skipped["unsupported" if kind == BOTH else "too_long"] += 1
                    skips += 1
                    if skips > self.n:
                        raise IntegrityError(
                            f"source {self.name!r}: no sample of {self.reader.uri} fits "
                            f"seq_len {L} (pairs longer than the sequence are skipped)"
                        )
                elif n > L - fill:
                    break  # close the row; the pair opens the next one
                else:
                    segs.append((self.epoch, self._g[i], self._s[i], self._b[i], self._r[i], kind, self._rev[i], 0, n))
                    fill += n
                    self.docs += 1
            else:
                take = min(n - self.offset, L - fill)
                if self.offset == 0:
                    self.docs += 1
                segs.append(
                    (
                        self.epoch,
                        self._g[i],
                        self._s[i],
                        self._b[i],
                        self._r[i],
                        kind,
                        False,
                        self.offset,
                        self.offset + take,
                    )
                )
                fill += take
                self.offset += take
                if self.offset < n:
                    if not self.pack:
                        break
                    continue  # the row is full: the document continues in the next one
                self.offset = 0
            # next document (the window's next position, or its end)
            i += 1
            self._i = i
            self.pos = self._posn[i] if i < len(self._posn) else self._win[2]
            if not self.pack and segs:
                break
        if not segs:
            return None
        self.rows += 1
        self.tokens += fill
        return segs, fill
