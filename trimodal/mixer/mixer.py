"""The mixer: one global stream of packed rows, sliced per rank, resumable anywhere.

The global stream is a sequence of rows. For each row the scheduler picks a source
(scheduler.py), that source plans the row from its shuffled cursor (packer.py), and rows are
grouped into global batches of `global_batch`. Every rank plans every row — planning needs only
document lengths, read from Arrow offsets — and renders (copies tokens for) only its own slice
of each global batch: rows [rank·B/W, (rank+1)·B/W). So the global stream does not depend on
the number of ranks or loader workers, the union of the ranks' batches is the global batch, and
the state is the same small JSON dict on every rank (a cursor and counters per source, two
numbers per source for the scheduler, the step). Resuming with another world size, another
number of DataLoader workers, more or fewer sources, or a new share schedule continues the very
same stream from the saved position.

Trade-off: each rank spends planning time on all W·B rows of a global batch, a few µs per
document. At thousands of ranks that is the bound on throughput; up to hundreds it is far below
the cost of rendering its own rows. On S3, planning reads each record batch a rank's sources
touch (lengths sit beside the codes), so every rank reads every batch once: put a local cache
or mount in front of object storage for large worlds.

End of data: when every source with a share is exhausted (`max_epochs`), the last global batch
is completed with all-padding rows (segment id 0 everywhere) and iteration stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow.fs as pafs

from trimodal.dataset.storage import filesystem_for
from trimodal.errors import ConfigError, IntegrityError
from trimodal.mixer.config import load_mix
from trimodal.mixer.packer import SourceStream
from trimodal.mixer.render import Renderer
from trimodal.mixer.scheduler import Scheduler, normalize
from trimodal.mixer.shard_reader import ShardReader
from trimodal.mixer.sources import build_vocabulary, open_datasets, source_tokens

STATE_FORMAT = 1


class Mixer:
    """Iterate → dicts of numpy arrays [global_batch / world_size, seq_len]: `tokens` (int32
    unified ids), `modality` (int8, MODALITY_IDS), `segment_ids` (int32, 1.. per document in the
    row, 0 = padding), `positions` (int32, from 0 at each document's first token in the row).

    `worker`/`num_workers` split a rank's batches between DataLoader workers (worker k renders
    the steps ≡ k mod num_workers). `with_docs=True` adds `docs`: per row, the document pieces
    as (source, epoch, sample index, start, stop), for audits and tests.
    """

    def __init__(
        self, cfg, rank: int = 0, world_size: int = 1, *, worker: int = 0, num_workers: int = 1, with_docs: bool = False
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
        self.worker, self.num_workers, self.with_docs = worker, num_workers, with_docs
        self.seq_len = cfg.seq_len
        self.global_batch = cfg.global_batch
        self.per_rank = cfg.global_batch // world_size
        self.datasets = open_datasets(cfg)
        self.vocab = build_vocabulary(self.datasets, cfg.vocab)
        self.renderer = Renderer(self.vocab)
        self.names = [s.name for s in cfg.sources]
        self.streams: dict[str, SourceStream] = {}
        for s in cfg.sources:
            ds = self.datasets[s.name]
            remote = not isinstance(filesystem_for(ds.uri), pafs.LocalFileSystem)
            reader = ShardReader(
                ds,
                cache_files=cfg.cache_files,
                cache_batches=cfg.cache_batches_remote if remote else cfg.cache_batches,
                sources=s.dataset_sources,
            )
            tokens = source_tokens(ds, s.dataset_sources)
            pack = s.pack if s.pack is not None else not (tokens.get("image", 0) or tokens.get("audio", 0))
            self.streams[s.name] = SourceStream(s, reader, cfg.seq_len, cfg.seed, pack, cfg.shuffle_window)
        self.scheduler = Scheduler(self.names, cfg.seq_len)
        self.step = 0  # global batches planned
        self.pad_rows = 0  # all-padding rows that completed the last batch
        self.ended = False
        self._retired = {"sources": {}, "scheduler": {}}  # state of sources no longer in the config
        self._views = {n: st.reader.views for n, st in self.streams.items()}

    # planning -------------------------------------------------------------------------
    def _plan_batch(self) -> list | None:
        """Plan the next global batch: per row (source, segments, real tokens) or None for an
        all-padding row; None when the stream has ended."""
        if self.ended:
            return None
        shares = self.cfg.shares_at(self.step)
        active = {n for n in self.names if not self.streams[n].exhausted}
        weights = normalize(shares, active)
        by_tokens = self.cfg.share_unit == "tokens"
        L = self.seq_len
        plans = []
        for _ in range(self.global_batch):
            row = None
            while weights:
                name = self.scheduler.choose(weights)
                stream = self.streams[name]
                planned = stream.plan_row()
                if planned is None:  # exhausted at a row boundary: its share passes to the others
                    active.discard(name)
                    weights = normalize(shares, active)
                    continue
                segs, fill = planned
                self.scheduler.commit(name, weights, fill if by_tokens else L)
                row = (name, segs, fill)
                if stream.exhausted:
                    active.discard(name)
                    weights = normalize(shares, active)
                break
            plans.append(row)
        if all(r is None for r in plans):
            self.ended = True
            return None
        if not weights:
            self.ended = True  # this batch is the last one; it was completed with padding rows
        self.pad_rows += sum(r is None for r in plans)
        self.step += 1
        return plans

    def advance(self, steps: int, on_step: Callable[[Mixer], None] | None = None) -> int:
        """Plan `steps` global batches without rendering them (fast-forward, previews).
        Returns the number of batches planned (fewer if the stream ended)."""
        done = 0
        for _ in range(steps):
            if self._plan_batch() is None:
                break
            done += 1
            if on_step is not None:
                on_step(self)
        return done

    # rendering ------------------------------------------------------------------------
    def _render(self, plans: list) -> dict:
        tokens, modality, segment_ids, positions = self.renderer.render_batch(plans, self._views, self.seq_len)
        if self.cfg.check_ids:
            self._check(tokens, modality, plans)
        out = {"tokens": tokens, "modality": modality, "segment_ids": segment_ids, "positions": positions}
        if self.with_docs:
            out["docs"] = [
                [] if row is None else [(row[0], seg[0], seg[1], seg[7], seg[8]) for seg in row[1]] for row in plans
            ]
        return out

    def _check(self, tokens: np.ndarray, modality: np.ndarray, plans: list) -> None:
        table = self.renderer.id_modality
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= len(table)):
            bad = (tokens < 0) | (tokens >= len(table))
        else:
            bad = table[tokens] != modality
            if not bad.any():
                return
        i = int(np.nonzero(bad.any(axis=1))[0][0])
        name, segs, _ = plans[i]
        reader = self.streams[name].reader
        col = int(np.nonzero(bad[i])[0][0])
        at = 0
        for seg in segs:
            at += seg[8] - seg[7]
            if col < at:
                break
        _, g, s, b, r = seg[:5]
        raise IntegrityError(
            f"source {name!r}: sample {reader.sample_id(s, b, r)!r} in {reader.shard_uri(s)} "
            f"has codes outside its tokenizer's codebook (corrupt shard or wrong fingerprint)"
        )

    # iteration ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        while True:
            step = self.step
            plans = self._plan_batch()
            if plans is None:
                raise StopIteration
            if step % self.num_workers == self.worker:
                lo = self.rank * self.per_rank
                return self._render(plans[lo : lo + self.per_rank])

    def next_global(self) -> dict:
        """The next whole global batch [global_batch, seq_len], whatever this mixer's rank."""
        plans = self._plan_batch()
        if plans is None:
            raise StopIteration
        return self._render(plans)

    # state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Small JSON-safe position of the global stream (the same on every rank)."""
        sources = {n: st.state() for n, st in self.streams.items()}
        sched = self.scheduler.state()
        sources.update({n: v for n, v in self._retired["sources"].items() if n not in sources})
        sched.update({n: v for n, v in self._retired["scheduler"].items() if n not in sched})
        return {
            "format": STATE_FORMAT,
            "seed": self.cfg.seed,
            "seq_len": self.seq_len,
            "share_unit": self.cfg.share_unit,
            "step": self.step,
            "pad_rows": self.pad_rows,
            "ended": self.ended,
            "scheduler": sched,
            "sources": sources,
        }

    def load_state_dict(self, d: dict) -> None:
        if not d:
            return
        if d.get("format") != STATE_FORMAT:
            raise ConfigError(f"mixer state: format {d.get('format')!r}, this trimodal reads {STATE_FORMAT}")
        for key in ("seed", "seq_len", "share_unit"):
            if d[key] != getattr(self.cfg, key):
                raise ConfigError(
                    f"{key}: the saved mixer state was made with {d[key]!r}, the mix says "
                    f"{getattr(self.cfg, key)!r}; the stream cannot be continued"
                )
        for name, st in d["sources"].items():
            if name in self.streams:
                self.streams[name].load(st)
        self.scheduler.load({n: v for n, v in d["scheduler"].items() if n in self.streams})
        self._retired = {
            "sources": {n: v for n, v in d["sources"].items() if n not in self.streams},
            "scheduler": {n: v for n, v in d["scheduler"].items() if n not in self.streams},
        }
        self.step, self.pad_rows, self.ended = int(d["step"]), int(d["pad_rows"]), bool(d["ended"])

    # reporting ------------------------------------------------------------------------
    def stats(self) -> dict:
        """Realized shares of positions (padding included) and of real tokens per source, next to
        the targets: `share` (in force now) and `expected` (accumulated over the stream so far)."""
        L = self.seq_len
        rows = sum(st.rows for st in self.streams.values())
        tokens = sum(st.tokens for st in self.streams.values())
        positions = (rows + self.pad_rows) * L
        tsum = sum(self.scheduler.target.values())
        active = {n for n in self.names if not self.streams[n].exhausted}
        now = normalize(self.cfg.shares_at(max(self.step - 1, 0)), active)
        sources = {}
        for n, st in self.streams.items():
            sources[n] = {
                "share": now.get(n, 0.0),
                "expected": self.scheduler.target[n] / tsum if tsum else 0.0,
                "positions_share": st.rows / rows if rows else 0.0,
                "tokens_share": st.tokens / tokens if tokens else 0.0,
                "rows": st.rows,
                "tokens": st.tokens,
                "docs": st.docs,
                "utilization": st.tokens / (st.rows * L) if st.rows else 0.0,
                "epochs": st.epochs(),
                "exhausted": st.exhausted,
                "pack": st.pack,
                "skipped": dict(st.skipped),
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
