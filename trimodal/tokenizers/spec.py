"""`TokenizerSpec`: which tokenizer a config means (kind + path + load options), one class for
every config that names one: the tokenize and retokenize jobs (`tokenizers:` / `tokenizer:`)
and the train config (`tokenizers:`, what `trimodal generate` decodes with).

It lives in the tokenizers layer because it speaks the registry's language (`load_tokenizer`'s
kinds and keyword options) and both the pipeline and the model import it. `validate()` checks
what holds wherever the spec is used; `check_path()` (that a local path exists) is called by
the jobs that load the tokenizer on this machine: a train config names tokenizers that may only
exist on the nodes that later run `generate`, so loading it does not insist on them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from trimodal.errors import ConfigError
from trimodal.tokenizers.placement import cpu_only


class TokenLimits(Protocol):
    """The sample limits a tokenizer enforces itself (the tokenize job's `Limits`)."""

    max_text_tokens: int | None
    max_audio_seconds: float | None
    image_resolution: int | None
    max_image_pixels: int | None


@dataclass
class TokenizerSpec:
    kind: str  # registry kind: sentencepiece | vqmodel | dac
    path: str  # local path of the model / weights (no download)
    batch_size: int | None = None  # rows per encode call (tokenize: default DEFAULT_BATCH)
    levels: int | None = None  # audio: residual codebook levels kept (DAC n_levels)
    device: str | None = None  # cpu | cuda | auto (None): cuda when the actor holds a GPU
    # Threads per actor: SentencePiece's num_threads, or torch intra-op threads for codecs.
    # None leaves Ray's default (1 thread for an actor holding less than one CPU).
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # further load_tokenizer(**options)

    def validate(self) -> None:
        if not self.kind:
            raise ConfigError("kind: must not be empty")
        if not self.path:
            raise ConfigError("path: must not be empty")
        for k in ("batch_size", "levels", "threads"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ConfigError(f"{k}: must be >= 1, got {v}")
        if self.device not in (None, "auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device: {self.device!r} is not one of auto, cpu, cuda")

    def check_path(self) -> None:
        """The tokenizer's local path exists (raised as ``path: tokenizer not found: ...``)."""
        if not os.path.exists(os.path.expanduser(self.path)):
            raise ConfigError(f"path: tokenizer not found: {self.path}")

    def load_options(self, modality: str, limits: TokenLimits | None = None) -> dict:
        """The keyword options for `load_tokenizer`: explicit `options`, then the typed fields,
        then the job's limits where the tokenizer enforces them itself (none given: decoding,
        e.g. `trimodal generate`)."""
        opts = dict(self.options or {})
        if self.levels is not None:
            opts.setdefault("n_levels", self.levels)
        if self.batch_size is not None:
            opts.setdefault("batch_size", self.batch_size)
        if self.device not in (None, "auto") and not cpu_only(modality):
            opts.setdefault("device", self.device)
        if modality == "text" and self.threads is not None:
            opts.setdefault("num_threads", self.threads)
        if limits is None:
            return opts
        if modality == "text" and limits.max_text_tokens:
            opts.setdefault("max_tokens", int(limits.max_text_tokens))
        if modality == "image":
            if limits.image_resolution:
                opts.setdefault("image_size", int(limits.image_resolution))
            if limits.max_image_pixels:
                opts.setdefault("max_pixels", int(limits.max_image_pixels))
        if modality == "audio":
            # The job never cuts audio: longer clips are quarantined before the codec, and with
            # no limit (null) every clip is encoded whole. So the codec's own cut (DAC's
            # max_seconds, 30 s unless told otherwise) is always the limit, null included.
            limit = None if limits.max_audio_seconds is None else float(limits.max_audio_seconds)
            given = opts.get("max_seconds", limit)
            if given != limit:
                raise ConfigError(
                    f"options.max_seconds: {given} differs from limits.max_audio_seconds ({limit}); the job "
                    "quarantines audio over the limit and never cuts it, so set only limits.max_audio_seconds"
                )
            opts["max_seconds"] = limit
        return opts
