"""`trimodal codec init` builds a local image or audio codec with seeded random weights;
`trimodal codec info` says what a codec on disk is (kind, codebook, rates, fingerprint).

For tests, the demo and offline experiments; real runs point the tokenizers at trained weights in
the same formats (VQModel directory, DAC ``.pth``). See `trimodal.tokenizers.codecs`.
"""

from __future__ import annotations

import json

import click

from trimodal.dataset.schema import MODALITY_TOKENIZER, TOKENIZER_KINDS
from trimodal.tokenizers.codecs import CONFIGS  # plain dicts; torch is imported only when building


@click.group("codec")
def codec():
    """Build local image/audio codecs."""


@codec.command("init")
@click.argument("kind", type=click.Choice(list(CONFIGS)))
@click.option(
    "--config",
    "config",
    type=click.Choice(sorted(set(CONFIGS["image"]) | set(CONFIGS["audio"]))),
    default="small",
    show_default=True,
)
@click.option("--out", required=True, help="Output directory (audio: a .pth path is also accepted).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(kind, config, out, seed, as_json):
    """Build a KIND codec from a named config with seeded random weights and save it under --out."""
    from trimodal.tokenizers.base import load_tokenizer
    from trimodal.tokenizers.codecs import init_codec

    path = init_codec(kind, config, out, seed=seed)
    fp = load_tokenizer(MODALITY_TOKENIZER[kind], path, device="cpu").fingerprint()
    if as_json:
        click.echo(
            json.dumps({"kind": kind, "config": config, "seed": seed, "path": path, "fingerprint": fp}, sort_keys=True)
        )
    else:
        click.echo(
            f"wrote {kind} codec '{config}' (seed {seed}) to {path}; "
            f"{fp['codebook_size']} codes x {fp['levels']} level(s), sha256 {fp['weights_sha256'][:12]}"
        )


def detect_kind(path: str) -> str:
    """Tokenizer kind from what a path holds: VQModel directory, DAC .pth, SentencePiece .model."""
    import os

    from trimodal.errors import ConfigError

    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        return "vqmodel"
    if path.endswith(".pth") and os.path.isfile(path):
        return "dac"
    if path.endswith(".model") and os.path.isfile(path):
        return "sentencepiece"
    raise ConfigError(
        f"--kind: cannot tell the codec kind of {path} (expected a VQModel directory with "
        f"config.json, a DAC .pth or a SentencePiece .model); pass --kind"
    )


@codec.command("info")
@click.argument("path", type=click.Path(exists=True))
@click.option(
    "--kind",
    type=click.Choice(list(TOKENIZER_KINDS)),
    default=None,
    help="Tokenizer kind (default: guessed from PATH).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def info(path, kind, as_json):
    """Print what a codec at PATH is: kind, codebook, levels, rates or grid, size, fingerprint."""
    from trimodal.tokenizers.base import load_tokenizer

    kind = kind or detect_kind(path)
    tok = load_tokenizer(kind, path, **({} if kind == "sentencepiece" else {"device": "cpu"}))
    fp = tok.fingerprint()
    model = getattr(tok, "model", None)
    params = sum(p.numel() for p in model.parameters()) if model is not None else None
    result = {
        "path": path,
        "kind": kind,
        "parameters": params,
        "fingerprint_id": tok.fingerprint_id(),
        "fingerprint": fp,
    }
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(f"{path}: {kind} ({fp['modality']}), {fp['codebook_size']} codes x {fp['levels']} level(s)")
    if "code_grid" in fp:
        click.echo(
            f"  image {fp['image_size']}x{fp['image_size']} -> code grid {fp['code_grid'][0]}x{fp['code_grid'][1]}"
        )
    if "sample_rate" in fp:
        click.echo(
            f"  {fp['sample_rate']} Hz, {fp['frame_rate']:g} frames/s, {fp['levels']} of {fp['model_levels']} levels"
        )
    if params is not None:
        click.echo(f"  {params / 1e6:.2f}M parameters")
    click.echo(f"  weights sha256 {fp['weights_sha256']}, {fp['library']} {fp['library_version']}")
    click.echo(f"  fingerprint id {result['fingerprint_id']}")
