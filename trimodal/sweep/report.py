"""`trimodal sweep report`: one self-contained page, DIR/index.html, over a sweep's results table.

It fits every law the table can determine (chinchilla, isoflop and batch to the target group,
mixing to every modality), draws the plots of plots.py beside index.html and writes the fitted
parameters with their intervals as tables. A law the table cannot determine, or a plot it
lacks the data for, is a line saying why, never an error: a sweep of mixtures at one scale has
no scaling law, a sweep of sizes no mixing law. Images are referenced by relative path, so the
directory can be copied or served anywhere.
"""

from __future__ import annotations

import html
import os

import numpy as np
import pandas as pd

from trimodal.errors import ConfigError
from trimodal.sweep import plots
from trimodal.sweep.fits import fit
from trimodal.sweep.fits.common import FitResult, leave_out_items
from trimodal.sweep.fits.data import pick_split, select, share_columns

FIT_ERRORS = (ConfigError, ValueError, FloatingPointError, np.linalg.LinAlgError)

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; } .skip { color: #a60; } .warn { color: #b00; }
"""


def _f(x) -> str:
    return "–" if x is None else f"{x:.4g}"


def _params_table(block: dict, level: float) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_f(v.value)}</td><td>{_f(v.lo)}</td><td>{_f(v.hi)}</td></tr>"
        for k, v in block.items()
    )
    pct = round(100 * level)
    return f"<table><tr><th>parameter</th><th>value</th><th>{pct}% low</th><th>{pct}% high</th></tr>{rows}</table>"


def _budget_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = [k for k, v in rows[0].items() if not isinstance(v, list) and k != "log_n_centre"]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = ""
    for r in rows:
        cells = []
        for k in keys:
            v = r[k]
            if hasattr(v, "value"):
                cells.append(f"{_f(v.value)} [{_f(v.lo)}, {_f(v.hi)}]")
            elif isinstance(v, float):
                cells.append(_f(v))
            else:
                cells.append(html.escape(str(v)))
        body += "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _fit_section(law: str, res: FitResult | str) -> str:
    if isinstance(res, str):
        return f"<h3>{law}</h3><p class='skip'>not fitted: {html.escape(res)}</p>"
    d = res.to_dict()
    out = [
        f"<h3>{law} (target {html.escape(res.target)}: {res.n_points} points, {res.n_trials} trials, {res.bootstrap} bootstrap resamples)</h3>"
    ]
    out.append(_params_table(res.params, res.level))
    if res.derived:
        out.append(_params_table(res.derived, res.level))
    out.append(_budget_table(res.table))
    lo = d["leave_out"]
    if lo:
        items = ", ".join(
            f"{k} = {_f(v) if isinstance(v, float) else html.escape(str(v))}" for k, v in leave_out_items(lo)
        )
        out.append(f"<p>Leave-largest-out ({html.escape(lo['held_out'])}): {items}</p>")
    out += [f"<p class='warn'>warning: {html.escape(w)}</p>" for w in res.warnings]
    return "\n".join(out)


def write_report(df: pd.DataFrame, out_dir: str, target: str = "all", n_bootstrap: int = 50, seed: int = 0) -> dict:
    """Fit, plot and write out_dir/index.html; returns what was written and what was skipped."""
    os.makedirs(out_dir, exist_ok=True)
    split = pick_split(df, None)
    rows = df[df["split"] == split]
    opts = dict(split=split, n_bootstrap=n_bootstrap, seed=seed)
    fits: dict[str, FitResult | str] = {}
    for law in ("chinchilla", "isoflop", "batch", "mixing"):
        try:
            fits[law] = fit(law, df, target=target, **opts)
        except FIT_ERRORS as e:
            fits[law] = str(e)
    ok = {k: v for k, v in fits.items() if isinstance(v, FitResult)}

    def data_for(law):
        try:
            d = select(df, target, "final", split)
        except ConfigError:
            return None
        return d[d["budget_flops"].notna()] if law == "isoflop" else d

    mix = ok.get("mixing")
    cols = mix.info["sources"] if mix else share_columns(rows[rows["final"].astype(bool)])
    final = rows[rows["final"].astype(bool)]
    specs = [
        ("loss_vs_compute.png", "Held-out loss against compute", lambda p: plots.loss_vs_compute(rows, p)),
        (
            "isoflop.png",
            "IsoFLOP curves",
            lambda p: (
                plots.isoflop_curves(data_for("isoflop"), ok["isoflop"], p) if "isoflop" in ok else fits["isoflop"]
            ),
        ),
        (
            "optimal_allocation.png",
            "Compute-optimal N* and D*",
            lambda p: plots.optimal_allocation(ok.get("isoflop"), ok.get("chinchilla"), p),
        ),
        ("ternary.png", "Loss over the mix shares", lambda p: plots.ternary(final, cols, mix, p)),
        ("schedules.png", "Noise schedules side by side", lambda p: plots.schedules(rows, target, p)),
        (
            "residuals.png",
            "Fit residuals",
            lambda p: plots.residuals(
                data_for("chinchilla"), ok.get("chinchilla"), data_for("isoflop"), ok.get("isoflop"), p
            ),
        ),
    ]
    written, skipped, body = [], [], []
    for name, title, draw in specs:
        try:
            why = draw(os.path.join(out_dir, name))
        except FIT_ERRORS as e:  # a plot must not take the page down
            why = f"could not be drawn: {e}"
        body.append(f"<h2>{html.escape(title)}</h2>")
        if why is None:
            written.append(name)
            body.append(f"<img src='{name}' alt='{html.escape(title)}'>")
        else:
            skipped.append({"plot": name, "why": why})
            body.append(f"<p class='skip'>skipped: {html.escape(why)}</p>")
    body.append("<h2>Fitted laws</h2>")
    body += [_fit_section(law, res) for law, res in fits.items()]
    sweeps = ", ".join(sorted(map(str, df["sweep"].dropna().unique())))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>trimodal sweep report: {html.escape(sweeps)}</title><style>{CSS}</style></head><body>"
        f"<h1>Sweep report: {html.escape(sweeps)}</h1>"
        f"<p>{df['trial'].nunique()} trials, {len(df)} rows; split <b>{html.escape(split)}</b>; scaling laws fitted to group "
        f"<b>{html.escape(target)}</b> on each trial's final checkpoint; intervals are {n_bootstrap}-resample trial bootstraps.</p>"
        + "\n".join(body)
        + "</body></html>"
    )
    index = os.path.join(out_dir, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(page)
    return {
        "index": index,
        "plots": written,
        "skipped": skipped,
        "fits": {k: (v.to_dict() if isinstance(v, FitResult) else {"skipped": v}) for k, v in fits.items()},
    }
