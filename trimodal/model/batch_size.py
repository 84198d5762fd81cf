"""The batch-size reparameterization (SDE scaling rule) of the tri-modal MDM paper.

Base hyperparameters (η_base, β_base, ε_base) are tuned once at a reference batch B_base and
token horizon D_base. A run at batch B and horizon D uses

    κ = (D_base / D)^γ · (B / B_base),   lr = η_base·√κ,   betas = β_base^κ,   eps = ε_base/√κ

with γ ≈ 0.44. Batches are counted in TOKENS (sequences × seq_len) so the rule does not change
with the sequence length; the horizon D is in tokens too. The batch here is the LOGICAL batch
(one optimizer step, all workers and accumulation micro-steps), not the physical one.

The rule holds up to the critical batch B_crit = D / (L · S_crit) sequences (L = seq_len,
S_crit = the fewest optimizer steps a run still needs); above it `derive` adds a warning that
the trainer logs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from trimodal.model.config import HyperConfig


@dataclass
class Derived:
    kappa: float
    lr: float
    betas: tuple[float, float]
    eps: float
    batch_tokens: int
    horizon_tokens: float
    batch_sequences: int
    critical_batch_sequences: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def derive(cfg: HyperConfig, batch_sequences: int, seq_len: int, horizon_tokens: float) -> Derived:
    batch_tokens = batch_sequences * seq_len
    kappa = (cfg.base_horizon_tokens / horizon_tokens) ** cfg.gamma * (batch_tokens / cfg.base_batch_tokens)
    root = math.sqrt(kappa)
    b1, b2 = cfg.betas_base
    b_crit = horizon_tokens / (seq_len * cfg.s_crit)
    warnings = []
    if batch_sequences > b_crit:
        warnings.append(
            f"logical batch {batch_sequences} sequences exceeds the critical batch "
            f"B_crit = D/(L·S_crit) = {horizon_tokens:.3g}/({seq_len}·{cfg.s_crit:g}) = {b_crit:.1f}; "
            "the scaling rule is not expected to hold (fewer, noisier steps would be better)"
        )
    return Derived(
        kappa=kappa,
        lr=cfg.lr_base * root,
        betas=(b1**kappa, b2**kappa),
        eps=cfg.eps_base / root,
        batch_tokens=batch_tokens,
        horizon_tokens=float(horizon_tokens),
        batch_sequences=batch_sequences,
        critical_batch_sequences=b_crit,
        warnings=warnings,
    )
