"""AdamW with the batch-size-derived hyperparameters, and linear warmup + cosine decay.

Under `model.parameterization: completep` the groups follow CompleteP's table
(parameterization.py): per-group lr factor, ε and weight decay on top of the batch rule's.

Weight decay applies to matrices only (not norms); embeddings are decayed too because with a
padded, mostly-unused vocabulary the alternative lets unused rows drift. The schedule is a pure
function of the step, so resuming needs only the step number (no scheduler state to lose).
"""

from __future__ import annotations

import math

import torch

from trimodal.model.batch_size import Derived
from trimodal.model.config import ModelConfig, OptimConfig
from trimodal.model.parameterization import group_factors, kind_of


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step` (0-based optimizer step)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    model: torch.nn.Module, derived: Derived, cfg: OptimConfig, model_cfg: ModelConfig | None = None
) -> torch.optim.Optimizer:
    """AdamW over the parameter groups of `model_cfg.parameterization` (standard when None)."""
    if model_cfg is not None and model_cfg.parameterization == "completep":
        groups = completep_groups(model, derived, cfg, model_cfg)
    else:
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = [p for g in groups for p in g["params"]]
    # One fused kernel per step on CUDA instead of a dozen per parameter tensor.
    fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(
        groups,
        lr=derived.lr,
        betas=derived.betas,
        eps=derived.eps,
        fused=fused or None,
        foreach=None if fused else True,
    )


def completep_groups(model: torch.nn.Module, derived: Derived, cfg: OptimConfig, model_cfg: ModelConfig) -> list:
    """One group per row of CompleteP's table (parameterization.py), each with its lr factor
    (`lr_scale`, applied by `set_lr` on top of the schedule), its ε (the batch rule's ε × the
    row's factor) and its weight decay."""
    by_kind: dict[str, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            by_kind.setdefault(kind_of(name), []).append(p)
    groups = []
    for kind, params in by_kind.items():
        f = group_factors(model_cfg, kind, cfg.weight_decay)
        groups.append(
            {
                "params": params,
                "name": kind,
                "lr_scale": f["lr_scale"],
                "eps": derived.eps * f["eps_scale"],
                "weight_decay": f["weight_decay"],
            }
        )
    return groups


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's lr on every group, times the group's `lr_scale` where it has one
    (CompleteP); groups without one (standard) get `lr` itself."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"] if "lr_scale" in g else lr
