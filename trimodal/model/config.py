"""Typed configs for the model, the diffusion loss, the batch-size rule and the trainer.

Model sizes come from named presets (tiny for tests up to ~3B) that any explicit field
overrides, so a YAML can say ``preset: 1b`` and still change ``n_layers``. Everything is a plain
dataclass filled by `trimodal.config.from_dict`; `validate()` raises ConfigError naming the key.

`TrainConfig.mix` is typed: the mixer's `MixConfig` (inline, or the path of a mix YAML read when
the train config is loaded) or a `SyntheticStreamConfig` (``kind: synthetic``), so a typo in it
fails in the driver with its key named, before Ray starts, not inside the training workers.
The global batch has one owner: the trainer sets the mix's to `logical_batch`, so a training
mix must leave `global_batch` out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from trimodal.config import from_dict, load_yaml, to_dict
from trimodal.dataset.schema import MODALITIES
from trimodal.errors import ConfigError
from trimodal.mixer.config import MixConfig
from trimodal.tokenizers.spec import TokenizerSpec

# name -> (dim, n_layers, n_heads). Non-embedding params ≈ 12·dim²·layers (SwiGLU at 8/3·dim).
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 4),  # tests: ~0.1M non-embedding params
    "small": (256, 4, 4),  # CPU bench / demo: ~3M
    "100m": (768, 12, 12),  # ~85M non-embedding
    "1b": (2048, 20, 16),  # ~1.0B non-embedding
    "3b": (3072, 26, 24),  # ~2.9B non-embedding (the paper's scale)
}


PARAMETERIZATIONS = ("standard", "completep")


@dataclass
class ModelConfig:
    preset: str = "tiny"
    dim: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    ffn_hidden: int | None = None  # default: 8/3·dim rounded up to a multiple of 64
    vocab_multiple: int = 64  # embedding rows padded to this multiple (tensor-core friendly)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02
    # auto: flex_attention (compiled, document block mask) on CUDA, SDPA + boolean mask elsewhere
    attention: Literal["auto", "sdpa", "flex"] = "auto"
    # standard: today's init and one lr for all; completep: the width (μP) and depth (α = 1)
    # rules of CompleteP relative to the shape the base hyperparameters were tuned at
    # (model/parameterization.py, docs/training.md), so `hyper` transfers across model sizes.
    parameterization: Literal["standard", "completep"] = "standard"
    base_width: int | None = None  # completep: the dim the base hyperparameters were tuned at
    base_depth: int | None = None  # completep: the n_layers they were tuned at

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"preset: {self.preset!r} is not one of {sorted(PRESETS)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"parameterization: {self.parameterization!r} is not one of {list(PARAMETERIZATIONS)}")
        for k in ("base_width", "base_depth"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ConfigError(f"{k}: must be >= 1, got {v}")
            if self.parameterization == "completep" and v is None:
                raise ConfigError(
                    f"{k}: required with parameterization completep (the shape the base hyperparameters were tuned at)"
                )
        r = self.resolve()
        if r.dim % r.n_heads:
            raise ConfigError(f"n_heads: dim {r.dim} is not divisible by n_heads {r.n_heads}")
        if (r.dim // r.n_heads) % 2:
            raise ConfigError("n_heads: head dim must be even for rotary positions")
        if self.vocab_multiple < 1:
            raise ConfigError("vocab_multiple: must be >= 1")

    def resolve(self) -> ModelConfig:
        """Fill unset sizes from the preset."""
        d, l, h = PRESETS[self.preset]
        dim = self.dim or d
        ffn = self.ffn_hidden or ((8 * dim // 3 + 63) // 64) * 64
        return replace(self, dim=dim, n_layers=self.n_layers or l, n_heads=self.n_heads or h, ffn_hidden=ffn)


# The names of `trimodal.model.schedules.SCHEDULES` (kept here so that validating a config never
# imports torch; a test checks that the two agree).
SCHEDULE_NAMES = ("linear", "cosine", "polynomial", "log-linear")


@dataclass
class ScheduleConfig:
    """A noise schedule α(t) from `trimodal.model.schedules.SCHEDULES`."""

    name: str = "linear"
    exponent: float = 2.0  # polynomial: α = 1 − t^exponent
    eps: float = 1e-3  # log-linear: α(1) = eps

    def validate(self) -> None:
        if self.name not in SCHEDULE_NAMES:
            raise ConfigError(f"name: {self.name!r} is not one of {sorted(SCHEDULE_NAMES)}")
        # Below 1 the ELBO weight's bound breaks (w = p/t integrates to −3% off at p = 0.5).
        if self.exponent <= 0 or (self.name == "polynomial" and self.exponent < 1):
            raise ConfigError(f"exponent: must be >= 1 for the polynomial schedule, got {self.exponent}")
        if not 0 <= self.eps < 1:
            raise ConfigError("eps: must be in [0, 1)")


@dataclass
class DiffusionConfig:
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # modality ("text" | "image" | "audio") -> schedule; modalities not listed use `schedule`
    modality_schedules: dict[str, ScheduleConfig] = field(default_factory=dict)
    # t is drawn in [t_min, 1]: the ELBO weight −α'/(1−α) grows like 1/t at t → 0.
    t_min: float = 1e-3
    # stratified: t_i = (i + u)/B over the global batch, one u per step shared by all rows;
    # stratified_per_row: one u per row (MDLM's low-discrepancy sampler); iid: independent draws
    t_sampling: Literal["stratified", "stratified_per_row", "iid"] = "stratified"
    # classifier-free guidance: probability of masking out the text condition of a pair document
    cfg_drop_prob: float = 0.1

    def validate(self) -> None:
        for k in self.modality_schedules:
            if k not in MODALITIES:
                raise ConfigError(f"modality_schedules.{k}: not a modality {MODALITIES}")
        if not 0 <= self.t_min < 1:
            raise ConfigError("t_min: must be in [0, 1)")
        if not 0 <= self.cfg_drop_prob <= 1:
            raise ConfigError("cfg_drop_prob: must be in [0, 1]")


@dataclass
class HyperConfig:
    """The batch-size reparameterization (see batch_size.py). Batches are in TOKENS
    (sequences × seq_len), the horizon D in tokens, S_crit in optimizer steps."""

    base_batch_tokens: int = 262144  # B_base: the batch the base hyperparameters were tuned at
    base_horizon_tokens: float = 1e10  # D_base
    gamma: float = 0.44
    lr_base: float = 3e-4  # η_base
    betas_base: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps_base: float = 1e-8
    s_crit: float = 1000.0  # B_crit = D / (L · S_crit) sequences

    def validate(self) -> None:
        if len(self.betas_base) != 2 or not all(0 < b < 1 for b in self.betas_base):
            raise ConfigError("betas_base: need two values in (0, 1)")
        for k in ("base_batch_tokens", "base_horizon_tokens", "lr_base", "eps_base", "s_crit"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"{k}: must be > 0")


@dataclass
class OptimConfig:
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr·min_lr_ratio at the last step
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping

    def validate(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps: must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("min_lr_ratio: must be in [0, 1]")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay / grad_clip: must be >= 0")


@dataclass
class SyntheticStreamConfig:
    """``mix: {kind: synthetic, ...}``: a fixed pool of random packed rows (model/data.py), for
    isolating model throughput and for overfit checks."""

    fingerprints: dict[str, dict]  # modality -> tokenizer fingerprint: the vocabulary
    seq_len: int = 64
    pool: int = 16  # distinct rows, served in order and repeated
    seed: int = 0
    doc_len: int | None = None  # tokens per document; default max(8, seq_len // 2)
    kind: Literal["synthetic"] = "synthetic"

    def validate(self) -> None:
        for m in self.fingerprints:
            if m not in MODALITIES:
                raise ConfigError(f"fingerprints.{m}: not a modality {MODALITIES}")
        for k in ("seq_len", "pool"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k}: must be >= 1")
        if self.doc_len is not None and self.doc_len < 1:
            raise ConfigError("doc_len: must be >= 1")


STREAM_KINDS = ("mixer", "synthetic")


def _read_mix_yaml(path: str, key: str, parse: Callable[[Any, str], Any]) -> Any:
    """The mix YAML at `path` given to `parse` (stream_config or eval_mix_config): an error
    reading it names `key`, an error in what it holds names the file."""
    try:
        data = load_yaml(path)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from e
    try:
        return parse(data, key)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def stream_config(value: Any, key: str = "mix") -> MixConfig | SyntheticStreamConfig:
    """A training stream's config from a mapping, the path of a YAML holding one, or a config
    (checked again). ``kind`` chooses the stream: "mixer" (default) or "synthetic". A mixer mix
    must leave `global_batch` out: the trainer sets it from `logical_batch`. Errors name `key`
    (and the file, for a path)."""
    if isinstance(value, (MixConfig, SyntheticStreamConfig)):
        value = to_dict(value)
    if isinstance(value, str):
        return _read_mix_yaml(value, key, stream_config)
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mix mapping or the path of a mix YAML, got {value!r}")
    kind = value.get("kind", "mixer")
    if kind not in STREAM_KINDS:
        raise ConfigError(f"{key}.kind: {kind!r} is not one of {list(STREAM_KINDS)}")
    # where=key: this config sits at `key` in the train config; its errors say so
    if kind == "synthetic":
        return from_dict(SyntheticStreamConfig, value, where=key)
    mix = from_dict(MixConfig, {k: v for k, v in value.items() if k != "kind"}, where=key)
    if mix.global_batch is not None:
        raise ConfigError(
            f"{key}.global_batch: {mix.global_batch}: leave it out of a training mix; the trainer "
            "sets the global batch to the train config's logical_batch"
        )
    return mix


def eval_mix_config(value: Any, key: str = "eval.mix") -> MixConfig | SyntheticStreamConfig | None:
    """An eval mix (a mapping, the path of a mix YAML, or a config), read as one finite pass
    (model/eval_data.py). Like a training mix, except that its `global_batch` is ignored: the
    evaluation sets its own rows per batch."""
    if value is None:
        return None
    if isinstance(value, (MixConfig, SyntheticStreamConfig)):
        value = to_dict(value)
    if isinstance(value, str):
        return _read_mix_yaml(value, key, eval_mix_config)
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "global_batch"}
    return stream_config(value, key)


def absolute_mix(mix: MixConfig | SyntheticStreamConfig) -> MixConfig | SyntheticStreamConfig:
    """The mix with local dataset and vocab paths made absolute (Ray workers run in other
    working directories; a synthetic stream has no paths)."""
    if not isinstance(mix, MixConfig):
        return mix
    from trimodal.dataset.storage import is_s3

    def fix(uri):
        return uri if uri is None or is_s3(uri) else os.path.abspath(uri)

    return replace(
        mix,
        sources=[replace(s, dataset=fix(s.dataset)) for s in mix.sources],
        vocab=fix(mix.vocab),
    )


@dataclass
class EvalConfig:
    """``eval:`` in a train config: the held-out NELBO (model/evaluate.py) every `every` steps
    and after the last one, logged as ``eval.*`` records; the last one goes to summary.json."""

    every: int = 0  # steps between evaluations; 0: only after the last step
    # further steps to evaluate after (a sweep's smaller budgets that this run passes on its way)
    at: list[int] = field(default_factory=list)
    tokens: int = 65536  # the first ⌈tokens / seq_len⌉ rows of the eval stream
    # an eval mix (mapping or mix YAML path); None: the training mix's held-out split (`holdout`)
    mix: MixConfig | SyntheticStreamConfig | None = field(default=None, metadata={"convert": eval_mix_config})
    n_t: int = 8  # masking-rate points per row (t_k = (u + k/K) mod 1)
    seeds: int = 2  # independent replicates of u and the masks: the standard error
    batch: int = 8  # rows per forward, per worker
    seed: int = 0

    def validate(self) -> None:
        if self.every < 0:
            raise ConfigError("every: must be >= 0")
        if any(s < 1 for s in self.at):
            raise ConfigError(f"at: steps must be >= 1, got {self.at}")
        for k in ("tokens", "n_t", "seeds", "batch"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k}: must be >= 1")


@dataclass
class TrainConfig:
    # the mixer's MixConfig (a mapping or a mix YAML's path) or a synthetic stream: stream_config()
    mix: MixConfig | SyntheticStreamConfig = field(metadata={"convert": stream_config})
    output: str  # run directory, local or s3://: checkpoints/, metrics.jsonl, tb/
    steps: int = 100
    physical_batch: int = 8  # sequences per worker per micro-step (what fits in memory)
    logical_batch: int = 8  # sequences per optimizer step, all workers together
    horizon_tokens: float | None = None  # D; default steps × logical_batch × seq_len
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    hyper: HyperConfig = field(default_factory=HyperConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    num_workers: int = 1
    cpus_per_worker: float = 0.5  # fractional: whole CPUs per worker deadlock 2-core machines
    use_gpu: bool = False
    fsdp: bool = False  # FSDP2 fully_shard instead of DDP (large presets)
    compile: bool | None = None  # torch.compile model + loss; None: on CUDA only (CPU compiles take minutes)
    # bf16 autocast (and, with fsdp, FSDP2's MixedPrecisionPolicy: bf16 params, fp32 reduce);
    # None: on CUDA only. true on CPU runs the same branch (slow; tests use it)
    bf16: bool | None = None
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    tensorboard: bool = True
    seed: int = 0
    max_failures: int = 0  # Ray Train restarts; a restart resumes from the newest checkpoint
    # How long the worker group waits for the resources of its workers when it (re)starts, e.g.
    # after losing a node with no spare: a node that comes back in time lets the run finish;
    # otherwise the run fails with a message that says so, instead of waiting forever.
    node_wait_s: float = 600.0
    prefetch: int = 2  # batches pulled ahead on a thread (0: none)
    # End this invocation after this step (with a checkpoint) while the lr schedule and the
    # horizon stay those of `steps`: time-limited allocations train in slices, each `--resume`.
    stop_at_step: int | None = None
    log_dir: str | None = None  # metrics.jsonl + tb/; default: output if local, else ./trimodal_logs/<run>
    tokenizers: dict[str, TokenizerSpec] = field(default_factory=dict)  # for generate
    # held-out NELBO during training and in the summary (EvalConfig); None: none
    eval: EvalConfig | None = None
    # replaced by `eval:`; kept so that the config.json of earlier checkpoints (eval_batches: 0)
    # still loads
    eval_batches: int = 0

    def validate(self) -> None:
        for k in ("steps", "physical_batch", "logical_batch", "num_workers", "checkpoint_every", "log_every"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k}: must be >= 1")
        per_step = self.physical_batch * self.num_workers
        if self.logical_batch % per_step:
            raise ConfigError(
                f"logical_batch: {self.logical_batch} is not a multiple of physical_batch × num_workers "
                f"= {self.physical_batch} × {self.num_workers}"
            )
        if not 0 < self.cpus_per_worker:
            raise ConfigError("cpus_per_worker: must be > 0")
        if not self.node_wait_s > 0:
            raise ConfigError("node_wait_s: must be > 0")
        if self.stop_at_step is not None and self.stop_at_step < 1:
            raise ConfigError("stop_at_step: must be >= 1")
        if self.prefetch < 0:
            raise ConfigError("prefetch: must be >= 0")
        if self.eval_batches:
            raise ConfigError("eval_batches: replaced by `eval: {mix, tokens, every}` (docs/training.md, Evaluation)")
        if getattr(self.mix, "split", "train") != "train":
            raise ConfigError(
                "mix.split: a training mix reads the train split (eval is for `eval.mix` and `trimodal eval`)"
            )
        if self.eval is not None and self.eval.mix is None and getattr(self.mix, "holdout", None) is None:
            raise ConfigError(
                "eval.mix: not given, and the training mix has no holdout to evaluate on; give an eval mix"
            )
        for k in self.tokenizers:
            if k not in MODALITIES:
                raise ConfigError(f"tokenizers.{k}: not a modality {MODALITIES}")

    @property
    def accum_steps(self) -> int:
        return self.logical_batch // (self.physical_batch * self.num_workers)
