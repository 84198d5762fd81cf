"""`trimodal generate CHECKPOINT --task t2i|t2s|text --prompt TEXT --out FILE`.

Loads a checkpoint (or the newest one of a run directory), encodes the prompt with the run's
text tokenizer, fills the target span by iterative unmasking (trimodal.model.sampler) and
decodes the codes with the run's codec: a PNG through the VQ decoder, a WAV through the DAC
decoder, or UTF-8 text. The tokenizer paths come from the run's config (`tokenizers:`); a
checkpoint moved to another machine takes `--tokenizer MODALITY=KIND:PATH` instead. Each
tokenizer is checked against the checkpoint's vocabulary (the fingerprint must match, or the
ids would mean other codes) and refused otherwise, naming both.

Exit codes follow the CLI: 2 bad option or config, 3 tokenizer / vocabulary mismatch,
4 a checkpoint or tokenizer that cannot be read.
"""

from __future__ import annotations

import json
import math
import os

import click
import numpy as np

from trimodal.dataset.schema import MODALITIES
from trimodal.errors import ConfigError

TARGET = {"t2i": "image", "t2s": "audio", "text": "text"}


def _tokenizer(modality: str, cfg, vocab, overrides: dict):
    from trimodal.tokenizers.base import load_tokenizer

    if modality in overrides:
        kind, _, path = overrides[modality].partition(":")
        options = {}
    elif modality in cfg.tokenizers:
        spec = cfg.tokenizers[modality]
        kind, path, options = spec.kind, spec.path, spec.load_options(modality)
    else:
        raise ConfigError(
            f"tokenizers.{modality}: the checkpoint's config names no {modality} tokenizer; "
            f"pass --tokenizer {modality}=KIND:PATH"
        )
    tok = load_tokenizer(kind, path, **options)
    vocab.check(modality, tok.fingerprint(), what=f"tokenizer {path}")
    return tok


def target_length(task: str, vocab, length: int | None, seconds: float | None) -> int:
    """Number of target tokens: the image's code grid, seconds × frame rate × levels of audio,
    or `length` text tokens."""
    m = TARGET[task]
    fp = vocab.fingerprints[m]
    if m == "image":
        h, w = fp["code_grid"]
        return int(h) * int(w)
    if m == "audio":
        frames = max(1, math.ceil((seconds or 1.0) * float(fp["frame_rate"])))
        return frames * vocab.levels("audio")
    return int(length or 32)


def run_generate(
    checkpoint: str,
    task: str,
    prompt: str,
    out: str,
    steps: int = 16,
    temperature: float = 1.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 1.0,
    length: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    tokenizers: dict | None = None,
    device: str = "cpu",
) -> dict:
    """Generate one sample into `out` (.png / .wav / .txt); returns what was written."""
    import torch

    from trimodal.model.checkpoint import load_model
    from trimodal.model.diffusion import DiffusionLoss
    from trimodal.model.sampler import REMASKING, build_template, sample
    from trimodal.tokenizers.base import from_storage
    from trimodal.tokenizers.media import media_file_bytes

    if task not in TARGET:
        raise ConfigError(f"--task: {task!r} is not one of {sorted(TARGET)}")
    if remasking not in REMASKING:
        raise ConfigError(f"--remasking: {remasking!r} is not one of {list(REMASKING)}")
    if steps < 1:
        raise ConfigError("--steps: must be >= 1")
    model, vocab, cfg = load_model(checkpoint, device=device)
    modality = TARGET[task]
    if not vocab.has(modality):
        raise ConfigError(f"--task {task}: the checkpoint's vocabulary has no {modality} tokens")
    overrides = tokenizers or {}
    text_tok = _tokenizer("text", cfg, vocab, overrides) if (prompt or modality == "text") else None
    prompt_ids = vocab.codes_to_ids("text", text_tok.encode([prompt])[0]) if prompt else np.zeros(0, np.int32)
    target_tok = text_tok if modality == "text" else _tokenizer(modality, cfg, vocab, overrides)

    n = target_length(task, vocab, length, seconds)
    tpl = build_template(vocab, task, prompt_ids, n)
    schedule = DiffusionLoss(cfg.diffusion, vocab).schedule_for(modality)
    torch.manual_seed(seed)
    ids = sample(
        model,
        vocab,
        tpl,
        steps=steps,
        temperature=temperature,
        remasking=remasking,
        cfg_scale=cfg_scale,
        schedule=schedule,
        seed=seed,
    )
    codes = from_storage(modality, vocab.ids_to_codes(modality, ids), vocab.fingerprints[modality])
    media = target_tok.decode([codes])[0]

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    info = {
        "task": task,
        "out": os.path.abspath(out),
        "prompt": prompt,
        "target_tokens": int(n),
        "steps": steps,
        "temperature": temperature,
        "remasking": remasking,
        "cfg_scale": cfg_scale,
        "seed": seed,
    }
    with open(out, "wb") as f:
        f.write(media_file_bytes(modality, media))
    if modality == "image":
        info["size"] = list(media.size)
    elif modality == "audio":
        wave, rate = media
        info["seconds"] = len(np.asarray(wave).reshape(-1)) / float(rate)
        info["sample_rate"] = int(rate)
    else:
        info["text"] = media
    return info


def _parse_overrides(values) -> dict:
    out = {}
    for v in values:
        modality, sep, spec = v.partition("=")
        if not sep or ":" not in spec or modality not in MODALITIES:
            raise ConfigError(f"--tokenizer: expected MODALITY=KIND:PATH (e.g. audio=dac:/codecs/dac.pth), got {v!r}")
        out[modality] = spec
    return out


@click.command("generate")
@click.argument("checkpoint")
@click.option(
    "--task",
    type=click.Choice(sorted(TARGET)),
    required=True,
    help="t2i: text → image (PNG); t2s: text → speech (WAV); text: continue the prompt.",
)
@click.option("--prompt", default="", help="Conditioning text.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output file.")
@click.option("--steps", default=16, show_default=True, help="Unmasking steps.")
@click.option("--temperature", default=1.0, show_default=True, help="Sampling temperature (0: argmax).")
@click.option(
    "--remasking",
    type=click.Choice(["low_confidence", "random"]),
    default="low_confidence",
    show_default=True,
    help="Which predictions stay masked after each step.",
)
@click.option("--cfg-scale", default=1.0, show_default=True, help="Classifier-free guidance scale (1: off).")
@click.option("--length", default=32, show_default=True, help="Text tokens to generate (task text).")
@click.option("--seconds", default=1.0, show_default=True, help="Audio length (task t2s).")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--tokenizer",
    "tokenizers",
    multiple=True,
    metavar="MODALITY=KIND:PATH",
    help="Use this tokenizer instead of the one the run's config names.",
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def generate(
    checkpoint,
    task,
    prompt,
    out,
    steps,
    temperature,
    remasking,
    cfg_scale,
    length,
    seconds,
    seed,
    tokenizers,
    device,
    as_json,
):
    """Generate one sample from CHECKPOINT (a checkpoint or a run directory)."""
    info = run_generate(
        checkpoint,
        task,
        prompt,
        out,
        steps=steps,
        temperature=temperature,
        remasking=remasking,
        cfg_scale=cfg_scale,
        length=length,
        seconds=seconds,
        seed=seed,
        tokenizers=_parse_overrides(tokenizers),
        device=device,
    )
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(f"wrote {info['out']} ({task}, {info['target_tokens']} tokens, {steps} steps)")
