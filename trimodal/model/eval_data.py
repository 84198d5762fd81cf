"""Where evaluation rows come from: one finite pass over an eval mix, the run's own mix, or
the run's held-out split (the mix's `holdout`, mixer/holdout.py), cut into shards.

A shard takes every n-th batch of `batch_rows` rows of the ONE global eval stream (batch i goes
to shard i mod n) and yields each with the global index of its first row, so the rows, and
the mask draws keyed by them (evaluate.py), do not depend on the number of shards. `max_rows`
caps the pass at the first rows of the global stream (`--tokens N` means ⌈N / seq_len⌉ rows:
a cap every shard applies alike without talking to the others).

`mixer_pass` is the only code here that talks to the mixer (its public `Mixer` and
`MixConfig`), so a change in the mixer's API is adapted in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from trimodal.errors import ConfigError
from trimodal.mixer.config import MixConfig
from trimodal.model.config import SyntheticStreamConfig

SPLITS = ("train", "eval")


def mixer_pass(mix: MixConfig, split: str, shard: int, n_shards: int, batch_rows: int, vocab_uri: str | None):
    """(vocab, iterator of (step, batch)) for shard `shard` of `n_shards` over one finite pass.

    split "train": the mix's samples, every source read once (`max_epochs: 1`, whatever the
    mix said; with a `holdout`, those not held out); "eval": the mix's held-out samples, the
    mixer's `split: eval` (one pass). `vocab_uri` (the checkpoint's vocab.json) lays the ids out as the model
    knows them; the mixer refuses datasets whose fingerprints disagree with it."""
    from trimodal.mixer import Mixer

    if split == "eval":
        if mix.holdout is None:
            raise ConfigError(
                "--split eval: the mix has no holdout (add `holdout: {fraction: 0.002, seed: 0}` to the "
                "training mix), or evaluate an eval mix of its own with --mix EVAL.yaml"
            )
        sources = mix.sources  # the mixer's eval split reads each source once
    else:
        sources = [dataclasses.replace(s, max_epochs=1) for s in mix.sources]
    cfg = dataclasses.replace(mix, sources=sources, split=split, global_batch=batch_rows, vocab=mix.vocab or vocab_uri)
    mixer = Mixer(cfg, 0, 1, worker=shard, num_workers=n_shards)

    def batches():
        for i, batch in enumerate(mixer):
            # copies: the mixer renders into the arrays of the batch before last
            yield (
                i * n_shards + shard,
                {k: np.array(batch[k]) for k in ("tokens", "modality", "segment_ids", "positions")},
            )

    return mixer.vocab, batches()


def synthetic_pass(spec: SyntheticStreamConfig, shard: int, n_shards: int, batch_rows: int):
    """(vocab, iterator of (step, batch)): the synthetic stream's pool, once."""
    from trimodal.model.data import SyntheticStream

    stream = SyntheticStream(spec, 0, 1, spec.pool)
    pool = next(stream)

    def batches():
        for i, lo in enumerate(range(0, spec.pool, batch_rows)):
            if i % n_shards == shard:
                yield i, {k: v[lo : lo + batch_rows] for k, v in pool.items()}

    return stream.vocab, batches()


def eval_rows(
    source: MixConfig | SyntheticStreamConfig,
    split: str,
    shard: int,
    n_shards: int,
    batch_rows: int,
    max_rows: int | None = None,
    vocab_uri: str | None = None,
):
    """(vocab, iterator of (first global row, batch)) of this shard, capped at `max_rows`."""
    if split not in SPLITS:
        raise ConfigError(f"split: {split!r} is not one of {list(SPLITS)}")
    if isinstance(source, SyntheticStreamConfig):
        if split == "eval":
            raise ConfigError("--split eval: a synthetic stream has no holdout")
        vocab, it = synthetic_pass(source, shard, n_shards, batch_rows)
    else:
        vocab, it = mixer_pass(source, split, shard, n_shards, batch_rows, vocab_uri)

    def capped() -> Iterator[tuple[int, dict]]:
        for step, batch in it:
            first = step * batch_rows
            if max_rows is not None:
                if first >= max_rows:
                    return  # later batches of this shard start even further on
                batch = {k: v[: max_rows - first] for k, v in batch.items()}
            yield first, batch

    return vocab, capped()


def rows_for_tokens(tokens: int | None, seq_len: int) -> int | None:
    return None if tokens is None else max(1, -(-int(tokens) // int(seq_len)))


def seq_len_of(source) -> int:
    return int(source.seq_len)
