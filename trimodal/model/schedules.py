"""Noise schedules for masked diffusion: α(t) is the probability that a token is still clean at
time t ∈ [0, 1] (α(0) = 1, α(1) ≈ 0), defined with its derivative α′(t) analytically.

The continuous-time MDLM ELBO weights the cross-entropy of a masked token by
w(t) = −α′(t) / (1 − α(t)). Every schedule here has w ~ c/t as t → 0; the loss clamps t to
[t_min, 1] (DiffusionConfig.t_min) rather than clipping w, so the weight stays the exact ELBO
weight of the t that was used and E_t[w·(1−α)] = α(t_min) − α(1) (tested). The denominator is
also floored at 1e-12 so a t of exactly 0 never divides by zero.

Plain dict registry: name -> factory(ScheduleConfig) -> Schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from trimodal.model.config import ScheduleConfig


class Schedule:
    name = "base"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.alpha(t)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """ELBO weight −α′(t)/(1 − α(t))."""
        return -self.alpha_prime(t) / (1.0 - self.alpha(t)).clamp_min(1e-12)


@dataclass
class Linear(Schedule):
    """α = 1 − t; w = 1/t."""

    name = "linear"

    def alpha(self, t):
        return 1.0 - t

    def alpha_prime(self, t):
        return -torch.ones_like(t)


@dataclass
class Cosine(Schedule):
    """α = cos(πt/2); w = (π/2)·sin(πt/2) / (1 − cos(πt/2)). Masks fewer tokens early."""

    name = "cosine"

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * t)

    def alpha_prime(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


@dataclass
class Polynomial(Schedule):
    """α = 1 − t^p; w = p/t (p > 1 masks fewer tokens at small t)."""

    exponent: float = 2.0
    name = "polynomial"

    def alpha(self, t):
        return 1.0 - t.pow(self.exponent)

    def alpha_prime(self, t):
        return -self.exponent * t.pow(self.exponent - 1.0)


@dataclass
class LogLinear(Schedule):
    """MDLM's log-linear schedule: total noise σ(t) = −log(1 − (1−ε)t), α = e^{−σ} = 1 − (1−ε)t,
    α′ = −(1−ε); w = 1/t. α(1) = ε, so a tiny fraction stays clean even at t = 1."""

    eps: float = 1e-3
    name = "log-linear"

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def alpha_prime(self, t):
        return torch.full_like(t, -(1.0 - self.eps))


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "linear": lambda cfg: Linear(),
    "cosine": lambda cfg: Cosine(),
    "polynomial": lambda cfg: Polynomial(exponent=cfg.exponent),
    "log-linear": lambda cfg: LogLinear(eps=cfg.eps),
}


def make_schedule(cfg) -> Schedule:
    """ScheduleConfig (or a bare name) -> Schedule."""
    if isinstance(cfg, str):
        cfg = ScheduleConfig(name=cfg)
    return SCHEDULES[cfg.name](cfg)
