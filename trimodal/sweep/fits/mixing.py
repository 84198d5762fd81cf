"""Data mixing laws (Ye et al., arXiv 2403.16952): per modality m, L_m(r) = c_m + k_m·exp(Σ_j t_mj·r_j)
over the share vector r of the mix sources, and the shares minimizing Σ_m w_m·L_m(r) on the simplex.

Identifiability: the shares sum to 1, so adding a constant to every t_mj only rescales k_m; the
last source (in column order) is the reference with t = 0, and each t_mj says how the loss moves
when share moves from the reference to source j. c_m, k_m > 0 (fitted as logs). Fitted to log L
with the Huber loss (δ = 1e-3) by L-BFGS from many starts (a grid of c/k splits times random t),
as Ye et al. do. A law with m sources has m + 1 parameters per modality; RegMix and Olmix
(arXiv 2407.01492, 2602.12237) ask for at least 3(m + 1) mixtures, and fewer are refused.

The law holds at one scale: when the table has several (budgets or model sizes), it is fitted at
the scale with the most mixtures and the others are named in a warning. The optimum is found by
L-BFGS over softmax logits from the uniform mix and the sampled mixtures of lowest predicted
loss (a bootstrap refit from the point optimum); one far outside the sampled mixtures is
an extrapolation and is flagged. Intervals: mixtures resampled, every law and the optimum refitted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trimodal.errors import ConfigError
from trimodal.sweep.fits.common import (
    LEVEL,
    FitResult,
    bootstrapped,
    fit_result,
    huber,
    minimize_multistart,
    relative_error,
)
from trimodal.sweep.fits.data import pick_split, share_columns

MODALITIES = ("text", "image", "audio")
N_RANDOM_STARTS = 6
N_OPT_STARTS = 6


def predict(p: dict, r: np.ndarray) -> np.ndarray:
    """L(r) of one modality's parameters {"c", "k", "t": [...]} at shares r (..., m)."""
    return p["c"] + p["k"] * np.exp(np.asarray(r, float) @ np.asarray(p["t"], float))


def _objective(x, r, y):
    # x = (log c, log k, t_1 .. t_{m-1}); r without the reference column
    u0 = np.full_like(y, x[0])
    u1 = x[1] + r @ x[2:]
    top = np.maximum(u0, u1)
    e0, e1 = np.exp(u0 - top), np.exp(u1 - top)
    s = e0 + e1
    loss, dr = huber(top + np.log(s) - y)
    w0, w1 = dr * e0 / s, dr * e1 / s
    return float(loss.sum()), np.concatenate([[w0.sum(), w1.sum()], r.T @ w1])


def fit_modality(shares: np.ndarray, loss: np.ndarray, rng: np.random.Generator, starts=None) -> tuple[dict, bool]:
    """(c, k, t) of one modality (t with the reference's 0 appended) and whether L-BFGS converged."""
    r, y = shares[:, :-1], np.log(loss)
    if starts is None:
        lo = loss.min()
        starts = []
        for frac in (0.3, 0.6, 0.9):  # c as a fraction of the smallest loss, k the rest
            for _ in range(N_RANDOM_STARTS // 3):
                starts.append(
                    np.concatenate([[np.log(frac * lo), np.log((1 - frac) * lo)], rng.normal(0, 2, r.shape[1])])
                )
            starts.append(np.concatenate([[np.log(frac * lo), np.log((1 - frac) * lo)], np.zeros(r.shape[1])]))
    opt = minimize_multistart(lambda x: _objective(x, r, y), starts, [(-30, 10), (-30, 10)] + [(-50, 50)] * r.shape[1])
    return {
        "c": float(np.exp(opt.x[0])),
        "k": float(np.exp(opt.x[1])),
        "t": [*map(float, opt.x[2:]), 0.0],
    }, opt.converged


def _x_of(p):
    return np.concatenate([[np.log(p["c"]), np.log(p["k"])], p["t"][:-1]])


def optimal_shares(laws: dict[str, dict], weights: dict[str, float], starts: np.ndarray) -> np.ndarray:
    """The shares on the simplex minimizing Σ w_m·L_m(r), by L-BFGS over softmax logits."""

    def fun(z):
        r = np.exp(z - z.max())
        r /= r.sum()
        val, g_r = 0.0, np.zeros_like(r)
        for mod, p in laws.items():
            t = np.asarray(p["t"])
            e = p["k"] * np.exp(r @ t)
            val += weights[mod] * (p["c"] + e)
            g_r += weights[mod] * e * t
        return val, r * (g_r - r @ g_r)  # softmax Jacobian

    # from the uniform mix and the starting mixtures with the lowest predicted loss
    starts = np.asarray(starts, float)
    total = sum(weights[m] * predict(p, starts) for m, p in laws.items())
    best = starts[np.argsort(total)[:N_OPT_STARTS]]
    x0s = [np.zeros(starts.shape[1])] + [np.log(np.clip(s, 1e-3, None)) for s in best]
    z = minimize_multistart(fun, x0s).x
    r = np.exp(z - z.max())
    return r / r.sum()


def parse_weights(spec: str | None, modalities: list[str]) -> dict[str, float]:
    """`text=1,image=2` -> weights; modalities not named weigh 1 when no spec is given, else 0."""
    if not spec:
        return dict.fromkeys(modalities, 1.0)
    out = dict.fromkeys(modalities, 0.0)
    for part in spec.split(","):
        key, _, val = part.partition("=")
        key = key.strip()
        if key not in modalities:
            raise ConfigError(f"--weights: {key!r} is not a fitted modality ({modalities})")
        try:
            out[key] = float(val)
        except ValueError:
            raise ConfigError(f"--weights: {part!r} is not name=number") from None
    if not any(v > 0 for v in out.values()) or any(v < 0 for v in out.values()):
        raise ConfigError("--weights: need non-negative weights, one of them positive")
    return out


def _at_one_scale(df: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    scale = df["budget_flops"].fillna(-1.0).astype(str) + "|" + df["params_non_embedding"].astype(str)
    counts = df.assign(_s=scale).groupby("_s")["trial"].nunique()
    if len(counts) > 1:
        best = counts.idxmax()
        warnings.append(
            f"{len(counts)} scales in the table; the law is fitted at the one with most mixtures ({counts[best]})"
        )
        return df[scale == best]
    return df


def fit_mixing(
    df: pd.DataFrame,
    target: str = "all",
    rows: str = "final",
    split: str | None = None,
    weights: str | None = None,
    n_bootstrap: int = 100,
    seed: int = 0,
    level: float = LEVEL,
) -> FitResult:
    split = pick_split(df, split)
    base = df[(df["split"] == split) & (df["final"].astype(bool) if rows == "final" else df["budget_flops"].notna())]
    present = sorted(set(base["group"]))
    if target == "all":
        mods = [m for m in MODALITIES if m in present]
    elif target in present:
        mods = [target]
    else:
        raise ConfigError(f"--target: {target!r} is not a group of the table (has {present})")
    if not mods:
        raise ConfigError("mixing: the table has no per-modality rows")
    cols = share_columns(base)
    if len(cols) < 2:
        raise ConfigError(f"mixing: {len(cols)} mix source(s) with a share; a mixing law needs at least 2")
    warnings: list[str] = []
    base = _at_one_scale(base[base["group"].isin(mods)], warnings)
    wide = base.pivot_table(index="trial", columns="group", values="nelbo", aggfunc="mean").dropna()
    shares = base.groupby("trial")[cols].first().loc[wide.index]
    m = len(cols)
    n_mix = len(np.unique(shares.to_numpy().round(6), axis=0))
    if n_mix < 3 * (m + 1):
        raise ConfigError(
            f"mixing: {n_mix} distinct mixtures for {m} sources; the law needs at least 3(m+1) = {3 * (m + 1)}"
        )
    w = parse_weights(weights, mods)
    data = pd.concat([shares, wide], axis=1).reset_index()
    rng = np.random.default_rng(seed)

    laws, converged = {}, True
    for mod in mods:
        laws[mod], ok = fit_modality(data[cols].to_numpy(), data[mod].to_numpy(), rng)
        converged &= ok
    if not converged:
        warnings.append("L-BFGS did not converge for at least one modality")
    for mod, p in laws.items():
        if max(abs(v) for v in p["t"]) > 45:
            warnings.append(f"{mod}: a coefficient t is at its bound (±50): the mixtures do not determine it")
    sampled = data[cols].to_numpy()
    r_opt = optimal_shares(laws, w, sampled)
    gap = np.min(np.linalg.norm(sampled - r_opt, axis=1))
    spread = np.max([np.sort(np.linalg.norm(sampled - s, axis=1))[1] for s in sampled])
    if gap > spread:
        warnings.append(
            f"the optimal shares are {gap:.2f} from the nearest mixture run (beyond the sampled region): extrapolated"
        )

    def flat(lw, r):
        out = {}
        for mod, p in lw.items():
            out[f"{mod}.c"], out[f"{mod}.k"] = p["c"], p["k"]
            out.update({f"{mod}.t[{c.removeprefix('share.')}]": t for c, t in zip(cols[:-1], p["t"])})
        out.update({f"opt.{c}": v for c, v in zip(cols, r)})
        out.update({f"opt.L.{mod}": float(predict(p, r)) for mod, p in lw.items()})
        return out

    def fit_once(sample):
        lw = {
            mod: fit_modality(sample[cols].to_numpy(), sample[mod].to_numpy(), rng, [_x_of(laws[mod])])[0]
            for mod in mods
        }
        return flat(lw, optimal_shares(lw, w, [r_opt]))

    est, draws, more = bootstrapped(data, fit_once, flat(laws, r_opt), n_bootstrap, seed, level)
    warnings += more
    return fit_result(
        "mixing",
        data,
        target,
        rows,
        split,
        n_bootstrap,
        level,
        draws,
        n_points=len(data) * len(mods),
        n_trials=len(data),
        params={k: v for k, v in est.items() if not k.startswith("opt.")},
        derived={k: v for k, v in est.items() if k.startswith("opt.")},
        leave_out=_leave_extremes_out(data, cols, laws, rng),
        warnings=warnings,
        converged=converged,
        info={"sources": cols, "reference": cols[-1], "modalities": mods, "weights": w, "laws": laws},
    )


def _leave_extremes_out(data, cols, laws, rng) -> dict:
    """All mixtures sit at one scale, so there is no largest budget to hold out; the analogue is
    extrapolation in the shares: refit (from the full fit) without the fifth of mixtures farthest
    from the centre of the sampled shares, predict their losses."""
    mods = list(laws)
    r = data[cols].to_numpy()
    dist = np.linalg.norm(r - r.mean(axis=0), axis=1)
    k = max(1, len(r) // 5)
    held = np.zeros(len(r), bool)
    held[np.argsort(dist)[-k:]] = True
    what = f"the {k} mixtures farthest from the centre of the sampled shares"
    if (~held).sum() < 3 * (len(cols) + 1):
        return {"held_out": what, "skipped": "too few mixtures left to fit"}
    out = {"held_out": what, "n": int(k)}
    for mod in mods:
        p, _ = fit_modality(r[~held], data[mod].to_numpy()[~held], rng, [_x_of(laws[mod])])
        out[mod] = relative_error(predict(p, r[held]), data[mod].to_numpy()[held])
    out["mean_abs_rel_error"] = float(np.mean([out[m]["mean_abs_rel_error"] for m in mods]))
    return out
