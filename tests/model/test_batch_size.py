"""The κ batch-size rule, the lr schedule and the optimizer built from them."""

import math

import pytest
import torch

from trimodal.config import from_dict
from trimodal.errors import ConfigError
from trimodal.model.batch_size import derive
from trimodal.model.config import HyperConfig, TrainConfig
from trimodal.model.optim import build_optimizer, lr_factor


def test_kappa_hyperparameters_match_the_formula():
    h = HyperConfig(
        base_batch_tokens=2**18,
        base_horizon_tokens=1e10,
        gamma=0.44,
        lr_base=3e-4,
        betas_base=[0.9, 0.95],
        eps_base=1e-8,
        s_crit=100.0,
    )
    B, L, D = 512, 2048, 4e10  # 512 sequences of 2048 tokens = 2^20 tokens; 4× the base horizon
    d = derive(h, B, L, D)
    kappa = (1e10 / 4e10) ** 0.44 * (2**20 / 2**18)
    assert d.kappa == pytest.approx(kappa)
    assert d.kappa == pytest.approx(4 * 0.25**0.44)
    assert d.lr == pytest.approx(3e-4 * math.sqrt(kappa))
    assert d.betas == pytest.approx((0.9**kappa, 0.95**kappa))
    assert d.eps == pytest.approx(1e-8 / math.sqrt(kappa))
    assert d.critical_batch_sequences == pytest.approx(4e10 / (2048 * 100))
    assert d.warnings == []  # 512 < B_crit ≈ 195k


def test_reference_batch_and_horizon_give_the_base_values():
    h = HyperConfig()
    d = derive(h, h.base_batch_tokens // 1024, 1024, h.base_horizon_tokens)
    assert d.kappa == pytest.approx(1.0)
    assert d.lr == pytest.approx(h.lr_base) and d.betas == pytest.approx(tuple(h.betas_base))


def test_warning_above_the_critical_batch():
    d = derive(HyperConfig(s_crit=1000.0), batch_sequences=64, seq_len=1024, horizon_tokens=1e6)
    assert d.critical_batch_sequences == pytest.approx(1e6 / (1024 * 1000))
    assert len(d.warnings) == 1 and "critical batch" in d.warnings[0]


def test_optimizer_uses_the_derived_values():
    d = derive(HyperConfig(), 8, 128, 1e7)
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(m, d, TrainConfig(mix={}, output="x").optim)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(d.lr) and g["betas"] == pytest.approx(d.betas) and g["eps"] == d.eps
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(m[0].weight)}  # matrices decay; biases and norm scales do not


def test_warmup_then_cosine_to_the_floor():
    f = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10]))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


MIX = {"sources": [{"name": "t", "dataset": "d", "share": 1.0}], "seq_len": 32}  # a valid mix, never opened


def test_logical_batch_must_be_a_multiple_of_the_physical_batch():
    with pytest.raises(ConfigError, match="logical_batch"):
        from_dict(TrainConfig, {"mix": MIX, "output": "x", "physical_batch": 3, "logical_batch": 8, "num_workers": 2})
    cfg = from_dict(TrainConfig, {"mix": MIX, "output": "x", "physical_batch": 2, "logical_batch": 8, "num_workers": 2})
    assert cfg.accum_steps == 2
    with pytest.raises(ConfigError, match="stepz"):  # unknown keys are named, with a suggestion
        from_dict(TrainConfig, {"mix": MIX, "output": "x", "stepz": 3})
