"""One trial of a sweep: the Ray Tune function trainable that trains one point and leaves its
rows and a done marker in its run directory.

A single-worker point trains in the trial's own process (the in-process `Trainer`, under
`tune.with_resources`: fractional CPUs here, a GPU each with `use_gpu`), reporting its step and
evaluations to Tune as it goes. A multi-worker point (`num_workers > 1`) launches a Ray Train
`TorchTrainer` from the trial (Ray 2.60 runs Train V2, where a trainer cannot be handed to a
Tuner); the trial then only waits, on `trial_cpus`, while the workers hold their own resources.

The run directory (`output`, `<sweep>/trials/<name>`) is stable, so a trial started again
(`trimodal sweep --resume`) continues from its newest checkpoint with the identical stream.
When it ends the trial writes, in this order, `rows.json` (its table rows, table.py) and
`done.json`: the done marker is the sweep's bookkeeping of finished trials (runner.py says why
it is ours and not Tune's experiment state). A trial whose marker exists returns at once.
The trainer's JSON lines go to `trial.log` in the log dir instead of the driver's stderr
(metrics.jsonl has them too), so the driver prints only the sweep's progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time

from trimodal.dataset.storage import resolve

DONE, ERROR, ROWS, POINT = "done.json", "error.json", "rows.json", "point.json"


def _write_json(uri: str, name: str, data) -> None:
    resolve(uri).join(name).write_bytes_atomic(json.dumps(data, indent=1, sort_keys=True, default=str).encode())


def read_json(uri: str, name: str):
    loc = resolve(uri).join(name)
    return json.loads(loc.read_bytes().decode()) if loc.exists() else None


def read_jsonl(path_or_uri: str) -> list[dict]:
    loc = resolve(path_or_uri)
    if not loc.exists():
        return []
    return [json.loads(line) for line in loc.read_bytes().decode().splitlines() if line.strip()]


def remove(uri: str, name: str) -> None:
    loc = resolve(uri).join(name)
    if loc.exists():
        loc.fs.delete_file(loc.path)


def _metrics(log_dir: str, output: str) -> list[dict]:
    """The run's records: the log dir's metrics.jsonl (local to the process of rank 0), else
    the copy an s3:// run uploads beside its checkpoints."""
    local = os.path.join(log_dir, "metrics.jsonl")
    return read_jsonl(local) if os.path.exists(local) else read_jsonl(resolve(output).join("metrics.jsonl").uri)


def _tune_trainer_class():
    from trimodal.model.trainer import Trainer

    class TuneTrainer(Trainer):
        """The in-process trainer, reporting its step (at most every `every_s` seconds) and
        each evaluation to Tune: a report waits for the driver, so not every step."""

        every_s = 5.0
        _last = 0.0

        def _after_step(self, done, end, rec, dt):
            super()._after_step(done, end, rec, dt)
            ev = self.evals.last
            evaluated = ev is not None and ev["step"] == done
            now = time.monotonic()
            if evaluated or now - self._last >= self.every_s:
                from ray import tune

                self._last = now
                out = {"step": done, "steps": self.cfg.steps, "loss": rec["loss"]}
                if evaluated and "all" in ev:
                    out["eval_nelbo"] = ev["all"]["nelbo"]
                tune.report(out)

    return TuneTrainer


def _train_single(cfg, threads: int, every_s: float) -> dict:
    import torch

    from trimodal.model.build import WorkerContext

    torch.set_num_threads(max(1, threads))
    device = torch.device("cuda") if cfg.use_gpu and torch.cuda.is_available() else torch.device("cpu")
    trainer = _tune_trainer_class()(cfg, WorkerContext(device=device))
    trainer.every_s = every_s
    return trainer.run()


def _train_multi(cfg, env: dict) -> dict:
    """A TorchTrainer of `num_workers` workers launched from this trial (Train V2)."""
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from trimodal.config import to_dict
    from trimodal.model.trainer import ray_train_loop, scaling_config, torch_config

    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config={"train": to_dict(cfg), "threads": max(1, int(cfg.cpus_per_worker)), "env": env},
        scaling_config=scaling_config(cfg),
        torch_config=torch_config(cfg),
        run_config=RunConfig(
            name=f"train-{os.path.basename(cfg.output.rstrip('/'))}-{int(time.time())}",
            storage_path=os.path.join(cfg.log_dir, "ray"),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return json.loads(resolve(cfg.output).join("summary.json").read_bytes().decode())


def run_trial(config: dict) -> None:
    """The Tune trainable. `config`: sweep (name), split, point (Point.to_json()), train (the
    train config dict, `output` its stable run dir), threads, env (forwarded variables),
    report_every_s."""
    entered = time.time()
    from ray import tune

    from trimodal.config import from_dict
    from trimodal.model.config import TrainConfig
    from trimodal.model.metrics import log_dir_for
    from trimodal.sweep.table import eval_records, trial_rows

    os.environ.update(config.get("env") or {})
    point, train = config["point"], config["train"]
    out = train["output"]
    done = read_json(out, DONE)
    if done is not None:  # finished in an earlier attempt: never trained again
        tune.report({"step": done["step"], "done": True, "skipped": True})
        return
    resolve(out).makedirs()
    remove(out, ERROR)  # an errored trial run again
    _write_json(out, POINT, {"point": point, "train": train, "split": config["split"]})
    t0 = time.time()
    try:
        cfg = from_dict(TrainConfig, train, where=f"point {point['name']}")
        cfg = dataclasses.replace(cfg, log_dir=log_dir_for(cfg))
        os.makedirs(cfg.log_dir, exist_ok=True)
        if cfg.num_workers == 1:
            with open(os.path.join(cfg.log_dir, "trial.log"), "a") as log, contextlib.redirect_stderr(log):
                summary = _train_single(cfg, int(config.get("threads", 1)), float(config.get("report_every_s", 5.0)))
        else:
            summary = _train_multi(cfg, config.get("env") or {})
    except BaseException as e:
        _write_json(out, ERROR, {"error": f"{type(e).__name__}: {e}", "time": time.time()})
        raise
    records = eval_records(_metrics(cfg.log_dir, cfg.output), summary)
    rows = trial_rows(config["sweep"], point, train, config["split"], records, int(summary["step"]))
    _write_json(out, ROWS, rows)
    final = records.get(int(summary["step"]), {})
    marker = {
        "step": int(summary["step"]),
        "rows": len(rows),
        "train_s": time.time() - t0,
        "entered": entered,  # wall clock: function entry, training start and end (bench, tests)
        "started": t0,
        "ended": time.time(),
        "eval_nelbo": final.get("eval.nelbo"),
        "flops": summary.get("flops"),
    }
    _write_json(out, DONE, marker)
    tune.report({"step": marker["step"], "done": True, "eval_nelbo": marker["eval_nelbo"]})
