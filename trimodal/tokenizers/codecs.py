"""Build local image/audio codecs from named configs, with seeded random weights (no download).

Tests, the demo and first experiments need codecs that exist offline; real runs load trained
weights from the same on-disk formats, so everything downstream is identical:
image → a diffusers `VQModel` directory (`save_pretrained`), audio → a descript-audio-codec
``.pth`` (`DAC.save(path, package=False)`, weights + constructor kwargs).

Configs (plain dict registry): ``small`` is sized to run fast on a CPU (the test suite and demo),
``base`` is a realistic size (LDM VQ-f8 / DAC 44.1 kHz). Random weights give meaningless but
deterministic codes: same config + seed → byte-identical files → identical fingerprints.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from trimodal.dataset.storage import atomic_local_path
from trimodal.errors import ConfigError

# VQModel kwargs. 4 blocks = 3 downsamplings (f8); `sample_size` is the input resolution and is
# what the image tokenizer resizes to.
IMAGE_CONFIGS: dict[str, dict] = {
    # ~1M params, 64x64 input → 8x8 code grid, 1024 codes.
    "small": dict(
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=8,
        num_vq_embeddings=1024,
        vq_embed_dim=8,
        norm_num_groups=16,
        sample_size=64,
        mid_block_add_attention=False,
    ),
    # LDM VQ-f8 shape: 256x256 → 32x32 grid, 16384 codes, ~60M params.
    "base": dict(
        block_out_channels=(128, 256, 256, 512),
        layers_per_block=2,
        latent_channels=4,
        num_vq_embeddings=16384,
        vq_embed_dim=4,
        norm_num_groups=32,
        sample_size=256,
    ),
}

# DAC kwargs. Power-of-two rates so decode returns exactly frames × hop samples.
AUDIO_CONFIGS: dict[str, dict] = {
    # 16 kHz, hop 512 (31.25 frames/s), 4 codebooks × 1024, ~7.8M params.
    "small": dict(
        sample_rate=16000,
        encoder_dim=32,
        encoder_rates=[2, 4, 8, 8],
        latent_dim=256,
        decoder_dim=256,
        decoder_rates=[8, 8, 4, 2],
        n_codebooks=4,
        codebook_size=1024,
        codebook_dim=8,
    ),
    # The published DAC 44.1 kHz shape: hop 512 (86.1 frames/s), 9 codebooks × 1024, ~76M params.
    "base": dict(
        sample_rate=44100,
        encoder_dim=64,
        encoder_rates=[2, 4, 8, 8],
        decoder_dim=1536,
        decoder_rates=[8, 8, 4, 2],
        n_codebooks=9,
        codebook_size=1024,
        codebook_dim=8,
    ),
}

CONFIGS = {"image": IMAGE_CONFIGS, "audio": AUDIO_CONFIGS}
AUDIO_FILENAME = "dac.pth"


def _config(kind: str, config: str | dict) -> dict:
    if kind not in CONFIGS:
        raise ConfigError(f"codec kind must be one of {sorted(CONFIGS)}, got {kind!r}")
    if isinstance(config, dict):
        return dict(config)
    if config not in CONFIGS[kind]:
        raise ConfigError(f"unknown {kind} codec config {config!r}; known: {sorted(CONFIGS[kind])}")
    return dict(CONFIGS[kind][config])


def build_image_codec(config: str | dict = "small", seed: int = 0):
    import torch
    from diffusers import VQModel

    kwargs = _config("image", config)
    n = len(kwargs["block_out_channels"])
    kwargs.setdefault("down_block_types", ("DownEncoderBlock2D",) * n)
    kwargs.setdefault("up_block_types", ("UpDecoderBlock2D",) * n)
    torch.manual_seed(seed)
    return VQModel(**kwargs).eval()


def build_audio_codec(config: str | dict = "small", seed: int = 0):
    import torch

    from trimodal.tokenizers.dac_import import import_dac

    dac = import_dac()
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # dac's weight_norm deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        return dac.DAC(**_config("audio", config)).eval()


def init_codec(kind: str, config: str | dict = "small", out: str | os.PathLike = ".", seed: int = 0) -> str:
    """Build a codec with seeded random weights and save it under `out`; returns the path to
    give `load_tokenizer`: the VQModel directory (image) or the ``.pth`` file (audio; `out` may
    name the file itself, else ``<out>/dac.pth``)."""
    out = Path(out)
    if kind == "image":
        model = build_image_codec(config, seed)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out), safe_serialization=True)
        return str(out)
    if kind == "audio":
        model = build_audio_codec(config, seed)
        path = out if out.suffix == ".pth" else out / AUDIO_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_local_path(path) as tmp:  # a half-written .pth never sits at the final name
            model.save(tmp, package=False)
        return str(path)
    raise ConfigError(f"codec kind must be 'image' or 'audio', got {kind!r}")
