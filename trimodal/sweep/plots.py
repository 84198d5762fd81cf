"""The report's figures, one function per plot, each writing one PNG (matplotlib, Agg backend).

Each function takes the table (and the fits it draws) and returns None when it wrote its file,
or a sentence saying why the plot cannot be drawn from this table; the report prints that
sentence instead of the plot. Nothing here fits: the curves come from the FitResults.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: no display on a cluster or in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402

from trimodal.sweep.fits import chinchilla, mixing  # noqa: E402
from trimodal.sweep.fits.common import FitResult  # noqa: E402
from trimodal.sweep.fits.data import FlopsPerToken  # noqa: E402

GROUP_ORDER = ("all", "text", "image", "audio")


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _frontier(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lower envelope: the lowest loss reached at or below each compute."""
    o = np.argsort(x)
    return x[o], np.minimum.accumulate(y[o])


def loss_vs_compute(df: pd.DataFrame, path: str) -> str | None:
    """Held-out loss against training FLOPs per modality (every checkpoint), with the frontier."""
    groups = [g for g in GROUP_ORDER if g in set(df["group"])]
    if not groups or df["flops"].le(0).all():
        return "no rows with FLOPs for the whole mix or a modality"
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    n = df["params_non_embedding"].to_numpy(float)
    norm = LogNorm(max(n.min(), 1), max(n.max(), 2))
    for ax, g in zip(axes[0], groups):
        d = df[(df["group"] == g) & (df["flops"] > 0)]
        sc = ax.scatter(d["flops"], d["nelbo"], c=d["params_non_embedding"], norm=norm, cmap="viridis", s=14)
        fx, fy = _frontier(d["flops"].to_numpy(float), d["nelbo"].to_numpy(float))
        ax.step(fx, fy, where="post", color="crimson", lw=1.5, label="frontier")
        ax.set(xscale="log", xlabel="training FLOPs C", ylabel="held-out NELBO (nats/token)", title=g)
        ax.legend(fontsize=8)
    fig.colorbar(sc, ax=axes[0, -1], label="non-embedding params")
    _save(fig, path)
    return None


def isoflop_curves(df: pd.DataFrame, fit: FitResult, path: str) -> str | None:
    """Per budget: loss against N with the fitted parabola and its vertex."""
    n_col = fit.info["n_column"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("plasma")
    for i, row in enumerate(fit.table):
        color = cmap(i / max(1, len(fit.table) - 1) * 0.85)
        pts = df[np.isclose(df["budget_flops"], row["C"])]
        ax.scatter(pts[n_col], pts["nelbo"], color=color, s=16)
        c0, c1, c2 = row["parabola"]
        x = np.linspace(np.log(pts[n_col].min()), np.log(pts[n_col].max()), 100) - row["log_n_centre"]
        ax.plot(
            np.exp(x + row["log_n_centre"]), np.exp(c0 + c1 * x + c2 * x * x), color=color, label=f"C={row['C']:.2g}"
        )
        ax.scatter([row["N_opt"].value], [row["L_opt"].value], marker="*", s=120, color=color, edgecolor="k", zorder=3)
    ax.set(
        xscale="log",
        xlabel=f"N ({n_col})",
        ylabel="held-out NELBO",
        title=f"isoFLOP profiles ({fit.target}); ★ optimum",
    )
    ax.legend(fontsize=8)
    _save(fig, path)
    return None


def _band(draws: list[np.ndarray], level: float):
    a = np.asarray(draws)
    q = (1 - level) / 2
    return np.quantile(a, q, axis=0), np.quantile(a, 1 - q, axis=0)


def optimal_allocation(iso: FitResult | None, chin: FitResult | None, path: str) -> str | None:
    """N*(C) and D*(C): isoFLOP optima with their intervals and power law, the Chinchilla
    law's N*(C), each with its bootstrap band."""
    if iso is None and chin is None:
        return "neither the isoflop nor the chinchilla law could be fitted"
    cs = [r["C"] for r in (iso or chin).table]
    grid = np.exp(np.linspace(np.log(min(cs)) - 0.5, np.log(max(cs)) + 0.5, 60))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key in zip(axes, ("N", "D")):
        if iso is not None:
            c = np.array([r["C"] for r in iso.table])
            est = [r[f"{key}_opt"] for r in iso.table]
            v = np.array([e.value for e in est])
            lo = np.array([e.lo if e.lo is not None else e.value for e in est])
            hi = np.array([e.hi if e.hi is not None else e.value for e in est])
            # a percentile interval need not contain the point estimate (few resamples)
            ax.errorbar(
                c, v, yerr=[np.maximum(v - lo, 0), np.maximum(hi - v, 0)], fmt="o", color="C0", label="isoFLOP optima"
            )
            k, e = iso.params[f"k_{key}"].value, iso.params["a" if key == "N" else "b"].value
            ax.plot(grid, k * grid**e, color="C0", label=f"isoFLOP: {key}* ∝ C^{e:.3f}")
            s = iso.samples
            if s.get(f"k_{key}") is not None and len(s[f"k_{key}"]) > 1:
                ex = s["a" if key == "N" else "b"]
                ax.fill_between(
                    grid, *_band([kk * grid**ee for kk, ee in zip(s[f"k_{key}"], ex)], iso.level), color="C0", alpha=0.2
                )
        if chin is not None:
            flops = FlopsPerToken.__new__(FlopsPerToken)
            flops.m, flops.g = chin.info["flops_per_token"]["m"], chin.info["flops_per_token"]["g"]
            theta = {k: v.value for k, v in chin.params.items()}
            n_opt, d_opt = chinchilla.compute_optimal(theta, flops, grid)
            exp = chin.derived["a" if key == "N" else "b"].value
            ax.plot(
                grid, n_opt if key == "N" else d_opt, color="C3", ls="--", label=f"Chinchilla fit: {key}* ∝ C^{exp:.3f}"
            )
            s = chin.samples
            if s.get("alpha") is not None and len(s["alpha"]) > 1:
                curves = []
                for i in range(len(s["alpha"])):
                    th = {k: s[k][i] for k in chinchilla.PARAMS}
                    curves.append(chinchilla.compute_optimal(th, flops, grid)[0 if key == "N" else 1])
                ax.fill_between(grid, *_band(curves, chin.level), color="C3", alpha=0.15)
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel=f"{key}*", title=f"compute-optimal {key}")
        ax.legend(fontsize=8)
    _save(fig, path)
    return None


def _to_xy(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric shares (…, 3) -> the plane, vertices at (0,0), (1,0), (1/2, √3/2)."""
    return r[..., 1] + 0.5 * r[..., 2], (np.sqrt(3) / 2) * r[..., 2]


def ternary(df: pd.DataFrame, cols: list[str], fit: FitResult | None, path: str) -> str | None:
    """Each modality's loss over the three sources' shares: the runs as points, the fitted
    mixing law as a filled contour, the optimal shares as a star."""
    if len(cols) != 3:
        return f"needs exactly 3 mix sources with a share (the table has {len(cols)})"
    mods = [m for m in mixing.MODALITIES if m in set(df["group"])]
    if not mods:
        return "no per-modality rows"
    per = df[df["group"].isin(mods)].pivot_table(index="trial", columns="group", values="nelbo", aggfunc="mean")
    shares = df.groupby("trial")[cols].first().loc[per.index].to_numpy(float)
    if len(np.unique(shares.round(6), axis=0)) < 3:
        return "fewer than 3 distinct mixtures"
    step = 1 / 40
    a, b = np.meshgrid(np.arange(0, 1 + 1e-9, step), np.arange(0, 1 + 1e-9, step))
    keep = a + b <= 1 + 1e-9
    grid = np.stack([1 - a[keep] - b[keep], a[keep], b[keep]], axis=1).clip(0, 1)
    gx, gy = _to_xy(grid)
    px, py = _to_xy(shares)
    fig, axes = plt.subplots(1, len(mods), figsize=(4.6 * len(mods), 4.2), squeeze=False)
    laws = fit.info["laws"] if fit is not None else {}
    for ax, mod in zip(axes[0], mods):
        obs = per[mod].to_numpy(float)
        ok = np.isfinite(obs)
        lo, hi = np.nanmin(obs), np.nanmax(obs)
        if mod in laws:
            # the law's columns are fit.info["sources"], in the same (sorted) order as cols
            z = mixing.predict(laws[mod], grid)
            lo, hi = min(lo, z.min()), max(hi, np.quantile(z, 0.95))
            cs = ax.tricontourf(gx, gy, np.clip(z, lo, hi), levels=14, cmap="viridis", norm=Normalize(lo, hi))
            fig.colorbar(cs, ax=ax, shrink=0.8, label="fitted NELBO")
        ax.scatter(
            px[ok], py[ok], c=obs[ok], cmap="viridis", norm=Normalize(lo, hi), edgecolor="k", linewidths=0.6, s=30
        )
        if fit is not None:
            r = np.array([fit.derived[f"opt.{c}"].value for c in cols])
            ox, oy = _to_xy(r)
            ax.scatter([ox], [oy], marker="*", s=200, color="red", edgecolor="k", label="optimum (weighted)")
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False)
        ax.plot([0, 1, 0.5, 0], [0, 0, np.sqrt(3) / 2, 0], color="k", lw=0.8)
        for (x, y), name, ha in zip(((0, 0), (1, 0), (0.5, np.sqrt(3) / 2)), cols, ("right", "left", "center")):
            ax.annotate(name.removeprefix("share."), (x, y), ha=ha, va="top" if y == 0 else "bottom", fontsize=9)
        ax.set(title=f"{mod}", aspect="equal", xlim=(-0.3, 1.3), ylim=(-0.12, 0.98))
        ax.axis("off")
    _save(fig, path)
    return None


def schedules(df: pd.DataFrame, target: str, path: str) -> str | None:
    """Loss against compute per noise schedule, side by side, each with its frontier and the
    other schedules' frontiers in grey for comparison."""
    d = df[(df["group"] == target) & (df["flops"] > 0)]
    names = sorted(d["schedule"].dropna().unique())
    if len(names) < 2:
        return f"the sweep has {len(names)} noise schedule(s); nothing to compare"
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), sharey=True, squeeze=False)
    fronts = {
        s: _frontier(
            d.loc[d["schedule"] == s, "flops"].to_numpy(float), d.loc[d["schedule"] == s, "nelbo"].to_numpy(float)
        )
        for s in names
    }
    for ax, s in zip(axes[0], names):
        x = d[d["schedule"] == s]
        ax.scatter(x["flops"], x["nelbo"], s=12, color="C0")
        for other, (fx, fy) in fronts.items():
            if other != s:
                ax.step(fx, fy, where="post", color="0.6", lw=1)
        ax.step(*fronts[s], where="post", color="crimson", lw=1.5, label="frontier")
        ax.set(xscale="log", xlabel="training FLOPs C", title=f"schedule: {s}")
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel(f"held-out NELBO ({target})")
    _save(fig, path)
    return None


def residuals(
    chin_data: pd.DataFrame | None,
    chin: FitResult | None,
    iso_data: pd.DataFrame | None,
    iso: FitResult | None,
    path: str,
) -> str | None:
    """Log residuals (observed / fitted) of the Chinchilla law against C, and of the isoFLOP
    parabolas against N."""
    panels = [p for p in (("chinchilla", chin_data, chin), ("isoflop", iso_data, iso)) if p[2] is not None]
    if not panels:
        return "no scaling law could be fitted"
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (name, data, fit) in zip(axes[0], panels):
        n_col = fit.info["n_column"]
        if name == "chinchilla":
            theta = {k: v.value for k, v in fit.params.items()}
            r = np.log(data["nelbo"]) - np.log(chinchilla.predict(theta, data[n_col], data["tokens"]))
            sc = ax.scatter(data["flops"], r, c=data[n_col], norm=LogNorm(), cmap="viridis", s=14)
            fig.colorbar(sc, ax=ax, label=n_col)
            ax.set(xscale="log", xlabel="training FLOPs C", title="Chinchilla law: log(observed/fitted)")
        else:
            for row in fit.table:
                pts = data[np.isclose(data["budget_flops"], row["C"])]
                c0, c1, c2 = row["parabola"]
                x = np.log(pts[n_col].to_numpy(float)) - row["log_n_centre"]
                ax.scatter(
                    pts[n_col], np.log(pts["nelbo"]) - (c0 + c1 * x + c2 * x * x), s=14, label=f"C={row['C']:.2g}"
                )
            ax.set(xscale="log", xlabel=f"N ({n_col})", title="isoFLOP parabolas: log(observed/fitted)")
            ax.legend(fontsize=7)
        ax.axhline(0, color="k", lw=0.8)
    _save(fig, path)
    return None
