"""What a mix will do, before training on it: realized shares over a number of steps.

`preview_mix` plans the stream (no tokens are copied, so thousands of steps take seconds) and
returns, per source, the target share, the realized share of sequence positions (padding
included: compute) and of real tokens, padding utilization, epochs consumed and skipped
samples, plus a history of the shares for plotting. `trimodal mix preview` prints it; the demo
calls it after mixing.
"""

from __future__ import annotations

import dataclasses

from trimodal.mixer.config import MixConfig, load_mix
from trimodal.mixer.mixer import Mixer

DEFAULT_GLOBAL_BATCH = 64
MAX_POINTS = 400  # history points kept for the plot
PADDING_WARN = 0.20  # share of padded positions above which a preview (and the trainer) warns


def padding_warning(pad_fraction: float) -> str | None:
    """The warning for a mix that spends more than PADDING_WARN of its positions on padding."""
    if pad_fraction <= PADDING_WARN:
        return None
    return (
        f"padding is {100 * pad_fraction:.0f}% of the positions (over {100 * PADDING_WARN:.0f}%): "
        "compute spent on nothing; pack the sources (pack: true)"
    )


def preview_mix(
    cfg: MixConfig | dict | str,
    steps: int,
    *,
    global_batch: int | None = None,
    plot: str | None = None,
    progress: bool = False,
) -> dict:
    """Plan `steps` global batches of the mix; return stats() plus `history` (and write a PNG
    of realized shares over steps to `plot`)."""
    cfg = load_mix(cfg)
    gb = global_batch or cfg.global_batch or DEFAULT_GLOBAL_BATCH
    cfg = dataclasses.replace(cfg, global_batch=gb)
    mixer = Mixer(cfg)
    every = max(1, steps // MAX_POINTS)
    history = {"step": [], "sources": {n: {"tokens": [], "positions": [], "expected": []} for n in mixer.names}}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, unit="step", desc="planning", leave=False)

    def record(m: Mixer) -> None:
        if bar is not None:
            bar.update(1)
        if m.step % every and m.step != steps:
            return
        st = m.stats()
        history["step"].append(m.step)
        for n, s in st["sources"].items():
            h = history["sources"][n]
            h["tokens"].append(s["tokens_share"])
            h["positions"].append(s["positions_share"])
            h["expected"].append(s["expected"])

    mixer.advance(steps, on_step=record)
    if bar is not None:
        bar.close()
    result = {"requested_steps": steps, **mixer.stats(), "history": history}
    warning = padding_warning(result["pad_fraction"])
    result["warnings"] = [warning] if warning else []
    if plot:
        write_plot(result, plot)
        result["plot"] = plot
    return result


def format_preview(result: dict) -> str:
    """A fixed-width table of a preview result."""
    head = f"{'source':<16}{'target':>8}{'expected':>10}{'tokens':>9}{'positions':>11}{'util':>7}{'epochs':>9}{'docs':>10}  skipped"
    lines = [head, "-" * len(head)]
    for n, s in result["sources"].items():
        skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items() if v) or "-"
        flag = " (exhausted)" if s["exhausted"] else ""
        lines.append(
            f"{n[:15]:<16}{s['share']:>8.3f}{s['expected']:>10.4f}{s['tokens_share']:>9.4f}"
            f"{s['positions_share']:>11.4f}{s['utilization']:>7.2f}{s['epochs']:>9.3f}{s['docs']:>10}  "
            f"{skipped}{flag}"
        )
    lines.append(
        f"steps {result['step']} x global batch {result['global_batch']} x seq_len {result['seq_len']}; "
        f"shares count {result['share_unit']}; pad fraction {100 * result['pad_fraction']:.2f}%"
        + ("; stream ended (all sources exhausted)" if result["ended"] else "")
    )
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)


def write_plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = result["history"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (n, h) in enumerate(hist["sources"].items()):
        c = colors[k % len(colors)]
        ax.plot(hist["step"], h["tokens"], color=c, label=f"{n}: tokens")
        ax.plot(hist["step"], h["positions"], color=c, linestyle="--", label=f"{n}: positions")
        ax.plot(hist["step"], h["expected"], color=c, linestyle=":", linewidth=1, label=f"{n}: target")
    ax.set_xlabel("global batch (step)")
    ax.set_ylabel("cumulative share")
    ax.set_ylim(0, 1)
    ax.set_title(f"realized shares (shares count {result['share_unit']}; pad {100 * result['pad_fraction']:.1f}%)")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
