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


_ON = click.option(
    "--on",
    "on",
    multiple=True,
    required=True,
    help="A tokenized dataset (samples fetched through each row's origin), or raw files / globs / "
    "directories: images, audio, Parquet, WebDataset. Repeatable.",
)
_N = click.option("--n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Samples to score.")
_OUT = click.option(
    "--out", default=None, type=click.Path(file_okay=False), help="Write index.html (input beside each reconstruction)."
)
_DEVICE = click.option("--device", default="cpu", show_default=True, help="Where the codecs run (cpu, cuda, auto).")


@codec.command("eval")
@click.argument("codec_path", metavar="CODEC", type=click.Path(exists=True))
@_ON
@_N
@_OUT
@click.option(
    "--kind", default=None, help=f"Tokenizer kind (default: guessed from CODEC; one of {', '.join(TOKENIZER_KINDS)})."
)
@_DEVICE
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_cmd(codec_path, on, n, out, kind, device, as_json):
    """Reconstruction quality of one image or audio CODEC on real samples: PSNR and SSIM against
    the preprocessed image, or SNR and multi-scale mel distance against the resampled audio, with
    95% intervals over samples; tokens per sample; encode / decode speed.

    Exit codes: 2 a codec or option is wrong, 4 the samples cannot be read."""
    from trimodal.jobs.codec_eval import evaluate, format_eval, load_codec

    tok = load_codec(codec_path, kind, device)
    result = evaluate(tok, list(on), n, out, name=codec_path)
    click.echo(json.dumps(result, sort_keys=True, default=str) if as_json else format_eval(result))


@codec.command("compare")
@click.argument("codec_a", metavar="A", type=click.Path(exists=True))
@click.argument("codec_b", metavar="B", type=click.Path(exists=True))
@_ON
@_N
@_OUT
@click.option("--kind-a", default=None, help="Tokenizer kind of A (default: guessed from its path).")
@click.option("--kind-b", default=None, help="Tokenizer kind of B (default: guessed from its path).")
@_DEVICE
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def compare_cmd(codec_a, codec_b, on, n, out, kind_a, kind_b, device, as_json):
    """Two codecs A and B of one modality on the same samples, side by side: each metric's mean
    with its 95% interval, the paired difference B - A and which is better, tokens per sample and
    speed; with --out, an index.html showing input | A | B per sample. Run it before
    `trimodal retokenize` to see what the new codec buys.

    Exit codes: 2 a codec or option is wrong (or the codecs' modalities differ), 4 the samples
    cannot be read."""
    from trimodal.jobs.codec_eval import compare, format_compare, load_codec

    a = load_codec(codec_a, kind_a, device)
    b = load_codec(codec_b, kind_b, device)
    result = compare(a, b, list(on), n, out, names=(codec_a, codec_b))
    click.echo(json.dumps(result, sort_keys=True, default=str) if as_json else format_compare(result))
