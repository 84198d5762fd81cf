"""The coordinate check of a parameterization: the RMS of every layer's activations after a few
AdamW steps, for models of several widths and depths trained on the same toy task.

Under a parameterization whose hyperparameters transfer (CompleteP), these RMS stay of the same
order whatever the width and depth: the same base lr moves every layer by about the same amount.
Under `standard` with one lr they drift: hidden updates grow with the width (Adam moves every
entry by ~lr, so a row's output moves by ~lr·fan_in), and every one of L unscaled residual
branches adds to the stream. tests/model/test_coord_check.py checks both; bench/bench_coord_check.py
plots them (docs/coord_check.png).

The task is masked-token prediction on a fixed random batch (one document per row): the same
tokens, masks and lr for every shape, so only the parameterization differs.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from trimodal.model.batch_size import Derived
from trimodal.model.config import ModelConfig, OptimConfig
from trimodal.model.optim import build_optimizer, set_lr
from trimodal.model.transformer import Transformer


def _batch(vocab: int, rows: int, seq_len: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, vocab, (rows, seq_len), generator=g)
    masked = torch.rand(rows, seq_len, generator=g) < 0.5
    return {
        "noisy": torch.where(masked, torch.ones_like(tokens), tokens),  # id 1 plays <mask>
        "targets": tokens,
        "scale": masked.float() / masked.sum(),
        "positions": torch.arange(seq_len).expand(rows, seq_len),
        "segment_ids": torch.ones(rows, seq_len, dtype=torch.long),
    }


def activation_rms(
    cfg: ModelConfig,
    *,
    vocab: int = 128,
    steps: int = 6,
    lr: float = 3e-3,
    rows: int = 4,
    seq_len: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """RMS of the activations after `steps` AdamW steps at peak `lr` (no warmup, no decay), on a
    held-fixed batch: `embed` (embedding output), `block.i` (residual stream after block i),
    `hidden` (final norm output, before the logits multiplier) and `logits`."""
    cfg = cfg.resolve()
    torch.manual_seed(seed)
    model = Transformer(replace(cfg, attention="sdpa"), vocab)
    model.init_weights(seed)
    derived = Derived(
        kappa=1.0,
        lr=lr,
        betas=(0.9, 0.95),
        eps=1e-8,
        batch_tokens=rows * seq_len,
        horizon_tokens=float(steps * rows * seq_len),
        batch_sequences=rows,
        critical_batch_sequences=float("inf"),
    )
    opt = build_optimizer(model, derived, OptimConfig(warmup_steps=0, weight_decay=0.0), cfg)
    set_lr(opt, lr)
    b = _batch(vocab, rows, seq_len, seed)
    groups = torch.zeros_like(b["targets"])
    for _ in range(steps):
        loss, _ = model(b["noisy"], b["positions"], b["segment_ids"], loss=(b["targets"], b["scale"], groups, 1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    acts: dict[str, torch.Tensor] = {}
    hooks = [
        model.embed.register_forward_hook(lambda m, i, o: acts.__setitem__("embed", o)),
        model.norm.register_forward_hook(lambda m, i, o: acts.__setitem__("hidden", o)),
    ]
    for k, blk in enumerate(model.blocks):
        hooks.append(blk.register_forward_hook(lambda m, i, o, k=k: acts.__setitem__(f"block.{k}", o)))
    with torch.no_grad():
        acts["logits"] = model.head(model.hidden(b["noisy"], b["positions"], b["segment_ids"]))
    for hk in hooks:
        hk.remove()
    return {k: float(v.float().pow(2).mean().sqrt()) for k, v in acts.items()}


def spread(results: list[dict[str, float]]) -> dict[str, float]:
    """max/min of the RMS over models, per layer: embed, hidden, logits, and the residual
    stream at the same relative depth: after the middle block (`block.mid`: block L/2 − 1)
    and after the last (`block.last`), so that models of different depths compare like with like."""
    pooled: dict[str, list[float]] = {}
    for r in results:
        n = sum(k.startswith("block.") for k in r)
        named = {k: v for k, v in r.items() if not k.startswith("block.")}
        named["block.mid"], named["block.last"] = r[f"block.{n // 2 - 1}"], r[f"block.{n - 1}"]
        for k, v in named.items():
            pooled.setdefault(k, []).append(v)
    return {k: max(v) / min(v) for k, v in pooled.items()}


def shape(width: int, depth: int, parameterization: str, base_width: int = 64, base_depth: int = 2) -> ModelConfig:
    """A coordinate-check model: head dim 16 at every width (heads grow with the width)."""
    completep = parameterization == "completep"
    return ModelConfig(
        preset="tiny",
        dim=width,
        n_layers=depth,
        n_heads=width // 16,
        parameterization=parameterization,
        base_width=base_width if completep else None,
        base_depth=base_depth if completep else None,
    )
