"""Per-trial overhead of the sweep machinery on CPU, against the trial's training time.

    python bench/bench_sweep.py                       # 4 trials of 50 steps, one at a time
    python bench/bench_sweep.py --trials 2 --steps 200 --concurrent 2

A sweep of `--trials` points (a grid over the seed) of the tiny preset on small synthetic
datasets (text documents and image-text pairs, built here without Ray), with a held-out eval
mix evaluated at the end of each trial. One trial at a time by default, so that the times add
up: per trial, the wall time of the Tune trial function splits into

- train: the optimizer steps (Σ step_time_s of metrics.jsonl),
- eval: the held-out evaluation (eval.time_s of the eval records),
- setup + checkpoints + rows: the rest of the trial function (stream, model, optimizer,
  checkpoints, reading the records and writing rows.json / done.json);

and per trial, outside the trial function: Tune's scheduling and the trial actor's start
((sweep wall − Ray start − plan − collect − Σ trial functions) / trials). For comparison, the
same training run in this process without Ray (`Trainer`, no eval), after a warm-up run.

Wall-clock on a possibly shared machine: the figures say what ran them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

FPS = {
    "text": {"kind": "sentencepiece", "name": "t", "codebook_size": 40, "levels": 1, "weights_sha256": "t"},
    "image": {
        "kind": "vqmodel",
        "name": "i",
        "codebook_size": 16,
        "levels": 1,
        "code_grid": [2, 2],
        "weights_sha256": "i",
    },
}


def _dataset(path: str, n: int, seed: int) -> str:
    from trimodal.dataset.dataset import build_dataset

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pair = i % 2 == 1
        rows.append(
            {
                "id": f"d/{i}",
                "source": "d",
                "text": rng.integers(0, 40, 5 if pair else 24).astype(np.int32),
                "image": rng.integers(0, 16, 4).astype(np.int32) if pair else None,
                "audio": None,
                "origin": "",
            }
        )
    build_dataset(path, rows, FPS)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--concurrent", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval-tokens", type=int, default=2048)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    root = tempfile.mkdtemp(prefix="bench-sweep-")
    train_ds = _dataset(os.path.join(root, "train"), 256, 0)
    held = _dataset(os.path.join(root, "held"), 64, 1)
    eval_mix = os.path.join(root, "heldout.yaml")
    with open(eval_mix, "w") as f:
        yaml.safe_dump({"sources": [{"name": "h", "dataset": held, "share": 1.0}], "seq_len": a.seq_len}, f)
    base = {
        "mix": {
            "sources": [{"name": "d", "dataset": train_ds, "share": 1.0, "reverse_prob": 0.5}],
            "seq_len": a.seq_len,
        },
        "steps": a.steps,
        "physical_batch": a.batch,
        "logical_batch": a.batch,
        "checkpoint_every": max(1, a.steps // 2),
        "log_every": 10,
        "tensorboard": False,
        "optim": {"warmup_steps": 2},
        "cpus_per_worker": 1.0,
    }
    sweep = {
        "name": "bench",
        "base": base,
        "storage_path": os.path.join(root, "sweeps"),
        "seeds": list(range(a.trials)),
        "eval": {"mix": eval_mix, "tokens": a.eval_tokens, "n_t": 2, "seeds": 2, "batch": a.batch},
        "resources": {"max_concurrent_trials": a.concurrent},
        "progress_every_s": 3600.0,
    }

    import contextlib

    import torch

    from trimodal.cluster import ensure_ray
    from trimodal.jobs.train import run_train
    from trimodal.sweep.runner import run_sweep

    torch.set_num_threads(1)  # as a trial of one CPU runs
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        run_train({**base, "output": os.path.join(root, "warm")}, in_process=True)  # imports, first-time costs
        t0 = time.perf_counter()
        run_train({**base, "output": os.path.join(root, "plain")}, in_process=True)
        plain_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ensure_ray(num_cpus=2, logging_level="error")
    ray_start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = run_sweep(sweep, log=lambda m: None)
    sweep_s = time.perf_counter() - t0

    per = []
    for name in sorted(os.listdir(os.path.join(res["sweep_dir"], "trials"))):
        d = os.path.join(res["sweep_dir"], "trials", name)
        done = json.load(open(os.path.join(d, "done.json")))
        recs = [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
        train = sum(r["step_time_s"] for r in recs if "event" not in r and "step_time_s" in r)
        # log_every > 1: the logged steps stand for all of them
        logged = [r for r in recs if "event" not in r and "step_time_s" in r]
        train = train * a.steps / max(1, len(logged))
        ev = sum(r.get("eval.time_s", 0.0) for r in recs if r.get("event") == "eval")
        fn = done["ended"] - done["entered"]
        imports = done["started"] - done["entered"]  # imports (torch in a new actor) and config
        per.append(
            {
                "trial": name,
                "trial_fn_s": fn,
                "imports_s": imports,
                "train_s": train,
                "eval_s": ev,
                "rest_s": fn - imports - train - ev,
            }
        )
    n = len(per)
    fn_total = sum(p["trial_fn_s"] for p in per)
    sched = (sweep_s - fn_total / a.concurrent) / n
    mean = {k: sum(p[k] for p in per) / n for k in ("trial_fn_s", "imports_s", "train_s", "eval_s", "rest_s")}
    out = {
        "device": "cpu",
        "cores": os.cpu_count(),
        "trials": n,
        "steps": a.steps,
        "concurrent": a.concurrent,
        "batch": f"{a.batch} x {a.seq_len}",
        "ray_start_s": round(ray_start_s, 2),
        "sweep_wall_s": round(sweep_s, 2),
        "plain_in_process_run_s": round(plain_s, 2),
        "per_trial": {k: round(v, 3) for k, v in mean.items()},
        "per_trial_scheduling_s": round(sched, 3),
        "overhead_vs_train": round((mean["trial_fn_s"] - mean["train_s"] + sched) / mean["train_s"], 3),
    }
    if a.json:
        print(json.dumps(out))
        return
    print(f"sweep of {n} trials × {a.steps} steps (tiny, {out['batch']}), {a.concurrent} at a time, CPU")
    print(
        f"  Ray start {out['ray_start_s']} s; sweep wall {out['sweep_wall_s']} s; one plain in-process run {out['plain_in_process_run_s']} s"
    )
    print("  per trial (mean):")
    print(f"    train                          {mean['train_s']:8.2f} s")
    print(f"    held-out eval                  {mean['eval_s']:8.2f} s")
    print(f"    imports + config in the trial  {mean['imports_s']:8.2f} s")
    print(f"    setup + checkpoints + rows     {mean['rest_s']:8.2f} s")
    print(f"    Tune scheduling + actor start  {sched:8.2f} s")
    print(f"  overhead (all but train) / train: {out['overhead_vs_train']:.2f}")


if __name__ == "__main__":
    main()
