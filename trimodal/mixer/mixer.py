"""The mixer: one global stream of packed rows, sliced per rank, resumable anywhere.

The global stream is a sequence of rows. For each row the scheduler picks a source
(scheduler.py), that source plans the row from its shuffled cursor (packer.py), and rows are
grouped into global batches of `global_batch`. Every rank plans every row — planning reads only
the datasets' length indexes (index.py), ~13 bytes per sample — and reads and renders only its
own slice of each global batch: rows [rank·B/W, (rank+1)·B/W), fetching just those documents'
codes (shard_reader.py). So the global stream does not depend on the number of ranks or loader
workers, the union of the ranks' batches is the global batch, and the state is the same small
JSON dict on every rank (a cursor and counters per source, three numbers per source for the
scheduler, the step). Resuming with another world size, another number of DataLoader workers,
more or fewer sources, or a new share schedule continues the very same stream from the saved
position.

The state also records every setting that decides the order of samples — seed, seq_len,
share_unit, global_batch, shuffle_window and, per source, its dataset (the content hash of its
shard table), pack, max_epochs and dataset_sources — and a resume with any of them changed is
refused with the setting named: each would repeat or skip samples. Shares, schedules,
reverse_prob, caches and verification may change; a source new in the mix starts its first
epoch at the resume point, and a source left out keeps its position in the state.

Trade-offs, measured with `bench/bench_mixer.py --only planning,scaling` (one process simulating
the ranks, a shared 2-core machine): each rank plans all W·B rows of a global batch, ~1M rows
per CPU-second for one source and ~0.45M for 256 sources (0.3 ms per global batch of 64 rows
at any W); a rank at W = 64 reads 1.1-1.25× the code bytes it renders. On S3 the next `read_ahead` global
batches (default 2) are planned ahead and their documents fetched on a background thread.

Rendering: a rank's rows go from the plan to the output as arrays (a piece table, where the
codes lie — places in the shard maps, or windows fetched by ranges on S3 and by pread —
`Renderer.render_spans`), with one slice copy per code run as the only per-document Python.
In a plain loop each batch is rendered into the arrays of the batch
before last when nothing else holds them (reference counts): fresh 1.7 MB arrays cost ~300
page faults per 64 × 2048 batch, a third of a text batch's CPU. The price: the mixer keeps
the last two batches' arrays alive (3.4 MB at 64 × 2048).

End of data: when every source with a share is exhausted (`max_epochs`), the last global batch
is completed with all-padding rows (segment id 0 everywhere) and iteration stops.
"""

from __future__ import annotations

import copy
import hashlib
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from trimodal.errors import ConfigError, IntegrityError
from trimodal.mixer.config import load_mix
from trimodal.mixer.packer import AT, NMEDIA, NTEXT, SHARD, SKIND, SREV, SROW, START, STOP, SourceStream, segments
from trimodal.mixer.render import IMAGE, TEXT, Renderer, Spans
from trimodal.mixer.scheduler import Scheduler, normalize
from trimodal.mixer.shard_reader import ShardReader, SharedDataset, is_remote
from trimodal.mixer.sources import build_vocabulary, open_datasets, source_tokens

STATE_FORMAT = 2
READABLE_STATES = (1, 2)
ORDER_FIELDS = ("dataset", "pack", "max_epochs", "dataset_sources")  # per source, in the state
GLOBAL_ORDER_KEYS = ("global_batch", "shuffle_window")  # besides seed, seq_len, share_unit
_ARRAYS = ("tokens", "modality", "segment_ids", "positions")
_NO_CODES = np.zeros(0, dtype=np.int32)


class Planned(NamedTuple):
    """A rank's rows of one global batch, planned: each row's source (None: an all-padding
    row) and the piece table of them all (packer.piece_table, column AT the row)."""

    sources: list
    table: np.ndarray

    def rows(self) -> list:
        """Per row None or (source, [Segment, ...]): the per-document form."""
        segs = segments(self.table, len(self.sources))
        return [None if name is None else (name, segs[k]) for k, name in enumerate(self.sources)]


def _merge_spans(parts: list, n: int) -> Spans:
    """Spans of pieces on several datasets, each computed for its pieces (`sel`), as one."""
    flats: list = []
    fid, start, stop, mfid, mstart, mstop = (np.empty(n, dtype=np.int64) for _ in range(6))
    for sel, got in parts:
        fid[sel], mfid[sel] = got.fid + len(flats), got.mfid + len(flats)
        start[sel], stop[sel], mstart[sel], mstop[sel] = got.start, got.stop, got.mstart, got.mstop
        flats.extend(got.flats)
    return Spans(flats, fid, start, stop, mfid, mstart, mstop)


def dataset_id(ds) -> str:
    """A short content id of a dataset: its shard table's sha256 (format 2), or a hash of its
    shards' sha256 (format 1). The same dataset copied elsewhere keeps its id."""
    ref = ds.manifest.tables.get("shards")
    if ref:
        return ref["sha256"][:16]
    h = hashlib.sha256()
    for d in ds.manifest.shards.table.column("sha256").to_pylist():
        h.update(d)
    return h.hexdigest()[:16]


class Mixer:
    """Iterate → dicts of numpy arrays [global_batch / world_size, seq_len]: `tokens` (int32
    unified ids), `modality` (int8, MODALITY_IDS), `segment_ids` (int32, 1.. per document in the
    row, 0 = padding), `positions` (int32, from 0 at each document's first token in the row).

    `worker`/`num_workers` split a rank's batches between DataLoader workers (worker k renders
    the steps ≡ `worker_base` + k mod num_workers). `with_docs=True` adds `docs`: per row, the
    document pieces as (source, epoch, sample index, start, stop), for audits and tests.
    `read_ahead`: global batches planned and fetched ahead (default 2 when a source is on S3,
    else 0).
    """

    def __init__(
        self,
        cfg,
        rank: int = 0,
        world_size: int = 1,
        *,
        worker: int = 0,
        num_workers: int = 1,
        with_docs: bool = False,
        worker_base: int = 0,
        read_ahead: int | None = None,
    ):
        cfg = load_mix(cfg)
        if cfg.global_batch is None:
            raise ConfigError("global_batch: required to build a stream (sequences per global batch, all ranks)")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in a world of {world_size}")
        if cfg.global_batch % world_size:
            raise ConfigError(f"global_batch: {cfg.global_batch} is not divisible by the world size {world_size}")
        if num_workers < 1 or not 0 <= worker < num_workers:
            raise ConfigError(f"worker {worker} is not one of {num_workers} loader workers")
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.worker, self.num_workers, self.worker_base, self.with_docs = worker, num_workers, worker_base, with_docs
        self.seq_len = cfg.seq_len
        self.global_batch = cfg.global_batch
        self.per_rank = cfg.global_batch // world_size
        self.datasets = open_datasets(cfg)
        self.vocab = build_vocabulary(self.datasets, cfg.vocab)
        self.renderer = Renderer(self.vocab)
        self.names = [s.name for s in cfg.sources]
        # One reader (length index and shard files) per dataset, shared by its mix sources.
        users: dict[str, list[str]] = {}
        for s in cfg.sources:
            users.setdefault(self.datasets[s.name].uri, []).append(s.name)
        if cfg.shuffle_window:
            for uri, names in users.items():
                need = 2 * cfg.shuffle_window * len(names)
                if need > cfg.cache_files:
                    raise ConfigError(
                        f"shuffle_window: {cfg.shuffle_window} blocks in flight per source, {len(names)} source(s) "
                        f"on {uri}: up to {need} shards are read at once, more than cache_files {cfg.cache_files} "
                        f"(every sample would reopen a shard); raise cache_files to {need} or lower shuffle_window"
                    )
        self.shared: dict[str, SharedDataset] = {}
        self.streams: dict[str, SourceStream] = {}
        self._order: dict[str, list] = {}
        for s in cfg.sources:
            ds = self.datasets[s.name]
            shared = self.shared.get(ds.uri)
            if shared is None:
                cache = cfg.cache_batches_remote if is_remote(ds.uri) else cfg.cache_batches
                shared = self.shared[ds.uri] = SharedDataset(ds, cache_files=cfg.cache_files, cache_batches=cache)
            reader = ShardReader(ds, sources=s.dataset_sources, shared=shared, cache_batches=shared.data.cache_batches)
            tokens = source_tokens(ds, s.dataset_sources)
            pack = s.pack if s.pack is not None else not (tokens.get("image", 0) or tokens.get("audio", 0))
            self.streams[s.name] = SourceStream(s, reader, cfg.seq_len, cfg.seed, pack, cfg.shuffle_window)
            self._order[s.name] = [
                dataset_id(ds),
                bool(pack),
                s.max_epochs,
                sorted(s.dataset_sources) if s.dataset_sources else None,
            ]
        self._list = [self.streams[n] for n in self.names]
        self.scheduler = Scheduler(self.names, cfg.seq_len)
        self.step = 0  # global batches planned
        self.pad_rows = 0  # all-padding rows that completed the last batch
        self.ended = False
        self._retired: dict = {"sources": {}, "scheduler": {}}  # sources no longer in the config
        remote = any(sh.data.remote for sh in self.shared.values())
        self.read_ahead = (2 if remote else 0) if read_ahead is None else max(0, int(read_ahead))
        self._ahead: deque = deque()  # (state before, own rows, fetch future or None)
        self._touched: set[int] = set()  # sources that handed out rows since their last release
        self._shares_span: tuple[int, int, dict] | None = None
        self._weights_for: dict | None = None  # the shares the scheduler's weights were made from
        self._active: set[str] = set()
        self._fetcher = ThreadPoolExecutor(1, thread_name_prefix="trimodal-ahead") if self.read_ahead else None
        self._held: deque = deque()  # the arrays of the last two batches returned (recycling)
        # sources read in place from memory maps: their text batches take the vectorized path
        self._mapped = {n: not st.reader.shared.data.ranged for n, st in self.streams.items()}

    # planning -------------------------------------------------------------------------
    def _plan_batch(self, own: range | None = None) -> list | None:
        """Plan the next global batch; returns, for the rows in `own`, None (an all-padding
        row) or (source, pieces) — None when the stream has ended."""
        if self.ended:
            return None
        for i in self._touched:
            self._list[i].release()
        self._touched.clear()
        names, streams, sched = self.names, self._list, self.scheduler
        shares = self._shares(self.step)
        if shares is not self._weights_for:  # a schedule entry starts here, or a resume
            self._active = {n for n, st in zip(names, streams) if not st.exhausted}
            sched.set_weights(normalize(shares, self._active))
            self._weights_for = shares
        active = self._active
        B, L = self.global_batch, self.seq_len
        by_tokens = self.cfg.share_unit == "tokens"
        src, ser = [-1] * B, [0] * B
        pick, commit, touch, step = sched.pick, sched.commit_index, self._touched.add, self.step
        r = 0
        while r < B:
            i = pick()
            if i < 0:
                break
            st = streams[i]
            st.clock = step
            touch(i)
            if sched._single >= 0:  # one source with a share: its rows in bulk
                fills = st.take_many(B - r)
                if fills:
                    commit(i, sum(fills) if by_tokens else L * len(fills))
                    first = st._next - len(fills)
                    for k in range(len(fills)):
                        src[r + k], ser[r + k] = i, first + k
                    r += len(fills)
                if st.exhausted:
                    active.discard(names[i])
                    sched.set_weights(normalize(shares, active))
                continue
            fill = st.take()
            if fill < 0:  # exhausted at a row boundary: its share passes to the others
                active.discard(names[i])
                sched.set_weights(normalize(shares, active))
                continue
            commit(i, fill if by_tokens else L)
            src[r] = i
            ser[r] = st._next - 1
            r += 1
            if st.exhausted:
                active.discard(names[i])
                sched.set_weights(normalize(shares, active))
        if r == 0:
            self.ended = True
            return None
        if not sched._live:
            self.ended = True  # this batch is the last one; it was completed with padding rows
        self.pad_rows += B - r
        self.step += 1
        if own is None:
            return []
        mine = src[own.start : own.stop]
        tables = []
        for i in sorted(set(mine) - {-1}):
            at = [k for k, x in enumerate(mine) if x == i]
            t = streams[i].piece_table([ser[own.start + k] for k in at])
            t[:, AT] = np.asarray(at, dtype=np.int64)[t[:, AT]]
            tables.append(t)
        if len(tables) == 1:
            table = tables[0]
        elif tables:
            table = np.concatenate(tables)
            table = table[np.argsort(table[:, AT], kind="stable")]
        else:
            table = np.zeros((0, 11), dtype=np.int64)
        return Planned([None if i < 0 else names[i] for i in mine], table)

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

    def advance(self, steps: int, on_step: Callable[[Mixer], None] | None = None) -> int:
        """Plan `steps` global batches without rendering them (fast-forward, previews).
        Returns the number of batches planned (fewer if the stream ended)."""
        self._rewind()
        done = 0
        for _ in range(steps):
            if self._plan_batch() is None:
                break
            done += 1
            if on_step is not None:
                on_step(self)
        return done

    # reading and rendering ------------------------------------------------------------
    def _fetch(self, planned: Planned) -> Spans:
        """Where the codes of the planned rows' documents lie (only what each piece shows): on
        memory-mapped shards their places in the maps, found with array operations; read by
        ranges (S3, pread) one fetched array per code run."""
        names = {x for x in planned.sources if x is not None}
        if names and all(self._mapped[x] for x in names):
            t = planned.table
            text = t[:, SKIND] == TEXT
            nt = t[:, NTEXT]
            lo = np.where(text, np.maximum(t[:, START], 1) - 1, 0)  # a text piece shows a window
            hi = np.where(text, np.maximum(np.minimum(t[:, STOP], nt + 1) - 1, lo), nt)
            by_data = {id(self.streams[x].reader.shared): self.streams[x].reader.shared for x in names}
            key = None
            if len(by_data) > 1:
                key = np.array([-1 if x is None else id(self.streams[x].reader.shared) for x in planned.sources])
                key = key[t[:, AT]]
            parts = []
            for k, shared in by_data.items():
                sel = slice(None) if key is None else np.flatnonzero(key == k)
                got = shared.data.spans(
                    t[sel, SHARD], t[sel, SROW], t[sel, SKIND], lo[sel], hi[sel], nt[sel], t[sel, NMEDIA]
                )
                if got is None:  # a record batch not addressable in place
                    break
                parts.append((sel, got))
            else:
                return parts[0][1] if key is None else _merge_spans(parts, len(t))
        return self._fetch_ranges(planned)

    def _fetch_ranges(self, planned: Planned) -> Spans:
        """The code windows of every piece by ranged reads, batched per dataset (ShardData.fetch:
        two request rounds on S3, offsets then values), as one array per code run."""
        t = planned.table
        n = len(t)
        flats: list = [_NO_CODES]
        fid, mfid = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        reqs: dict[int, tuple[SharedDataset, list, list]] = {}
        readers = [None if x is None else self.streams[x].reader.shared for x in planned.sources]
        for k, (at, _, _, sh, rw, kind, _, start, stop, nt, nm) in enumerate(t.tolist()):
            shared = readers[at]
            _, want, where = reqs.setdefault(id(shared), (shared, [], []))
            if kind == TEXT:
                lo, hi = max(start, 1) - 1, min(stop, nt + 1) - 1
                if hi <= lo:  # only <bos> or <eos> of it shows
                    continue
                want.append((sh, rw, [("text", lo, hi, nt)]))
            else:
                want.append((sh, rw, [("text", 0, nt, nt), ("image" if kind == IMAGE else "audio", 0, nm, nm)]))
            where.append(k)
        for shared, want, where in reqs.values():
            for k, arrays in zip(where, shared.data.fetch(want)):
                fid[k] = len(flats)
                flats.append(arrays[0])
                if len(arrays) > 1:
                    mfid[k] = len(flats)
                    flats.append(arrays[1])
        size = np.array([len(x) for x in flats], dtype=np.int64)
        zero = np.zeros(n, dtype=np.int64)
        return Spans(flats, fid, zero, size[fid], mfid, zero, size[mfid])

    def _render(self, planned: Planned, fetched=None, out: dict | None = None) -> dict:
        if fetched is None:
            fetched = self._fetch(planned)
        self.renderer.check = self.cfg.check_ids
        t = planned.table
        tokens, modality, segment_ids, positions = self.renderer.render_spans(
            t[:, AT], t[:, SKIND], t[:, SREV], t[:, START], t[:, STOP], t[:, NTEXT], fetched,
            len(planned.sources), self.seq_len, out,
        )  # fmt: skip
        rows = None
        if self.cfg.check_ids and self.renderer.bad:
            rows = planned.rows()
            self._check(tokens, modality, rows, self.renderer.bad_at)
        out = {"tokens": tokens, "modality": modality, "segment_ids": segment_ids, "positions": positions}
        if self.with_docs:
            rows = rows or planned.rows()
            out["docs"] = [
                [] if row is None else [(row[0], p.epoch, p.sample, p.start, p.stop) for p in row[1]] for row in rows
            ]
        return out

    def _check(self, tokens: np.ndarray, modality: np.ndarray, rows: list, at_piece=None) -> None:
        """Name the sample with a code outside its codebook (the renderer saw one)."""
        table = self.renderer.id_modality
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= len(table)):
            bad = (tokens < 0) | (tokens >= len(table))
        else:
            bad = table[tokens] != modality
        if bad.any():
            i = int(np.nonzero(bad.any(axis=1))[0][0])
            name, pieces = rows[i]
            col = int(np.nonzero(bad[i])[0][0])
            at = 0
            for p in pieces:
                at += p[7] - p[6]
                if col < at:
                    break
        elif at_piece is not None:  # an audio code past its level's codebook (still an audio id)
            name, pieces = rows[at_piece[0]]
            p = pieces[at_piece[1]]
        else:
            return
        reader = self.streams[name].reader
        s, row = p[2], p[3]
        f = reader.data.file(s)
        b, r = (int(x[0]) for x in reader.data.locate(f, np.array([row])))
        raise IntegrityError(
            f"source {name!r}: sample {reader.sample_id(s, b, r)!r} in {reader.shard_uri(s)} "
            f"has codes outside its tokenizer's codebook (corrupt shard or wrong fingerprint)"
        )

    # iteration ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        return self

    def _next_own(self):
        """Plan up to and including this worker's next step: (state before, own rows, future)."""
        before = self._state_now() if self.read_ahead else None
        lo = self.rank * self.per_rank
        own = range(lo, lo + self.per_rank)
        while True:
            mine = (self.step - self.worker_base) % self.num_workers == self.worker
            rows = self._plan_batch(own if mine else None)
            if rows is None:
                return None
            if mine:
                fut = self._fetcher.submit(self._fetch, rows) if self._fetcher is not None else None
                return before, rows, fut

    def __next__(self) -> dict:
        out = self._recycled()
        batch = self.next_into(out)
        self._held.append({k: a if a.base is None else a.base for k, a in batch.items() if k in _ARRAYS})
        return batch

    def _recycled(self) -> dict | None:
        """The arrays of the batch before last, to render into again when nothing else holds
        them (only our references: no array, view, tensor or buffer of them is alive), else
        None. In a plain loop the previous batch is still bound when the next is asked for; the
        one before is free. Fresh arrays cost ~300 page faults per 64 × 2048 batch (glibc gives
        freed large blocks back to the kernel), about a third of a text batch's CPU."""
        if len(self._held) < 2:
            return None
        old = self._held.popleft()
        for a in old.values():
            if sys.getrefcount(a) > 3:  # the dict, this loop's name, getrefcount's argument
                return None
        return old

    def next_into(self, out: dict | None) -> dict:
        """The next batch, rendered into the arrays of `out` ([per_rank, seq_len] each, any of
        tokens, modality, segment_ids, positions; a loader worker's shared-memory slot)."""
        entry = self._ahead.popleft() if self._ahead else self._next_own()
        if entry is None:
            raise StopIteration
        while len(self._ahead) < self.read_ahead and not self.ended:
            nxt = self._next_own()
            if nxt is None:
                break
            self._ahead.append(nxt)
        _, rows, fut = entry
        return self._render(rows, fut.result() if fut is not None else None, out)

    def _rewind(self) -> None:
        """Forget batches planned ahead: back to the position after the last one returned."""
        if self._ahead:
            state = self._ahead[0][0]
            self.load_state_dict(state)

    def next_global(self) -> dict:
        """The next whole global batch [global_batch, seq_len], whatever this mixer's rank."""
        self._rewind()
        rows = self._plan_batch(range(self.global_batch))
        if rows is None:
            raise StopIteration
        return self._render(rows)

    # state ----------------------------------------------------------------------------
    def _state_now(self) -> dict:
        sources = {}
        for n, st in self.streams.items():
            sources[n] = {**st.state(), "order": list(self._order[n])}
        sched = self.scheduler.state()
        sources.update({n: v for n, v in self._retired["sources"].items() if n not in sources})
        sched["sources"].update({n: v for n, v in self._retired["scheduler"].items() if n not in sched["sources"]})
        return {
            "format": STATE_FORMAT,
            "seed": self.cfg.seed,
            "seq_len": self.seq_len,
            "share_unit": self.cfg.share_unit,
            "global_batch": self.global_batch,
            "shuffle_window": self.cfg.shuffle_window,
            "step": self.step,
            "pad_rows": self.pad_rows,
            "ended": self.ended,
            "scheduler": sched,
            "sources": sources,
        }

    def state_dict(self) -> dict:
        """Small JSON-safe position of the global stream (the same on every rank), after the
        last batch this mixer returned."""
        if self._ahead:
            return copy.deepcopy(self._ahead[0][0])
        return self._state_now()

    def load_state_dict(self, d: dict) -> None:
        if not d:
            return
        fmt = d.get("format")
        if fmt not in READABLE_STATES:
            raise ConfigError(f"mixer state: format {fmt!r}, this trimodal reads {READABLE_STATES}")
        refuse = "the stream cannot be continued without repeating or skipping samples"
        for key in ("seed", "seq_len", "share_unit", *(GLOBAL_ORDER_KEYS if fmt >= 2 else ())):
            mine = self.seq_len if key == "seq_len" else getattr(self.cfg, key)
            if d.get(key) != mine:
                raise ConfigError(
                    f"{key}: the saved mixer state was made with {d.get(key)!r}, the mix says {mine!r}; {refuse}"
                )
        for name, st in d["sources"].items():
            saved = st.get("order")
            if name in self.streams and saved is not None:
                for field, old, new in zip(ORDER_FIELDS, saved, self._order[name]):
                    if old != new:
                        what = "content" if field == "dataset" else ""
                        raise ConfigError(
                            f"sources.{name}.{field}: the saved mixer state was made with {what}{' ' if what else ''}"
                            f"{old!r}, the mix says {new!r}; {refuse} (a changed source needs a new name: it then "
                            "starts at the resume point)"
                        )
        for f in self._ahead:
            if f[2] is not None:
                f[2].cancel()
        self._ahead.clear()
        for name, st in self.streams.items():
            if name in d["sources"]:
                st.load(d["sources"][name])
            else:  # new in the mix: its first epoch starts here
                st.load({**SourceStream.FRESH, "samples": st.n})
        sched = d["scheduler"]
        if fmt == 1:
            sched = {"amount": 0, "sources": {n: [t, g, 0.0] for n, (t, g) in sched.items()}}
        self.scheduler.load(
            {"amount": sched["amount"], "sources": {n: v for n, v in sched["sources"].items() if n in self.streams}}
        )
        amount = int(sched["amount"])
        self._retired = {
            "sources": {n: v for n, v in d["sources"].items() if n not in self.streams},
            # a retired source's target is frozen at its value (its weight no longer applies)
            "scheduler": {
                n: [float(t0) + float(w) * amount, int(g), 0.0]
                for n, (t0, g, w) in sched["sources"].items()
                if n not in self.streams
            },
        }
        self.step, self.pad_rows, self.ended = int(d["step"]), int(d["pad_rows"]), bool(d["ended"])
        self._weights_for = None
        self._touched = set(range(len(self._list)))

    # reporting ------------------------------------------------------------------------
    def io_stats(self) -> dict:
        """Bytes and requests this process read, per dataset (benchmarks, monitoring)."""
        return {uri: {**sh.data.stats(), "index_loads": sh.index.loads} for uri, sh in self.shared.items()}

    def stats(self) -> dict:
        """Realized shares of positions (padding included) and of real tokens per source, next to
        the targets: `share` (in force now) and `expected` (accumulated over the stream so far)."""
        L = self.seq_len
        states = {n: st.state() for n, st in self.streams.items()}
        rows = sum(s["rows"] for s in states.values())
        tokens = sum(s["tokens"] for s in states.values())
        positions = (rows + self.pad_rows) * L
        target = self.scheduler.target
        tsum = sum(target.values())
        active = {n for n in self.names if not self.streams[n].exhausted}
        now = normalize(self.cfg.shares_at(max(self.step - 1, 0)), active)
        sources = {}
        for n, st in self.streams.items():
            s = states[n]
            sources[n] = {
                "share": now.get(n, 0.0),
                "expected": target[n] / tsum if tsum else 0.0,
                "positions_share": s["rows"] / rows if rows else 0.0,
                "tokens_share": s["tokens"] / tokens if tokens else 0.0,
                "rows": s["rows"],
                "tokens": s["tokens"],
                "docs": s["docs"],
                "utilization": s["tokens"] / (s["rows"] * L) if s["rows"] else 0.0,
                "epochs": s["epoch"] + s["pos"] / st.domain,
                "exhausted": s["exhausted"],
                "pack": st.pack,
                "skipped": dict(s["skipped"]),
            }
        return {
            "step": self.step,
            "rows": rows,
            "pad_rows": self.pad_rows,
            "seq_len": L,
            "global_batch": self.global_batch,
            "share_unit": self.cfg.share_unit,
            "tokens": tokens,
            "positions": positions,
            "pad_fraction": 1.0 - tokens / positions if positions else 0.0,
            "ended": self.ended,
            "sources": sources,
        }
