"""`SweepConfig`: what a sweep YAML says, typed and validated once before any work.

A sweep is a base train config (`base:`, a path or an inline mapping, with `set:` overrides for
every trial) plus what varies: `grid:` (dotted keys of the train config → lists), `mixtures:`
(explicit share vectors, or `{dirichlet: {alpha, n, seed}}` around the base shares), `budget:`
(isoFLOP: `{flops, sizes}`), `seeds:` and `random: {n, seed, params}`. points.py expands it into
named points; every point's train config is built and validated during that expansion, so a bad
value fails before Ray starts, its key named (``grid.hyper.lr_base[1]``, ``point p003-...``).

Each trial is evaluated on held-out data: the sweep's `eval:` (EvalConfig fields, merged over the
base's `eval:` section), whose `mix:` is an eval mix; without one the training mix's `holdout`
(once the mixer has one). A sweep without either is refused: its table would hold no loss.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

from trimodal.config import from_dict, load_yaml, to_dict
from trimodal.dataset.storage import is_s3
from trimodal.errors import ConfigError
from trimodal.model.config import TrainConfig


@dataclass
class DirichletConfig:
    """`n` share vectors drawn from Dirichlet(alpha · p0) around the base shares p0 (mean p0;
    larger alpha: closer to p0). RegMix/Olmix use ≥ 3(m+1) mixtures for m sources."""

    n: int
    alpha: float = 10.0
    seed: int = 0

    def validate(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n: must be >= 1, got {self.n}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha: must be > 0, got {self.alpha}")


def _mixtures(value: Any, key: str) -> list[dict[str, float]] | DirichletConfig | None:
    """`mixtures:` is a list of {source: share} mappings or `{dirichlet: {...}}`."""
    if value is None:
        return None
    if isinstance(value, dict):
        if set(value) != {"dirichlet"}:
            raise ConfigError(f"{key}: a mapping must be {{dirichlet: {{alpha, n, seed}}}}; got keys {sorted(value)}")
        return from_dict(DirichletConfig, value["dirichlet"], where=f"{key}.dirichlet")
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a non-empty list of {{source: share}} mappings or {{dirichlet: ...}}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not m:
            raise ConfigError(f"{key}[{i}]: expected a mapping source -> share, got {m!r}")
        for s, v in m.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"{key}[{i}].{s}: a share must be a number >= 0, got {v!r}")
        if sum(m.values()) <= 0:
            raise ConfigError(f"{key}[{i}]: shares must not all be zero")
        out.append({str(k): float(v) for k, v in m.items()})
    return out


@dataclass
class BudgetConfig:
    """isoFLOP mode: every (C, size) pair is a trial whose steps spend C training FLOPs (flops.py's
    accounting at the mix's expected real tokens per step); a pair whose whole number of steps
    misses C by more than `tolerance` is dropped with a message (Marin's rule)."""

    flops: list[float]
    # a preset name, or a mapping of model fields (dim, n_layers, n_heads, ...; `name` labels it)
    sizes: list[Any]
    tolerance: float = 0.01

    def validate(self) -> None:
        if not self.flops or any(not c > 0 for c in self.flops):
            raise ConfigError(f"flops: need a non-empty list of budgets > 0, got {self.flops}")
        if not self.sizes:
            raise ConfigError("sizes: need at least one model size")
        for i, s in enumerate(self.sizes):
            if not isinstance(s, (str, dict)):
                raise ConfigError(f"sizes[{i}]: a preset name or a mapping of model fields, got {s!r}")
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"tolerance: must be in (0, 1), got {self.tolerance}")


DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")


@dataclass
class RandomConfig:
    """Random search: `n` draws of `params` (dotted key -> {uniform|log_uniform|int_uniform:
    [lo, hi]} or {choice: [...]}) from one seeded generator, so a rerun draws the same points."""

    n: int
    params: dict[str, dict[str, list]]
    seed: int = 0

    def validate(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n: must be >= 1, got {self.n}")
        if not self.params:
            raise ConfigError("params: name at least one dotted key to draw")
        for k, spec in self.params.items():
            if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
                raise ConfigError(f"params.{k}: one of {list(DISTRIBUTIONS)}, e.g. {{log_uniform: [1e-4, 1e-2]}}")
            dist, args = next(iter(spec.items()))
            if dist == "choice":
                if not args:
                    raise ConfigError(f"params.{k}.choice: must not be empty")
            elif len(args) != 2 or not args[0] < args[1] or (dist == "log_uniform" and args[0] <= 0):
                raise ConfigError(f"params.{k}.{dist}: need [lo, hi] with lo < hi (lo > 0 for log_uniform), got {args}")


@dataclass
class ResourcesConfig:
    """Per-trial resources and concurrency. A single-worker trial reserves `cpus_per_trial`
    (default: the base's cpus_per_worker) and a GPU with `use_gpu`; a multi-worker trial's
    function reserves `trial_cpus` while its TorchTrainer's workers reserve their own."""

    cpus_per_trial: float | None = None
    trial_cpus: float = 0.1
    max_concurrent_trials: int | None = None  # default: what the cluster's CPUs (GPUs) hold

    def validate(self) -> None:
        if self.cpus_per_trial is not None and not self.cpus_per_trial > 0:
            raise ConfigError(f"cpus_per_trial: must be > 0, got {self.cpus_per_trial}")
        if not self.trial_cpus > 0:
            raise ConfigError(f"trial_cpus: must be > 0, got {self.trial_cpus}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ConfigError(f"max_concurrent_trials: must be >= 1, got {self.max_concurrent_trials}")


@dataclass
class SweepConfig:
    name: str  # the sweep dir is <storage_path>/<name>; the table's `sweep` column
    base: Any  # a train config: the path of its YAML or an inline mapping (`output` not needed)
    storage_path: str = "sweeps"  # local directory or s3://bucket/prefix
    set: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, for every trial
    grid: dict[str, list] = field(default_factory=dict)
    mixtures: list[dict[str, float]] | DirichletConfig | None = field(default=None, metadata={"convert": _mixtures})
    budget: BudgetConfig | None = None
    seeds: list[int] = field(default_factory=list)  # empty: the base's seed
    random: RandomConfig | None = None
    # EvalConfig fields merged over the base's `eval:`; `mix` an eval mix (path or mapping)
    eval: dict[str, Any] | None = None
    eval_name: str | None = None  # the table's `split` for an eval mix; default its file stem
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    progress_every_s: float = 10.0  # how often the driver says what it waits on

    def validate(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise ConfigError(f"name: {self.name!r}: must be non-empty, without '/', '\\\\' or spaces")
        if not isinstance(self.base, (str, dict)):
            raise ConfigError(f"base: the path of a train config YAML or an inline mapping, got {self.base!r}")
        for k, v in self.grid.items():
            if not v:
                raise ConfigError(f"grid.{k}: needs at least one value")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: duplicates in {self.seeds}")
        if self.budget is not None:
            for k in ("model.preset", "steps"):
                if k in self.grid:
                    raise ConfigError(
                        f"grid.{k}: the budget sets it (budget.sizes, budget.flops); vary it in one place"
                    )
        if not self.progress_every_s > 0:
            raise ConfigError("progress_every_s: must be > 0")

    @property
    def sweep_dir(self) -> str:
        if is_s3(self.storage_path):
            return self.storage_path.rstrip("/") + "/" + self.name
        return os.path.join(os.path.abspath(self.storage_path), self.name)

    @property
    def split_name(self) -> str:
        """The table's `split`: "eval" (the training mix's holdout) or the eval mix's name."""
        mix = (self.eval or {}).get("mix")
        if mix is None:
            base_eval = self._base_dict().get("eval") or {}
            mix = base_eval.get("mix")
        if mix is None:
            return "eval"
        if self.eval_name:
            return self.eval_name
        if isinstance(mix, str):
            return os.path.splitext(os.path.basename(mix))[0]
        return "eval_mix"

    def _base_dict(self) -> dict:
        if isinstance(self.base, str):
            try:
                return load_yaml(self.base)
            except ConfigError as e:
                raise ConfigError(f"base: {e}") from e
        return copy.deepcopy(self.base)

    def base_train_dict(self) -> dict:
        """The base train config as a plain dict (the mix and eval mix read and typed, paths
        absolute), with `set:` and the sweep's `eval:` applied; `output` is set per trial."""
        from trimodal.sweep.points import set_dotted

        where = self.base if isinstance(self.base, str) else "base"
        d = self._base_dict()
        d.setdefault("output", os.path.join(self.sweep_dir, "trials", "_base"))
        if self.eval is not None:
            ev = dict(d.get("eval") or {})
            ev.update(self.eval)
            d["eval"] = ev
        for k, v in self.set.items():
            set_dotted(d, k, v, f"set.{k}", strict=False)
        for k in ("stop_at_step", "log_dir"):
            if d.get(k) is not None:
                raise ConfigError(f"{where}: {k}: not in a sweep's base (the sweep sets each trial's run and log dir)")
        if d.get("eval") is None:
            try:
                cfg = from_dict(TrainConfig, d, where=where)
            except ConfigError as e:
                raise ConfigError(f"base: {e}") from e
            if getattr(cfg.mix, "holdout", None) is None:
                raise ConfigError(
                    "eval: a sweep evaluates every trial on held-out data: give `eval: {mix: EVAL.yaml}` in "
                    "the sweep (or `eval:` with `mix:` in the base config); the training mix has no `holdout`"
                )
            d["eval"] = {}
        try:
            cfg = from_dict(TrainConfig, d, where=where)
        except ConfigError as e:
            raise ConfigError(f"base: {e}") from e
        from trimodal.model.config import absolute_mix

        out = to_dict(cfg)
        out["mix"] = to_dict(absolute_mix(cfg.mix))
        if cfg.eval is not None and cfg.eval.mix is not None:
            out["eval"]["mix"] = to_dict(absolute_mix(cfg.eval.mix))
        return out


def load_sweep(config: str | dict | SweepConfig) -> SweepConfig:
    """A SweepConfig from a YAML path, a mapping or a SweepConfig (checked again)."""
    if isinstance(config, SweepConfig):
        config.validate()
        return config
    if isinstance(config, dict):
        return from_dict(SweepConfig, config, where="sweep")
    return from_dict(SweepConfig, load_yaml(config), where=str(config))
