"""Synthetic results tables with the sweep runner's columns, drawn from planted laws.

The fits read the table by column name only; these tables have every documented column so that
a fit or the report that reads one more column fails here, not on a real sweep.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

CHIN = {"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28}
BUDGETS = (1e16, 4e16, 1.6e17, 6.4e17, 2.56e18)
SOURCES = ("text", "image_text", "audio_text")
# per modality: c, k, t over SOURCES (the last, audio_text, is the reference with t = 0)
MIX = {
    "text": (1.5, 2.0, (-2.5, 0.3, 0.0)),
    "image": (2.0, 1.5, (0.4, -2.0, 0.0)),
    "audio": (2.5, 0.8, (0.2, 0.5, 0.0)),
}


def chinchilla_loss(n, d, p=CHIN):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def mixing_loss(mod, r):
    c, k, t = MIX[mod]
    return c + k * np.exp(np.asarray(r) @ np.asarray(t))


def _row(trial, group, nelbo, **kw):
    group_kind = "all" if group == "all" else ("modality" if group in ("text", "image", "audio") else "task")
    n = int(kw.get("params_non_embedding", 10_000_000))
    tokens = int(kw.get("tokens", 100_000_000))
    row = {
        "sweep": "synth",
        "trial": trial,
        "step": int(kw.get("step", 1000)),
        "final": bool(kw.get("final", True)),
        "split": kw.get("split", "eval"),
        "group_kind": group_kind,
        "group": group,
        "nelbo": float(nelbo),
        "se": 0.001,
        "bits": float(nelbo) / np.log(2),
        "unigram": 6.0,
        "params": n + 2_000_000,
        "params_non_embedding": n,
        "tokens": tokens,
        "tokens_padded": int(tokens * 1.05),
        "flops": float(kw.get("flops", 6.0 * n * tokens)),
        "flops_non_embedding": float(kw.get("flops", 6.0 * n * tokens)) * 0.9,
        "preset": kw.get("preset", f"d{n}"),
        "dim": 256,
        "n_layers": 4,
        "schedule": kw.get("schedule", "linear"),
        "logical_batch": int(kw.get("logical_batch", 64)),
        "seq_len": 256,
        "lr_base": float(kw.get("lr_base", 1e-3)),
        "seed": int(kw.get("seed", 0)),
        "steps": int(kw.get("steps", 1000)),
        "budget_flops": kw.get("budget_flops", np.nan),
        "parameterization": "completep",
        "point": json.dumps({"trial": trial}),
    }
    shares = kw.get("shares", (1.0, 0.0, 0.0))
    for s, v in zip(SOURCES, shares):
        row[f"share.{s}"] = float(v)
    return row


def to_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["budget_flops"] = df["budget_flops"].astype("float64")
    return df


def isoflop_table(seed=0, noise=0.005, budgets=BUDGETS, sizes_per_budget=7, p=CHIN, schedules=("linear",), span=1.6):
    """Per budget, sizes spread around the planted optimum (D = C/6N), final rows of every group
    (modalities offset from `all`) plus one intermediate checkpoint per trial."""
    rng = np.random.default_rng(seed)
    rows = []
    g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    for c in budgets:
        n_star = g * (c / 6) ** (p["beta"] / (p["alpha"] + p["beta"]))
        for s, sched in enumerate(schedules):
            for n in n_star * np.exp(np.linspace(-span, span, sizes_per_budget)):
                n = int(n)
                d = int(c / (6 * n))
                trial = f"C{c:.2g}_N{n}_{sched}"
                base = chinchilla_loss(n, d, p) * (1 + 0.02 * s)
                kw = dict(params_non_embedding=n, tokens=d, budget_flops=c, schedule=sched, flops=6.0 * n * d)
                for group, off in (("all", 0.0), ("text", 0.3), ("image", -0.2), ("audio", 0.1)):
                    rows.append(_row(trial, group, (base + off) * np.exp(noise * rng.standard_normal()), **kw))
                # an intermediate checkpoint, above the final loss: must not enter a `final` fit
                mid = dict(kw, tokens=d // 2, flops=3.0 * n * d, final=False, step=500, budget_flops=np.nan)
                rows.append(_row(trial, "all", chinchilla_loss(n, d // 2, p) + 0.05, **mid))
    return to_frame(rows)


def mixing_table(seed=0, noise=0.003, n=30, alpha=2.0):
    """Mixtures drawn from a Dirichlet around equal shares at one scale; losses from MIX."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        r = rng.dirichlet([alpha] * len(SOURCES))
        kw = dict(shares=r, budget_flops=1e17)
        total = 0.0
        for mod in MIX:
            loss = mixing_loss(mod, r) * np.exp(noise * rng.standard_normal())
            total += loss / len(MIX)
            rows.append(_row(f"mix{i}", mod, loss, **kw))
        rows.append(_row(f"mix{i}", "all", total, **kw))
    return to_frame(rows)


def batch_table(seed=0, noise=0.002, budgets=(1e16, 1e17, 1e18, 1e19), b_law=(0.292, 0.3271), lr_law=(0.3118, -0.125)):
    """Per budget a 5x5 grid of (batch, lr) around the planted optimum; loss quadratic in logs."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        b_opt, lr_opt = b_law[0] * c ** b_law[1], lr_law[0] * c ** lr_law[1]
        for db in np.linspace(-1.2, 1.2, 5):
            for dl in np.linspace(-1.2, 1.2, 5):
                b, lr = int(round(b_opt * np.exp(db))), lr_opt * np.exp(dl)
                loss = (3.0 - 0.05 * np.log10(c)) * (
                    1 + 0.02 * (np.log(b / b_opt)) ** 2 + 0.03 * dl**2 + 0.01 * db * dl
                )
                kw = dict(logical_batch=b, lr_base=lr, budget_flops=c, flops=c)
                rows.append(
                    _row(f"C{c:.0e}_B{b}_lr{lr:.3g}", "all", loss * np.exp(noise * rng.standard_normal()), **kw)
                )
    return to_frame(rows)
