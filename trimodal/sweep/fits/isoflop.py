"""IsoFLOP profiles (Chinchilla Approach 2): a parabola in log N per compute budget, its optimum,
and power laws N* = k_N·C^a, D* = k_D·C^b through the optima.

Per budget C (the points' `budget_flops`), log L is fitted as a quadratic in log N with the
Huber loss of fits/common.py (δ = 1e-3, robust to a diverged run) by L-BFGS from the ordinary
least-squares parabola; the vertex is the budget's optimum N*, with D* = C / M(N*) under the
table's FLOPs-per-token relation. Power laws through the optima are least squares in log-log
(Hoffmann et al., arXiv 2203.15556, Approach 2).

The parabola is an approximation: on a grid off-centre from the optimum or too narrow it biases
N* (arXiv 2603.22339), so a vertex outside the sizes of its budget is flagged. Intervals:
trials resampled within each budget, the parabolas and power laws refitted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trimodal.errors import ConfigError
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
from trimodal.sweep.fits.data import FlopsPerToken, pick_split, select

MIN_SIZES = 3
OPTIMUM = ("N_opt", "D_opt", "L_opt")
LAWS = {"N_opt": ("k_N", "a"), "D_opt": ("k_D", "b")}  # optimum: (coefficient, exponent) of its law


def fit_parabola(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Huber-robust (c0, c1, c2) of y ≈ c0 + c1·x + c2·x² (x as given)."""
    X = np.stack([np.ones_like(x), x, x * x], axis=1)
    return fit_linear_huber(X, y, np.polyfit(x, y, 2)[::-1])


def _budget_optima(data: pd.DataFrame, n_col: str, flops: FlopsPerToken, strict: bool) -> tuple[list[dict], list[str]]:
    """Per budget: its parabola and vertex. Unfit budgets are dropped with a warning, or raise
    ValueError when `strict` (a bootstrap resample)."""
    out, warnings = [], []
    for c, g in data.groupby("budget_flops", sort=True):
        x, y = np.log(g[n_col].to_numpy(float)), np.log(g["nelbo"].to_numpy(float))
        k = len(np.unique(x))
        if k < MIN_SIZES:
            if strict:
                raise ValueError("too few sizes")
            warnings.append(f"budget C={c:.3g}: {k} distinct sizes; a parabola needs {MIN_SIZES}, budget dropped")
            continue
        mid = x.mean()  # centred: a better-conditioned quadratic
        c0, c1, c2 = fit_parabola(x - mid, y)
        if c2 <= 0:
            if strict:
                raise ValueError("no minimum")
            warnings.append(f"budget C={c:.3g}: the parabola opens downward (no minimum), budget dropped")
            continue
        xs = mid - c1 / (2 * c2)
        inside = bool(x.min() <= xs <= x.max())
        if not inside and not strict:
            warnings.append(
                f"budget C={c:.3g}: the optimum N*={np.exp(xs):.3g} lies outside the sizes run; extrapolated"
            )
        n_opt = float(np.exp(xs))
        out.append(
            {
                "C": float(c),
                "n": len(g),
                "N_opt": n_opt,
                "D_opt": float(c / flops(n_opt)),
                "L_opt": float(np.exp(c0 + c1 * (xs - mid) + c2 * (xs - mid) ** 2)),
                "parabola": [float(c0), float(c1), float(c2)],
                "log_n_centre": float(mid),
                "inside": inside,
            }
        )
    return out, warnings


def fit_isoflop(
    df: pd.DataFrame,
    target: str = "all",
    rows: str = "final",
    split: str | None = None,
    n_col: str = "params_non_embedding",
    n_bootstrap: int = 100,
    seed: int = 0,
    level: float = LEVEL,
) -> FitResult:
    split = pick_split(df, split)
    data = select(df, target, rows, split)
    data = data[data["budget_flops"].notna()]
    if data.empty:
        raise ConfigError("isoflop: no rows with budget_flops; the law needs an isoFLOP sweep (budget: in SWEEP.yaml)")
    flops = FlopsPerToken(*(data[c].to_numpy(float) for c in (n_col, "flops", "tokens")))
    optima, warnings = _budget_optima(data, n_col, flops, strict=False)
    warnings += need_two_budgets(
        optima, f"isoflop: {len(optima)} budget(s) with a fitted optimum; the power laws need at least 2"
    )
    kept = [o["C"] for o in optima]
    data = data[data["budget_flops"].isin(kept)]

    def flat(opt):
        return {**power_laws(opt, LAWS), **per_budget(opt, OPTIMUM)}

    est, draws, more = bootstrapped(
        data,
        lambda s: flat(_budget_optima(s, n_col, flops, strict=True)[0]),
        flat(optima),
        n_bootstrap,
        seed,
        level,
        strata="budget_flops",
    )
    return fit_result(
        "isoflop",
        data,
        target,
        rows,
        split,
        n_bootstrap,
        level,
        draws,
        params={k: est[k] for k in ("a", "k_N", "b", "k_D")},
        table=budget_table(optima, est, OPTIMUM),
        leave_out=leave_largest_budget_out(optima, LAWS),
        warnings=warnings + more,
        info={"n_column": n_col, "flops_per_token": flops.to_dict()},
    )
