"""Reading the sweep's results table for a fit: which file, which rows, the FLOPs-per-token relation.

The table (`results.parquet`, one row per trial x checkpoint x split x group) is written by the
sweep runner; here it is only read, by column name. Two row selections:

- `final` (default): each trial's final checkpoint. A run's learning-rate schedule ends there,
  so its loss is the loss of a run trained for exactly that many tokens; an intermediate
  checkpoint of a cosine run sits above that loss (Hoffmann et al. 2022, App. D.1), which would
  bend every law fitted through it.
- `budget`: every row at a budget point (`budget_flops` set), several per trial when a run
  passes several budgets. Right when the trainer's schedule decays at each budget
  (warmup-stable-decay branches); bootstrap intervals still resample whole trials.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from trimodal.errors import ConfigError, InputError

ROWS = ("final", "budget")
SHARE_PREFIX = "share."
RESULTS_FILE = "results.parquet"


def load_results(path: str) -> pd.DataFrame:
    """The table at `path`: the parquet file itself or a sweep directory holding `results.parquet`."""
    if os.path.isdir(path):
        path = os.path.join(path, RESULTS_FILE)
    if not os.path.exists(path):
        raise InputError(f"{path}: no results table")
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise InputError(f"{path}: cannot read the results table ({e})") from e


def pick_split(df: pd.DataFrame, split: str | None) -> str:
    """The split to fit: the one asked for, else `eval` (held out) when present, else the only one."""
    splits = sorted(df["split"].dropna().unique())
    if split is not None:
        if split not in splits:
            raise ConfigError(f"--split: {split!r} is not in the table (has {splits})")
        return split
    if "eval" in splits:
        return "eval"
    if len(splits) == 1:
        return splits[0]
    raise ConfigError(f"--split: the table has several splits {splits} and no 'eval'; name one")


def select(df: pd.DataFrame, target: str = "all", rows: str = "final", split: str | None = None) -> pd.DataFrame:
    """The rows of one group (`target`: all, a modality or a task) in one split, `final` or `budget` rows."""
    if rows not in ROWS:
        raise ConfigError(f"--rows: {rows!r} is not one of {list(ROWS)}")
    groups = sorted(df["group"].dropna().unique())
    if target not in groups:
        raise ConfigError(f"--target: {target!r} is not a group of the table (has {groups})")
    split = pick_split(df, split)
    out = df[(df["group"] == target) & (df["split"] == split)]
    out = out[out["final"].astype(bool)] if rows == "final" else out[out["budget_flops"].notna()]
    out = out[np.isfinite(out["nelbo"]) & (out["nelbo"] > 0)]
    if out.empty:
        raise ConfigError(f"--target {target}: no {rows} rows with a positive nelbo in split {split!r}")
    return out.reset_index(drop=True)


def share_columns(df: pd.DataFrame) -> list[str]:
    """The mix sources' share columns that vary or are used (a source always at 0 is dropped)."""
    cols = sorted(c for c in df.columns if c.startswith(SHARE_PREFIX))
    return [c for c in cols if np.nanmax(df[c].to_numpy(dtype=float), initial=0.0) > 0]


class FlopsPerToken:
    """Training FLOPs per token as a function of N, M(N) = m·N^g, fitted to the table's own rows.

    The table's FLOPs count attention and the output layer, so M(N) is not exactly 6N; a power
    law through (N, flops/tokens) of the trials captures it over the sizes swept. With fewer than
    two sizes the relation cannot be fitted and C = 6ND is used (`source` says which).
    """

    def __init__(self, n: np.ndarray, flops: np.ndarray, tokens: np.ndarray):
        ok = (tokens > 0) & (flops > 0) & (n > 0)
        n, per_token = n[ok], flops[ok] / tokens[ok]
        sizes = np.unique(n)
        if len(sizes) >= 2:
            med = np.array([np.median(per_token[n == s]) for s in sizes])
            self.g, log_m = np.polyfit(np.log(sizes), np.log(med), 1)
            self.m, self.source = float(np.exp(log_m)), "table"
            self.g = float(self.g)
        else:
            self.m, self.g, self.source = 6.0, 1.0, "6ND"

    def __call__(self, n):
        return self.m * np.asarray(n, dtype=float) ** self.g

    def to_dict(self) -> dict:
        return {"m": self.m, "g": self.g, "source": self.source}


def budget_key(df: pd.DataFrame, rel: float = 0.02) -> np.ndarray:
    """A compute budget per row: `budget_flops` where set, else `flops` clustered within `rel`."""
    flops = df["flops"].to_numpy(dtype=float)
    out = df["budget_flops"].to_numpy(dtype=float).copy()
    free = ~np.isfinite(out)
    if free.any():
        # points of one budget land within ~1% of it; gaps larger than `rel` start a new budget
        idx = np.where(free)[0][np.argsort(flops[free])]
        start = 0
        for i in range(1, len(idx) + 1):
            if i == len(idx) or np.log(flops[idx[i]] / flops[idx[i - 1]]) > np.log1p(rel):
                out[idx[start:i]] = np.exp(np.mean(np.log(flops[idx[start:i]])))
                start = i
    return out
