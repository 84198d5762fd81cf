"""The best batch size and learning rate against compute, in DeepSeek LLM's form (arXiv 2401.02954):
B_opt = k_B·C^b_B and η_opt = k_η·C^b_η through the best (logical_batch, lr_base) of each budget.

Per compute budget (the points' `budget_flops`, else their FLOPs grouped within 2%), the best
point: with at least 3 batch sizes and 3 learning rates (6 points or more), the vertex of a
quadratic in (log B, log η) fitted to log L with the Huber loss — smoother than the grid's
argmin, which can only land on a grid value — kept when the quadratic is convex and its vertex
lies inside the grid; otherwise the grid's argmin (the table says which). DeepSeek instead fits
through every point within 0.25% of the best loss; with a dense grid both agree. B is the
`logical_batch` in sequences (the table's `seq_len` turns it into tokens). Intervals: trials
resampled within each budget, optima and power laws refitted. A budget where neither B nor η
varies is dropped; fewer than 2 budgets left is refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trimodal.sweep.fits.common import (
    LEVEL,
    FitResult,
    bootstrapped,
    budget_table,
    fit_linear_huber,
    fit_result,
    leave_largest_budget_out,
    need_two_budgets,
    per_budget,
    power_laws,
)
from trimodal.sweep.fits.data import budget_key, pick_split, select

MIN_POINTS = 3
OPTIMUM = ("B_opt", "lr_opt")
LAWS = {"B_opt": ("k_B", "b_B"), "lr_opt": ("k_lr", "b_lr")}  # optimum: (coefficient, exponent) of its law


def _quadratic_vertex(lb, ll, y):
    """Vertex (log B, log η) of a Huber-fitted quadratic surface, or None when not convex."""
    X = np.stack([np.ones_like(lb), lb, ll, lb * lb, ll * ll, lb * ll], axis=1)
    c = fit_linear_huber(X, y, np.linalg.lstsq(X, y, rcond=None)[0])
    H = np.array([[2 * c[3], c[5]], [c[5], 2 * c[4]]])
    if np.any(np.linalg.eigvalsh(H) <= 0):
        return None
    return np.linalg.solve(H, -c[1:3])


def budget_optimum(g: pd.DataFrame) -> dict:
    """The best (B, η) of one budget's points, by a quadratic surface or the argmin."""
    b, lr, y = (g[c].to_numpy(float) for c in ("logical_batch", "lr_base", "nelbo"))
    i = int(np.argmin(y))
    out = {"method": "argmin", "B_opt": b[i], "lr_opt": lr[i], "L_best": float(y[i])}
    if len(np.unique(b)) >= 3 and len(np.unique(lr)) >= 3 and len(g) >= 6:
        lb, ll = np.log(b), np.log(lr)
        cb, cl = lb.mean(), ll.mean()
        v = _quadratic_vertex(lb - cb, ll - cl, np.log(y))
        if v is not None and lb.min() <= v[0] + cb <= lb.max() and ll.min() <= v[1] + cl <= ll.max():
            out.update(method="quadratic", B_opt=float(np.exp(v[0] + cb)), lr_opt=float(np.exp(v[1] + cl)))
    return out


def _optima(data: pd.DataFrame, strict: bool) -> tuple[list[dict], list[str]]:
    out, warnings = [], []
    for c, g in data.groupby("budget", sort=True):
        if len(g) < MIN_POINTS:
            if strict:
                raise ValueError("too few points")
            warnings.append(f"budget C={c:.3g}: {len(g)} points; need at least {MIN_POINTS}, budget dropped")
            continue
        if g["logical_batch"].nunique() < 2 and g["lr_base"].nunique() < 2:
            if strict:
                raise ValueError("nothing varies")
            warnings.append(
                f"budget C={c:.3g}: one batch size and one learning rate; nothing to choose from, budget dropped"
            )
            continue
        out.append({"C": float(c), "n": len(g), **budget_optimum(g)})
    return out, warnings


def fit_batch(
    df: pd.DataFrame,
    target: str = "all",
    rows: str = "final",
    split: str | None = None,
    n_bootstrap: int = 100,
    seed: int = 0,
    level: float = LEVEL,
) -> FitResult:
    split = pick_split(df, split)
    data = select(df, target, rows, split)
    data = data.assign(budget=budget_key(data))
    optima, warnings = _optima(data, strict=False)
    warnings += need_two_budgets(
        optima,
        f"batch: {len(optima)} budget(s) with at least {MIN_POINTS} points over more than one batch size or learning rate; the power laws need 2",
    )
    for col in ("logical_batch", "lr_base"):
        if all(g[col].nunique() < 2 for _, g in data[data["budget"].isin([o["C"] for o in optima])].groupby("budget")):
            warnings.append(f"{col} takes one value per budget: its law only restates the values run")
    if any(o["method"] == "argmin" for o in optima):
        warnings.append("some budgets use the grid's argmin (too few values or no interior optimum): coarse")
    data = data[data["budget"].isin([o["C"] for o in optima])]

    def flat(opt):
        return {**power_laws(opt, LAWS), **per_budget(opt, OPTIMUM)}

    est, draws, more = bootstrapped(
        data, lambda s: flat(_optima(s, True)[0]), flat(optima), n_bootstrap, seed, level, "budget"
    )
    return fit_result(
        "batch",
        data,
        target,
        rows,
        split,
        n_bootstrap,
        level,
        draws,
        params={k: est[k] for k in ("k_B", "b_B", "k_lr", "b_lr")},
        table=budget_table(optima, est, OPTIMUM),
        leave_out=leave_largest_budget_out(optima, LAWS),
        warnings=warnings + more,
    )
