"""Mix configuration: sources with shares, sequence length, global batch, seed, schedule.

Shares are relative weights, normalized over the sources still active. `share_unit` says what
they count:
- "tokens" (default, as docs/design.md states a mix): real tokens, i.e. every rendered id including
  the structure specials (<bos>, <boi>, ...) but not padding. This is what "30% image tokens"
  means to a reader of the paper, and with padded pairs it gives those sources more rows.
- "positions": sequence positions, padding included (rows × seq_len): the compute each source
  gets; every global batch then has the exact same composition in rows.
Either way the mixer reports both realized shares (`Mixer.stats()`, `trimodal mix preview`).

A schedule is a list of ``{step, shares}``: from global batch `step` on, the listed sources
take the given shares; unlisted sources keep the share they had. A source with share 0 takes
no rows until a schedule entry (or a resumed run's config) gives it one: that is how a source
joins mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trimodal.config import from_dict, load_yaml
from trimodal.errors import ConfigError


@dataclass
class MixSource:
    name: str
    dataset: str  # dataset URI (local directory or s3://bucket/prefix)
    share: float
    # true (default): documents packed into full rows, pairs too (attention stays inside documents
    # and positions restart per document, so a packed pair sees what a padded one sees); false:
    # one document per row, padded; None: text-only sources packed, pair sources padded (the
    # paper's exact layout, measured at 63% padding with the bench's mix at seq_len 2048)
    pack: bool | None = True
    reverse_prob: float = 0.0  # probability of the reverse task (<i2t>, <s2t>: media first)
    max_epochs: int | None = None  # None: repeat forever; else exhausted after this many epochs
    # only the samples whose `source` column is one of these (a dataset holding several corpora)
    dataset_sources: list[str] | None = None

    def validate(self) -> None:
        if not self.name:
            raise ConfigError("name: must not be empty")
        if not self.share >= 0:
            raise ConfigError(f"share: must be >= 0, got {self.share}")
        if not 0.0 <= self.reverse_prob <= 1.0:
            raise ConfigError(f"reverse_prob: must be in [0, 1], got {self.reverse_prob}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ConfigError(f"max_epochs: must be >= 1, got {self.max_epochs}")
        if self.dataset_sources is not None and not self.dataset_sources:
            raise ConfigError("dataset_sources: must list at least one source name (or be left out)")


@dataclass
class HoldoutConfig:
    """A deterministic fraction of every source kept out of training (holdout.py)."""

    fraction: float
    seed: int = 0

    def validate(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ConfigError(f"fraction: must be in (0, 1), got {self.fraction}")


SPLITS = ("train", "eval")


@dataclass
class ScheduleEntry:
    step: int  # global batch index from which these shares apply
    shares: dict[str, float] = field(default_factory=dict)


@dataclass
class MixConfig:
    sources: list[MixSource]
    seq_len: int
    # Sequences per global batch (all ranks), for the mixer on its own (`Mixer`, benches). A train
    # config's mix leaves it out (refused there): the trainer sets it to its logical batch.
    global_batch: int | None = None
    seed: int = 0
    share_unit: str = "tokens"  # "tokens" (real tokens) or "positions" (rows × seq_len)
    schedule: list[ScheduleEntry] | None = None
    vocab: str | None = None  # vocab.json URI; default: built from the datasets' fingerprints
    verify: str = "size"  # shard check on open: "size" (cheap), "sha256" (once per shard), "none"
    # None: a per-sample global shuffle. k: blocks of 1024 consecutive samples shuffled globally
    # and interleaved k at a time, so every record batch read is used whole (object storage,
    # datasets far beyond the page cache); see shuffle.BlockOrder.
    shuffle_window: int | None = None
    # Per dataset (shared by the sources on it): record batch layouts kept, and locally the
    # resident bound of the memory maps (this many record batches' worth of bytes)
    cache_batches: int = 64
    cache_batches_remote: int = 64  # the same for s3:// datasets (layouts only: codes are read by range)
    cache_files: int = 64  # open shard files and loaded length indexes per dataset
    check_ids: bool = True  # check every rendered id against its modality's range (~2% time)
    # Held-out samples (holdout.py): `split: train` never yields them, `split: eval` yields
    # exactly them in one finite pass (without `holdout`: one pass over everything)
    holdout: HoldoutConfig | None = None
    split: str = "train"

    def validate(self) -> None:
        if not self.sources:
            raise ConfigError("sources: at least one source is required")
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"sources: duplicate source names {dup}")
        if self.seq_len < 8:
            raise ConfigError(f"seq_len: must be >= 8, got {self.seq_len}")
        if self.global_batch is not None and self.global_batch < 1:
            raise ConfigError(f"global_batch: must be >= 1, got {self.global_batch}")
        if self.share_unit not in ("tokens", "positions"):
            raise ConfigError(f"share_unit: must be tokens or positions, got {self.share_unit!r}")
        most = min(self.cache_batches, self.cache_batches_remote, self.cache_files) // 2
        if self.shuffle_window is not None and not 1 <= self.shuffle_window <= most:
            raise ConfigError(
                f"shuffle_window: must be in [1, {most}] (half of cache_files, cache_batches and "
                f"cache_batches_remote: the shards and record batches of the blocks in flight, up to two "
                f"per block, must stay open), got {self.shuffle_window}"
            )
        for key in ("cache_batches", "cache_batches_remote", "cache_files"):
            if getattr(self, key) < 4:
                raise ConfigError(f"{key}: must be >= 4, got {getattr(self, key)}")
        if self.split not in SPLITS:
            raise ConfigError(f"split: must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.verify not in ("size", "sha256", "none"):
            raise ConfigError(f"verify: must be size, sha256 or none, got {self.verify!r}")
        if sum(s.share for s in self.sources) <= 0:
            raise ConfigError("sources: shares must not all be zero")
        last = -1
        for i, e in enumerate(self.schedule or []):
            if e.step <= last or e.step < 0:
                raise ConfigError(f"schedule[{i}].step: steps must be >= 0 and strictly increasing, got {e.step}")
            last = e.step
            for k, v in e.shares.items():
                if k not in names:
                    raise ConfigError(f"schedule[{i}].shares.{k}: unknown source; sources: {', '.join(names)}")
                if not v >= 0:
                    raise ConfigError(f"schedule[{i}].shares.{k}: must be >= 0, got {v}")
        if self.shuffle_window:  # the sources over one dataset share its cache of open shards
            on: dict[str, int] = {}
            for s in self.sources:
                on[s.dataset.rstrip("/")] = on.get(s.dataset.rstrip("/"), 0) + 1
            for uri, count in on.items():
                need = 2 * self.shuffle_window * count
                if need > self.cache_files:
                    raise ConfigError(
                        f"shuffle_window: {self.shuffle_window} blocks in flight per source, {count} source(s) "
                        f"on {uri}: up to {need} shards are read at once, more than cache_files {self.cache_files} "
                        f"(every sample would reopen a shard); raise cache_files to {need} or lower shuffle_window"
                    )

    def shares_at(self, step: int) -> dict[str, float]:
        """Raw (unnormalized) shares in force at global batch `step`."""
        shares = {s.name: s.share for s in self.sources}
        for e in self.schedule or []:
            if e.step > step:
                break
            shares.update(e.shares)
        return shares

    def source(self, name: str) -> MixSource:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)


def load_mix(path_or_dict) -> MixConfig:
    """A MixConfig from a YAML path, a dict, or a MixConfig (returned as is)."""
    if isinstance(path_or_dict, MixConfig):
        path_or_dict.validate()
        return path_or_dict
    if isinstance(path_or_dict, dict):
        return from_dict(MixConfig, path_or_dict, where="mix")
    return from_dict(MixConfig, load_yaml(path_or_dict), where=str(path_or_dict))
