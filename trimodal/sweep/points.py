"""A sweep's points: the product of grid × mixtures × budget × random draws × seeds, each a
named, fully built train config.

Order and names are a pure function of the sweep config, so a rerun or `--resume` finds the
same trials: point k of the full product is ``p{k:03d}`` followed by what it is
(``p003-tiny-C1e12-b16-lr3e-3-s0``: size, budget if any, schedule if varied, logical batch,
lr, mixture ``m{j}`` if any, other varied keys, random draw ``r{j}``, seed). A point dropped by
the budget rule keeps its index, so dropping never renames the others.

Budget (isoFLOP) points: a step spends F = dense FLOPs per real token × T + attention FLOPs of
Σ len² (model/flops.py), with T (real tokens per step) and Σ len² measured on the point's own mix
(`StreamStats`, 32 batches of the real stream on the driver, before Ray starts: ~0.35 s on the
demo's data, and runs then land within ~0.5% of C where 8 batches left 1.5%); steps = round(C / F); the point is dropped
when |steps·F − C| > tolerance·C (at 1% a budget needs ≥ 50 steps to always fit). A trial
also evaluates at the smaller budgets it passes (`eval.at`), rows with final = false.

Dirichlet mixtures: one numpy generator seeded by `seed` draws n vectors from
Dirichlet(alpha · p0), p0 the base's normalized shares, so the same config gives the same
mixtures everywhere.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trimodal.config import from_dict, to_dict
from trimodal.errors import ConfigError
from trimodal.model.config import PRESETS, ModelConfig, TrainConfig
from trimodal.sweep.config import DirichletConfig, SweepConfig

_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[([^\]]+)\])?$")


def _parts(key: str, where: str) -> list[tuple[str, str | None]]:
    out = []
    for seg in key.split("."):
        m = _SEGMENT.match(seg)
        if not m:
            raise ConfigError(f"{where}: {seg!r} is not a key or key[selector]")
        out.append((m.group(1), m.group(2)))
    return out


def _select(lst: Any, sel: str, where: str) -> dict:
    """`sel` picks a list element: by its `name`, or by index when it is a number."""
    if not isinstance(lst, list):
        raise ConfigError(f"{where}: [{sel}] selects from a list, found {type(lst).__name__}")
    if sel.lstrip("-").isdigit():
        i = int(sel)
        if not -len(lst) <= i < len(lst):
            raise ConfigError(f"{where}: index [{sel}] out of range ({len(lst)} elements)")
        return lst[i]
    for el in lst:
        if isinstance(el, dict) and el.get("name") == sel:
            return el
    names = [el.get("name") for el in lst if isinstance(el, dict)]
    raise ConfigError(f"{where}: no element named {sel!r}; names: {names}")


def set_dotted(d: dict, key: str, value: Any, where: str, strict: bool = True) -> None:
    """Set `key` (``hyper.lr_base``, ``mix.sources[text].share``) in the nested dict `d`. Every
    segment must exist (a typo fails here, named), the last one too when `strict` (a train
    config as a whole dict holds every field; `set:` on a raw base may add one, and the typed
    config checks it)."""
    parts = _parts(key, where)
    cur: Any = d
    for i, (name, sel) in enumerate(parts):
        last = i == len(parts) - 1
        if not isinstance(cur, dict):
            raise ConfigError(f"{where}: {name!r} is under a {type(cur).__name__}, not a mapping")
        if last and sel is None:
            if strict and name not in cur:
                near = difflib.get_close_matches(name, [str(k) for k in cur], n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(f"{where}: no key {name!r}{hint}; keys there: {sorted(cur)}")
            cur[name] = copy.deepcopy(value)
            return
        if name not in cur and not strict and sel is None:
            cur[name] = {}  # a raw config may leave a section out; the typed config checks the key
        if name not in cur:
            raise ConfigError(f"{where}: no key {name!r}; keys there: {sorted(cur)}")
        if cur[name] is None and not last:
            cur[name] = {}
        cur = cur[name]
        if sel is not None:
            if last:
                raise ConfigError(f"{where}: a selector [{sel}] must be followed by a field")
            cur = _select(cur, sel, where)


@dataclass
class StreamStats:
    """A mix's real tokens and Σ over documents of len² per optimizer step (both scale with
    the logical batch), and its vocabulary size: what a step's FLOPs depend on."""

    tokens_per_step: float
    len_sq_per_step: float
    vocab_size: int


def step_flops_expected(model: dict | ModelConfig, stats: StreamStats) -> float:
    """Training FLOPs of one step under flops.py's accounting at the stream's expectation."""
    from trimodal.model.flops import attention_flops, dense_flops_per_token

    m = model if isinstance(model, ModelConfig) else from_dict(ModelConfig, model, where="model")
    dense = dense_flops_per_token(m, stats.vocab_size)["total"]
    return dense * stats.tokens_per_step + attention_flops(m, stats.len_sq_per_step)


def measure_stream(mix: dict, logical_batch: int, batches: int = 32) -> StreamStats:
    """`StreamStats` from the first `batches` global batches of the real stream (one rank)."""
    from trimodal.model.data import open_stream
    from trimodal.model.flops import doc_length_squares

    stream = open_stream(mix, 0, 1, logical_batch)
    tok = sq = 0.0
    n = 0
    for batch in itertools.islice(iter(stream), batches):
        seg = np.asarray(batch["segment_ids"])
        tok += float((seg != 0).sum())
        sq += float(doc_length_squares(seg))
        n += 1
    if n == 0:
        raise ConfigError("mix: the stream yields no batch to measure tokens per step on")
    return StreamStats(tok / n, sq / n, int(stream.vocab.size))


@dataclass
class Point:
    index: int
    name: str
    settings: dict[str, Any]  # what this point varies (dotted key -> value): the table's `point`
    train: dict  # the whole train config (output set by the runner)
    seed: int
    shares: dict[str, float]  # the mix's normalized base shares
    budget_flops: float | None = None
    eval_at: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "settings": self.settings,
            "seed": self.seed,
            "shares": self.shares,
            "budget_flops": self.budget_flops,
            "eval_at": self.eval_at,
        }


def fmt_num(x: float) -> str:
    """A short, path-safe number: 3e-3, 1e12, 2.5e11, 16."""
    if float(x).is_integer() and abs(x) < 1e5:
        return str(int(x))
    if 0.05 <= abs(x) < 1e5:
        return f"{x:g}"
    m, e = f"{x:.2e}".split("e")
    m = m.rstrip("0").rstrip(".")
    return f"{m}e{int(e)}"


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", s).strip("_")


def _size_label(size: Any) -> str:
    if isinstance(size, str):
        return size
    if "name" in size:
        return str(size["name"])
    return "d{}L{}".format(size.get("dim", "x"), size.get("n_layers", "x"))


def _size_model(base_model: dict, size: Any, where: str) -> dict:
    if isinstance(size, str):
        if size not in PRESETS:
            raise ConfigError(f"{where}: {size!r} is not a preset {sorted(PRESETS)}")
        return {**base_model, "preset": size, "dim": None, "n_layers": None, "n_heads": None, "ffn_hidden": None}
    return {**base_model, **{k: v for k, v in size.items() if k != "name"}}


def normalized_shares(train: dict) -> dict[str, float]:
    mix = train["mix"]
    if "sources" not in mix:  # a synthetic stream: one source
        return {}
    total = sum(s["share"] for s in mix["sources"])
    return {s["name"]: s["share"] / total for s in mix["sources"]}


def _mixture_list(cfg: SweepConfig, base: dict) -> list[tuple[int, dict[str, float]] | None]:
    if cfg.mixtures is None:
        return [None]
    names = list(normalized_shares(base))
    if not names:
        raise ConfigError("mixtures: the base's mix is synthetic; it has no sources to mix")
    if isinstance(cfg.mixtures, DirichletConfig):
        p0 = np.array([normalized_shares(base)[n] for n in names])
        if (p0 <= 0).any():
            raise ConfigError("mixtures.dirichlet: every base share must be > 0 to draw around it")
        rng = np.random.default_rng(cfg.mixtures.seed)
        draws = rng.dirichlet(cfg.mixtures.alpha * p0, size=cfg.mixtures.n)
        return [(j, {n: float(v) for n, v in zip(names, d)}) for j, d in enumerate(draws)]
    out = []
    for j, m in enumerate(cfg.mixtures):
        for s in m:
            if s not in names:
                raise ConfigError(f"mixtures[{j}].{s}: not a source of the base mix; sources: {names}")
        out.append((j, m))
    return out


def _random_draws(cfg: SweepConfig) -> list[tuple[int, dict] | None]:
    if cfg.random is None:
        return [None]
    rng = np.random.default_rng(cfg.random.seed)
    out = []
    for j in range(cfg.random.n):
        draw = {}
        for k, spec in cfg.random.params.items():
            dist, args = next(iter(spec.items()))
            if dist == "uniform":
                v = float(rng.uniform(args[0], args[1]))
            elif dist == "log_uniform":
                v = float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
            elif dist == "int_uniform":
                v = int(rng.integers(int(args[0]), int(args[1]) + 1))
            else:
                v = args[int(rng.integers(len(args)))]
            draw[k] = v
        out.append((j, draw))
    return out


# said by the name's fixed parts (size, C, schedule, b, lr, m, s)
_NAMED = frozenset(
    (
        "diffusion.schedule.name",
        "model.dim",  # the size label shows a shape off its preset (tiny-d128L2)
        "model.n_layers",
        "logical_batch",
        "hyper.lr_base",
        "model.preset",
        "seed",
        "mixture",
        "size",
        "budget_flops",
    )
)
_SHORT = {"logical_batch": "b", "hyper.lr_base": "lr", "steps": "st", "model.preset": "", "seed": "s"}


def _name(index: int, width: int, size: str, train: dict, varied: dict, parts: dict) -> str:
    bits = [f"p{index:0{width}d}", _safe(size)]
    if parts.get("budget") is not None:
        bits.append("C" + fmt_num(parts["budget"]))
    if "diffusion.schedule.name" in varied:
        bits.append(_safe(str(varied["diffusion.schedule.name"])))
    bits.append(f"b{train['logical_batch']}")
    bits.append("lr" + fmt_num(train["hyper"]["lr_base"]))
    if parts.get("mixture") is not None:
        bits.append(f"m{parts['mixture']}")
    for k, v in varied.items():
        if k in _NAMED:
            continue
        if parts.get("random") is not None and k in parts["random_keys"]:
            continue
        short = _SHORT.get(k)
        if short is None:
            sel = re.search(r"\[([^\]]+)\]\.share$", k)  # mix.sources[text].share -> text
            short = sel.group(1) if sel else k.split(".")[-1]
        bits.append(_safe(short + (fmt_num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))))
    if parts.get("random") is not None:
        bits.append(f"r{parts['random']}")
    bits.append(f"s{train['seed']}")
    return "-".join(b for b in bits if b)


def expand(
    cfg: SweepConfig,
    stats: Callable[[dict, int], StreamStats] | None = None,
) -> tuple[list[Point], list[str]]:
    """(points, messages about dropped points). `stats(mix, logical_batch)` measures a mix for
    the budget mode (default `measure_stream`, cached per mix and batch)."""
    base = cfg.base_train_dict()
    stats = stats or measure_stream
    cache: dict[str, StreamStats] = {}

    def stats_for(train: dict) -> StreamStats:
        k = json.dumps([train["mix"], train["logical_batch"]], sort_keys=True, default=str)
        if k not in cache:
            cache[k] = stats(train["mix"], train["logical_batch"])
        return cache[k]

    for k, values in cfg.grid.items():  # every key must exist in the base (typos fail here)
        set_dotted(copy.deepcopy(base), k, values[0], f"grid.{k}")
    if cfg.random is not None:
        for k in cfg.random.params:
            set_dotted(copy.deepcopy(base), k, 0, f"random.params.{k}")

    grid = [dict(zip(cfg.grid, combo)) for combo in itertools.product(*cfg.grid.values())] if cfg.grid else [{}]
    mixtures = _mixture_list(cfg, base)
    budget = [(c, s) for c in cfg.budget.flops for s in cfg.budget.sizes] if cfg.budget is not None else [(None, None)]
    draws = _random_draws(cfg)
    seeds = cfg.seeds or [base["seed"]]
    combos = list(itertools.product(grid, mixtures, budget, draws, seeds))
    width = max(3, len(str(len(combos) - 1)))
    points, dropped = [], []
    for index, (g, mixture, (C, size), draw, seed) in enumerate(combos):
        train = copy.deepcopy(base)
        varied: dict[str, Any] = {}
        for k, v in g.items():
            set_dotted(train, k, v, f"grid.{k}")
            varied[k] = v
        if mixture is not None:
            j, shares = mixture
            for s, v in shares.items():
                set_dotted(train, f"mix.sources[{s}].share", v, f"mixtures[{j}].{s}")
            varied["mixture"] = j
        if size is not None:
            train["model"] = _size_model(train["model"], size, "budget.sizes")
            varied["size"] = _size_label(size)
            varied["budget_flops"] = C
        if draw is not None:
            j, values = draw
            for k, v in values.items():
                set_dotted(train, k, v, f"random.params.{k}")
                varied[k] = v
        train["seed"] = seed
        if cfg.seeds:
            varied["seed"] = seed
        if size is not None:
            label = _size_label(size)
        else:  # a preset, or its shape when the grid or the base changes it
            m = from_dict(ModelConfig, train["model"], where="model").resolve()
            shape = (m.dim, m.n_layers, m.n_heads)
            label = m.preset if shape == PRESETS[m.preset] else f"{m.preset}-d{m.dim}L{m.n_layers}"
        parts = {
            "budget": C,
            "mixture": mixture[0] if mixture is not None else None,
            "random": draw[0] if draw is not None else None,
            "random_keys": set(draw[1]) if draw is not None else set(),
        }
        name = _name(index, width, label, train, varied, parts)
        eval_at: list[int] = []
        if C is not None:
            st = stats_for(train)
            per_step = step_flops_expected(train["model"], st)
            steps = round(C / per_step)
            off = abs(steps * per_step - C) / C
            if steps < 1 or off > cfg.budget.tolerance:
                dropped.append(
                    f"{name}: dropped, {steps} steps of {per_step:.4g} FLOPs spend {steps * per_step:.4g}, "
                    f"{off:.1%} off the budget C = {C:.4g} (tolerance {cfg.budget.tolerance:.0%})"
                )
                continue
            train["steps"] = steps
            eval_at = sorted({round(c / per_step) for c in cfg.budget.flops if c < C} - {0, steps})
            eval_at = [s for s in eval_at if s < steps]
            if train.get("eval") is not None:
                train["eval"]["at"] = sorted(set(train["eval"].get("at") or []) | set(eval_at))
        try:
            typed = from_dict(TrainConfig, train, where=f"point {name}")
        except ConfigError as e:
            raise ConfigError(f"{e} (settings {json.dumps(varied, default=str)})") from e
        train = to_dict(typed)
        points.append(
            Point(
                index=index,
                name=name,
                settings=varied,
                train=train,
                seed=seed,
                shares=normalized_shares(train),
                budget_flops=C,
                eval_at=eval_at,
            )
        )
    names = [p.name for p in points]
    if len(set(names)) != len(names):  # cannot happen while the index leads the name; kept as a guard
        raise ConfigError(f"points: duplicate trial names {sorted({n for n in names if names.count(n) > 1})}")
    if not points:
        raise ConfigError("budget: every point was dropped: " + "; ".join(dropped))
    return points, dropped
