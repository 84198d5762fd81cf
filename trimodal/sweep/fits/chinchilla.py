"""Chinchilla Approach 3: L(N, D) = E + A/N^α + B/D^β, and the compute-optimal N*(C), D*(C).

Fitted as Besiroglu et al. (arXiv 2404.10102) replicate Hoffmann et al. (arXiv 2203.15556):
log L ≈ LSE(a − α log N, b − β log D, e) with E = e^e, A = e^a, B = e^b, a Huber loss (δ = 1e-3)
on the log residuals, L-BFGS from a grid of starting points, the best minimum kept. The grid is
over (α, β); for each pair E, A, B are linear and a non-negative least-squares solve gives
their starting values (the variable-projection idea of arXiv 2603.22339), so 16 starts cover
what a 5-D grid of thousands covers; L-BFGS runs from the 4 whose starting objective is
lowest. `starts="besiroglu"` runs their whole 4,500-point grid instead (minutes; a check).
Bootstrap refits start from the point estimate.

Compute: C = M(N)·D with M(N) = m·N^g, the FLOPs per token fitted to the table's own rows
(attention and the output layer included; 6N when only one size was run). Minimizing L(N, C/M(N))
gives N* = G·(C/m)^(β/(α+gβ)), G = (αA/(gβB))^(1/(α+gβ)), D* = C/M(N*): exponents a = β/(α+gβ)
and b = 1 − g·a (β/(α+β) and α/(α+β) when g = 1).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from trimodal.errors import ConfigError
from trimodal.sweep.fits.common import (
    LEVEL,
    FitResult,
    bootstrapped,
    fit_result,
    huber,
    largest_budget_split,
    minimize_multistart,
    relative_error,
)
from trimodal.sweep.fits.data import FlopsPerToken, budget_key, pick_split, select

N_COLUMNS = ("params_non_embedding", "params")
EXP_GRID = (0.1, 0.25, 0.5, 0.8)
BOUNDS = [(-20.0, 50.0), (-20.0, 50.0), (-20.0, 50.0), (1e-4, 3.0), (1e-4, 3.0)]  # e, a, b, α, β
PARAMS = ("E", "A", "B", "alpha", "beta")
N_STARTS = 4


def predict(theta: dict, n, d) -> np.ndarray:
    return (
        theta["E"]
        + theta["A"] / np.asarray(n, float) ** theta["alpha"]
        + theta["B"] / np.asarray(d, float) ** theta["beta"]
    )


def _objective(x, log_n, log_d, log_l):
    e, a, b, al, be = x
    u = np.stack([a - al * log_n, b - be * log_d, np.full_like(log_n, e)])
    top = u.max(axis=0)
    w = np.exp(u - top)
    s = w.sum(axis=0)
    r = top + np.log(s) - log_l
    loss, dr = huber(r)
    w = dr * w / s  # d loss / d u_i
    grad = np.array([w[2].sum(), w[0].sum(), w[1].sum(), -(w[0] * log_n).sum(), -(w[1] * log_d).sum()])
    return float(loss.sum()), grad


def _grid_starts(n, d, l) -> list[np.ndarray]:
    """(e, a, b, α, β) starts: per (α, β) of the grid, E, A, B ≥ 0 by least squares, ranked by objective."""
    starts = []
    for al in EXP_GRID:
        for be in EXP_GRID:
            X = np.stack([np.ones_like(n), n**-al, d**-be], axis=1)
            coef, _ = nnls(X, l)
            coef = np.maximum(coef, 1e-3 * l.min())
            starts.append(np.array([np.log(coef[0]), np.log(coef[1]), np.log(coef[2]), al, be]))
    return starts


def _besiroglu_starts(n, d, l) -> list[np.ndarray]:
    """Besiroglu et al.'s grid: α, β ∈ {0, 0.5, .., 2}, e ∈ {-1, -0.5, .., 1}, a, b ∈ {0, 5, .., 25}
    (4,500 starts, every one run: minutes, for checking the projected starts)."""
    grid = itertools.product(
        np.arange(0, 2.5, 0.5),
        np.arange(0, 2.5, 0.5),
        np.arange(-1, 1.5, 0.5),
        np.arange(0, 30, 5),
        np.arange(0, 30, 5),
    )
    return [np.array([e, a, b, max(al, 1e-4), max(be, 1e-4)]) for al, be, e, a, b in grid]


def _projected_starts(n, d, l) -> list[np.ndarray]:
    """The N_STARTS grid starts (E, A, B by NNLS per (α, β)) of lowest objective."""
    args = (np.log(n), np.log(d), np.log(l))
    return sorted(_grid_starts(n, d, l), key=lambda x: _objective(x, *args)[0])[:N_STARTS]


STARTS = {"projected": _projected_starts, "besiroglu": _besiroglu_starts}


def fit_points(n, d, l, starts=None):
    """The fitted (E, A, B, α, β) as a dict, and whether L-BFGS converged. `starts`: a list of
    (e, a, b, α, β) or a name in STARTS (default "projected")."""
    n, d, l = (np.asarray(v, float) for v in (n, d, l))
    args = (np.log(n), np.log(d), np.log(l))
    if starts is None or isinstance(starts, str):
        starts = STARTS[starts or "projected"](n, d, l)
    opt = minimize_multistart(lambda x: _objective(x, *args), starts, BOUNDS)
    e, a, b, al, be = opt.x
    return {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": al, "beta": be}, opt.converged


def compute_optimal(theta: dict, flops: FlopsPerToken, c) -> tuple[np.ndarray, np.ndarray]:
    """N*(C), D*(C) under C = m·N^g·D."""
    al, be, g, m = theta["alpha"], theta["beta"], flops.g, flops.m
    G = (al * theta["A"] / (g * be * theta["B"])) ** (1 / (al + g * be))
    n_opt = G * (np.asarray(c, float) / m) ** (be / (al + g * be))
    return n_opt, np.asarray(c, float) / flops(n_opt)


def check(df: pd.DataFrame, n_col: str, what: str = "") -> None:
    """Refuse data that cannot determine the five parameters."""
    for col, name in ((n_col, "N"), ("tokens", "D")):
        k = df[col].nunique()
        if k < 3:
            raise ConfigError(f"chinchilla{what}: {k} distinct {name} ({col}); the law needs at least 3")
    if len(df) < 8:
        raise ConfigError(f"chinchilla{what}: {len(df)} points for 5 parameters; need at least 8")


def _theta_of(df, n_col, starts=None):
    return fit_points(df[n_col], df["tokens"], df["nelbo"], starts)


def fit_chinchilla(
    df: pd.DataFrame,
    target: str = "all",
    rows: str = "final",
    split: str | None = None,
    n_col: str = "params_non_embedding",
    n_bootstrap: int = 100,
    seed: int = 0,
    level: float = LEVEL,
    starts: str = "projected",
) -> FitResult:
    if n_col not in N_COLUMNS:
        raise ConfigError(f"--n: {n_col!r} is not one of {list(N_COLUMNS)}")
    if starts not in STARTS:
        raise ConfigError(f"--starts: {starts!r} is not one of {list(STARTS)}")
    split = pick_split(df, split)
    data = select(df, target, rows, split)
    check(data, n_col)
    flops = FlopsPerToken(*(data[c].to_numpy(float) for c in (n_col, "flops", "tokens")))
    budgets = budget_key(data)
    theta, converged = _theta_of(data, n_col, starts)
    warnings = [] if converged else ["L-BFGS did not converge at the best start"]
    for name, (lo, hi) in zip(("alpha", "beta"), BOUNDS[3:]):
        if theta[name] < lo * 10 or theta[name] > hi * 0.99:
            warnings.append(f"{name} = {theta[name]:.3g} is at its bound [{lo}, {hi}]: the data do not determine it")

    for term, coef, x, exp in (("A/N^alpha", "A", n_col, "alpha"), ("B/D^beta", "B", "tokens", "beta")):
        # a term that vanishes on every point leaves its exponent free: any value fits
        if np.max(theta[coef] / data[x].to_numpy(float) ** theta[exp]) < 1e-3 * data["nelbo"].min():
            warnings.append(f"{term} is below 0.1% of the loss at every point: the data do not determine {exp}")

    # the table's budgets (at most 8, spread in log) for N*, D* with their intervals
    cs = np.unique(budgets)
    if len(cs) > 8:
        cs = np.exp(np.linspace(np.log(cs.min()), np.log(cs.max()), 8))
    best_starts = [
        np.array([np.log(theta["E"]), np.log(theta["A"]), np.log(theta["B"]), theta["alpha"], theta["beta"]])
    ]

    def derived_of(th):
        g = flops.g
        a = th["beta"] / (th["alpha"] + g * th["beta"])
        n_opt, d_opt = compute_optimal(th, flops, cs)
        out = {"a": a, "b": 1 - g * a}
        out.update({f"N_opt@{i}": v for i, v in enumerate(n_opt)})
        out.update({f"D_opt@{i}": v for i, v in enumerate(d_opt)})
        return out

    def fit_once(sample):
        th, _ = _theta_of(sample, n_col, best_starts)
        return {**th, **derived_of(th)}

    est, draws, more = bootstrapped(data, fit_once, {**theta, **derived_of(theta)}, n_bootstrap, seed, level)
    warnings += more
    n_opt, d_opt = compute_optimal(theta, flops, cs)
    table = [
        {
            "C": float(c),
            "N_opt": est[f"N_opt@{i}"],
            "D_opt": est[f"D_opt@{i}"],
            "L_opt": float(predict(theta, n_opt[i], d_opt[i])),
        }
        for i, c in enumerate(cs)
    ]
    resid = np.log(data["nelbo"].to_numpy()) - np.log(predict(theta, data[n_col], data["tokens"]))
    return fit_result(
        "chinchilla",
        data,
        target,
        rows,
        split,
        n_bootstrap,
        level,
        draws,
        params={k: est[k] for k in PARAMS},
        derived={k: est[k] for k in ("a", "b")},
        table=table,
        leave_out=_leave_largest_out(data, budgets, n_col),
        warnings=warnings,
        converged=converged,
        info={
            "n_column": n_col,
            "starts": starts,
            "flops_per_token": flops.to_dict(),
            "rmse_log": float(np.sqrt(np.mean(resid**2))),
        },
    )


def _leave_largest_out(data, budgets, n_col) -> dict:
    """Refit without the largest compute budget (or, with no budgets in the table, without the
    top fifth of points by FLOPs) and predict the held-out losses."""
    if np.unique(budgets).size >= 2:
        held, top = largest_budget_split(budgets)
        what = f"largest budget C={top:.3g}"
    else:
        held = data["flops"].to_numpy() >= np.quantile(data["flops"], 0.8)
        what = "top fifth of points by FLOPs"
    rest = data[~held]
    try:
        check(rest, n_col, " without the largest budget")
        theta, _ = _theta_of(rest, n_col)
    except (ConfigError, ValueError, FloatingPointError) as e:
        return {"held_out": what, "skipped": str(e)}
    pred = predict(theta, data.loc[held, n_col], data.loc[held, "tokens"])
    return {"held_out": what, "n": int(held.sum()), **relative_error(pred, data.loc[held, "nelbo"])}
