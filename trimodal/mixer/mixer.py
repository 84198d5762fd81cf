"""The mixer: one global stream of packed rows, sliced per rank, resumable anywhere.

`Mixer` composes the rooms the data goes through (docs/design.md, "The mixer's rooms"): the
planner (planner.py: the piece table of each global batch and this rank's slice), the readers
(fetch.py over shard_reader.py: where the codes of those pieces lie), the renderer (render.py:
batch arrays). It owns what spans them: the position (`state_dict`, the same small JSON dict on
every rank, refusing a resume whose order-deciding settings changed), read-ahead, and the
reuse of the arrays of batches nothing holds any more. How each guarantee is met and what it
costs: docs/mixer.md.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from trimodal.config import to_dict
from trimodal.errors import ConfigError, IntegrityError
from trimodal.mixer.config import load_mix
from trimodal.mixer.fetch import CodeFetcher
from trimodal.mixer.holdout import split_of
from trimodal.mixer.packer import SourceStream
from trimodal.mixer.planner import Planned, Planner
from trimodal.mixer.render import Renderer
from trimodal.mixer.scheduler import normalize
from trimodal.mixer.shard_reader import ShardReader, SharedDataset, is_remote
from trimodal.mixer.sources import build_vocabulary, open_datasets, source_tokens

STATE_FORMAT = 2
READABLE_STATES = (1, 2)
ORDER_FIELDS = ("dataset", "pack", "max_epochs", "dataset_sources")  # per source, in the state
GLOBAL_ORDER_KEYS = ("global_batch", "shuffle_window")  # besides seed, seq_len, share_unit
_ARRAYS = ("tokens", "modality", "segment_ids", "positions")


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
        self.shared: dict[str, SharedDataset] = {}  # one reader per dataset, shared by its sources
        self.streams: dict[str, SourceStream] = {}
        self._order: dict[str, list] = {}
        for s in cfg.sources:
            self._add_source(s)
        self.planner = Planner(cfg, self.streams)
        self.fetcher = CodeFetcher({n: st.reader.shared for n, st in self.streams.items()})
        self._retired: dict = {"sources": {}, "scheduler": {}}  # sources no longer in the config
        remote = any(sh.data.remote for sh in self.shared.values())
        self.read_ahead = (2 if remote else 0) if read_ahead is None else max(0, int(read_ahead))
        self._ahead: deque = deque()  # (state before, own rows, fetch future or None)
        self._ahead_pool = ThreadPoolExecutor(1, thread_name_prefix="trimodal-ahead") if self.read_ahead else None
        self._held: deque = deque()  # the arrays of the last two batches returned (recycling)

    def _add_source(self, s) -> None:
        ds = self.datasets[s.name]
        shared = self.shared.get(ds.uri)
        if shared is None:
            cache = self.cfg.cache_batches_remote if is_remote(ds.uri) else self.cfg.cache_batches
            shared = self.shared[ds.uri] = SharedDataset(ds, cache_files=self.cfg.cache_files, cache_batches=cache)
        reader = ShardReader(ds, sources=s.dataset_sources, shared=shared, split=split_of(self.cfg))
        if self.cfg.split == "eval":  # one pass: every sample of the split once, then the stream ends
            s = dataclasses.replace(s, max_epochs=1)
        tokens = source_tokens(ds, s.dataset_sources)
        pack = s.pack if s.pack is not None else not (tokens.get("image", 0) or tokens.get("audio", 0))
        self.streams[s.name] = SourceStream(
            s,
            reader,
            self.cfg.seq_len,
            self.cfg.seed,
            pack,
            self.cfg.shuffle_window,
            may_be_empty=self.cfg.split == "eval",
        )
        self._order[s.name] = [
            dataset_id(ds),
            bool(pack),
            s.max_epochs,
            sorted(s.dataset_sources) if s.dataset_sources else None,
        ]

    # the planner's position -----------------------------------------------------------
    @property
    def step(self) -> int:
        """Global batches planned."""
        return self.planner.step

    @property
    def pad_rows(self) -> int:
        return self.planner.pad_rows

    @property
    def ended(self) -> bool:
        return self.planner.ended

    def advance(self, steps: int, on_step: Callable[[Mixer], None] | None = None) -> int:
        """Plan `steps` global batches without rendering them (fast-forward, previews).
        Returns the number of batches planned (fewer if the stream ended)."""
        self._rewind()
        done = 0
        for _ in range(steps):
            if self.planner.plan() is None:
                break
            done += 1
            if on_step is not None:
                on_step(self)
        return done

    # reading and rendering ------------------------------------------------------------
    def _render(self, planned: Planned, fetched=None, out: dict | None = None) -> dict:
        if fetched is None:
            fetched = self.fetcher.spans(planned)
        self.renderer.check = self.cfg.check_ids
        tokens, modality, segment_ids, positions = self.renderer.render_spans(
            planned.table, fetched, len(planned.sources), self.seq_len, out
        )
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
                at += p.stop - p.start
                if col < at:
                    break
        elif at_piece is not None:  # an audio code past its level's codebook (still an audio id)
            name, pieces = rows[at_piece[0]]
            p = pieces[at_piece[1]]
        else:
            return
        reader = self.streams[name].reader
        raise IntegrityError(
            f"source {name!r}: sample {reader.sample_at(p.shard, p.row)!r} in {reader.shard_uri(p.shard)} "
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
            rows = self.planner.plan(own if mine else None)
            if rows is None:
                return None
            if mine:
                fut = self._ahead_pool.submit(self.fetcher.spans, rows) if self._ahead_pool is not None else None
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

    # state ----------------------------------------------------------------------------
    def _state_now(self) -> dict:
        sources = {}
        for n, st in self.streams.items():
            sources[n] = {**st.state(), "order": list(self._order[n])}
        sched = self.planner.scheduler.state()
        sources.update({n: v for n, v in self._retired["sources"].items() if n not in sources})
        sched["sources"].update({n: v for n, v in self._retired["scheduler"].items() if n not in sched["sources"]})
        return {
            "format": STATE_FORMAT,
            "seed": self.cfg.seed,
            "seq_len": self.seq_len,
            "share_unit": self.cfg.share_unit,
            "global_batch": self.global_batch,
            "shuffle_window": self.cfg.shuffle_window,
            "holdout": to_dict(self.cfg.holdout),
            "split": self.cfg.split,
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
        for key, before in (("holdout", None), ("split", "train")):  # states made before splits
            mine = to_dict(getattr(self.cfg, key))
            if d.get(key, before) != mine:
                raise ConfigError(
                    f"{key}: the saved mixer state was made with {d.get(key, before)!r}, the mix says {mine!r}; "
                    f"{refuse} (held-out samples would move between training and evaluation)"
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
        self.planner.scheduler.load(
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
        self.planner.reset(int(d["step"]), int(d["pad_rows"]), bool(d["ended"]))

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
        target = self.planner.scheduler.target
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
