"""CompleteP's rules (model/parameterization.py) as the model and the optimizer apply them, the
config's checks, and `standard` left as it was."""

import math

import pytest
import torch

from trimodal.errors import ConfigError
from trimodal.model.batch_size import derive
from trimodal.model.config import HyperConfig, ModelConfig, OptimConfig
from trimodal.model.optim import build_optimizer, set_lr
from trimodal.model.parameterization import Multipliers, group_factors, init_std, kind_of
from trimodal.model.transformer import Transformer

V = 104


def completep(dim=128, layers=8, base_width=64, base_depth=2, **kw):
    return ModelConfig(
        preset="tiny",
        dim=dim,
        n_layers=layers,
        parameterization="completep",
        base_width=base_width,
        base_depth=base_depth,
        **kw,
    )


def test_config_checks_name_the_key():
    with pytest.raises(ConfigError, match="parameterization"):
        ModelConfig(parameterization="mup").validate()
    with pytest.raises(ConfigError, match="base_width: required"):
        ModelConfig(parameterization="completep", base_depth=2).validate()
    with pytest.raises(ConfigError, match="base_depth: required"):
        ModelConfig(parameterization="completep", base_width=64).validate()
    with pytest.raises(ConfigError, match="base_depth: must be >= 1"):
        ModelConfig(base_depth=0).validate()
    completep().validate()


def test_multipliers_of_the_forward_pass():
    m = Multipliers.of(completep(dim=256, layers=8))  # m_d = 4, m_L = 4
    assert (m.m_d, m.m_L, m.residual, m.output) == (4.0, 4.0, 0.25, 0.25)
    s = Multipliers.of(ModelConfig(dim=256, n_layers=8))
    assert (s.residual, s.output) == (1.0, 1.0)
    model = Transformer(completep(dim=256, layers=8), V)
    assert model.output_scale == 0.25 and all(b.branch_scale == 0.25 for b in model.blocks)


def test_init_scales_hidden_matrices_with_fan_in_only():
    cfg = completep(dim=256, layers=8)
    assert init_std(cfg, "blocks.3.attn.qkv.weight") == pytest.approx(0.02 / 2)  # σ/√m_d
    assert init_std(cfg, "blocks.3.mlp.down.weight") == pytest.approx(0.02 / 2)  # no GPT-2 depth factor
    assert init_std(cfg, "embed.weight") == init_std(cfg, "_orig_mod.head.weight") == 0.02
    std = ModelConfig(dim=256, n_layers=8)
    assert init_std(std, "blocks.0.attn.out.weight") == pytest.approx(0.02 / math.sqrt(16))
    assert init_std(std, "blocks.0.attn.qkv.weight") == 0.02
    torch.manual_seed(0)
    model = Transformer(cfg, V)
    model.init_weights(0)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_optimizer_groups_follow_the_table_on_top_of_the_batch_rule():
    cfg = completep(dim=256, layers=8, base_width=64, base_depth=2)  # m_d = 4, m_L = 4
    d = derive(HyperConfig(), 8, 128, 1e7)
    opt = build_optimizer(Transformer(cfg, V), d, OptimConfig(weight_decay=0.1), cfg)
    set_lr(opt, 1e-3)
    g = {x["name"]: x for x in opt.param_groups}
    assert set(g) == {"embed", "hidden", "hidden_norm", "norm", "head"}
    expect = {  # (lr, eps, weight decay); α = 1: no depth factor on the lr
        "embed": (1e-3, d.eps / 4, 0.1),
        "head": (1e-3, d.eps / 4, 0.1),
        "norm": (1e-3, d.eps / 4, 0.0),
        "hidden": (1e-3 / 4, d.eps / 16, 0.4),
        "hidden_norm": (1e-3, d.eps / 16, 0.0),
    }
    for k, (lr, eps, wd) in expect.items():
        assert (g[k]["lr"], g[k]["eps"], g[k]["weight_decay"]) == pytest.approx((lr, eps, wd)), k
        assert g[k]["betas"] == pytest.approx(d.betas)
    assert g["hidden"]["lr"] * g["hidden"]["weight_decay"] == pytest.approx(1e-3 * 0.1)  # lr·λ invariant
    n = sum(p.numel() for x in opt.param_groups for p in x["params"])
    assert n == sum(p.numel() for p in Transformer(cfg, V).parameters())


def test_standard_groups_are_unchanged():
    d = derive(HyperConfig(), 8, 128, 1e7)
    cfg = ModelConfig()
    opt = build_optimizer(Transformer(cfg, V), d, OptimConfig(weight_decay=0.1), cfg)
    set_lr(opt, 2e-3)
    assert [(x["lr"], x["eps"], x["weight_decay"]) for x in opt.param_groups] == [
        (2e-3, d.eps, 0.1),
        (2e-3, d.eps, 0.0),
    ]
    assert all("lr_scale" not in x for x in opt.param_groups)
    assert group_factors(cfg, "hidden", 0.1) == {"lr_scale": 1.0, "eps_scale": 1.0, "weight_decay": 0.1}


def test_every_parameter_has_a_row_whatever_the_wrapper():
    assert kind_of("module.blocks.0.attn_norm.weight") == "hidden_norm"
    assert kind_of("_orig_mod.blocks.1.mlp.gate_up.weight") == "hidden"
    assert kind_of("norm.weight") == "norm"
    with pytest.raises(ValueError, match="no row"):
        kind_of("mystery.weight")
