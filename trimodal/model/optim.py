"""AdamW with the batch-size-derived hyperparameters, and linear warmup + cosine decay.

Weight decay applies to matrices only (not norms); embeddings are decayed too because with a
padded, mostly-unused vocabulary the alternative lets unused rows drift. The schedule is a pure
function of the step, so resuming needs only the step number (no scheduler state to lose).
"""

from __future__ import annotations

import math

import torch

from trimodal.model.batch_size import Derived
from trimodal.model.config import OptimConfig


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step` (0-based optimizer step)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, derived: Derived, cfg: OptimConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # One fused kernel per step on CUDA instead of a dozen per parameter tensor.
    fused = all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW(
        groups,
        lr=derived.lr,
        betas=derived.betas,
        eps=derived.eps,
        fused=fused or None,
        foreach=None if fused else True,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
