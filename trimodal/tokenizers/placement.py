"""Where a tokenizer runs: text on CPUs, the image and audio codecs on a GPU when there is one.

SentencePiece takes microseconds per document and has no GPU path, so text is encoded where it
already is (the tokenize job's input tasks, the service's text replicas) and never asks for a
GPU; the codecs are networks, so the job's codec pools and the service's codec deployments
give each actor one GPU when the cluster has GPUs, unless the config says how many. One rule
for both, so that the job and the service place (and therefore compute) codes the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Modalities whose tokenizer runs on CPUs only.
CPU_MODALITIES: tuple[str, ...] = ("text",)


def cpu_only(modality: str) -> bool:
    """Whether `modality`'s tokenizer always runs on CPUs (no device option, no GPU, no pool)."""
    return modality in CPU_MODALITIES


def gpu_placement(modality: str, options: dict, num_gpus: float | None, cluster_gpus: float) -> tuple[float, dict]:
    """(GPUs per actor or replica, its load options): `num_gpus` as configured, else one when the
    cluster has GPUs (none for a CPU-only modality); an actor holding a GPU loads the codec on
    ``cuda`` unless the options name a device."""
    if num_gpus is None:
        num_gpus = 1.0 if cluster_gpus > 0 and not cpu_only(modality) else 0.0
    options = dict(options)
    if num_gpus > 0 and not cpu_only(modality):
        options.setdefault("device", "cuda")
    return num_gpus, options


def with_device(modality: str, options: dict, device: str | None) -> dict:
    """Load options that put a codec on `device` (None: as configured); a CPU-only tokenizer
    takes no device. The driver loads codecs on "cpu": often a CPU-only head node, it only checks
    that they load and reads their fingerprints, which the device does not change."""
    if device is None or cpu_only(modality):
        return dict(options)
    return dict(options, device=device)


def set_codec_threads(modality: str, threads: int | None) -> None:
    """Torch intra-op threads of a codec's process (text's SentencePiece takes its threads as a
    load option, `num_threads`, instead)."""
    if threads and not cpu_only(modality):
        import torch

        torch.set_num_threads(int(threads))


@dataclass(frozen=True)
class CodecLoad:
    """What the process that runs a tokenizer (a codec pool actor, a codec replica) needs to load
    it: plain data, shipped to Ray actors and Serve replicas. `options` already carry the device
    (`gpu_placement`)."""

    modality: str
    kind: str
    path: str
    options: dict = field(default_factory=dict)
    threads: int | None = None

    def load(self):
        """Set the process's torch threads, then load the tokenizer."""
        from trimodal.tokenizers.base import load_tokenizer

        set_codec_threads(self.modality, self.threads)
        return load_tokenizer(self.kind, self.path, **self.options)
