"""The tokenize job's configuration: typed dataclasses, checked before any Ray work starts.

One YAML file describes a job:

```yaml
sources:                        # the readers' CorpusSource, one per corpus
  - {name: web, kind: text, paths: ["s3://corpus/web/*.jsonl.zst"]}
  - {name: laion, kind: image_text, paths: ["s3://corpus/laion/"]}
tokenizers:                     # modality -> kind + local path (+ batch_size, levels, device, threads, options)
  text:  {kind: sentencepiece, path: /models/spm.model}
  image: {kind: vqmodel, path: /models/vq-f8, batch_size: 32}
  audio: {kind: dac, path: /models/dac44.pth, levels: 9}
limits: {max_text_tokens: 8192, max_audio_seconds: 30, image_resolution: 256, max_image_pixels: 64000000}
output: {uri: "s3://bucket/datasets/v1", shard_rows: 8192, shard_bytes: 268435456}
ray: {address: null, actors: {image: 4, audio: 2}, num_cpus_per_actor: 0.25}
progress: {interval_s: 10}
```

`from_dict` / `from_yaml` reject unknown keys (with the nearest valid one) and wrong types;
`validate()` does the cheap, local checks (kinds, ranges, that tokenizer paths exist);
`check_inputs()` expands every source's paths up front, so a typo in a glob fails in a second,
naming the key and the path, instead of after the cluster has spun up.

Defaults favour small machines: every stage asks for a fraction of a CPU, because on a 2-core
node whole-CPU actors starve the read tasks and Ray Data stalls without an error. On a GPU
cluster, codec actors get one GPU each by default (`num_gpus_per_actor: null` = auto).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trimodal.dataset.schema import KIND_MODALITIES, MODALITIES
from trimodal.errors import ConfigError, InputError
from trimodal.pipeline.sources import CorpusSource
from trimodal.tokenizers.spec import TokenizerSpec

# Rows per encode call when the config does not say: what keeps a CPU or a GPU busy without
# making blocks huge (text is cheap per row, codecs are not).
DEFAULT_BATCH = {"text": 512, "image": 16, "audio": 8}


@dataclass
class Limits:
    """Samples beyond these are quarantined (never silently truncated): the reason is counted."""

    max_text_tokens: int | None = None  # text_too_long
    max_audio_seconds: float | None = 30.0  # audio_too_long; None: no limit (clips are never cut)
    image_resolution: int | None = None  # codec input size (square); None = the codec's own
    # Pixels of the *input* image (w*h, read from its header before decoding); the codec
    # resizes to its own resolution, so this guards against decompression bombs and junk.
    max_image_pixels: int | None = 64_000_000  # image_too_large

    def validate(self):
        for k in ("max_text_tokens", "max_audio_seconds", "image_resolution", "max_image_pixels"):
            v = getattr(self, k)
            if v is not None and v <= 0:
                raise ConfigError(f"{k}: must be > 0, got {v}")


@dataclass
class OutputConfig:
    uri: str  # local directory or s3://bucket/prefix
    shard_rows: int = 8192  # at most this many samples per shard
    shard_bytes: int = 256 * 1024 * 1024  # and at most about this many bytes of codes
    # resume: skip inputs with a completion marker of the same job; restart: discard progress.
    mode: Literal["resume", "restart"] = "resume"

    def validate(self):
        if not self.uri:
            raise ConfigError("uri: must not be empty")
        if self.shard_rows < 1:
            raise ConfigError(f"shard_rows: must be >= 1, got {self.shard_rows}")
        if self.shard_bytes < 1024:
            raise ConfigError(f"shard_bytes: must be >= 1024, got {self.shard_bytes}")


@dataclass
class RayConfig:
    address: str | None = None  # existing cluster; else RAY_ADDRESS; else a local Ray
    num_cpus: int | None = None  # CPUs of the local Ray this job starts (None: all)
    # Actor pool size per modality (autoscaled from 1 up to this); missing modalities get 1.
    actors: dict[str, int] = field(default_factory=dict)
    num_cpus_per_actor: float = 0.25
    # None = auto: one GPU per image/audio actor when the cluster has GPUs, else none.
    num_gpus_per_actor: float | None = None
    read_num_cpus: float = 0.25  # per read+decode task (one task per input file)
    # Read tasks at once; None = the cluster's CPU count. Each concurrent task is a worker
    # process (importing the readers and decoders costs seconds), so more than there are CPUs
    # only adds start-up and memory.
    read_tasks: int | None = None
    read_chunk_rows: int = 256  # records per block emitted by a read task
    # Restarts of a dead actor and retries of its in-flight batches (and of read tasks).
    # Rows carry (input, seq), so a retried batch can never duplicate or lose samples.
    max_retries: int = 4
    # Custom resources every input task and codec actor asks for (e.g. {"worker": 0.01} to
    # keep work off a head node that only has that resource elsewhere).
    resources: dict[str, float] = field(default_factory=dict)
    # Memory (MiB) to reserve per codec actor, so the scheduler does not overpack a node with
    # models (a base DAC or VQModel actor uses 0.6-1 GiB); None reserves nothing.
    actor_memory_mb: int | None = None
    # Chunks of `read_chunk_rows` records an input task keeps in flight to the codec actors
    # while it reads and decodes the next: a GPU actor sees a queue, not a round trip.
    inflight_chunks: int = 4

    def validate(self):
        for m, n in self.actors.items():
            if m not in MODALITIES:
                raise ConfigError(f"actors.{m}: unknown modality; valid: {', '.join(MODALITIES)}")
            if not isinstance(n, int) or n < 1:
                raise ConfigError(f"actors.{m}: must be an integer >= 1, got {n!r}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"num_cpus: must be >= 1, got {self.num_cpus}")
        if self.num_cpus_per_actor < 0 or self.read_num_cpus < 0:
            raise ConfigError("num_cpus_per_actor/read_num_cpus: must be >= 0")
        if self.num_gpus_per_actor is not None and self.num_gpus_per_actor < 0:
            raise ConfigError(f"num_gpus_per_actor: must be >= 0, got {self.num_gpus_per_actor}")
        if self.read_tasks is not None and self.read_tasks < 1:
            raise ConfigError(f"read_tasks: must be >= 1, got {self.read_tasks}")
        if self.read_chunk_rows < 1:
            raise ConfigError(f"read_chunk_rows: must be >= 1, got {self.read_chunk_rows}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries: must be >= 0, got {self.max_retries}")
        for k, v in self.resources.items():
            if not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"resources.{k}: must be a number >= 0, got {v!r}")
        if self.actor_memory_mb is not None and self.actor_memory_mb < 1:
            raise ConfigError(f"actor_memory_mb: must be >= 1, got {self.actor_memory_mb}")
        if self.inflight_chunks < 1:
            raise ConfigError(f"inflight_chunks: must be >= 1, got {self.inflight_chunks}")

    def actors_for(self, modality: str) -> int:
        return int(self.actors.get(modality, 1))


@dataclass
class ProgressConfig:
    interval_s: float = 10.0  # seconds between progress lines on stderr
    enabled: bool = True

    def validate(self):
        if self.interval_s < 0:
            raise ConfigError(f"interval_s: must be >= 0, got {self.interval_s}")


@dataclass
class JobConfig:
    sources: list[CorpusSource]
    tokenizers: dict[str, TokenizerSpec]
    output: OutputConfig
    limits: Limits = field(default_factory=Limits)
    ray: RayConfig = field(default_factory=RayConfig)
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    strict: bool = False  # exit non-zero (4) when an input file could not be read

    def validate(self):
        if not self.sources:
            raise ConfigError("sources: at least one source is required")
        names = [s.name for s in self.sources]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise ConfigError(f"sources[{i}].name: duplicate source name {n!r}")
        for m, spec in self.tokenizers.items():
            if m not in MODALITIES:
                raise ConfigError(f"tokenizers.{m}: unknown modality; valid: {', '.join(MODALITIES)}")
            try:
                spec.check_path()  # the job loads it here and on its actors
            except ConfigError as e:
                raise ConfigError(f"tokenizers.{m}: {e}") from e
        for i, s in enumerate(self.sources):
            if s.kind not in KIND_MODALITIES:
                raise ConfigError(f"sources[{i}].kind: {s.kind!r} is not one of {list(KIND_MODALITIES)}")
            for m in KIND_MODALITIES[s.kind]:
                if m not in self.tokenizers:
                    raise ConfigError(
                        f"tokenizers.{m}: required by sources[{i}] ({s.name!r}, kind {s.kind}) but not configured"
                    )

    def modalities(self) -> list[str]:
        """Modalities some source needs, in stage order."""
        need = {m for s in self.sources for m in KIND_MODALITIES[s.kind]}
        return [m for m in MODALITIES if m in need]

    def batch_size(self, modality: str) -> int:
        return self.tokenizers[modality].batch_size or DEFAULT_BATCH[modality]


def check_inputs(cfg: JobConfig) -> list[list[str]]:
    """Expand every source's inputs (sorted), naming the key and path of anything missing."""
    from trimodal.pipeline.readers import list_inputs

    out = []
    for i, s in enumerate(cfg.sources):
        try:
            uris = list_inputs(s)
        except (InputError, FileNotFoundError, OSError) as e:
            raise ConfigError(f"sources[{i}].paths: {e}") from e
        if not uris:
            raise ConfigError(f"sources[{i}].paths: no input files for source {s.name!r}")
        out.append(sorted(set(uris)))
    return out
