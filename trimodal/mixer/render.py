"""Shard codes → unified ids laid out as documents (the layout itself: layout.py).

Two renderers, one output:
- `Renderer.render_spans`, the mixer's: the batch arrives as a piece table (packer.PIECE) and
  where each piece's codes lie (`Spans`: places in shard maps, or fetched windows when read by
  ranges); structure tokens, padding, segment ids, positions, codebook bases and checks are
  array operations over the batch, and the only per-document Python is one slice copy per
  code run (docs/mixer.md, "Rendering from arrays", has its cost). `render_batch` feeds it
  from per-document inputs (the tests' entry).
- `write` renders one document window part by part: the plain reference it is tested against.

Per-token modality: text/image/audio codes are tagged with their modality, every structure
token (<bos>, <t2i>, <boi>, ...) with "special", padding with "pad".
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from trimodal.errors import IntegrityError
from trimodal.mixer import layout
from trimodal.mixer.layout import (
    AUDIO,
    IMAGE,
    KIND_NAMES,
    PAIR_SPECIALS,
    TEXT,
    TEXT_OVERHEAD,
    TEXT_START,
    pair_places,
    text_windows,
)
from trimodal.mixer.pieces import PIECE
from trimodal.tokenizers.vocab import MODALITY_IDS, Vocabulary

_SPECIAL, _TEXT, _IMAGE, _AUDIO = (
    MODALITY_IDS["special"],
    MODALITY_IDS["text"],
    MODALITY_IDS["image"],
    MODALITY_IDS["audio"],
)
_PAD = MODALITY_IDS["pad"]
_PAIR_ROLES = ("task", "begin", "end", "eos")  # a pair's structure tokens after its <bos>


class Spans(NamedTuple):
    """Where the codes of many document pieces lie: piece k's text window is
    `flats[fid[k]][start[k]:stop[k]]` and, for a pair, its image or audio codes
    `flats[mfid[k]][mstart[k]:mstop[k]]`. A flat is an int32 view of a whole shard map
    (`MappedShards.spans`) or one fetched window (ranged reads: start 0, stop its length)."""

    flats: list
    fid: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    mfid: np.ndarray
    mstart: np.ndarray
    mstop: np.ndarray


def _copy_runs(out: np.ndarray, dst: np.ndarray, flats: list, fid: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """out[dst[k]:] = flats[fid[k]][lo[k]:hi[k]] for every k: the one per-run Python loop."""
    if len(flats) == 1:
        f0 = flats[0]
        for d, a, b in zip(dst.tolist(), lo.tolist(), hi.tolist()):
            out[d : d + b - a] = f0[a:b]
    else:
        for d, f, a, b in zip(dst.tolist(), fid.tolist(), lo.tolist(), hi.tolist()):
            out[d : d + b - a] = flats[f][a:b]


def _first_outside(a: np.ndarray, starts: np.ndarray, lens: np.ndarray, limit: int) -> int:
    """The first of the runs a[start:start + len] (in increasing, non-overlapping order) with
    a value outside [0, limit), or -1: two `reduceat` passes, not a call per run."""
    live = np.flatnonzero(lens > 0)
    if not len(live):
        return -1
    idx = np.empty(2 * len(live), dtype=np.int64)
    idx[0::2] = starts[live]
    idx[1::2] = starts[live] + lens[live]
    if idx[-1] >= len(a):  # the last run reaches the end: reduceat's last slice does too
        idx = idx[:-1]
    low = np.minimum.reduceat(a, idx)[0::2]
    high = np.maximum.reduceat(a, idx)[0::2]
    out = np.flatnonzero((low < 0) | (high >= limit))
    return int(live[out[0]]) if len(out) else -1


class _Places(NamedTuple):
    """Where a batch's pieces go in the flat [rows · seq_len] output."""

    dst: np.ndarray  # each piece's first position
    lengths: np.ndarray  # each piece's positions
    counts: np.ndarray  # pieces per row
    first: np.ndarray  # each row's first piece
    fill: np.ndarray  # positions filled per row (the rest is padding)
    text_at: np.ndarray  # where each piece's text codes go
    pairs: np.ndarray  # the pieces that are pairs
    media_kind: np.ndarray  # per pair: IMAGE or AUDIO
    media_at: np.ndarray  # per pair: where its media codes go
    media_len: np.ndarray  # per pair: its media codes
    special_at: np.ndarray  # structure tokens: their positions and ids
    special_id: np.ndarray


class Renderer:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        sp = vocab.special
        self.bos, self.eos = sp("<bos>"), sp("<eos>")
        self.text_base = vocab.range("text")[0] if vocab.has("text") else None
        self.image_base = vocab.range("image")[0] if vocab.has("image") else None
        if vocab.has("audio"):
            start, _ = vocab.range("audio")
            size = vocab.range("audio", 0)[1] - start
            self.audio_levels = vocab.levels("audio")
            # layout.py: audio code j belongs to level j % levels
            self._audio_pattern = start + (np.arange(1 << 16, dtype=np.int32) % self.audio_levels) * size
        else:
            self.audio_levels = 0
        # per pair kind (the index), the id of each of its structure roles; task per direction
        self._role_ids = {}
        for role, reverse in (("task", False), ("task", True), ("begin", False), ("end", False), ("eos", False)):
            ids = np.zeros(len(KIND_NAMES), dtype=np.int32)
            for kind in PAIR_SPECIALS:
                ids[kind] = sp(layout.special_token(kind, role, reverse))
            self._role_ids[role, reverse] = ids
        self._has = {IMAGE: self.image_base is not None, AUDIO: bool(self.audio_levels)}
        self._media_base = np.array(
            [0, self.image_base or 0, vocab.range("audio")[0] if self.audio_levels else 0], dtype=np.int32
        )
        self._media_tag = np.array([_TEXT, _IMAGE, _AUDIO], dtype=np.int8)
        self._level_offsets = np.zeros(0, dtype=np.int32)
        if self.audio_levels:
            self._level_offsets = self._audio_pattern - self._audio_pattern[0]
        self._aranges = np.arange(2, dtype=np.int32)
        # id → modality tag: a rendered batch is checked against it (a code outside its codebook
        # would otherwise silently become another modality's id)
        self.id_modality = vocab.modality_of(np.arange(vocab.size)).astype(np.int8)
        # codebook bases and sizes (a code must be below its size)
        self._text_base = self.text_base or 0
        self._text_size = vocab.range("text")[1] - vocab.range("text")[0] if vocab.has("text") else 0
        self._image_size = vocab.range("image")[1] - vocab.range("image")[0] if vocab.has("image") else 0
        self._audio_size = (vocab.range("audio", 0)[1] - vocab.range("audio", 0)[0]) if vocab.has("audio") else 0
        self.check = True  # compare every code with its codebook size while rendering
        self.bad, self.bad_at = False, None  # (row, piece) of an audio code out of its codebook

    def _audio_offsets(self, n: int) -> np.ndarray:
        if n > len(self._audio_pattern):
            reps = -(-n // len(self._audio_pattern)) + 1
            self._audio_pattern = np.tile(self._audio_pattern, reps)
        return self._audio_pattern[:n]

    def _refuse_missing(self, kind: int) -> None:
        if self.text_base is None or (kind != TEXT and not self._has.get(kind, False)):
            raise IntegrityError(f"a {KIND_NAMES[kind]} sample has codes for a modality the vocabulary lacks")

    def parts(self, kind: int, reverse: bool, text, image, audio) -> list:
        """[(tag, special id or None, codes or None, base)], in document order."""
        self._refuse_missing(kind)
        out = []
        for part in layout.parts(kind, reverse):
            if part == "text":
                out.append((_TEXT, None, text, self.text_base))
            elif part == "media":
                out.append((_IMAGE, None, image, self.image_base) if kind == IMAGE else (_AUDIO, None, audio, None))
            else:
                out.append((_SPECIAL, self.vocab.special(layout.special_token(kind, part, reverse)), None, 0))
        return out

    def render_batch(self, plans: list, views: dict, seq_len: int):
        """Render planned rows given record batch views (`render_spans` from per-document
        inputs; what the tests compare with `write`).

        `plans[i]` is None (an all-padding row) or (source, segments, real tokens), a segment
        being (epoch, g, shard, batch, row, kind, reverse, start, stop); `views[source](shard,
        batch)` gives that record batch's column views (offsets, values, valid) per column."""
        records, flats = [], [np.zeros(0, dtype=np.int32)]
        text_flat, media_flat = [], []
        for i, plan in enumerate(plans):
            if plan is None:
                continue
            name, segs, _ = plan
            for _, _, shard, batch, row, kind, reverse, start, stop in segs:
                columns = views[name](shard, batch)
                offsets, values, _ = columns[0]
                first, text = int(offsets[row]), int(offsets[row + 1]) - int(offsets[row])
                lo, hi = (int(x) for x in text_windows(np.array(kind), start, stop, text))
                text_flat.append(len(flats))
                flats.append(np.asarray(values[first + lo : first + hi], dtype=np.int32))
                media_flat.append(0 if kind == TEXT else len(flats))
                if kind != TEXT:
                    media_offsets, media_values, _ = columns[kind]
                    flats.append(np.asarray(media_values[int(media_offsets[row]) : int(media_offsets[row + 1])]))
                records.append((i, 0, 0, 0, 0, kind, int(reverse), start, stop, text, 0))
        pieces = np.array(records, dtype=PIECE)
        size = np.array([len(x) for x in flats], dtype=np.int64)
        text_flat, media_flat = np.array(text_flat, dtype=np.int64), np.array(media_flat, dtype=np.int64)
        zero = np.zeros(len(pieces), dtype=np.int64)
        spans = Spans(flats, text_flat, zero, size[text_flat], media_flat, zero, size[media_flat])
        return self.render_spans(pieces, spans, len(plans), seq_len)

    def render_spans(self, pieces: np.ndarray, spans: Spans, rows: int, seq_len: int, out: dict | None = None):
        """Render a batch into (tokens, modality, segment_ids, positions) arrays [rows,
        seq_len] from its piece table (`PIECE` records in row order; pairs are whole) and where
        their codes lie (`Spans`), with array operations per batch: a slice copy per code run
        (one per text piece, two per pair) is the only per-document Python. Rows without pieces
        are all padding. `out`: arrays [rows, seq_len] to render into (any of the four keys;
        e.g. a shared-memory slot). Afterwards `self.bad` says whether a code lay outside its
        codebook (`bad_at`: (row, piece) of an audio code past its level's)."""
        flat = {k: v.reshape(-1) for k, v in out.items()} if out is not None else {}
        size = rows * seq_len
        tokens = flat["tokens"] if "tokens" in flat else np.empty(size, dtype=np.int32)
        places = self._places(pieces, spans, rows, seq_len)
        _copy_runs(tokens, places.text_at, spans.flats, spans.fid, spans.start, spans.stop)
        pairs = places.pairs
        if len(pairs):
            _copy_runs(tokens, places.media_at, spans.flats, spans.mfid[pairs], spans.mstart[pairs], spans.mstop[pairs])
        pads = [(r * seq_len + k, r * seq_len + seq_len) for r, k in enumerate(places.fill.tolist()) if k < seq_len]
        # checks: every code below its codebook's size (structure and padding hold 0 meanwhile)
        tokens[places.special_at] = 0
        for a, b in pads:
            tokens[a:b] = 0
        self.bad, self.bad_at = (
            self._check_codes(tokens, places, spans, pieces["row"]) if self.check and size else (False, None)
        )
        modality = flat["modality"] if "modality" in flat else np.empty(size, dtype=np.int8)
        self._add_bases(tokens, modality, places, size)
        tokens[places.special_at] = places.special_id
        modality[places.special_at] = _SPECIAL
        pad_id = self.vocab.pad_id
        for a, b in pads:
            tokens[a:b] = pad_id
            modality[a:b] = _PAD
        segment_ids, positions = self._segments(places, pieces["row"], flat, rows, seq_len)
        for a, b in pads:
            positions[a:b] = 0
        shape = (rows, seq_len)
        return tokens.reshape(shape), modality.reshape(shape), segment_ids.reshape(shape), positions.reshape(shape)

    def _places(self, pieces: np.ndarray, spans: Spans, rows: int, seq_len: int) -> _Places:
        at, kind, start, stop = pieces["row"], pieces["kind"], pieces["start"], pieces["stop"]
        text = pieces["text_codes"]
        lengths = stop - start
        counts = np.bincount(at, minlength=rows)
        first = np.cumsum(counts) - counts
        before = np.cumsum(lengths) - lengths
        dst = at * seq_len + before - before[first[at]]
        fill = np.zeros(rows, dtype=np.int64)
        np.add.at(fill, at, lengths)
        if int(fill.max(initial=0)) > seq_len:
            raise IntegrityError(
                f"planned {int(fill.max())} ids for a row of {seq_len}: a shard and its length index disagree"
            )
        is_text = kind == TEXT
        # a text piece's codes follow its <bos> when the piece shows it
        text_at = dst + np.maximum(TEXT_START - start, 0)
        shown_bos = dst[start == 0]
        text_eos = (dst + lengths - 1)[is_text & (stop == text + TEXT_OVERHEAD)]
        special_at = [shown_bos, text_eos]
        special_id = [np.full(len(shown_bos), self.bos, np.int32), np.full(len(text_eos), self.eos, np.int32)]
        pairs = np.flatnonzero(~is_text)
        media_kind = kind[pairs]
        media_at = media_len = pairs
        if len(pairs):
            for kind_ in np.unique(media_kind).tolist():
                self._refuse_missing(kind_)
            reverse = pieces["reverse"][pairs].astype(bool)
            pair_dst, pair_text = dst[pairs], text[pairs]
            media_len = spans.mstop[pairs] - spans.mstart[pairs]
            places = pair_places(reverse, pair_text, media_len)
            text_at[pairs] = pair_dst + places["text"]
            media_at = pair_dst + places["media"]
            for role in _PAIR_ROLES:
                special_at.append(pair_dst + places[role])
                ids = self._role_ids[role, False][media_kind]
                if role == "task":
                    ids = np.where(reverse, self._role_ids[role, True][media_kind], ids)
                special_id.append(ids)
        return _Places(
            dst, lengths, counts, first, fill, text_at, pairs, media_kind, media_at, media_len,
            np.concatenate(special_at), np.concatenate(special_id),
        )  # fmt: skip

    def _check_codes(self, tokens: np.ndarray, places: _Places, spans: Spans, at: np.ndarray):
        """(bad, bad_at): whether a code lies outside its codebook, and (row, piece) of an audio
        code past its level's (an id of the audio range all the same)."""
        if not len(places.pairs):
            return int(tokens.min()) < 0 or int(tokens.max()) >= self._text_size, None
        for media_kind, limit in ((AUDIO, self._audio_size), (IMAGE, self._image_size)):
            which = np.flatnonzero(places.media_kind == media_kind)
            hit = _first_outside(tokens, places.media_at[which], places.media_len[which], limit)
            if hit >= 0:
                if media_kind != AUDIO:
                    return True, None
                piece = int(places.pairs[which[hit]])
                row = int(at[piece])
                return True, (row, piece - int(places.first[row]))
        return _first_outside(tokens, places.text_at, spans.stop - spans.start, self._text_size) >= 0, None

    def _add_bases(self, tokens: np.ndarray, modality: np.ndarray, places: _Places, size: int) -> None:
        """Codes → unified ids (each modality's base, each audio code's level) and their tags."""
        if not len(places.pairs):
            tokens += self._text_base
            modality.fill(_TEXT)
            return
        # runs alternate: text (and structure) up to a pair's media, its media, ...
        media_at, media_len, media_kind = places.media_at, places.media_len, places.media_kind
        runs = np.empty(2 * len(media_at) + 1, dtype=np.int64)
        runs[1::2] = media_len
        runs[0:-1:2] = media_at - np.concatenate(([0], media_at[:-1] + media_len[:-1]))
        runs[-1] = size - media_at[-1] - media_len[-1]
        base = np.full(len(runs), self._text_base, dtype=np.int32)
        base[1::2] = self._media_base[media_kind]
        tags = np.full(len(runs), _TEXT, dtype=np.int8)
        tags[1::2] = self._media_tag[media_kind]
        tokens += np.repeat(base, runs)
        modality[...] = np.repeat(tags, runs)
        if self.audio_levels > 1:  # audio code j is of level j % levels
            audio = media_kind == AUDIO
            longest = int(media_len[audio].max(initial=0))
            if longest > len(self._level_offsets):
                self._level_offsets = self._audio_offsets(longest) - self._audio_pattern[0]
            levels = self._level_offsets
            for first, count in zip(media_at[audio].tolist(), media_len[audio].tolist()):
                tokens[first : first + count] += levels[:count]

    def _segments(self, places: _Places, at: np.ndarray, flat: dict, rows: int, seq_len: int):
        """Segment ids (1.. per piece in its row, 0 for padding) and positions (from 0 at each
        piece's first position)."""
        pieces = len(places.lengths)
        # runs: the pieces, each row's padding after its last piece
        runs = np.zeros(pieces + rows, dtype=np.int64)
        seg = np.zeros(pieces + rows, dtype=np.int32)
        place = np.arange(pieces) + at
        runs[place] = places.lengths
        seg[place] = np.arange(pieces) - places.first[at] + 1
        runs[places.first + places.counts + np.arange(rows)] = seq_len - places.fill
        segment_ids = np.repeat(seg, runs)
        if "segment_ids" in flat:
            flat["segment_ids"][...] = segment_ids
            segment_ids = flat["segment_ids"]
        size = rows * seq_len
        starts = np.repeat((np.cumsum(runs) - runs).astype(np.int32), runs)
        positions = np.subtract(self._arange(size)[:size], starts, out=flat.get("positions", starts))
        return segment_ids, positions

    def _arange(self, n: int) -> np.ndarray:
        if len(self._aranges) <= n:
            self._aranges = np.arange(max(n + 1, 2 * len(self._aranges)), dtype=np.int32)
        return self._aranges

    def write(
        self,
        tokens: np.ndarray,
        modality: np.ndarray,
        at: int,
        start: int,
        stop: int,
        kind: int,
        reverse: bool,
        text,
        image,
        audio,
    ) -> None:
        """Write document tokens [start, stop) into tokens[at:], modality[at:] (1-D row views)."""
        p = 0
        for tag, sid, codes, base in self.parts(kind, reverse, text, image, audio):
            n = 1 if codes is None else len(codes)
            lo, hi = max(start, p), min(stop, p + n)
            if lo < hi:
                o = at + lo - start
                if codes is None:
                    tokens[o] = sid
                elif tag == _AUDIO:
                    tokens[o : o + hi - lo] = codes[lo - p : hi - p] + self._audio_offsets(hi - p)[lo - p :]
                else:
                    np.add(codes[lo - p : hi - p], base, out=tokens[o : o + hi - lo])
                modality[o : o + hi - lo] = tag
            p += n
            if p >= stop:
                break
