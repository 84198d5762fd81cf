"""`trimodal retokenize DATASET --modality audio --tokenizer dac:/models/dac2.pth --out NEW`.

Re-encodes one modality of a tokenized dataset from the raw samples (found again through each
row's `origin`), copies every other column unchanged, and writes a new dataset whose manifest
carries the new fingerprint. Same resume, quarantine and exit-code behaviour as `tokenize`; see
`trimodal.pipeline.retokenize`. Also ``python -m trimodal.jobs.retokenize ...`` for
``ray job submit``.
"""

from __future__ import annotations

import json

import click

from trimodal.cli import EXIT_INPUT
from trimodal.dataset.schema import MODALITIES, TOKENIZER_KINDS
from trimodal.errors import ConfigError

KINDS = tuple(TOKENIZER_KINDS)


def parse_tokenizer(value: str, kind: str | None) -> tuple[str, str]:
    """``KIND:PATH`` or a bare PATH (+ --kind, else guessed from what PATH holds) → (kind, path)."""
    from trimodal.jobs.codec import detect_kind

    head, sep, tail = value.partition(":")
    if sep and head in KINDS:
        if kind and kind != head:
            raise ConfigError(f"--kind {kind} contradicts --tokenizer {value}")
        return head, tail
    return (kind or detect_kind(value)), value


def parse_options(pairs: tuple[str, ...]) -> dict:
    """``key=value`` pairs; values parsed as JSON when they parse (numbers, booleans, null)."""
    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise ConfigError(f"--option: expected key=value, got {p!r}")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


@click.command("retokenize")
@click.argument("dataset")
@click.option("--modality", required=True, type=click.Choice(MODALITIES), help="The modality to re-encode.")
@click.option(
    "--tokenizer",
    "tokenizer",
    required=True,
    help=f"KIND:PATH, or a PATH with --kind (kinds: {', '.join(KINDS)}).",
)
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Tokenizer kind, when --tokenizer is a bare path.")
@click.option("--out", required=True, help="The new dataset (local path or s3://).")
@click.option("--batch-size", type=int, default=None, help="Rows per encode call.")
@click.option("--levels", type=int, default=None, help="Audio: codebook levels to keep.")
@click.option("--device", default=None, help="cpu | cuda | auto (default: cuda when the actor holds a GPU).")
@click.option("--threads", type=int, default=None, help="Threads per tokenizer actor.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="Further tokenizer options.")
@click.option("--actors", type=int, default=1, show_default=True, help="Tokenizer actors (autoscaled from 1).")
@click.option("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray).")
@click.option("--restart", is_flag=True, help="Discard earlier progress in --out and start over.")
@click.option("--strict", is_flag=True, help="Exit 4 if any input could not be read again.")
@click.option("--quiet", is_flag=True, help="No progress bar or lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def retokenize(
    dataset,
    modality,
    tokenizer,
    kind,
    out,
    batch_size,
    levels,
    device,
    threads,
    options,
    actors,
    address,
    restart,
    strict,
    quiet,
    as_json,
):
    """Re-encode MODALITY of DATASET with a new tokenizer into a new dataset."""
    from trimodal.config import from_dict
    from trimodal.pipeline.progress import format_summary
    from trimodal.pipeline.retokenize import RetokenizeConfig, run_retokenize

    kind, path = parse_tokenizer(tokenizer, kind)
    spec = {
        "kind": kind,
        "path": path,
        "batch_size": batch_size,
        "levels": levels,
        "device": device,
        "threads": threads,
        "options": parse_options(options),
    }
    cfg = from_dict(
        RetokenizeConfig,
        {
            "dataset": dataset,
            "modality": modality,
            "out": out,
            "mode": "restart" if restart else "resume",
            "tokenizer": {k: v for k, v in spec.items() if v is not None},
            "ray": {"actors": {modality: actors}},
            "progress": {"enabled": not quiet},
        },
    )
    result = run_retokenize(cfg, address=address, quiet=quiet)
    click.echo(json.dumps(result, indent=1, sort_keys=True) if as_json else format_summary(result))
    if strict and result["failed_inputs"]:
        click.echo(f"{len(result['failed_inputs'])} input(s) could not be read again (strict)", err=True)
        return EXIT_INPUT
    return 0


def main(argv=None) -> None:
    from trimodal.jobs.tokenize import main as _main

    _main(argv, command=retokenize)


if __name__ == "__main__":
    main()
