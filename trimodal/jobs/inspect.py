"""`trimodal inspect DATASET`: what is in a tokenized dataset, for people and for scripts;
with `--render N --out DIR`, also N decoded samples per source to look at (service/render.py)."""

from __future__ import annotations

import json
import sys

import click

from trimodal.cli import EXIT_INTEGRITY
from trimodal.dataset.dataset import Dataset, summarize
from trimodal.units import format_bytes


def format_summary(s: dict) -> str:
    failed = s.get("failed_inputs") or []
    lines = [
        f"dataset   {s['uri']}",
        f"samples   {s['samples']:,} in {s['shards']} shards, {format_bytes(s['bytes'])}",
        "tokens    " + "  ".join(f"{m} {n:,}" for m, n in s["tokens"].items()),
    ]
    if s.get("inputs"):
        lines.append(
            f"inputs    {s['inputs']:,}"
            + (f", {len(failed)} FAILED: their records are not in the dataset (a rerun retries them)" if failed else "")
        )
    if s["by_source"]:
        lines.append("")
        lines.append(f"{'source':<20}{'samples':>10}{'text':>12}{'image':>12}{'audio':>12}")
        for name, st in sorted(s["by_source"].items()):
            lines.append(f"{name:<20}{st['rows']:>10,}{st['text']:>12,}{st['image']:>12,}{st['audio']:>12,}")
    lines.append("")
    lines.append("tokenizers")
    for modality, fp in sorted(s["fingerprints"].items()):
        extra = []
        if fp.get("code_grid"):
            extra.append(f"grid {fp['code_grid'][0]}x{fp['code_grid'][1]}")
        if fp.get("image_size"):
            extra.append(f"{fp['image_size']}px")
        if fp.get("sample_rate"):
            extra.append(f"{fp['sample_rate']} Hz")
        if fp.get("frame_rate"):
            extra.append(f"{fp['frame_rate']:.2f} frames/s")
        weights = (fp.get("weights_sha256") or "")[:12]
        lines.append(
            f"  {modality:<6} {fp.get('kind')} {fp.get('name', '')}: {fp.get('codebook_size')} codes"
            f" x {fp.get('levels', 1)} levels {' '.join(extra)} sha256 {weights}"
        )
    lines.append("")
    if s["quarantine"]:
        lines.append(f"quarantine {s['quarantined']:,}: " + ", ".join(f"{r} {n}" for r, n in s["quarantine"].items()))
    else:
        lines.append("quarantine 0")
    if s.get("stats", {}).get("wall_seconds"):
        lines.append(f"job       {s['stats']['wall_seconds']:.1f} s wall")
    for f in failed:
        lines.append(f"FAILED INPUT {f['uri']}: {f.get('error')}")
    return "\n".join(lines)


@click.command("inspect")
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--verify",
    is_flag=True,
    help="Also hash every shard and index against the manifest (reads all data) and list unreferenced files.",
)
@click.option(
    "--render",
    "render",
    type=click.IntRange(min=1),
    default=None,
    help="Decode this many samples per source with the dataset's own codecs (needs --out).",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="With --render: where the text / PNG / WAV files and index.html go.",
)
def inspect_cmd(dataset: str, as_json: bool, verify: bool, render: int | None, out: str | None):
    """Summarize DATASET (a local path or s3://bucket/prefix): samples, tokens per modality and
    source, shards, bytes, tokenizer fingerprints, quarantine counts by reason, failed inputs.

    With --render N --out DIR, also decode N samples per source with the codecs the manifest
    names (they must still match its fingerprints) into DIR: text, PNG and WAV files and an
    index.html showing captions beside images and transcripts beside audio players. Each image
    and audio sample is shown beside its original, fetched again through the row's origin and
    prepared as the codec saw it, with PSNR / SSIM or SNR / mel distance (as `codec eval`).

    Exit code 3 if --verify finds a shard that does not match the manifest, or if the codecs
    no longer match the dataset's fingerprints."""
    if (render is None) != (out is None):
        raise click.UsageError("--render N and --out DIR go together")
    ds = Dataset.open(dataset)
    s = summarize(ds)
    problems = ds.verify_all() if verify else []
    unreferenced = ds.unreferenced_files() if verify else []
    if verify:
        # Unreferenced files (a dead attempt's shards, temp files) are reported, not an error:
        # no reader ever opens them, and the next commit of the job removes them.
        s["verify"] = {"ok": not problems, "problems": problems, "unreferenced": unreferenced}
    if render is not None:
        from trimodal.service.render import render_dataset

        s["render"] = render_dataset(dataset, render, out)
    if as_json:
        click.echo(json.dumps(s, indent=2, sort_keys=True))
    else:
        click.echo(format_summary(s))
        if verify:
            click.echo(
                "verify    " + ("all shards match the manifest" if not problems else f"{len(problems)} bad shard(s)")
            )
            for p in problems:
                click.echo(f"  {p}", err=True)
            if unreferenced:
                click.echo(f"unreferenced {len(unreferenced)} file(s) the manifest does not list (safe to delete):")
                for rel in unreferenced[:20]:
                    click.echo(f"  {rel}")
        if render is not None:
            r = s["render"]
            click.echo(f"render    {r['files']} files for {sum(r['samples'].values())} samples -> {r['index']}")
            for m, ms in (r.get("metrics") or {}).items():
                click.echo(
                    f"  {m} original vs decoded: "
                    + ", ".join(f"{k} {v['mean']:.4g} [{v['lo']:.4g}, {v['hi']:.4g}]" for k, v in ms.items())
                )
    if problems:
        sys.exit(EXIT_INTEGRITY)
