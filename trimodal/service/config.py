"""The service's configuration (`tokenizers:`, `limits:`, `vocab`, `serve:`, `ray:`; the YAML and
every key are in docs/service.md): typed dataclasses, checked and the tokenizers loaded on the
driver before Ray starts, so a wrong key or path costs seconds, not a cluster.

`tokenizers:` and `limits:` are the tokenize job's own blocks, as is (or, with `--dataset`, the
manifest's, refusing tokenizers whose fingerprints differ): they decide which samples are
accepted and what the codes are, so the service answers as the job did. `serve:` holds only
what a request costs the service: sizes, batching, replicas, queues, bind and auth.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field

from trimodal.config import from_dict, load_yaml
from trimodal.dataset.schema import MODALITIES
from trimodal.errors import ConfigError, IntegrityError
from trimodal.pipeline.job_config import Limits
from trimodal.tokenizers.spec import TokenizerSpec

DEFAULT_TOKEN_ENV = "TRIMODAL_SERVE_TOKEN"
# Requests per codec call that keep a CPU or a GPU busy without a long wait for the batch.
DEFAULT_MAX_BATCH = {"text": 64, "image": 16, "audio": 8}
# How long a partial batch waits for more requests (service/batcher.py: a batch is formed when
# the codec is free, so under load calls are full without waiting). Text: not at all (a
# SentencePiece call is microseconds). Codecs: 5 ms, small next to a codec call, which lets a
# burst of requests share one call (an image pass has a fixed size, so a lone request costs a
# whole pass).
DEFAULT_BATCH_WAIT_S = {"text": 0.0, "image": 0.005, "audio": 0.005}


@dataclass
class AutoscalingOptions:
    """Serve's autoscaling on ongoing requests per replica (replaces `replicas` when given)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 4.0
    upscale_delay_s: float = 10.0
    downscale_delay_s: float = 60.0

    def validate(self):
        if self.min_replicas < 0:
            raise ConfigError(f"min_replicas: must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ConfigError(f"max_replicas: must be >= max(1, min_replicas), got {self.max_replicas}")
        if self.target_ongoing_requests <= 0:
            raise ConfigError(f"target_ongoing_requests: must be > 0, got {self.target_ongoing_requests}")
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0:
            raise ConfigError("upscale_delay_s/downscale_delay_s: must be >= 0")

    def to_serve(self) -> dict:
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
        }


@dataclass
class DeploymentOptions:
    """One deployment: a modality's codec replicas, or the ingress (batch fields unused there)."""

    replicas: int = 1
    num_cpus: float = 0.25
    num_gpus: float | None = None  # None = auto: 1 per image/audio replica when the cluster has GPUs
    memory_mb: int | None = None  # Ray memory reservation per replica (codecs use ~0.5-1 GiB)
    # Custom Ray resources per replica, to place replicas on the nodes that advertise them
    # (e.g. {codec: 0.01} on the nodes started with `--resources '{"codec": 1}'`).
    resources: dict[str, float] = field(default_factory=dict)
    max_batch_size: int | None = None  # requests per codec call (default: DEFAULT_MAX_BATCH)
    batch_wait_s: float | None = None  # how long a partial batch waits (default: DEFAULT_BATCH_WAIT_S)
    max_ongoing_requests: int | None = None  # per replica (default: 2 x max_batch_size)
    max_queued_requests: int = 64  # waiting beyond the replicas' capacity; then 503
    autoscaling: AutoscalingOptions | None = None

    def validate(self):
        if self.replicas < 1:
            raise ConfigError(f"replicas: must be >= 1, got {self.replicas}")
        if self.num_cpus < 0:
            raise ConfigError(f"num_cpus: must be >= 0, got {self.num_cpus}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ConfigError(f"num_gpus: must be >= 0, got {self.num_gpus}")
        if self.memory_mb is not None and self.memory_mb < 1:
            raise ConfigError(f"memory_mb: must be >= 1, got {self.memory_mb}")
        for k, v in self.resources.items():
            if k in ("CPU", "GPU", "memory"):
                raise ConfigError(f"resources.{k}: set num_cpus / num_gpus / memory_mb instead")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"resources.{k}: must be a number > 0, got {v!r}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size: must be >= 1, got {self.max_batch_size}")
        if self.batch_wait_s is not None and self.batch_wait_s < 0:
            raise ConfigError(f"batch_wait_s: must be >= 0, got {self.batch_wait_s}")
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < 1:
            raise ConfigError(f"max_ongoing_requests: must be >= 1, got {self.max_ongoing_requests}")
        if self.max_queued_requests < 0:
            raise ConfigError(f"max_queued_requests: must be >= 0, got {self.max_queued_requests}")
        batch = self.max_batch_size
        if batch is not None and self.max_ongoing_requests is not None and self.max_ongoing_requests < batch:
            raise ConfigError(
                f"max_ongoing_requests: {self.max_ongoing_requests} is below max_batch_size={batch}; "
                "a replica would never see a full batch"
            )

    def batch_size(self, modality: str) -> int:
        return self.max_batch_size or DEFAULT_MAX_BATCH[modality]

    def batch_wait(self, modality: str) -> float:
        return DEFAULT_BATCH_WAIT_S[modality] if self.batch_wait_s is None else self.batch_wait_s

    def ongoing(self, modality: str | None) -> int:
        if self.max_ongoing_requests is not None:
            return self.max_ongoing_requests
        return 256 if modality is None else 2 * self.batch_size(modality)


def _ingress_defaults() -> DeploymentOptions:
    return DeploymentOptions(max_ongoing_requests=256, max_queued_requests=256)


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_bytes: int = 16 * 1024 * 1024
    max_items: int = 64
    request_timeout_s: float = 60.0
    retry_after_s: float = 1.0
    auth_token_env: str = DEFAULT_TOKEN_ENV
    # The ingress replica answers HTTP on host:port itself (Ray Serve's direct ingress); false:
    # Serve's proxy does, one more process hop per request (docs/service.md for the figures).
    direct_ingress: bool = True
    ingress: DeploymentOptions = field(default_factory=_ingress_defaults)
    text: DeploymentOptions = field(default_factory=DeploymentOptions)
    image: DeploymentOptions = field(default_factory=DeploymentOptions)
    audio: DeploymentOptions = field(default_factory=DeploymentOptions)

    def validate(self):
        if not self.host:
            raise ConfigError("host: must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: must be in [0, 65535], got {self.port}")
        if self.max_request_bytes < 1024:
            raise ConfigError(f"max_request_bytes: must be >= 1024, got {self.max_request_bytes}")
        if self.max_items < 1:
            raise ConfigError(f"max_items: must be >= 1, got {self.max_items}")
        if self.request_timeout_s <= 0:
            raise ConfigError(f"request_timeout_s: must be > 0, got {self.request_timeout_s}")
        if self.retry_after_s < 0:
            raise ConfigError(f"retry_after_s: must be >= 0, got {self.retry_after_s}")
        if not self.auth_token_env:
            raise ConfigError("auth_token_env: must name an environment variable")
        if self.direct_ingress and (self.ingress.replicas != 1 or self.ingress.autoscaling is not None):
            raise ConfigError(
                "direct_ingress: the ingress replica itself listens on host:port, so it needs "
                "ingress.replicas 1 and no ingress.autoscaling; set direct_ingress: false to run "
                "several ingress replicas behind Serve's proxy"
            )

    def deployment(self, modality: str) -> DeploymentOptions:
        return getattr(self, modality)


@dataclass
class ServeRay:
    address: str | None = None  # a running cluster; else RAY_ADDRESS; else a local Ray
    num_cpus: int | None = None  # CPUs of the local Ray the command starts

    def validate(self):
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"num_cpus: must be >= 1, got {self.num_cpus}")


@dataclass
class ServeConfig:
    tokenizers: dict[str, TokenizerSpec]
    limits: Limits = field(default_factory=Limits)
    vocab: str | None = None  # vocab.json (local or s3://): ids in that vocabulary
    serve: ServeOptions = field(default_factory=ServeOptions)
    ray: ServeRay = field(default_factory=ServeRay)
    # Set by `serve --dataset`: the manifest's fingerprints the loaded tokenizers must equal.
    expect_fingerprints: dict[str, dict] | None = field(default=None, init=False)
    dataset: str | None = field(default=None, init=False)

    def validate(self):
        if not self.tokenizers:
            raise ConfigError("tokenizers: at least one tokenizer is required")
        for m, spec in self.tokenizers.items():
            if m not in MODALITIES:
                raise ConfigError(f"tokenizers.{m}: unknown modality; valid: {', '.join(MODALITIES)}")
            try:
                spec.check_path()  # loaded here on the driver, then by every replica
            except ConfigError as e:
                raise ConfigError(f"tokenizers.{m}: {e}") from e

    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if m in self.tokenizers]


def load_serve_config(
    path: str | None = None, dataset: str | None = None, overrides: dict | None = None
) -> ServeConfig:
    """CONFIG.yaml, or a dataset's manifest (optionally with a CONFIG.yaml for `serve:` and
    `vocab`), plus command-line `overrides` of `serve:` keys → a validated ServeConfig."""
    data = load_yaml(path) if path else {}
    where = str(path) if path else "serve"
    expect = None
    if dataset:
        if "tokenizers" in data or "limits" in data:
            raise ConfigError(
                f"{where}: tokenizers/limits come from the dataset's manifest with --dataset; remove them"
            )
        job, expect = dataset_tokenizers(dataset)
        data = dict(data, tokenizers=job["tokenizers"], limits=job.get("limits") or {})
        where = f"{dataset} (manifest job)"
    elif not path:
        raise ConfigError("give a CONFIG.yaml or --dataset URI")
    if overrides:
        data["serve"] = dict(data.get("serve") or {}, **{k: v for k, v in overrides.items() if v is not None})
    cfg = from_dict(ServeConfig, data, where=where)
    cfg.expect_fingerprints = expect
    cfg.dataset = dataset
    return cfg


def dataset_tokenizers(uri: str) -> tuple[dict, dict]:
    """(the manifest's `job` with `tokenizers` and `limits`, its fingerprints per modality)."""
    from trimodal.dataset.manifest import Manifest

    m = Manifest.load(uri)
    tokenizers = (m.job or {}).get("tokenizers") or {}
    missing = [mod for mod in m.fingerprints if mod not in tokenizers]
    if not tokenizers or missing:
        raise IntegrityError(
            f"{uri}: the manifest's job.tokenizers does not name the tokenizer for {missing or list(m.fingerprints)}; "
            "serve it from a config that names the tokenizers instead"
        )
    # Only the modalities the dataset holds codes for.
    job = {"tokenizers": {k: v for k, v in tokenizers.items() if k in m.fingerprints}, "limits": m.job.get("limits")}
    return job, dict(m.fingerprints)


def check_fingerprints(loaded: dict[str, dict], expected: dict[str, dict], what: str) -> None:
    """Refuse tokenizers whose fingerprints differ from a dataset's, naming the fields."""
    for m, fp in loaded.items():
        want = expected.get(m)
        if want is None:
            continue
        diff = sorted(k for k in set(fp) | set(want) if fp.get(k) != want.get(k))
        if diff:
            detail = ", ".join(f"{k}: loaded={fp.get(k)!r} vs {what}={want.get(k)!r}" for k in diff[:4])
            raise IntegrityError(f"tokenizers.{m}: the tokenizer at its path no longer matches {what} ({detail})")


def load_tokenizers(cfg: ServeConfig, device: str | None = "cpu") -> dict:
    """Load every configured tokenizer (on the driver: proves it loads, gives fingerprints and
    prepare params); errors name the key. Returns {modality: Tokenizer}."""
    from trimodal.tokenizers.base import load_tokenizer
    from trimodal.tokenizers.placement import with_device

    toks = {}
    for m in cfg.modalities():
        spec = cfg.tokenizers[m]
        opts = with_device(m, spec.load_options(m, cfg.limits), device)
        try:
            tok = load_tokenizer(spec.kind, os.path.expanduser(spec.path), **opts)
        except ConfigError as e:
            raise ConfigError(f"tokenizers.{m}: {e}") from e
        except TypeError as e:
            raise ConfigError(f"tokenizers.{m}.options: {e}") from e
        if tok.modality != m:
            raise ConfigError(f"tokenizers.{m}.kind: {spec.kind!r} tokenizes {tok.modality}, not {m}")
        toks[m] = tok
    if cfg.expect_fingerprints is not None:
        check_fingerprints({m: t.fingerprint() for m, t in toks.items()}, cfg.expect_fingerprints, "the dataset")
    return toks


def load_vocab(cfg: ServeConfig, fingerprints: dict[str, dict]):
    """The configured vocabulary (checked against the served fingerprints), else the one derived
    from them, which is the layout a mix of datasets with these tokenizers gets."""
    from trimodal.tokenizers.vocab import Vocabulary

    if not cfg.vocab:
        return Vocabulary.from_fingerprints(fingerprints)
    try:
        vocab = Vocabulary.load(cfg.vocab)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"vocab: cannot read {cfg.vocab}: {e}") from e
    for m, fp in fingerprints.items():
        vocab.check(m, fp, what="the served tokenizers")
    return vocab


# ----------------------------------------------------------------------------- binding


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything


def bind_token(host: str, insecure: bool, token_env: str = DEFAULT_TOKEN_ENV, environ=None) -> str | None:
    """The bearer token the service requires, from `token_env`. Off loopback a token is
    mandatory unless `insecure`; on loopback it is used when set. Raises ConfigError naming
    the variable (never its value)."""
    environ = os.environ if environ is None else environ
    token = environ.get(token_env) or None
    if token is not None and len(token) < 16:
        raise ConfigError(f"serve.auth_token_env: ${token_env} is shorter than 16 characters")
    if token is None and not is_loopback(host) and not insecure:
        raise ConfigError(
            f"serve.host: binding {host} (not loopback) needs a bearer token in ${token_env}, "
            "or --insecure to serve without one"
        )
    return token


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds."""
    return str(max(1, math.ceil(seconds)))
