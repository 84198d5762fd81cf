"""Image tokenizer: a diffusers `VQModel` loaded offline from a local directory.

Encode: each item is prepared on CPU (media.py: decode, EXIF orientation, RGB on white, resize
the shorter side + center crop to the codec resolution), the valid items are stacked into one
uint8 batch, moved to the device, scaled to [-1, 1] there, and run through
``encode → quantize`` under `torch.inference_mode`; codes come back as ``(h, w)`` int32 grids.
Forward passes have a fixed size (``batch_size``, default 4 on CPU and 16 on GPU; a short
batch is filled with blank images), so that an image's codes do not depend on which images share
its batch or where a job split its batches; the cost is the filler's compute on the last pass of
each call. (A different ``batch_size`` or device may still flip the odd near-tied code.)

Decode: ``quantize.get_codebook_entry`` + ``decode(force_not_quantize=True)`` → PIL images.

The codec resolution is the model config's ``sample_size`` unless ``image_size`` is given; the
grid is ``image_size / 2**(blocks - 1)``. The fingerprint hashes the weights file(s) and the
model config, and records the preprocessing that changes codes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trimodal.dataset.digest import file_sha256
from trimodal.errors import ConfigError
from trimodal.tokenizers import media
from trimodal.tokenizers.base import Tokenizer, raise_first, register

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class VQModelTokenizer(Tokenizer):
    modality = "image"
    levels = 1

    def __init__(
        self,
        path: str,
        image_size: int | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        fixed_batch: bool = True,
        max_pixels: int = media.DEFAULT_MAX_PIXELS,
        min_side: int = media.DEFAULT_MIN_SIDE,
        resample: str = "bicubic",
        jpeg_draft: bool = True,
        dtype: str = "float32",
    ):
        import torch
        from diffusers import VQModel

        if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"VQModel directory not found (needs config.json and weights): {path}")
        if resample not in media._RESAMPLE:
            raise ConfigError(f"resample must be one of {sorted(media._RESAMPLE)}, got {resample!r}")
        self.path = str(path)
        self.device = pick_device(device)
        self.dtype = getattr(torch, dtype)
        # low_cpu_mem_usage=False: no `accelerate` dependency (and no warning about it).
        self.model = (
            VQModel.from_pretrained(self.path, local_files_only=True, low_cpu_mem_usage=False, torch_dtype=self.dtype)
            .to(self.device)
            .eval()
        )
        cfg = self.model.config
        self.downsample = 2 ** (len(cfg.block_out_channels) - 1)
        self.image_size = int(image_size or cfg.sample_size)
        if self.image_size % self.downsample:
            raise ConfigError(
                f"image_size {self.image_size} is not a multiple of the codec's downsampling factor {self.downsample}"
            )
        self.grid = (self.image_size // self.downsample,) * 2
        self.codebook_size = int(cfg.num_vq_embeddings)
        # CPU: 2-4 images per pass is as fast per image as 16 (and 1 is very slow with 2 threads);
        # a fixed pass pads a short batch up to it, so keep it small there.
        self.batch_size = int(batch_size or (4 if self.device == "cpu" else 16))
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.fixed_batch = fixed_batch
        self.max_pixels, self.min_side = max_pixels, min_side
        self.resample, self.jpeg_draft = resample, jpeg_draft
        self._fp: dict | None = None

    # encode -----------------------------------------------------------------------------
    def prepare(self, item: Any, name: str) -> np.ndarray:
        """One item → uint8 (size, size, 3). Raises SampleError."""
        return media.prepare_image(
            item,
            self.image_size,
            name,
            max_pixels=self.max_pixels,
            min_side=self.min_side,
            resample=self.resample,
            jpeg_draft=self.jpeg_draft,
        )

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (B, size, size, 3) → int32 codes (B, h, w): the batched codec call.

        With `fixed_batch`, every forward pass has exactly `batch_size` images (a short last pass
        is filled with blank images): kernels then see one shape, and an image's codes do not
        depend on its neighbours or on where a batch was split (with a varying pass size, float
        rounding in GroupNorm / convolution flips the odd near-tied code)."""
        import torch

        out = []
        bs = self.batch_size
        with torch.inference_mode():
            for s in range(0, len(pixels), bs):
                chunk = np.ascontiguousarray(pixels[s : s + bs])
                n = len(chunk)
                if self.fixed_batch and n < bs:
                    chunk = np.concatenate([chunk, np.zeros((bs - n, *chunk.shape[1:]), np.uint8)])
                x = torch.from_numpy(chunk).to(self.device)
                x = x.permute(0, 3, 1, 2).to(self.dtype).div_(127.5).sub_(1.0)
                out.append(self.encode_tensor(x)[:n])
        return np.concatenate(out) if out else np.zeros((0, *self.grid), np.int32)

    def encode_tensor(self, x) -> np.ndarray:
        """float (B, 3, size, size) in [-1, 1] on the device → int32 codes (B, h, w)."""
        import torch

        h = self.model.encode(x).latents
        _, _, (_, _, idx) = self.model.quantize(h)
        return idx.reshape(x.shape[0], h.shape[2], h.shape[3]).to(torch.int32).cpu().numpy()

    def encode_each(self, batch: Sequence[Any], names: Sequence[str] | None = None) -> list:
        out, ok, arrays = media.prepare_each(self.prepare, batch, names)
        if arrays:
            codes = self.encode_pixels(np.stack(arrays))
            for i, c in zip(ok, codes):
                out[i] = c
        return out

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        return raise_first(self.encode_each(batch))

    # decode -----------------------------------------------------------------------------
    def decode(self, codes: Sequence[np.ndarray]) -> list:
        import torch
        from PIL import Image

        images = []
        with torch.inference_mode():
            for s in range(0, len(codes), self.batch_size):
                chunk = np.stack(
                    [np.asarray(c, dtype=np.int64).reshape(self.grid) for c in codes[s : s + self.batch_size]]
                )
                if chunk.size and (chunk.min() < 0 or chunk.max() >= self.codebook_size):
                    raise ValueError(f"image codes outside [0, {self.codebook_size})")
                b, h, w = chunk.shape
                idx = torch.from_numpy(chunk).to(self.device).reshape(-1)
                z = self.model.quantize.get_codebook_entry(
                    idx, (b, h, w, self.model.config.vq_embed_dim or self.model.config.latent_channels)
                )
                x = self.model.decode(z.to(self.dtype), force_not_quantize=True).sample
                x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                images.extend(Image.fromarray(a, "RGB") for a in x)
        return images

    # identity ---------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        if self._fp is None:
            import diffusers

            cfg = {k: v for k, v in dict(self.model.config).items() if not k.startswith("_")}
            self._fp = {
                "kind": "vqmodel",
                "name": Path(self.path).resolve().name,  # "." and "dir/" name the directory
                "modality": "image",
                "codebook_size": self.codebook_size,
                "levels": 1,
                "image_size": self.image_size,
                "code_grid": list(self.grid),
                "preprocess": {
                    "fit": "shorter_side_center_crop",
                    "resample": self.resample,
                    "jpeg_draft": self.jpeg_draft,
                    "background": "white",
                    "exif_transpose": True,
                },
                "weights_sha256": weights_sha256(self.path),
                "model_config_sha256": hashlib.sha256(
                    json.dumps(cfg, sort_keys=True, default=str).encode()
                ).hexdigest(),
                "library": "diffusers",
                "library_version": diffusers.__version__,
            }
        return dict(self._fp)


def weights_sha256(directory: str) -> str:
    """sha256 over the weight files of a model directory (sorted by name; one file → its own hash)."""
    files = sorted(f for f in os.listdir(directory) if f.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise ConfigError(f"no weight files ({', '.join(_WEIGHT_SUFFIXES)}) in {directory}")
    if len(files) == 1:
        return file_sha256(os.path.join(directory, files[0]))
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + b"\0" + file_sha256(os.path.join(directory, f)).encode())
    return h.hexdigest()


@register("vqmodel")
def load_vqmodel(path: str, **options) -> VQModelTokenizer:
    return VQModelTokenizer(path, **options)
