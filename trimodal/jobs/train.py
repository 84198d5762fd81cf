"""`trimodal train CONFIG.yaml [--address ADDR] [--resume] [--in-process] [--json]`.

Runs the masked diffusion trainer as a Ray Train `TorchTrainer` (each worker builds its own
mixer rank stream, DDP over gloo on CPU / NCCL on GPU, FSDP2 when `fsdp: true`), or in this
process without Ray (`--in-process`: one worker, for benches and debugging). A run directory
that already holds checkpoints is refused unless `--resume` is given, so a typo in `output`
never silently continues someone else's run; with `--resume` (and after a Ray Train worker
restart) training continues from the newest complete checkpoint with the identical data stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import uuid

import click

from trimodal.cluster import ensure_ray
from trimodal.config import from_dict, from_yaml, to_dict
from trimodal.dataset.storage import is_s3, resolve
from trimodal.errors import ConfigError
from trimodal.faults import FAULTS_ENV
from trimodal.model.checkpoint import latest_checkpoint
from trimodal.model.config import TrainConfig, absolute_mix


def load_train_config(config) -> TrainConfig:
    """A TrainConfig from a TrainConfig, a mapping or a YAML path, validated whole (the mix
    included: a `mix:` path is read here) before any Ray work, with local paths made absolute
    (Ray workers run in their own working directories) and the log dir fixed."""
    if isinstance(config, TrainConfig):
        # rebuilt, so that a mix given as a mapping or a path is typed and checked too
        cfg = from_dict(TrainConfig, to_dict(config), where="train")
    elif isinstance(config, dict):
        cfg = from_dict(TrainConfig, config, where="train")
    else:
        cfg = from_yaml(TrainConfig, config)
    if not is_s3(cfg.output):
        cfg = dataclasses.replace(cfg, output=resolve(cfg.output).uri)
    if cfg.eval is not None and cfg.eval.mix is not None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, mix=_absolute_mix(cfg.eval.mix)))
    cfg = dataclasses.replace(
        cfg,
        mix=_absolute_mix(cfg.mix),
        tokenizers={
            m: dataclasses.replace(ref, path=ref.path if is_s3(ref.path) else os.path.abspath(ref.path))
            for m, ref in cfg.tokenizers.items()
        },
    )
    from trimodal.model.trainer import log_dir_for

    return dataclasses.replace(cfg, log_dir=log_dir_for(cfg))


# kept under its old name: trimodal.jobs.eval imports it from here
_absolute_mix = absolute_mix


def run_train(config, address: str | None = None, resume: bool = False, in_process: bool = False) -> dict:
    """Train from a TrainConfig / mapping / YAML path; returns the run's summary (steps, first
    and final loss, derived hyperparameters, tokens/s, newest checkpoint URI, log dir).

    With Ray (default) the job is a TorchTrainer of `num_workers` workers on the cluster at
    `address` (or a local Ray started here, or the one already initialized in this process)."""
    from trimodal.model.trainer import Trainer, ray_train_loop, scaling_config, torch_config

    cfg = load_train_config(config)
    existing = latest_checkpoint(cfg.output)
    if existing and not resume:
        raise ConfigError(
            f"output: {cfg.output} already holds checkpoints (newest {existing}); "
            "pass --resume to continue that run, or choose a new output"
        )
    if in_process:
        if cfg.num_workers != 1:
            cfg = dataclasses.replace(cfg, num_workers=1)
            cfg.validate()
        return Trainer(cfg).run()

    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    ensure_ray(address)
    resources = {"CPU": cfg.cpus_per_worker}
    # node_wait_s: Ray Train waits this long for the group's resources at each (re)start (read by
    # its controller, which gets this variable from the driver), and tries only once
    # (controller_failure_limit=0): without it, a group that lost its node and has no spare
    # retries a 60 s wait forever.
    wait_env = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(cfg.node_wait_s)}
    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config={
            "train": to_dict(cfg),
            "threads": max(1, int(cfg.cpus_per_worker)),
            # crash injection reaches the workers even on a Ray already running in this process
            # (ensure_ray forwards it only to a cluster it joins; workers keep their start env)
            "env": {FAULTS_ENV: os.environ[FAULTS_ENV]} if os.environ.get(FAULTS_ENV) else {},
        },
        scaling_config=scaling_config(cfg),
        torch_config=torch_config(cfg),
        # Ray keeps only its own run state here: checkpoints are ours, under `output`.
        run_config=RunConfig(
            name=f"train-{uuid.uuid4().hex[:8]}",
            storage_path=os.path.join(cfg.log_dir, "ray"),
            failure_config=FailureConfig(max_failures=cfg.max_failures, controller_failure_limit=0),
        ),
    )
    stop = threading.Event()
    threading.Thread(target=_say_what_we_wait_on, args=(cfg, resources, stop), daemon=True).start()
    try:
        with _environ(wait_env):
            result = trainer.fit()  # Ray Train 2.60 raises a failed run's error here ...
        if result.error:  # ... earlier versions return it
            raise result.error
    except Exception as e:
        if not _timed_out_waiting(e):
            raise
        raise NodeWaitTimeout(
            f"training stopped: the worker group could not (re)start within node_wait_s = {cfg.node_wait_s:g} s: "
            f"{cfg.num_workers} workers of {resources}{' + 1 GPU' if cfg.use_gpu else ''} did not fit on the "
            "cluster (a node was lost and none came back). Add nodes, or raise node_wait_s; "
            f"`trimodal train --resume` continues from the newest checkpoint ({latest_checkpoint(cfg.output)})"
        ) from e
    finally:
        stop.set()
    return read_summary(cfg.output)


def waiting_line(cfg: TrainConfig, resources: dict, available: dict, total: dict, waited: float) -> str:
    """What a run that has not logged its first step yet waits on, in words."""
    need = dict(resources, **({"GPU": 1} if cfg.use_gpu else {}))
    want = ", ".join(f"{v:g} {k}" for k, v in need.items())
    have = ", ".join(f"{available.get(k, 0):g} of {total.get(k, 0):g} {k} free" for k in need)
    short = [k for k, v in need.items() if cfg.num_workers * v > total.get(k, 0)]
    line = f"[train] {waited:.0f}s: waiting for {cfg.num_workers} Ray Train worker(s) of {want} each ({have})"
    if short:
        line += f"; the cluster has too little {', '.join(short)} for them: add nodes or lower num_workers"
    else:
        line += "; then for the first step (data, model build)"
    return line


def _say_what_we_wait_on(cfg: TrainConfig, resources: dict, stop: threading.Event, every_s: float = 10.0) -> None:
    """Until the first step is logged, say every `every_s` what the run waits on (workers
    being placed, resources short), so a run stuck on resources is not silent."""
    import sys
    import time

    import ray

    t0 = time.monotonic()
    metrics = os.path.join(cfg.log_dir, "metrics.jsonl")

    def logged() -> int:  # a resumed run's log already holds the earlier steps
        return os.path.getsize(metrics) if os.path.exists(metrics) else 0

    before = logged()
    while not stop.wait(every_s):
        if logged() > before:
            return
        try:
            line = waiting_line(
                cfg, resources, ray.available_resources(), ray.cluster_resources(), time.monotonic() - t0
            )
        except Exception:  # Ray going away under us: nothing to report
            return
        print(line, file=sys.stderr, flush=True)


class NodeWaitTimeout(RuntimeError):
    """The worker group waited node_wait_s for its nodes and they did not come."""


def _timed_out_waiting(err: BaseException) -> bool:
    """Whether Ray Train gave up starting the worker group for want of resources (its
    WorkerGroupStartupTimeoutError, possibly wrapped in its controller's error)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__name__ == "WorkerGroupStartupTimeoutError" or "worker group startup timed out" in str(err):
            return True
        err = getattr(err, "controller_failure", None) or err.__cause__
    return False


@contextlib.contextmanager
def _environ(env: dict[str, str]):
    """`env` set in os.environ for the block, then restored."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def read_summary(run_uri: str) -> dict:
    """The summary.json a finished run leaves in its run directory."""
    return json.loads(resolve(run_uri).join("summary.json").read_bytes().decode())


def read_metrics(log_dir: str) -> list[dict]:
    """metrics.jsonl as records, in the order written (a resumed run appends the steps it
    replays again after the ones it logged before the failure)."""
    path = os.path.join(log_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_curve(log_dir: str) -> dict[int, float]:
    """step -> loss; a step logged twice (replayed after a resume) keeps its last value."""
    return {r["step"]: r["loss"] for r in read_metrics(log_dir) if "loss" in r and "event" not in r}


@click.command("train")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in `output`.")
@click.option("--in-process", is_flag=True, help="One worker in this process, without Ray.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def train(config, address, resume, in_process, as_json):
    """Train a masked diffusion model from CONFIG (YAML).

    Per-step metrics go to stderr as JSON lines and to metrics.jsonl / TensorBoard in the log
    dir; checkpoints and summary.json to the config's `output`; the summary to stdout.
    Exit codes: 2 config error, 3 data failed verification, 4 unreadable input."""
    out = run_train(config, address=address, resume=resume, in_process=in_process)
    if as_json:
        click.echo(json.dumps(out, default=str))
    else:
        click.echo(
            f"trained to step {out['step']}: loss {out['first_loss']:.4f} -> {out['final_loss']:.4f}; "
            f"checkpoint {out['checkpoint']}; metrics in {out['log_dir']}"
        )
