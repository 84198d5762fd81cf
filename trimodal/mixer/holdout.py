"""Held-out splits: which samples a mix keeps out of training, decided per sample id.

A sample is held out when a keyed hash of its id falls under `holdout.fraction`: the id's key
(the first 8 bytes of its blake2b, stored per row in the length index, dataset/shards.py) is
mixed with the split's seed (splitmix64, shuffle.uniform). Membership therefore depends on the
id and the seed alone — not on shards, their order, the world size or the epoch — so the
training stream of one run and the eval stream of another agree on it, and re-sharding or
retokenizing a dataset keeps every sample on its side. Deciding it costs one vectorized hash
over keys planning already reads (8 bytes per sample of length index, ~24 with the counts).

`split: train` yields the samples not held out; `split: eval` yields exactly the held-out ones,
laid out and packed as in training, one pass (each source ends after one epoch), so the stream
is finite. A mix without `holdout` and `split: eval` is an eval mix of its own: one pass over
everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trimodal.mixer.shuffle import derive_key, uniform


@dataclass(frozen=True)
class Split:
    fraction: float  # of every source's samples held out
    seed: int
    held: bool  # True: keep the held-out samples (split eval); False: the others (split train)

    def keep(self, keys: np.ndarray) -> np.ndarray:
        """Whether each sample (by its id key) is on this split's side."""
        inside = uniform(derive_key(self.seed, "holdout"), keys) < self.fraction
        return inside if self.held else ~inside


def split_of(cfg) -> Split | None:
    """The sample filter a MixConfig asks for (None: every sample)."""
    if cfg.holdout is None:
        return None
    return Split(cfg.holdout.fraction, cfg.holdout.seed, cfg.split == "eval")
