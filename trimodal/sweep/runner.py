"""Running a sweep on Ray Tune, resuming it, and reading its state.

`run_sweep`: validate and expand the whole sweep (points.py) before Ray starts, write
`sweep.json` (the config and the points), then one Tune run over the unfinished points: each a
function trial (trial.py) under `tune.with_resources` (the point's CPUs and GPU, or a small
reservation for a multi-worker trial whose TorchTrainer reserves its workers), at most
`max_concurrent_trials` at once (default: what the cluster's CPUs, or GPUs, hold), no scheduler
(every point must reach its budget), Tune's own table silenced in favour of one line per trial
event and a line every `progress_every_s` saying what the sweep waits on. At the end every
finished trial's rows go into `results.parquet`.

Resume is our own bookkeeping, not `Tuner.restore`: a trial is finished when its `done.json`
exists, written by the trial itself after its rows. Tune snapshots its experiment state from
the driver periodically (`TUNE_GLOBAL_CHECKPOINT_S`, auto-adjusted), so a driver SIGKILLed
between a trial's end and the next snapshot leaves that trial "RUNNING" in the state, and
`Tuner.restore(resume_unfinished=True)` would train it again; restore also replays Tune's own
checkpoints, which we do not keep (the trainer's checkpoints in the trial's run dir are the
state). `--resume` therefore checks that the config still expands to the same points
(sweep.json), and starts a new Tune run (``tune/attempt-N``) over the points without a marker:
each continues from the newest checkpoint in its stable run dir, and replays the identical
stream, so the table equals an uninterrupted sweep's (tested by SIGKILLing the driver).

Layout of the sweep dir (`<storage_path>/<name>`, local or s3://):
``sweep.json``, ``driver.json`` (pid and host of the running driver), ``trials/<name>/`` (the
run dir: checkpoints/, metrics.jsonl, summary.json, point.json, rows.json, done.json or
error.json), ``results.parquet``, and for local sweeps ``tune/`` (Tune's experiment dirs; for
s3:// sweeps they stay under ./trimodal_logs/sweeps/<name>).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable

from trimodal.dataset.storage import is_s3, resolve
from trimodal.errors import ConfigError
from trimodal.sweep.config import SweepConfig, load_sweep
from trimodal.sweep.points import Point, expand
from trimodal.sweep.table import read_table, to_table, write_table
from trimodal.sweep.trial import DONE, ERROR, ROWS, read_json, read_jsonl, run_trial

SWEEP_JSON, DRIVER_JSON, RESULTS = "sweep.json", "driver.json", "results.parquet"
STATES = ("pending", "running", "interrupted", "done", "error")


def _stderr(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def trial_dir(cfg: SweepConfig, name: str) -> str:
    return resolve(cfg.sweep_dir).join("trials", name).uri


def _tune_storage(cfg: SweepConfig) -> str:
    if is_s3(cfg.sweep_dir):
        return os.path.abspath(os.path.join("trimodal_logs", "sweeps", cfg.name, "tune"))
    return os.path.join(cfg.sweep_dir, "tune")


def plan(cfg: SweepConfig, stats=None) -> tuple[list[Point], list[str]]:
    """The points with their run dirs set, and the dropped points' messages."""
    points, dropped = expand(cfg, stats=stats)
    for p in points:
        p.train["output"] = trial_dir(cfg, p.name)
        p.train["log_dir"] = None
    return points, dropped


def _check_same_points(cfg: SweepConfig, points: list[Point], stored: dict) -> None:
    old = {p["name"]: p["settings"] for p in stored["points"]}
    new = {p.name: json.loads(json.dumps(p.settings, default=str)) for p in points}
    if old != new:
        gone, added = sorted(set(old) - set(new)), sorted(set(new) - set(old))
        changed = sorted(n for n in set(old) & set(new) if old[n] != new[n])
        raise ConfigError(
            f"{cfg.name}: the config no longer expands to the sweep's points in {cfg.sweep_dir} "
            f"(gone {gone[:3]}, new {added[:3]}, changed {changed[:3]}); a resumed sweep keeps its points: "
            "start a new sweep (another name) instead"
        )


def trial_resources(cfg: SweepConfig, train: dict) -> dict[str, float]:
    """What one trial's function reserves: the worker's CPUs (and a GPU) for a single-worker
    point; for a multi-worker point a little CPU, as its TorchTrainer reserves its workers."""
    if train["num_workers"] > 1:
        return {"cpu": cfg.resources.trial_cpus}
    cpus = cfg.resources.cpus_per_trial or train["cpus_per_worker"]
    return {"cpu": cpus, "gpu": 1} if train["use_gpu"] else {"cpu": cpus}


def max_concurrent(cfg: SweepConfig, points: list[Point], cluster: dict[str, float]) -> int:
    """`resources.max_concurrent_trials`, else how many of the most demanding trial the
    cluster holds at once: floor(cluster CPUs / trial CPUs), and GPUs alike."""
    if cfg.resources.max_concurrent_trials:
        return cfg.resources.max_concurrent_trials
    n = len(points)
    for p in points:
        t = p.train
        w = t["num_workers"]
        cpus = trial_resources(cfg, t)["cpu"] + (w * t["cpus_per_worker"] if w > 1 else 0)
        n = min(n, math.floor(cluster.get("CPU", 0) / cpus + 1e-9))
        if t["use_gpu"]:
            n = min(n, math.floor(cluster.get("GPU", 0) / w + 1e-9))
    return max(1, n)


def _progress_callback(cfg: SweepConfig, total: int, skipped: int, log: Callable[[str], None]):
    from ray import tune

    class Progress(tune.Callback):
        """One line per trial event, and every `progress_every_s` what the sweep waits on."""

        def __init__(self):
            self.steps: dict[str, tuple] = {}
            self.done = skipped
            self.last = time.monotonic()

        def on_trial_start(self, iteration, trials, trial, **info):
            log(f"[sweep] start {trial}")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.steps[str(trial)] = (result.get("step"), result.get("steps"), result.get("eval_nelbo"))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            step, _, nelbo = self.steps.get(str(trial), (None, None, None))
            ev = f", eval NELBO {nelbo:.4f}" if nelbo is not None else ""
            log(f"[sweep] done {trial} (step {step}{ev}); {self.done}/{total} trials done")

        def on_trial_error(self, iteration, trials, trial, **info):
            log(f"[sweep] ERROR {trial}: see {trial_dir(cfg, str(trial))}/{ERROR}")

        def on_step_end(self, iteration, trials, **info):
            if time.monotonic() - self.last < cfg.progress_every_s:
                return
            self.last = time.monotonic()
            running = [t for t in trials if t.status == "RUNNING"]
            pending = [t for t in trials if t.status == "PENDING"]
            parts = []
            for t in running:
                step, steps, _ = self.steps.get(str(t), (None, None, None))
                parts.append(f"{t} at step {step}/{steps}" if step is not None else f"{t} starting")
            waiting = f"waiting on {len(running)} running: " + ", ".join(parts) if running else "waiting to start"
            if pending:
                waiting += f"; {len(pending)} pending (for resources or max_concurrent_trials)"
            log(f"[sweep] {self.done}/{total} done; {waiting}")

    return Progress()


def collect(cfg: SweepConfig, points: list[Point]) -> tuple[int, int]:
    """Write results.parquet from every finished trial's rows; (rows, finished trials)."""
    rows, finished = [], 0
    for p in points:
        out = trial_dir(cfg, p.name)
        if read_json(out, DONE) is None:
            continue
        finished += 1
        rows.extend(read_json(out, ROWS) or [])
    sources = list(points[0].shares) if points else []
    write_table(to_table(rows, sources), resolve(cfg.sweep_dir).join(RESULTS).uri)
    return len(rows), finished


def run_sweep(
    config,
    address: str | None = None,
    resume: bool = False,
    stats=None,
    log: Callable[[str], None] = _stderr,
) -> dict:
    """Run (or with `resume` continue) the sweep of `config` (a SweepConfig, mapping or YAML
    path); returns a summary: sweep dir, results URI, counts, dropped points, errors."""
    t0 = time.monotonic()
    cfg = load_sweep(config)
    points, dropped = plan(cfg, stats)
    for msg in dropped:
        log(f"[sweep] {msg}")
    root = resolve(cfg.sweep_dir)
    stored = read_json(root.uri, SWEEP_JSON)
    if stored is not None and not resume:
        raise ConfigError(
            f"name: the sweep dir {cfg.sweep_dir} already holds a sweep; pass --resume to continue it, "
            "or choose another name or storage_path"
        )
    if stored is not None:
        _check_same_points(cfg, points, stored)
    root.makedirs()
    from trimodal.config import to_dict

    record = {
        "name": cfg.name,
        "config": to_dict(cfg),
        "split": cfg.split_name,
        "points": [p.to_json() for p in points],
        "dropped": dropped,
    }
    root.join(SWEEP_JSON).write_bytes_atomic(json.dumps(record, indent=1, default=str).encode())
    root.join(DRIVER_JSON).write_bytes_atomic(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode()
    )
    todo = [p for p in points if read_json(trial_dir(cfg, p.name), DONE) is None]
    if len(todo) < len(points):
        log(f"[sweep] {len(points) - len(todo)} of {len(points)} trials already done: not run again")
    errors: list[str] = []
    if todo:
        errors = _tune_run(cfg, points, todo, address, log)
    n_rows, finished = collect(cfg, points)
    root.join(DRIVER_JSON).write_bytes_atomic(json.dumps({"pid": None, "ended": time.time()}).encode())
    res = {
        "sweep": cfg.name,
        "sweep_dir": cfg.sweep_dir,
        "results": root.join(RESULTS).uri,
        "trials": len(points),
        "done": finished,
        "ran": len(todo),
        "errors": errors,
        "dropped": dropped,
        "rows": n_rows,
        "wall_s": round(time.monotonic() - t0, 2),
    }
    log(f"[sweep] {finished}/{len(points)} trials done, {n_rows} rows in {res['results']} ({res['wall_s']} s)")
    return res


def _tune_run(cfg: SweepConfig, points: list[Point], todo: list[Point], address, log) -> list[str]:
    import ray
    from ray import tune

    from trimodal.cluster import ensure_ray, forwarded_env

    # Tune's own console output (a table or boxes, depending on this switch) gives way to the
    # progress lines of `_progress_callback`; its result files are still written under tune/.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ensure_ray(address)
    limit = max_concurrent(cfg, points, ray.cluster_resources())
    log(f"[sweep] {len(todo)} trials to run, at most {limit} at once, in {cfg.sweep_dir}")
    env = forwarded_env()
    split = cfg.split_name
    configs = [
        {
            "sweep": cfg.name,
            "split": split,
            "point": p.to_json(),
            "train": p.train,
            "threads": max(1, int(trial_resources(cfg, p.train)["cpu"])),
            "env": env,
            "report_every_s": min(5.0, cfg.progress_every_s),
        }
        for p in todo
    ]
    storage = _tune_storage(cfg)
    attempt = 0
    while os.path.exists(os.path.join(storage, f"attempt-{attempt}")):
        attempt += 1

    # Tune's param space holds only each trial's index (its experiment state stays small
    # whatever the train configs hold); the trial reads its config from the list.
    tuner = tune.Tuner(
        tune.with_resources(_by_index(configs), lambda c: trial_resources(cfg, configs[c["_"]]["train"])),
        param_space={"_": tune.grid_search(list(range(len(configs))))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=limit,
            # a finished trial's process takes the next trial of the same resources: no new
            # actor and no cold imports of torch and the trainer (bench/bench_sweep.py)
            reuse_actors=True,
            trial_name_creator=lambda t: configs[t.config["_"]]["point"]["name"],
            trial_dirname_creator=lambda t: configs[t.config["_"]]["point"]["name"],
        ),
        run_config=tune.RunConfig(
            name=f"attempt-{attempt}",
            storage_path=storage,
            # a single-worker trial whose process dies (a node lost) is started again by Tune
            # and resumes from its checkpoint; a multi-worker one restarts inside its
            # TorchTrainer (its own max_failures)
            failure_config=tune.FailureConfig(max_failures=retries(todo)),
            verbose=0,
            callbacks=[_progress_callback(cfg, len(points), len(points) - len(todo), log)],
        ),
    )
    grid = tuner.fit()
    errors = []
    for r in grid:
        if r.error is not None:
            errors.append(f"{configs[r.config['_']]['point']['name']}: {type(r.error).__name__}: {r.error}")
    return errors


def retries(points: list[Point]) -> int:
    """Tune's restarts of a trial: the largest `max_failures` of the single-worker points."""
    return max([p.train["max_failures"] for p in points if p.train["num_workers"] == 1] or [0])


def _by_index(configs: list[dict]):
    """A trainable that runs trial `configs[config["_"]]`: Tune's param space holds only the
    index, so its experiment state stays small whatever the train configs hold."""

    def trial(config):
        run_trial(configs[config["_"]])

    trial.__name__ = "trimodal_trial"
    return trial


def _driver_alive(root) -> bool:
    d = read_json(root.uri, DRIVER_JSON)
    if not d or d.get("pid") is None or d.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(d["pid"]), 0)
    except (ProcessLookupError, PermissionError, ValueError):
        return False
    return True


def sweep_status(target: str) -> dict:
    """The state of every trial of a sweep, from its dir or its YAML: pending, running,
    interrupted (the driver is gone: `--resume` continues it), done or error; the step reached
    and the last evaluation."""
    if target.endswith((".yaml", ".yml")):
        cfg = load_sweep(target)
        root = resolve(cfg.sweep_dir)
    else:
        root = resolve(target)
    stored = read_json(root.uri, SWEEP_JSON)
    if stored is None:
        raise ConfigError(f"{target}: no sweep here ({root.uri}/{SWEEP_JSON} not found)")
    alive = _driver_alive(root)
    trials, counts = [], dict.fromkeys(STATES, 0)
    for p in stored["points"]:
        out = root.join("trials", p["name"]).uri
        done, err = read_json(out, DONE), read_json(out, ERROR)
        recs = read_jsonl(resolve(out).join("metrics.jsonl").uri)
        steps = [r for r in recs if "event" not in r and "step" in r]
        evals = [r for r in recs if r.get("event") == "eval"]
        point = read_json(out, "point.json")
        if done is not None:
            state = "done"
        elif err is not None:
            state = "error"
        elif not recs and point is None:
            state = "pending"
        else:
            state = "running" if alive else "interrupted"
        last_eval = {"step": evals[-1]["step"], "nelbo": evals[-1].get("eval.nelbo")} if evals else None
        counts[state] += 1
        trials.append(
            {
                "name": p["name"],
                "state": state,
                "step": done["step"] if done else (steps[-1]["step"] if steps else 0),
                "steps": (point or {}).get("train", {}).get("steps"),
                "last_eval": last_eval,
                "error": err["error"] if err else None,
            }
        )
    results = root.join(RESULTS)
    return {
        "sweep": stored["name"],
        "sweep_dir": root.uri,
        "driver_running": alive,
        "counts": counts,
        "trials": trials,
        "dropped": stored.get("dropped", []),
        "results": results.uri if results.exists() else None,
        "rows": read_table(results.uri).num_rows if results.exists() else 0,
    }
