"""`trimodal mix`: look at a mix before training on it.

`preview` plans N global batches and prints, per source, the target share, the realized share
of real tokens and of sequence positions (padding included), padding utilization, epochs and
skipped samples; `--plot` writes the shares over steps as a PNG. `check` opens every source,
derives the shared vocabulary (refusing sources whose tokenizers disagree), can write it as
vocab.json, and counts each source's samples and shards (only its `dataset_sources` corpora
when it names some).
"""

from __future__ import annotations

import json

import click

from trimodal.dataset.schema import MODALITIES
from trimodal.mixer.config import load_mix


@click.group("mix")
def mix():
    """Preview and check data mixes (MIX.yaml: sources, shares, seq_len, seed, schedule)."""


@mix.command("preview")
@click.argument("mix_yaml", type=click.Path(dir_okay=False))
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True, help="Global batches to plan.")
@click.option(
    "--global-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Sequences per global batch: the training run's logical_batch (default: the mix's, else 64).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (history included).")
@click.option(
    "--plot", type=click.Path(dir_okay=False), default=None, help="Write a PNG of realized shares over steps."
)
def preview(mix_yaml: str, steps: int, global_batch: int | None, as_json: bool, plot: str | None):
    """Realized token and position shares vs targets over STEPS global batches."""
    from trimodal.mixer.preview import format_preview, preview_mix

    result = preview_mix(load_mix(mix_yaml), steps, global_batch=global_batch, plot=plot, progress=not as_json)
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(format_preview(result))
        if plot:
            click.echo(f"plot written to {plot}")


@mix.command("check")
@click.argument("mix_yaml", type=click.Path(dir_okay=False))
@click.option("--vocab-out", default=None, help="Write the mix's vocabulary (vocab.json) to this path or URI.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check(mix_yaml: str, vocab_out: str | None, as_json: bool):
    """Open every source and check that their tokenizers agree on one vocabulary."""
    from trimodal.mixer.sources import build_vocabulary, open_datasets, source_counts

    cfg = load_mix(mix_yaml)
    datasets = open_datasets(cfg)
    vocab = build_vocabulary(datasets, cfg.vocab)
    if vocab_out:
        vocab.save(vocab_out)
    out = {
        "vocab_size": vocab.size,
        "ranges": {m: list(vocab.range(m)) for m in ("special", *MODALITIES) if m == "special" or vocab.has(m)},
        # A source limited by dataset_sources counts only those corpora's samples.
        "sources": {
            s.name: {
                "dataset": datasets[s.name].uri,
                "dataset_sources": s.dataset_sources,
                **source_counts(datasets[s.name], s.dataset_sources),
            }
            for s in cfg.sources
        },
    }
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(f"vocabulary: {vocab.size} ids; " + ", ".join(f"{m} [{a}, {b})" for m, (a, b) in out["ranges"].items()))
    for n, s in out["sources"].items():
        only = f", only {', '.join(s['dataset_sources'])}" if s["dataset_sources"] else ""
        click.echo(f"  {n}: {s['samples']:,} samples in {s['shards']} shards ({s['dataset']}{only})")
    if vocab_out:
        click.echo(f"vocab written to {vocab_out}")
