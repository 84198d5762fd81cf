"""How initialization, learning rates, AdamW ε / weight decay and the forward multipliers scale
with the model's width and depth: `standard` (today's rules) or `completep`.

CompleteP (Dey et al. 2025, "Don't be lazy: CompleteP enables compute-efficient deep
transformers", arXiv 2505.01618, Table 1; reference implementation EleutherAI/nanoGPT-mup,
branch completep, with its fix of the ε rule, Eq. 40) is μP in width plus residual branches
scaled by (L_base/L)^α with α = 1 in depth, so base hyperparameters tuned at
(base_width, base_depth) transfer to other shapes. With m_d = dim/base_width, m_L =
n_layers/base_depth and η, ε, λ the lr, ε and weight decay the batch rule derives
(batch_size.py: η_base·√κ, ε_base/√κ, the configured λ):

| parameters                    | init std        | lr                  | AdamW ε         | weight decay |
|-------------------------------|-----------------|---------------------|-----------------|--------------|
| embedding                     | σ               | η                   | ε/m_d           | λ            |
| hidden matrices (blocks)      | σ/√m_d          | η/m_d · m_L^(α−1)   | ε/m_d · m_L^−α  | λ·m_d        |
| hidden norms (blocks)         | 1               | η · m_L^(α−1)       | ε/m_d · m_L^−α  | 0            |
| final norm                    | 1               | η                   | ε/m_d           | 0            |
| output head (untied)          | σ               | η                   | ε/m_d           | λ            |

forward: embedding output × 1; each residual branch × m_L^−α; the final hidden state × 1/m_d
before the head (the output logit multiplier). Hidden weight decay λ·m_d keeps lr·λ, the
per-step shrink of AdamW's decoupled decay, the same at every width. The standard rules stay
as they were: σ everywhere but the residual output projections (σ/√(2L), GPT-2), one lr, one ε,
λ on every matrix.

A table row is chosen by the parameter's name, so the rules hold under DDP, FSDP2 and
torch.compile wrappers alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trimodal.model.config import ModelConfig

ALPHA = 1.0  # CompleteP's depth exponent: residual branches × (base_depth/depth)^α


@dataclass(frozen=True)
class Multipliers:
    """The width and depth multipliers of a resolved config: m_d = dim/base_width,
    m_L = n_layers/base_depth (both 1 under `standard`)."""

    completep: bool
    m_d: float = 1.0
    m_L: float = 1.0

    @classmethod
    def of(cls, cfg: ModelConfig) -> Multipliers:
        r = cfg.resolve()
        if r.parameterization != "completep":
            return cls(False)
        return cls(True, r.dim / r.base_width, r.n_layers / r.base_depth)

    @property
    def residual(self) -> float:
        """The multiplier of every residual branch (attention and MLP outputs)."""
        return self.m_L**-ALPHA if self.completep else 1.0

    @property
    def output(self) -> float:
        """The multiplier of the final hidden state before the head (the logits'):
        base_width/width."""
        return 1.0 / self.m_d if self.completep else 1.0


def clean_name(name: str) -> str:
    """A parameter's name without the wrappers' prefixes (DDP's module., compile's _orig_mod.)."""
    return name.replace("_orig_mod.", "").removeprefix("module.")


def kind_of(name: str) -> str:
    """Which row of the table a parameter belongs to: embed, hidden, hidden_norm, norm, head."""
    n = clean_name(name)
    if n.startswith("blocks."):
        return "hidden_norm" if "_norm." in n else "hidden"
    if n.startswith("embed."):
        return "embed"
    if n.startswith("head."):
        return "head"
    if n.startswith("norm."):
        return "norm"
    raise ValueError(f"parameter {name!r} has no row in the parameterization table")


def init_std(cfg: ModelConfig, name: str) -> float:
    """The initial standard deviation of matrix `name` (norm scales start at 1 elsewhere)."""
    r = cfg.resolve()
    m = Multipliers.of(r)
    n = clean_name(name)
    if m.completep:
        # hidden matrices: variance σ²/m_d, i.e. ∝ 1/fan_in; embedding and head: σ, whatever the width
        return r.init_std / math.sqrt(m.m_d) if kind_of(n) == "hidden" else r.init_std
    # Residual output projections scaled down with depth (GPT-2 style) so the residual
    # stream's variance does not grow with the number of layers.
    if n.endswith(("out.weight", "down.weight")):
        return r.init_std / math.sqrt(2 * r.n_layers)
    return r.init_std


def group_factors(cfg: ModelConfig, kind: str, weight_decay: float) -> dict:
    """Per-row factors of the optimizer's lr and ε, and the row's absolute weight decay.
    Under `standard`: lr and ε unchanged, λ on matrices (embed, hidden, head), 0 on norms."""
    m = Multipliers.of(cfg)
    decayed = kind in ("embed", "hidden", "head")
    if not m.completep:
        return {"lr_scale": 1.0, "eps_scale": 1.0, "weight_decay": weight_decay if decayed else 0.0}
    depth_lr = m.m_L ** (ALPHA - 1)
    rows = {
        "embed": (1.0, 1 / m.m_d, weight_decay),
        "head": (1.0, 1 / m.m_d, weight_decay),
        "norm": (1.0, 1 / m.m_d, 0.0),
        "hidden": (depth_lr / m.m_d, m.m_L**-ALPHA / m.m_d, weight_decay * m.m_d),
        "hidden_norm": (depth_lr, m.m_L**-ALPHA / m.m_d, 0.0),
    }
    lr, eps, wd = rows[kind]
    return {"lr_scale": lr, "eps_scale": eps, "weight_decay": wd}


def parameterization_record(cfg: ModelConfig) -> dict:
    """What the start record says of the parameterization: its name and, under CompleteP, the
    multipliers and each group's lr and ε factors and weight decay (at weight decay 1)."""
    m = Multipliers.of(cfg)
    out = {"name": cfg.parameterization}
    if m.completep:
        out.update(m_d=m.m_d, m_L=m.m_L, residual=m.residual, output=m.output)
        kinds = ("embed", "hidden", "hidden_norm", "norm", "head")
        out["groups"] = {k: group_factors(cfg, k, 1.0) for k in kinds}
    return out
