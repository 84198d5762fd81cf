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
token axis with cumulative starts. A row is then just an interval [P, Q) of that axis, and
rows tile it: Q of one row is P of the next. Packed rows end at P + seq_len unless a pair
straddles that point (then at the pair's start): pure-text windows are cut arithmetically, with
pairs one `bisect` per row. Padded rows are one per document piece, computed with a few array
operations. The cursor after any row (the state) follows from its end Q by one `bisect` (its cost:
docs/mixer.md, "Planning").
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import numpy as np

from trimodal.dataset.shards import BATCH_ROWS
from trimodal.errors import IntegrityError
from trimodal.mixer.config import MixSource
from trimodal.mixer.layout import BOTH, TEXT, doc_kinds, doc_lengths
from trimodal.mixer.pieces import PIECE, column, matrix, records, take
from trimodal.mixer.shard_reader import ShardReader
from trimodal.mixer.shuffle import BlockOrder, GlobalOrder, derive_key, uniform

# Positions scanned per refill: starts at FIRST_WINDOW, doubles while refills come within
# FAST_REFILL global batches of each other, halves when one lasted over SLOW_REFILL (a source
# with a small share in a 256-source mix keeps ~1k documents buffered, a lone source 16k).
FIRST_WINDOW, MIN_WINDOW, MAX_WINDOW = 1024, 256, 16384
FAST_REFILL, SLOW_REFILL = 4, 32
TRIM_DOCS = 1024  # documents behind the cursor (and at least as many as ahead) before compaction
# the document buffer: one record per usable document
DOC = np.dtype(
    [
        ("epoch", np.int64),
        ("pos", np.int64),  # its position in the epoch's order
        ("sample", np.int64),
        ("shard", np.int64),
        ("shard_row", np.int64),
        ("kind", np.int64),
        ("reverse", np.int64),
        ("text_codes", np.int64),
        ("media_codes", np.int64),
        ("length", np.int64),  # rendered positions (layout.doc_lengths)
        ("too_long_before", np.int64),  # the source's skip counters when it was reached
        ("unsupported_before", np.int64),
    ]
)
# what a piece table copies from the document buffer: its columns there and in the piece table
_COPIED = ("epoch", "sample", "shard", "shard_row", "kind", "reverse", "text_codes", "media_codes")
_FROM_DOC = np.array([column(DOC, name) for name in _COPIED])
_TO_PIECE = np.array([column(PIECE, name) for name in _COPIED])
_ROW, _START, _STOP = (column(PIECE, name) for name in ("row", "start", "stop"))
_LENGTH = column(DOC, "length")


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
        may_be_empty: bool = False,
    ):
        self.cfg, self.reader, self.seq_len, self.seed, self.pack = cfg, reader, seq_len, seed, pack
        # a source with no usable sample ends instead of failing (a small held-out split may hold
        # none of a small source's samples)
        self.may_be_empty = may_be_empty
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
        self._frontier_epoch, self._frontier_pos = self._base["epoch"], self._base["pos"]
        self._too_long, self._unsupported = self._base["skipped"]["too_long"], self._base["skipped"]["unsupported"]
        self._ended = self.exhausted
        self._epoch_whole = self._frontier_pos == 0
        self._epoch_docs = self._epoch_skips = 0
        self._win = FIRST_WINDOW // 2
        self.clock = self._scan_clock = 0  # the mixer's step (it sets it), and at the last refill
        # documents: `DOC` records, starts on the token axis (a list, for bisect, and an array)
        self._docs = np.zeros(0, dtype=DOC)
        self._starts: list[int] = []
        self._starts_array = np.zeros(0, dtype=np.int64)
        self._end = 0  # end of the last document on the token axis
        self._dropped = 0  # documents dropped from the front of the buffers
        self._kinds = b""  # kind per buffered document (bytes: fast indexing in the packing loop)
        self._pairs = 0  # pairs among the buffered documents
        # rows: boundaries on the token axis; row j (serial) spans
        # [bounds[j - bounds_base], bounds[j - bounds_base + 1]); the first starts at the origin
        self._origin = self._base["offset"]
        self._bounds: list[int] = [self._origin]
        self._bounds_base = 0
        self.taken = 0  # rows handed out since the reset (the serial of the next row)
        self._exhaust_at: int | None = None  # serial after which the source is exhausted

    def state(self) -> dict:
        if self.exhausted:
            return {**self._final, "skipped": dict(self._final["skipped"]), "samples": self.n}
        if self.taken == 0:
            return {**self._base, "skipped": dict(self._base["skipped"]), "samples": self.n}
        q = self._bounds[self.taken - self._bounds_base]
        i = bisect_left(self._starts, q)  # documents started before q (buffer-relative)
        d = i - 1
        doc = self._docs[d]
        epoch, pos, length = int(doc["epoch"]), int(doc["pos"]), int(doc["length"])
        doc_start = self._starts[d]
        if q >= doc_start + length:
            pos, offset = pos + 1, 0
        else:
            offset = q - doc_start
        b = self._base
        return {
            "epoch": epoch,
            "pos": pos,
            "offset": offset,
            "rows": b["rows"] + self.taken,
            "tokens": b["tokens"] + q - self._origin,
            "docs": b["docs"] + self._dropped + i - (1 if self._origin > 0 else 0),
            "skipped": {"too_long": int(doc["too_long_before"]), "unsupported": int(doc["unsupported_before"])},
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
        positions = self._next_window()
        if positions is None:
            return
        samples = self._order(self._frontier_epoch)(positions)
        if self.shuffle_window:  # holes of a block order
            keep = samples >= 0
            if not keep.all():
                positions, samples = positions[keep], samples[keep]
        shard, shard_row, lens, kept = self.reader.lengths(samples)
        if kept is not None and not kept.all():
            positions, samples, shard, shard_row, lens = (a[kept] for a in (positions, samples, shard, shard_row, lens))
        if not len(samples):
            return
        docs = self._documents(positions, samples, shard, shard_row, lens.astype(np.int64))
        self._epoch_docs += len(docs)
        if not len(docs):
            return
        self._docs = records(np.concatenate((matrix(self._docs), matrix(docs))), DOC) if len(self._docs) else docs
        length = docs["length"]
        starts = np.cumsum(length)
        starts -= length
        starts += self._end
        self._starts.extend(starts.tolist())
        self._starts_array = np.concatenate((self._starts_array, starts)) if len(self._starts_array) else starts
        self._end = int(starts[-1] + length[-1])
        self._kinds += docs["kind"].astype(np.int8).tobytes()
        self._pairs += int(np.count_nonzero(docs["kind"] != TEXT))

    def _next_window(self) -> np.ndarray | None:
        """The next positions to scan (a new epoch when this one is done; None at the end of the
        last), the window sized by how fast the last one was used up."""
        if self._frontier_pos >= self.domain:
            if self._epoch_whole and not self._epoch_docs and not self.may_be_empty:
                raise self._no_docs_error()
            if self.cfg.max_epochs is not None and self._frontier_epoch + 1 >= self.cfg.max_epochs:
                self._ended = True
                return None
            self._frontier_epoch, self._frontier_pos = self._frontier_epoch + 1, 0
            self._epoch_whole, self._epoch_docs, self._epoch_skips = True, 0, 0
        lasted = self.clock - self._scan_clock
        if lasted < FAST_REFILL:
            self._win = min(2 * self._win, MAX_WINDOW)
        elif lasted > SLOW_REFILL:
            self._win = max(self._win // 2, MIN_WINDOW)
        self._scan_clock = self.clock
        start = self._frontier_pos
        self._frontier_pos = min(start + self._win, self.domain)
        return np.arange(start, self._frontier_pos, dtype=np.int64)

    def _documents(self, positions, samples, shard, shard_row, lens) -> np.ndarray:
        """The usable documents among the scanned samples (`DOC` records); pairs longer than
        seq_len and samples with both image and audio are skipped and counted."""
        text = lens[:, 0]
        if text.min() < 0:
            raise IntegrityError(f"source {self.name!r}: a sample of {self.reader.uri} has a null text column")
        counts = {"text": text, "image": lens[:, 1], "audio": lens[:, 2]}
        kind = doc_kinds(counts).astype(np.int64)
        length = doc_lengths(kind, counts)
        pair = kind != TEXT
        docs = np.empty(len(samples), dtype=DOC)
        docs["too_long_before"], docs["unsupported_before"] = self._too_long, self._unsupported
        docs["epoch"], docs["pos"], docs["sample"] = self._frontier_epoch, positions, samples
        docs["shard"], docs["shard_row"], docs["kind"] = shard, shard_row, kind
        docs["text_codes"], docs["length"] = text, length
        docs["media_codes"] = np.maximum(counts["image"], 0) + np.maximum(counts["audio"], 0)
        if self.cfg.reverse_prob > 0 and pair.any():
            key = derive_key(self.seed, self.name, self._frontier_epoch, "reverse")
            docs["reverse"] = (uniform(key, samples) < self.cfg.reverse_prob) & pair
        else:
            docs["reverse"] = 0
        unsupported = kind == BOTH
        too_long = pair & ~unsupported & (length > self.seq_len)
        skip = unsupported | too_long
        skipped = int(skip.sum())
        if not skipped:
            return docs
        docs["too_long_before"] += np.cumsum(too_long) - too_long  # skips before each document
        docs["unsupported_before"] += np.cumsum(unsupported) - unsupported
        self._too_long += int(too_long.sum())
        self._unsupported += int(unsupported.sum())
        self._epoch_skips += skipped
        return take(docs, ~skip)

    # rows ------------------------------------------------------------------------------
    def _pack(self) -> int:
        """Plan the rows that the buffered documents determine; returns how many."""
        at, end, seq_len = self._bounds[-1], self._end, self.seq_len
        if at >= end:
            return 0
        if not self.pack:
            return self._pack_padded(at)
        if at + seq_len > end and not self._ended:
            return 0
        out = self._bounds
        before = len(out)
        if not self._pairs:  # text only: rows are cut every seq_len tokens
            rows = (end - at) // seq_len
            out.extend(range(at + seq_len, at + rows * seq_len + 1, seq_len))
            at += rows * seq_len
        else:
            starts, kinds = self._starts, self._kinds
            doc = bisect_right(starts, at) - 1
            while True:
                full = at + seq_len
                if full > end:
                    break
                if full == end:
                    out.append(full)
                    at = full
                    break
                doc = bisect_right(starts, full, doc) - 1
                doc_start = starts[doc]
                # a pair across the row's end closes the row at its start
                at = full if doc_start == full or kinds[doc] == TEXT else doc_start
                out.append(at)
        if self._ended and at < end:  # the stream ends inside this row: a last, partial row
            out.append(end)
            self._exhaust_at = self._bounds_base + len(out) - 1
        return len(out) - before

    def _pack_padded(self, at: int) -> int:
        """One document (piece) per row: a text document longer than the row takes several."""
        seq_len = self.seq_len
        first = bisect_right(self._starts, at) - 1
        starts = self._starts_array[first:].copy()
        docs = self._docs[first:]
        ends = starts + docs["length"]
        starts[0] = at
        rows_per_doc = np.where(docs["kind"] == TEXT, -(-(ends - starts) // seq_len), 1)
        doc = np.repeat(np.arange(len(rows_per_doc)), rows_per_doc)
        nth = np.arange(len(doc)) - np.repeat(np.cumsum(rows_per_doc) - rows_per_doc, rows_per_doc) + 1
        self._bounds.extend(np.minimum(starts[doc] + seq_len * nth, ends[doc]).tolist())
        return len(doc)

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
        nxt = self.taken
        i = nxt - self._bounds_base + 1
        bounds = self._bounds
        if i >= len(bounds) and not self._plan():
            self._exhaust()
            return -1
        self.taken = nxt = nxt + 1
        if nxt == self._exhaust_at:
            self._exhaust()
        return bounds[i] - bounds[i - 1]

    def take_many(self, k: int) -> list[int]:
        """Up to k rows at once (fewer if the source runs out); their real tokens."""
        out = []
        while len(out) < k and not self.exhausted:
            i = self.taken - self._bounds_base + 1
            if i >= len(self._bounds) and not self._plan():
                self._exhaust()
                break
            m = min(k - len(out), len(self._bounds) - i)
            if self._exhaust_at is not None:
                m = min(m, self._exhaust_at - self.taken)
            bounds = self._bounds[i - 1 : i + m]
            out.extend(b - a for a, b in zip(bounds, bounds[1:]))
            self.taken += m
            if self._exhaust_at is not None and self.taken == self._exhaust_at:
                self._exhaust()
        return out

    def _exhaust(self) -> None:
        if self.taken:
            st = self.state()
        else:
            st = {**self._base, "skipped": dict(self._base["skipped"])}
        # every document of the last epoch was scanned: all its skips are counted
        self._final = {
            "epoch": self._frontier_epoch + 1,
            "pos": 0,
            "offset": 0,
            "rows": st["rows"],
            "tokens": st["tokens"],
            "docs": st["docs"],
            "skipped": {"too_long": self._too_long, "unsupported": self._unsupported},
            "exhausted": True,
        }
        self.exhausted = True

    def piece_table(self, serials: list[int]) -> np.ndarray:
        """The pieces of many rows handed out since the last `release`, as one `PIECE` array,
        its `row` the row's place in `serials`. The mixer renders from it directly (a few array
        operations per batch instead of a tuple per document)."""
        bounds, first_q = self._bounds, 1 - self._bounds_base
        row_start = np.array([bounds[s + first_q - 1] for s in serials], dtype=np.int64)
        row_end = np.array([bounds[s + first_q] for s in serials], dtype=np.int64)
        doc_starts = self._starts_array
        first_doc = np.searchsorted(doc_starts, row_start, side="right") - 1
        per_row = np.searchsorted(doc_starts, row_end, side="left") - first_doc
        total = int(per_row.sum())
        row = np.repeat(np.arange(len(serials), dtype=np.int64), per_row)
        doc = np.arange(total, dtype=np.int64) + np.repeat(first_doc - (np.cumsum(per_row) - per_row), per_row)
        docs = matrix(self._docs)[doc]
        out = np.empty((total, len(PIECE.names)), dtype=np.int64)
        out[:, _ROW] = row
        out[:, _TO_PIECE] = docs[:, _FROM_DOC]
        doc_start = doc_starts[doc]
        out[:, _START] = np.maximum(row_start[row], doc_start) - doc_start
        out[:, _STOP] = np.minimum(row_end[row], doc_start + docs[:, _LENGTH]) - doc_start
        return records(out, PIECE)

    def release(self) -> None:
        """Rows handed out so far are no longer needed (rendered or skipped): compact the
        buffers behind the cursor."""
        k = self.taken - self._bounds_base  # index in bounds of the last consumed boundary
        if k > TRIM_DOCS:
            del self._bounds[:k]
            self._bounds_base += k
        if self.taken == 0 or len(self._starts) < 2 * TRIM_DOCS:
            return
        q = self._bounds[self.taken - self._bounds_base]
        d = bisect_left(self._starts, q) - 1  # the state needs this document
        if d >= TRIM_DOCS and 2 * d >= len(self._starts):
            del self._starts[:d]
            self._starts_array = self._starts_array[d:].copy()
            self._docs = self._docs[d:].copy()
            self._pairs -= sum(1 for x in self._kinds[:d] if x != TEXT)
            self._kinds = self._kinds[d:]
            self._dropped += d
