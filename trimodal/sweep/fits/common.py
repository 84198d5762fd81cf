"""What every law shares: the Huber-in-log-space objective, multi-start L-BFGS, the trial
bootstrap, power laws through optima, and the typed result.

Following Besiroglu et al. (arXiv 2404.10102), each law is fitted to log L with a Huber loss
(δ = 1e-3: residuals of a few tenths of a percent count as squared, larger ones linearly, so a
diverged run does not drag the fit) minimized by L-BFGS from several starting points, keeping
the best. Intervals are percentile bootstrap intervals over trials: the fit is redone on trials
drawn with replacement (within each budget where the law is per budget), so they say how much
the parameters move with the sample of runs, not with the optimizer.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from trimodal.errors import ConfigError

DELTA = 1e-3
LEVEL = 0.95


def huber(r: np.ndarray, delta: float = DELTA) -> tuple[np.ndarray, np.ndarray]:
    """The Huber loss of residuals r, divided by δ (same minimizer, better scaled for L-BFGS), and its derivative."""
    a = np.abs(r)
    quad = a <= delta
    loss = np.where(quad, 0.5 * r * r / delta, a - 0.5 * delta)
    grad = np.where(quad, r / delta, np.sign(r))
    return loss, grad


@contextlib.contextmanager
def one_blas_thread():
    """OpenBLAS on one thread while fitting (what threadpoolctl does, without the dependency).

    The fits solve thousands of tiny problems; L-BFGS-B's BLAS calls then spend their time
    waking OpenBLAS threads, 50-100x slower on a busy machine than one thread. Libraries
    without the per-thread setter are left alone.
    """
    libs = []
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and line.rstrip().endswith(".so")}
        for path in sorted(paths):
            fn = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
            if fn is not None:
                fn.restype = ctypes.c_int
                libs.append((fn, fn(1)))
    except OSError:
        pass
    try:
        yield
    finally:
        for fn, old in libs:
            fn(old)


@dataclass
class Optimum:
    x: np.ndarray
    fun: float
    converged: bool
    starts: int


def minimize_multistart(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    starts: Iterable[np.ndarray],
    bounds: list[tuple[float | None, float | None]] | None = None,
) -> Optimum:
    """L-BFGS(-B) from every start (fun returns value and gradient); the lowest minimum wins."""
    best, n = None, 0
    for x0 in starts:
        n += 1
        r = minimize(
            fun,
            np.asarray(x0, float),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
        )
        if np.isfinite(r.fun) and (best is None or r.fun < best.fun):
            best = r
    if best is None:
        raise FloatingPointError("no start gave a finite objective")
    # ABNORMAL_TERMINATION in a line search at a flat optimum is common with Huber; call it
    # converged when the gradient is small relative to the number of residuals
    ok = bool(best.success) or float(np.max(np.abs(best.jac))) < 1e-4
    return Optimum(np.asarray(best.x), float(best.fun), ok, n)


def fit_linear_huber(X: np.ndarray, y: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Huber-robust coefficients c of y ≈ X·c, by L-BFGS from `start`."""

    def fun(c):
        r = X @ c - y
        loss, dr = huber(r)
        return float(loss.sum()), X.T @ dr

    return minimize_multistart(fun, [start]).x


@dataclass
class Estimate:
    """A fitted value and its bootstrap interval (None without bootstrap)."""

    value: float
    lo: float | None = None
    hi: float | None = None

    def to_dict(self) -> dict:
        return {"value": _num(self.value), "lo": _num(self.lo), "hi": _num(self.hi)}

    def covers(self, x: float) -> bool:
        return self.lo is not None and self.lo <= x <= self.hi


@dataclass
class FitResult:
    """One law fitted to one target. `params` are the law's parameters, `derived` what follows
    from them (exponents of the compute-optimal allocation, optimal shares), `table` per-budget
    rows; `samples` holds the bootstrap draws for plots and stays out of the JSON."""

    law: str
    target: str
    rows: str
    split: str
    n_points: int
    n_trials: int
    params: dict[str, Estimate]
    derived: dict[str, Estimate] = field(default_factory=dict)
    table: list[dict] = field(default_factory=list)
    leave_out: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    converged: bool = True
    bootstrap: int = 0
    level: float = LEVEL
    info: dict = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {
            "law": self.law,
            "target": self.target,
            "rows": self.rows,
            "split": self.split,
            "n_points": self.n_points,
            "n_trials": self.n_trials,
            "converged": self.converged,
            "bootstrap": self.bootstrap,
            "level": self.level,
            "params": {k: v.to_dict() for k, v in self.params.items()},
            "derived": {k: v.to_dict() for k, v in self.derived.items()},
            "table": [_jsonable(r) for r in self.table],
            "leave_out": _jsonable(self.leave_out),
            "warnings": list(self.warnings),
            "info": _jsonable(self.info),
        }


def fit_result(
    law: str,
    data: pd.DataFrame,
    target: str,
    rows: str,
    split: str,
    n_bootstrap: int,
    level: float,
    draws: dict[str, np.ndarray],
    **fields,
) -> FitResult:
    """A law's FitResult over the rows of `data`: its points and trials are counted there unless
    `fields` gives `n_points`, `n_trials`."""
    fields.setdefault("n_points", len(data))
    fields.setdefault("n_trials", data["trial"].nunique())
    return FitResult(
        law=law, target=target, rows=rows, split=split, bootstrap=n_bootstrap, level=level, samples=draws, **fields
    )


def leave_out_items(leave_out: dict) -> list[tuple[str, Any]]:
    """The figures of a leave-out to print: all but `held_out` and the per-modality blocks."""
    return [(k, v) for k, v in leave_out.items() if k != "held_out" and not isinstance(v, dict)]


def _num(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [_jsonable(v) for v in x]
    if isinstance(x, Estimate):
        return x.to_dict()
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return _num(x)
    return x


def resample_trials(df: pd.DataFrame, rng: np.random.Generator, strata: str | None = None) -> pd.DataFrame:
    """Trials drawn with replacement (all rows of a drawn trial come along); within each stratum
    when `strata` names a column, so that every budget keeps its number of trials."""
    parts = []
    groups = [df] if strata is None else [g for _, g in df.groupby(strata, sort=True)]
    for g in groups:
        trials = g["trial"].unique()
        pick = rng.choice(trials, size=len(trials), replace=True)
        by = dict(tuple(g.groupby("trial", sort=False)))
        # a trial drawn twice becomes two trials, so a nested resample or a count stays right
        parts += [by[t].assign(trial=f"{t}#{i}") for i, t in enumerate(pick)]
    return pd.concat(parts, ignore_index=True)


def bootstrap(
    df: pd.DataFrame,
    fit_once: Callable[[pd.DataFrame], dict[str, float]],
    n: int,
    seed: int = 0,
    strata: str | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """`fit_once` on `n` trial resamples: each key's draws, and how many resamples failed to fit."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    failed = 0
    for _ in range(n):
        try:
            out = fit_once(resample_trials(df, rng, strata))
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            failed += 1
            continue
        for k, v in out.items():
            draws.setdefault(k, []).append(v)
    return {k: np.asarray(v, float) for k, v in draws.items()}, failed


def interval(draws: np.ndarray | None, level: float = LEVEL) -> tuple[float | None, float | None]:
    """The percentile interval of bootstrap draws (None when there are too few)."""
    if draws is None:
        return None, None
    d = draws[np.isfinite(draws)]
    if len(d) < 2:
        return None, None
    q = (1 - level) / 2
    return float(np.quantile(d, q)), float(np.quantile(d, 1 - q))


def estimates(point: dict[str, float], draws: dict[str, np.ndarray], level: float = LEVEL) -> dict[str, Estimate]:
    return {k: Estimate(float(v), *interval(draws.get(k), level)) for k, v in point.items()}


def bootstrap_warnings(n: int, failed: int) -> list[str]:
    if n and failed > n // 10:
        return [f"{failed} of {n} bootstrap resamples could not be fitted; intervals use the rest"]
    return []


def bootstrapped(
    data: pd.DataFrame,
    fit_once: Callable[[pd.DataFrame], dict[str, float]],
    point: dict[str, float],
    n: int,
    seed: int,
    level: float,
    strata: str | None = None,
) -> tuple[dict[str, Estimate], dict[str, np.ndarray], list[str]]:
    """`point` with the intervals of `fit_once` on `n` trial resamples (none when n is 0): the
    estimates, the draws and the warnings about failed resamples."""
    draws, failed = bootstrap(data, fit_once, n, seed, strata) if n else ({}, 0)
    return estimates(point, draws, level), draws, bootstrap_warnings(n, failed)


def per_budget(optima: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """The optima's `keys` as `key@i` (i: the budget's index), the values the bootstrap redraws."""
    return {f"{k}@{i}": o[k] for i, o in enumerate(optima) for k in keys}


def budget_table(optima: list[dict], est: dict[str, Estimate], keys: tuple[str, ...]) -> list[dict]:
    """The optima as table rows, their `keys` replaced by the estimates of `per_budget`."""
    return [{**o, **{k: est[f"{k}@{i}"] for k in keys}} for i, o in enumerate(optima)]


def need_two_budgets(optima: list[dict], refusal: str) -> list[str]:
    """Refuse (ConfigError `refusal`) fewer than 2 fitted budgets; warn at exactly 2."""
    if len(optima) < 2:
        raise ConfigError(refusal)
    return ["only 2 budgets: the power laws pass exactly through them"] if len(optima) == 2 else []


def power_laws(optima: list[dict], laws: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Per name in `laws`, the power law through the optima's `name` against their budget C:
    its (coefficient, exponent), under the names `laws` gives them."""
    c = np.array([o["C"] for o in optima])
    out = {}
    for name, (k, e) in laws.items():
        out[k], out[e] = power_law(c, np.array([o[name] for o in optima]))
    return out


def leave_largest_budget_out(optima: list[dict], laws: dict[str, tuple[str, str]]) -> dict:
    """The power laws of `laws` (as in power_laws) through all optima but the largest budget's,
    predicting its optimum."""
    top = optima[-1]
    what = f"largest budget C={top['C']:.3g}"
    if len(optima) < 3:
        return {"held_out": what, "skipped": "needs 3 budgets (2 to fit, 1 to predict)"}
    fitted = power_laws(optima[:-1], laws)
    out: dict = {"held_out": what}
    for name, (k, e) in laws.items():
        pred = fitted[k] * top["C"] ** fitted[e]
        out.update(
            {f"{name}_predicted": pred, f"{name}_fitted": top[name], f"{name}_rel_error": abs(pred / top[name] - 1)}
        )
    return out


def power_law(c: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(k, exponent) of y = k·c^exponent by least squares in log-log."""
    if len(np.unique(c)) < 2:
        raise ValueError("a power law needs two distinct budgets")
    e, logk = np.polyfit(np.log(c), np.log(y), 1)
    return float(np.exp(logk)), float(e)


def largest_budget_split(budget: np.ndarray) -> tuple[np.ndarray, float]:
    """The mask of rows at the largest budget, and that budget."""
    top = float(np.nanmax(budget))
    return np.isclose(budget, top, rtol=1e-6), top


def relative_error(pred: np.ndarray, obs: np.ndarray) -> dict:
    pred, obs = np.asarray(pred, float), np.asarray(obs, float)
    rel = np.abs(pred - obs) / np.abs(obs)
    return {
        "mean_abs_rel_error": float(np.mean(rel)),
        "max_abs_rel_error": float(np.max(rel)),
        "rmse_log": float(np.sqrt(np.mean((np.log(pred) - np.log(obs)) ** 2))),
    }
