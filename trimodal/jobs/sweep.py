"""`trimodal sweep SWEEP.yaml [--address ADDR] [--resume] [--json]` and
`trimodal sweep status DIR_OR_YAML [--json]`: a study over the design space on Ray Tune.

The sweep package (trimodal/sweep/) does the work: the config and its points, one Tune trial per
point, resume from the trials' own done markers and checkpoints, the results table. This module
is the thin command; its subcommands are listed in `trimodal.cli.SWEEP_COMMANDS` (`run` is the
default: a first argument that is not a subcommand is the run's SWEEP.yaml).

Exit codes: 0 every trial done; 1 a trial failed (the others' rows are in the table; `--resume`
runs the failed ones again); 2 bad config (the key is named), or a sweep dir that already holds
a sweep without `--resume`; 3 data failed verification; 4 unreadable input.
"""

from __future__ import annotations

import json

import click


@click.command("run")
@click.argument("config", metavar="SWEEP.yaml", type=click.Path(dir_okay=False))
@click.option("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray).")
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep: finished trials are kept, others resume.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run_cmd(config, address, resume, as_json):
    """Run the sweep of SWEEP.yaml: one training run with held-out evaluation per point.

    Progress goes to stderr (one line per trial event, and what the sweep waits on); each
    trial's run dir and results.parquet go to the sweep dir, <storage_path>/<name>."""
    from trimodal.sweep.runner import run_sweep

    out = run_sweep(config, address=address, resume=resume)
    if as_json:
        click.echo(json.dumps(out, default=str))
    else:
        click.echo(
            f"sweep {out['sweep']}: {out['done']}/{out['trials']} trials done ({out['ran']} run now, "
            f"{len(out['dropped'])} points dropped off budget), {out['rows']} rows in {out['results']}"
        )
        for e in out["errors"]:
            click.echo(f"failed: {e}", err=True)
    return 1 if out["errors"] else 0


def format_status(st: dict) -> str:
    lines = [
        f"sweep {st['sweep']} in {st['sweep_dir']}: "
        + ", ".join(f"{n} {k}" for k, n in st["counts"].items() if n)
        + ("; driver running" if st["driver_running"] else ""),
        f"{'trial':44} {'state':12} {'step':>12}  last eval (step: NELBO)",
    ]
    for t in st["trials"]:
        step = f"{t['step']}/{t['steps']}" if t["steps"] else str(t["step"])
        ev = t["last_eval"]
        evs = f"{ev['step']}: {ev['nelbo']:.4f}" if ev and ev.get("nelbo") is not None else "-"
        lines.append(f"{t['name']:44} {t['state']:12} {step:>12}  {evs}")
        if t["error"]:
            lines.append(f"    {t['error']}")
    for d in st["dropped"]:
        lines.append(f"dropped: {d}")
    if st["results"]:
        lines.append(f"results: {st['results']} ({st['rows']} rows)")
    return "\n".join(lines)


@click.command("status")
@click.argument("target", metavar="DIR_OR_YAML")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def status_cmd(target, as_json):
    """The trials of a sweep (its dir, or its YAML) and their state: pending, running,
    interrupted (continue with --resume), done or error; the step reached and the last eval."""
    from trimodal.sweep.runner import sweep_status

    st = sweep_status(target)
    click.echo(json.dumps(st, default=str) if as_json else format_status(st))
