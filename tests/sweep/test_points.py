"""Point expansion: grid × mixtures × seeds, the [name] selector, Dirichlet determinism, budget
→ steps within 1% with the dropped points named, stable names; config errors naming keys."""

import json

import pytest

from tests.sweep.conftest import sweep_config
from trimodal.errors import ConfigError
from trimodal.sweep.config import load_sweep
from trimodal.sweep.points import StreamStats, expand, fmt_num, set_dotted, step_flops_expected

STATS = StreamStats(tokens_per_step=120.0, len_sq_per_step=1500.0, vocab_size=80)


def _expand(data, tmp_path, **kw):
    return expand(load_sweep(sweep_config(data, tmp_path, **kw)), stats=lambda mix, b: STATS)


def test_grid_mixtures_seeds_product_and_names(sweep_data, tmp_path):
    points, dropped = _expand(
        sweep_data,
        tmp_path,
        grid={"hyper.lr_base": [1e-3, 3e-3], "diffusion.schedule.name": ["linear", "cosine"]},
        mixtures=[{"text": 0.5, "pairs": 0.5}, {"text": 0.9, "pairs": 0.1}],
        seeds=[0, 1],
    )
    assert len(points) == 2 * 2 * 2 * 2 and not dropped
    names = [p.name for p in points]
    assert len(set(names)) == len(names)
    assert names[0] == "p000-tiny-linear-b4-lr1e-3-m0-s0"
    assert names[-1] == "p015-tiny-cosine-b4-lr3e-3-m1-s1"
    last = points[-1]
    assert last.train["hyper"]["lr_base"] == 3e-3 and last.train["diffusion"]["schedule"]["name"] == "cosine"
    assert last.train["seed"] == 1
    assert last.shares == pytest.approx({"text": 0.9, "pairs": 0.1})
    assert last.settings == {"hyper.lr_base": 3e-3, "diffusion.schedule.name": "cosine", "mixture": 1, "seed": 1}
    # the eval mix is each trial's, and every trial gets its own run dir later (runner)
    assert last.train["eval"]["mix"]["sources"][0]["name"] == "h"
    # expansion is a pure function of the config: the same names and settings again
    again, _ = _expand(
        sweep_data,
        tmp_path,
        grid={"hyper.lr_base": [1e-3, 3e-3], "diffusion.schedule.name": ["linear", "cosine"]},
        mixtures=[{"text": 0.5, "pairs": 0.5}, {"text": 0.9, "pairs": 0.1}],
        seeds=[0, 1],
    )
    assert [(p.name, p.settings) for p in again] == [(p.name, p.settings) for p in points]


def test_name_selector_sets_one_source(sweep_data, tmp_path):
    points, _ = _expand(sweep_data, tmp_path, grid={"mix.sources[pairs].share": [0.1, 0.4]})
    assert [p.train["mix"]["sources"][1]["share"] for p in points] == [0.1, 0.4]
    assert [p.train["mix"]["sources"][0]["share"] for p in points] == [0.6, 0.6]
    assert points[0].shares == pytest.approx({"text": 0.6 / 0.7, "pairs": 0.1 / 0.7})
    assert points[0].name.endswith("-pairs0.1-s0")
    d = {"mix": {"sources": [{"name": "a", "share": 1}]}}
    set_dotted(d, "mix.sources[0].share", 2, "k")
    assert d["mix"]["sources"][0]["share"] == 2
    with pytest.raises(ConfigError, match=r"grid.mix.sources\[nope\].share: no element named 'nope'"):
        _expand(sweep_data, tmp_path, grid={"mix.sources[nope].share": [0.1]})


def test_shapes_off_their_preset_are_named_by_shape(sweep_data, tmp_path):
    points, _ = _expand(sweep_data, tmp_path, grid={"model.dim": [64, 128]})
    assert [p.name for p in points] == ["p000-tiny-b4-lr3e-3-s0", "p001-tiny-d128L2-b4-lr3e-3-s0"]
    assert points[1].train["model"]["dim"] == 128


def test_dirichlet_is_deterministic_and_around_the_base(sweep_data, tmp_path):
    a, _ = _expand(sweep_data, tmp_path, mixtures={"dirichlet": {"alpha": 50.0, "n": 6, "seed": 7}})
    b, _ = _expand(sweep_data, tmp_path, mixtures={"dirichlet": {"alpha": 50.0, "n": 6, "seed": 7}})
    c, _ = _expand(sweep_data, tmp_path, mixtures={"dirichlet": {"alpha": 50.0, "n": 6, "seed": 8}})
    assert len(a) == 6 and [p.shares for p in a] == [p.shares for p in b]
    assert [p.shares for p in a] != [p.shares for p in c]
    for p in a:
        assert sum(p.shares.values()) == pytest.approx(1.0)
    mean_text = sum(p.shares["text"] for p in a) / len(a)
    assert abs(mean_text - 0.6) < 0.15  # mean of Dirichlet(alpha · p0) is p0
    assert len({json.dumps(p.shares) for p in a}) == 6


def test_budget_steps_spend_the_budget_and_drop_the_rest(sweep_data, tmp_path):
    per = {s: step_flops_expected({"preset": s}, STATS) for s in ("tiny", "small")}
    # tiny: 100 steps exactly; small: C / per-step is not within 1% of a whole number of steps
    C = 100 * per["tiny"]
    C2 = 300 * per["tiny"]
    points, dropped = _expand(sweep_data, tmp_path, budget={"flops": [C, C2], "sizes": ["tiny", "small"]})
    by = {(p.settings["size"], p.budget_flops): p for p in points}
    assert by[("tiny", C)].train["steps"] == 100 and by[("tiny", C2)].train["steps"] == 300
    for p in points:
        spent = p.train["steps"] * per[p.settings["size"]]
        assert abs(spent - p.budget_flops) <= 0.01 * p.budget_flops
    for s, c in [("small", C), ("small", C2)]:
        steps = round(c / per["small"])
        if abs(steps * per["small"] - c) > 0.01 * c:
            assert (s, c) not in by
            assert any(f"-small-C{fmt_num(c)}-" in m and "off the budget" in m for m in dropped)
    assert dropped, "the small size must miss at least one budget by more than 1%"
    # the larger budget's trial evaluates where it passes the smaller budget, too
    assert by[("tiny", C2)].train["eval"]["at"] == [100] and by[("tiny", C2)].eval_at == [100]
    assert by[("tiny", C)].train["eval"]["at"] == []
    # names keep the index of the full product: a dropped point never renames the others
    assert by[("tiny", C2)].name.startswith("p002-tiny-C")


def test_random_search_draws_within_bounds_deterministically(sweep_data, tmp_path):
    spec = {
        "n": 5,
        "seed": 3,
        "params": {"hyper.lr_base": {"log_uniform": [1e-4, 1e-2]}, "logical_batch": {"choice": [4, 8]}},
    }
    a, _ = _expand(sweep_data, tmp_path, random=spec)
    b, _ = _expand(sweep_data, tmp_path, random=spec)
    assert [p.settings for p in a] == [p.settings for p in b] and len(a) == 5
    for j, p in enumerate(a):
        assert 1e-4 <= p.train["hyper"]["lr_base"] <= 1e-2 and p.train["logical_batch"] in (4, 8)
        assert p.name.endswith(f"-r{j}-s0")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"grid": {"hyper.lr_bsae": [1e-3]}}, r"grid.hyper.lr_bsae"),
        ({"grid": {"nope.lr": [1e-3]}}, r"grid.nope.lr: no key 'nope'"),
        ({"grid": {"logical_batch": [6]}}, r"logical_batch: 6 is not a multiple"),
        ({"grid": {"model.preset": ["huge"]}}, r"preset: 'huge'"),
        ({"mixtures": [{"txt": 1.0}]}, r"mixtures\[0\].txt: not a source"),
        ({"mixtures": {"dirichlet": {"n": 0}}}, r"mixtures.dirichlet.*n: must be >= 1"),
        ({"budget": {"flops": [], "sizes": ["tiny"]}}, r"budget.*flops"),
        ({"budget": {"flops": [1e9], "sizes": ["huge"]}}, r"budget.sizes: 'huge'"),
        ({"budget": {"flops": [1e9], "sizes": ["tiny"]}, "grid": {"model.preset": ["tiny"]}}, r"grid.model.preset"),
        ({"random": {"n": 2, "params": {"hyper.lr_base": {"normal": [0, 1]}}}}, r"params.hyper.lr_base"),
        ({"seeds": [1, 1]}, r"seeds: duplicates"),
        ({"resources": {"max_concurrent_trials": 0}}, r"resources.*max_concurrent_trials"),
        ({"set": {"stop_at_step": 2}}, r"stop_at_step"),
        ({"name": "a/b"}, r"name:"),
        ({"gird": {}}, r"gird: unknown key \(did you mean 'grid'\?\)"),
    ],
)
def test_config_errors_name_the_key(sweep_data, tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        _expand(sweep_data, tmp_path, **kw)


def test_an_eval_mix_or_holdout_is_required(sweep_data, tmp_path):
    cfg = sweep_config(sweep_data, tmp_path)
    del cfg["eval"]
    with pytest.raises(ConfigError, match=r"eval: a sweep evaluates every trial on held-out data"):
        expand(load_sweep(cfg), stats=lambda m, b: STATS)
    # the table's split is named after the eval mix's file
    assert load_sweep(sweep_config(sweep_data, tmp_path)).split_name == "heldout"
