"""Coordinate check plot: the RMS of every layer's activations after a few AdamW steps at one
base lr, against width (64 to 512, depth 2) and depth (2 to 16, width 64), under the standard
parameterization and under CompleteP (trimodal/model/coord_check.py). Flat lines mean the base
hyperparameters transfer. Writes docs/coord_check.png and prints max/min per layer.

    python bench/bench_coord_check.py [--steps 6] [--lr 3e-3] [--out docs/coord_check.png]

CPU, seconds: the models are tiny in every dimension but the one being scaled.
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from trimodal.model.coord_check import activation_rms, shape, spread  # noqa: E402

WIDTHS = (64, 128, 256, 512)
DEPTHS = (2, 4, 8, 16)
LAYERS = ("embed", "block.mid", "block.last", "hidden", "logits")


def relative(r: dict[str, float]) -> dict[str, float]:
    """Name the residual stream by relative depth, as `spread` does."""
    n = sum(k.startswith("block.") for k in r)
    out = {k: v for k, v in r.items() if not k.startswith("block.")}
    out["block.mid"], out["block.last"] = r[f"block.{n // 2 - 1}"], r[f"block.{n - 1}"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "coord_check.png"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey=True)
    for col, p in enumerate(("standard", "completep")):
        for row, (axis, xs) in enumerate((("width", WIDTHS), ("depth", DEPTHS))):
            runs = [
                activation_rms(shape(x, 2, p) if axis == "width" else shape(64, x, p), steps=args.steps, lr=args.lr)
                for x in xs
            ]
            ax = axes[row, col]
            for layer in LAYERS:
                ax.plot(xs, [relative(r)[layer] for r in runs], marker="o", label=layer)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel(f"{axis} ({'depth 2' if axis == 'width' else 'width 64'})")
            ax.set_title(f"{p}: max/min {max(spread(runs).values()):.1f}x")
            if col == 0:
                ax.set_ylabel(f"activation RMS after {args.steps} steps")
            print(p, axis, {k: round(v, 2) for k, v in spread(runs).items()})
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Coordinate check: AdamW, lr {args.lr:g}, base width 64, base depth 2")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print("wrote", os.path.abspath(args.out))


if __name__ == "__main__":
    main()
