"""`trimodal sweep fit RESULTS --law chinchilla|isoflop|mixing|batch [--target M] [--bootstrap N] [--json]`
and `trimodal sweep report RESULTS --out DIR`: the laws fitted to a sweep's results table, and the
page that shows them.

RESULTS is `results.parquet` or the sweep directory holding it. These are plain click commands
(`fit_command`, `report_command`) that the `trimodal sweep` group registers. Nothing here imports
torch or Ray; numpy, scipy and pandas are imported only when a command runs, so listing the
group's commands stays fast.

Exit codes: 2 bad option or data that cannot determine the law (the message says what is
missing); 4 a results table that cannot be read.
"""

from __future__ import annotations

import json

import click

# the keys of trimodal.sweep.fits.LAWS, spelled out so that --help does not import scipy
LAW_NAMES = ("batch", "chinchilla", "isoflop", "mixing")


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def format_result(d: dict) -> str:
    """A FitResult's dict as text: parameters with intervals, derived values, budgets, leave-out."""
    pct = round(100 * d["level"])
    lines = [
        f"{d['law']} law, target {d['target']}: {d['n_points']} points from {d['n_trials']} trials "
        f"({d['rows']} rows, split {d['split']}), {d['bootstrap']} bootstrap resamples"
    ]
    for title, block in (("parameters", d["params"]), ("derived", d["derived"])):
        if not block:
            continue
        width = max(len(k) for k in block)
        lines += ["", f"{title:<{width}}  {'value':>11}  {f'{pct}% interval':>25}"]
        for k, v in block.items():
            iv = f"[{_fmt(v['lo'])}, {_fmt(v['hi'])}]" if v["lo"] is not None else ""
            lines.append(f"{k:<{width}}  {_fmt(v['value']):>11}  {iv:>25}")
    if d["table"]:
        lines += ["", "per budget:"]
        for row in d["table"]:
            cells = []
            for k, v in row.items():
                if isinstance(v, dict):
                    cells.append(f"{k}={_fmt(v['value'])} [{_fmt(v['lo'])}, {_fmt(v['hi'])}]")
                elif isinstance(v, float):
                    cells.append(f"{k}={_fmt(v)}")
                elif not isinstance(v, list):
                    cells.append(f"{k}={v}")
            lines.append("  " + "  ".join(cells))
    lo = d["leave_out"]
    if lo:
        from trimodal.sweep.fits.common import leave_out_items

        rest = ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in leave_out_items(lo))
        lines += ["", f"leave-largest-out ({lo['held_out']}): {rest}"]
    for w in d["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


@click.command("fit")
@click.argument("results")
@click.option("--law", type=click.Choice(LAW_NAMES), required=True, help="Which law to fit.")
@click.option("--target", default="all", show_default=True, help="Group: all, a modality (text/image/audio) or a task.")
@click.option(
    "--rows",
    type=click.Choice(["final", "budget"]),
    default="final",
    show_default=True,
    help="final: each trial's last checkpoint; budget: every row at a budget point (WSD-style schedules).",
)
@click.option("--split", default=None, help="Split to fit (default: eval when present).")
@click.option(
    "--n",
    "n_col",
    type=click.Choice(["params_non_embedding", "params"]),
    default=None,
    help="N for chinchilla/isoflop (default non-embedding).",
)
@click.option(
    "--starts",
    type=click.Choice(["projected", "besiroglu"]),
    default=None,
    help="chinchilla: starting points; besiroglu runs Besiroglu et al.'s 4,500-point grid (slow).",
)
@click.option("--weights", default=None, help="mixing: weights of the modality losses, e.g. text=1,image=1,audio=1.")
@click.option(
    "--bootstrap",
    "n_bootstrap",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Bootstrap resamples (0: no intervals).",
)
@click.option("--level", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True, help="Interval level.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the fit as one JSON object.")
def fit_command(results, law, target, rows, split, n_col, starts, weights, n_bootstrap, level, seed, as_json):
    """Fit a scaling, mixing or batch law to a sweep's RESULTS (results.parquet or its sweep dir)."""
    from trimodal.sweep.fits import fit
    from trimodal.sweep.fits.data import load_results

    options = dict(target=target, rows=rows, split=split, n_bootstrap=n_bootstrap, seed=seed, level=level)
    if n_col is not None:
        options["n_col"] = n_col
    if weights is not None:
        options["weights"] = weights
    if starts is not None:
        options["starts"] = starts
    out = fit(law, load_results(results), **options).to_dict()
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(format_result(out))
    return 0


@click.command("report")
@click.argument("results")
@click.option("--out", "out_dir", required=True, help="Directory for index.html and its PNGs.")
@click.option("--target", default="all", show_default=True, help="Group the scaling laws are fitted to.")
@click.option(
    "--bootstrap",
    "n_bootstrap",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Bootstrap resamples per fit.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was written (plots, skipped plots, fits) as JSON.")
def report_command(results, out_dir, target, n_bootstrap, seed, as_json):
    """Write DIR/index.html: loss against compute, isoFLOP curves, N*/D*, mixtures, schedules, residuals, fits."""
    from trimodal.sweep.fits.data import load_results
    from trimodal.sweep.report import write_report

    summary = write_report(load_results(results), out_dir, target=target, n_bootstrap=n_bootstrap, seed=seed)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"wrote {summary['index']} ({len(summary['plots'])} plots, {len(summary['skipped'])} skipped)")
        for s in summary["skipped"]:
            click.echo(f"  skipped {s['plot']}: {s['why']}")
    return 0
