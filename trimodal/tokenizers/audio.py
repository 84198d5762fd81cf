"""Audio tokenizer: descript-audio-codec (DAC) loaded from a local ``.pth``.

Encode: each item is prepared on CPU (media.py: decode, mono down-mix, polyphase resampling to
the codec rate, cut to ``max_seconds``), then the valid items are batched. An item of ``n``
samples is zero-padded to a *length bucket* (``ceil(n / bucket) * bucket``, bucket =
``length_bucket_seconds`` rounded to whole hops) and only items of the same bucket share a
forward pass. Its codes are trimmed to ``ceil(n / hop)`` frames and keep the first ``n_levels``
residual codebooks → ``(levels, frames)`` int32.

Why buckets rather than "pad to the longest item of the batch": a convolutional encoder's last
frames see the padding, so padding to whatever the batch's longest neighbour is would make an
item's codes depend on how the batch was formed, breaking "equal fingerprint → equal codes".
With buckets the padding depends only on the item itself; the cost is at most one bucket of
extra compute per item, and a batch of very different lengths runs as several forward passes.

A forward pass holds at most ``batch_size`` items and, on CPU, at most ``max_batch_samples``
padded samples: past the cache size the convolutions slow down per sample, so on CPU several
small passes are faster than one large one (measured: 1.7x per sample for the small codec).

Decode: ``quantizer.from_codes`` + ``decode`` → ``(float32 waveform, sample_rate)`` with exactly
``frames × hop`` samples. `dac` is imported through dac_import.py (torchaudio stand-in). At
load, weight norm is folded into the convolution weights (`fold_weight_norm`): same codes,
~10% less CPU per pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trimodal.dataset.digest import file_sha256
from trimodal.errors import ConfigError
from trimodal.tokenizers import media
from trimodal.tokenizers.base import Tokenizer, raise_first, register
from trimodal.tokenizers.image import pick_device


class DACTokenizer(Tokenizer):
    modality = "audio"

    def __init__(
        self,
        path: str,
        n_levels: int | None = None,
        max_seconds: float | None = 30.0,
        min_seconds: float = 0.0,
        length_bucket_seconds: float = 1.0,
        device: str | None = None,
        batch_size: int = 8,
        max_batch_samples: int | None = None,
    ):
        import os

        from trimodal.tokenizers.dac_import import import_dac

        if not os.path.isfile(path):
            raise ConfigError(f"DAC weights file not found: {path}")
        if max_seconds is not None and max_seconds <= 0:
            raise ConfigError(f"max_seconds must be positive, got {max_seconds}")
        if min_seconds < 0 or (max_seconds is not None and min_seconds > max_seconds):
            raise ConfigError(f"min_seconds must be in [0, max_seconds], got {min_seconds}")
        if length_bucket_seconds < 0:
            raise ConfigError(f"length_bucket_seconds must be >= 0, got {length_bucket_seconds}")
        dac = import_dac()
        self.path = str(path)
        self.device = pick_device(device)
        try:
            with warnings.catch_warnings():  # dac's weight_norm deprecation notice, once per load
                warnings.simplefilter("ignore", FutureWarning)
                self.model = dac.DAC.load(self.path).to(self.device).eval()
        except Exception as e:
            raise ConfigError(f"{path}: cannot load a DAC model ({type(e).__name__}: {e})") from None
        fold_weight_norm(self.model)
        m = self.model
        self.sample_rate = int(m.sample_rate)
        self.hop = int(m.hop_length)
        self.model_levels = int(m.n_codebooks)
        self.levels = int(n_levels or self.model_levels)
        if not 1 <= self.levels <= self.model_levels:
            raise ConfigError(f"n_levels must be in [1, {self.model_levels}] for {path}, got {n_levels}")
        self.codebook_size = int(m.codebook_size)
        self.max_seconds, self.min_seconds = max_seconds, min_seconds
        self.length_bucket_seconds = length_bucket_seconds
        self.bucket = max(1, math.ceil(length_bucket_seconds * self.sample_rate / self.hop)) * self.hop
        self.batch_size = batch_size
        if max_batch_samples is None:
            # CPU: keep the first layer's activations (batch x samples x encoder_dim float32) within
            # ~16 MiB, i.e. in cache. Past ~32 MiB (one L3) the small codec runs ~1.7x slower per
            # sample, so on CPU several small passes beat one big one. GPUs want big passes.
            dim = int(getattr(m, "encoder_dim", 64))
            max_batch_samples = (1 << 22) // dim if self.device == "cpu" else 0
        if max_batch_samples < 0:
            raise ConfigError(f"max_batch_samples must be >= 0 (0: no limit), got {max_batch_samples}")
        self.max_batch_samples = max_batch_samples
        self._fp: dict | None = None

    # encode -----------------------------------------------------------------------------
    def prepare(self, item: Any, name: str) -> np.ndarray:
        """One item → float32 mono waveform at the codec rate. Raises SampleError."""
        return media.prepare_audio(item, self.sample_rate, name, self.max_seconds, self.min_seconds)

    def frames(self, n_samples: int) -> int:
        return -(-n_samples // self.hop)

    def encode_waveforms(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Prepared mono waveforms → codes (levels, frames) each, batched by length bucket."""
        import torch

        out: list = [None] * len(waves)
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            groups.setdefault(-(-len(w) // self.bucket) * self.bucket, []).append(i)
        with torch.inference_mode():
            for padded, idx in sorted(groups.items()):
                step = self.pass_size(padded)
                for s in range(0, len(idx), step):
                    part = idx[s : s + step]
                    x = np.zeros((len(part), 1, padded), np.float32)
                    for row, i in enumerate(part):
                        x[row, 0, : len(waves[i])] = waves[i]
                    codes = self.encode_tensor(torch.from_numpy(x).to(self.device))
                    for row, i in enumerate(part):
                        out[i] = codes[row, :, : self.frames(len(waves[i]))].copy()
        return out

    def pass_size(self, samples: int) -> int:
        """Items of `samples` (padded) samples per forward pass: `batch_size`, capped on CPU by
        `max_batch_samples` (an item longer than the cap runs alone)."""
        if not self.max_batch_samples:
            return self.batch_size
        return max(1, min(self.batch_size, self.max_batch_samples // max(1, samples)))

    def encode_tensor(self, x) -> np.ndarray:
        """float (B, 1, samples) at the codec rate, samples a multiple of hop → int32 (B, levels, frames)."""
        import torch

        _, codes, *_ = self.model.encode(x, n_quantizers=self.levels)
        return codes[:, : self.levels].to(dtype=torch.int32).cpu().numpy()

    def encode_each(self, batch: Sequence[Any], names: Sequence[str] | None = None) -> list:
        out, ok, waves = media.prepare_each(self.prepare, batch, names)
        for i, c in zip(ok, self.encode_waveforms(waves)):
            out[i] = c
        return out

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        return raise_first(self.encode_each(batch))

    # decode -----------------------------------------------------------------------------
    def decode(self, codes: Sequence[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        import torch

        out: list = [None] * len(codes)
        arrays = [np.asarray(c, dtype=np.int64).reshape(self.levels, -1) for c in codes]
        for a in arrays:
            if a.size and (a.min() < 0 or a.max() >= self.codebook_size):
                raise ValueError(f"audio codes outside [0, {self.codebook_size})")
        groups: dict[int, list[int]] = {}
        for i, a in enumerate(arrays):  # equal frame counts share a pass: no padding, exact output
            groups.setdefault(a.shape[1], []).append(i)
        with torch.inference_mode():
            for frames, idx in groups.items():
                step = self.pass_size(frames * self.hop)
                for s in range(0, len(idx), step):
                    part = idx[s : s + step]
                    if frames == 0:
                        for i in part:
                            out[i] = (np.zeros(0, np.float32), self.sample_rate)
                        continue
                    c = torch.from_numpy(np.stack([arrays[i] for i in part])).to(self.device)
                    z, _, _ = self.model.quantizer.from_codes(c)
                    y = self.model.decode(z)[:, 0, : frames * self.hop].float().cpu().numpy()
                    for row, i in enumerate(part):
                        out[i] = (np.ascontiguousarray(y[row]), self.sample_rate)
        return out

    # identity ---------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        if self._fp is None:
            from importlib.metadata import version

            p = Path(self.path).resolve()  # a relative path has no parent name of its own
            self._fp = {
                "kind": "dac",
                "name": f"{p.parent.name}/{p.name}" if p.parent.name else p.name,
                "modality": "audio",
                "codebook_size": self.codebook_size,
                "levels": self.levels,
                "model_levels": self.model_levels,
                "sample_rate": self.sample_rate,
                "hop": self.hop,
                "frame_rate": self.sample_rate / self.hop,
                "preprocess": {
                    "mono": "mean",
                    "resample": "scipy.signal.resample_poly",
                    "max_seconds": self.max_seconds,
                    "length_bucket": self.bucket,
                },
                "weights_sha256": file_sha256(self.path),  # the .pth holds the constructor kwargs too
                "library": "descript-audio-codec",
                "library_version": version("descript-audio-codec"),
            }
        return dict(self._fp)


def fold_weight_norm(model) -> int:
    """Replace weight-normalized convolutions' (g, v) by the weight they compute, once.

    DAC wraps every convolution in weight norm, which recomputes ``g * v / ||v||`` on each
    forward pass (~10% of CPU encode time). For inference the result is a constant: folding
    it computes the very same tensor once, so codes are unchanged. Returns how many were folded."""
    import torch

    n = 0
    for module in model.modules():
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.nn.utils.remove_weight_norm(module)
            n += 1
        elif getattr(getattr(module, "parametrizations", None), "weight", None) is not None:
            torch.nn.utils.parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            n += 1
    return n


@register("dac")
def load_dac(path: str, **options) -> DACTokenizer:
    return DACTokenizer(path, **options)
