"""The training loop one worker runs: inside a Ray Train worker (DDP / FSDP2 over the process
group Ray set up) or in-process without Ray (bench, single-machine debugging).

Per optimizer step: take this rank's share of the logical batch from its own stream (opened
with the logical batch as the global batch, data.py), noise it, all-reduce the count of
maskable tokens so the loss is normalized by the whole logical batch (diffusion.py), then
forward/backward it in micro-batches of `physical_batch` rows (DDP syncs only on the last),
clip, step.

Randomness is a function of the data, not of the process layout: t comes from the stratified
grid over the global batch (one shared draw per step), the mask and CFG noise of a row from a
generator seeded by (seed, global row index). With the lr a pure function of the step, a
resumed run replays the uninterrupted one exactly, and a run on another world size or
accumulation factor computes the same losses up to float summation order. A checkpoint
therefore needs only model, optimizer, step and the stream's position.

Metrics (loss, per-modality loss, lr, tokens/s, data-wait fraction, grad norm) go to stdout
as JSON lines and to ``metrics.jsonl`` and TensorBoard in the log dir (rank 0); the run's
summary goes to ``summary.json`` in the run directory at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from trimodal.config import to_dict
from trimodal.dataset.storage import is_s3, resolve
from trimodal.errors import ConfigError
from trimodal.faults import fault_int, faults_from_env
from trimodal.model.batch_size import derive
from trimodal.model.checkpoint import gather_state, latest_checkpoint, load_into, save_checkpoint
from trimodal.model.config import TrainConfig
from trimodal.model.data import Prefetcher, open_stream
from trimodal.model.diffusion import MASKABLE, DiffusionLoss, Noise, stratified_t
from trimodal.model.evaluate import elbo, unigram_entropy
from trimodal.model.optim import build_optimizer, lr_factor, set_lr
from trimodal.model.transformer import Transformer


def seed_for(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") & (2**63 - 1)


def log_dir_for(cfg: TrainConfig) -> str:
    """Local directory for metrics.jsonl and TensorBoard (S3 cannot append; a copy of
    metrics.jsonl is uploaded with each checkpoint). Resolve it once, in the driver: Ray
    workers run in other working directories."""
    if cfg.log_dir:
        return os.path.abspath(cfg.log_dir)
    if not is_s3(cfg.output):
        return cfg.output
    return os.path.join(os.path.abspath("trimodal_logs"), cfg.output[len("s3://") :].replace("/", "_"))


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    distributed: bool = False  # a torch process group exists (Ray Train)


_BATCH_KEYS = ("tokens", "modality", "segment_ids", "positions")


def _to_tensors(batch: dict, pin: bool = False) -> dict:
    out = {}
    for k in _BATCH_KEYS:
        t = torch.from_numpy(np.ascontiguousarray(batch[k]))
        out[k] = t.pin_memory() if pin else t
    return out


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def wrap_model(model: torch.nn.Module, cfg: TrainConfig, ctx: WorkerContext) -> torch.nn.Module:
    if ctx.distributed and cfg.fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if ctx.device.type == "cuda"
            else None
        )
        kw = {"mp_policy": mp} if mp else {}
        model.to(ctx.device)
        for blk in model.blocks:
            fully_shard(blk, **kw)
        fully_shard(model, **kw)
    elif ctx.distributed:
        # Plain DDP over whatever process group exists (Ray Train's, or torchrun's).
        from torch.nn.parallel import DistributedDataParallel

        model.to(ctx.device)
        model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    else:
        model.to(ctx.device)
    if cfg.compile:
        model = torch.compile(model)
    return model


@dataclass
class Progress:
    """The run's own state beside model, optimizer and stream: the next step and the losses the
    summary reports (the first loss travels through checkpoints so a resumed run reports it)."""

    step: int = 0
    first_loss: float | None = None
    loss: float | None = None

    def state_dict(self) -> dict:
        return {"step": self.step, "metrics": {"loss": self.loss, "first_loss": self.first_loss}}

    def load_state_dict(self, d: dict) -> None:
        self.step = int(d["step"])
        m = d.get("metrics", {})
        self.first_loss, self.loss = m.get("first_loss"), m.get("loss")


def kill_point(rank: int) -> int | None:
    """The step after which this worker SIGKILLs itself, from TRIMODAL_FAULTS
    (``train_kill_at_step``, ``train_kill_rank``, default rank 0); None when no fault is set."""
    spec = faults_from_env()
    at = fault_int(spec, "train_kill_at_step")
    return at if at is not None and rank == fault_int(spec, "train_kill_rank", 0) else None


class Trainer:
    """One worker's run in steps: `setup` (stream, model, optimizer), `resume` (newest
    checkpoint), then per step `train_step` and `_after_step` (log, checkpoint, fault)."""

    def __init__(self, cfg: TrainConfig, ctx: WorkerContext | None = None):
        self.cfg, self.ctx = cfg, ctx or WorkerContext()
        self.log_dir = log_dir_for(cfg)
        self._tb = self._jsonl = None
        self.progress = Progress()
        self.resumed_from: str | None = None
        self._kill_at = kill_point(self.ctx.rank)

    # logs -----------------------------------------------------------------------------
    def _log(self, rec: dict) -> None:
        if self.ctx.rank != 0:
            return
        line = json.dumps(rec, sort_keys=True)
        # stderr, as stdout is left to results (`--json`); a plain write, as Ray Train patches
        # `print` on its workers to tee into its logger, which would show every line twice.
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        if self._jsonl is not None:
            self._jsonl.write(line + "\n")
            self._jsonl.flush()
        if self._tb is not None and "step" in rec and "event" not in rec:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k.replace(".", "/"), v, rec["step"])

    def _open_logs(self) -> None:
        if self.ctx.rank != 0:
            return
        os.makedirs(self.log_dir, exist_ok=True)
        self._jsonl = open(os.path.join(self.log_dir, "metrics.jsonl"), "a")
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(self.log_dir, "tb"))

    def _close_logs(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()
        self._tb = self._jsonl = None

    def _allreduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.ctx.distributed and self.ctx.world_size > 1:
            dist.all_reduce(x)
        return x

    def _row_noise(self, step: int, first_row: int, n: int, seq_len: int) -> Noise:
        base = step * self.cfg.logical_batch + first_row
        return Noise.per_row([seed_for(self.cfg.seed, "noise", base + i) for i in range(n)], seq_len)

    # setup and resume -----------------------------------------------------------------
    def setup(self) -> None:
        """Check the batch layout, open this rank's stream, derive the hyperparameters and build
        model, optimizer and loss."""
        cfg, ctx = self.cfg, self.ctx
        W = ctx.world_size
        if cfg.logical_batch % (cfg.physical_batch * W):
            raise ConfigError(
                f"logical_batch: {cfg.logical_batch} is not a multiple of physical_batch × "
                f"world size = {cfg.physical_batch} × {W}"
            )
        self.per_rank = cfg.logical_batch // W
        self.accum = self.per_rank // cfg.physical_batch
        self.stream = open_stream(cfg.mix, ctx.rank, W, cfg.logical_batch)
        self.vocab, self.seq_len = self.stream.vocab, int(self.stream.seq_len)
        horizon = cfg.horizon_tokens or float(cfg.steps * cfg.logical_batch * self.seq_len)
        self.derived = derive(cfg.hyper, cfg.logical_batch, self.seq_len, horizon)

        torch.manual_seed(cfg.seed)  # identical init on every rank
        model = Transformer(cfg.model, self.vocab.size)
        self.n_params = model.num_params()
        self.model = wrap_model(model, cfg, ctx)
        self.optimizer = build_optimizer(self.model, self.derived, cfg.optim)
        self.loss_fn = DiffusionLoss(cfg.diffusion, self.vocab)
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if ctx.device.type == "cuda" else contextlib.nullcontext()
        )

    def resume(self) -> None:
        """Load the newest complete checkpoint of the run, if any: model, optimizer, stream
        position and progress."""
        latest = latest_checkpoint(self.cfg.output)
        if latest is None:
            return
        state = load_into(latest, self.model, self.optimizer)
        self.stream.load_state_dict(state["mixer"])
        self.progress.load_state_dict(state)
        self.resumed_from = latest

    # one optimizer step ---------------------------------------------------------------
    def train_step(self, step: int, batch: dict, wait: float = 0.0) -> dict:
        """Noise this rank's rows, forward/backward them in micro-batches, clip, step. Returns
        the step's metrics, read from the device once (the step's one host sync); `wait` (the
        seconds this rank waited for the batch) is reduced with them."""
        cfg, ctx, dev = self.cfg, self.ctx, self.ctx.device
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        W, first_row = ctx.world_size, ctx.rank * self.per_rank
        lr = self.derived.lr * lr_factor(step, cfg.steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
        set_lr(optimizer, lr)
        batch = _to_device(batch, dev)
        shared = torch.Generator().manual_seed(seed_for(cfg.seed, "t", step))
        t = loss_fn.scale_t(
            stratified_t(cfg.logical_batch, first_row, self.per_rank, cfg.diffusion.t_sampling, shared, dev)
        )
        corr = loss_fn.corrupt(batch, t=t, noise=self._row_noise(step, first_row, self.per_rank, self.seq_len))
        global_count = self._allreduce(corr.maskable.sum().to(torch.float64)).clamp_min(1.0)
        scale = (W / global_count).float()  # DDP / FSDP average grads over W: undo it, normalize globally
        n_mod = len(MASKABLE)
        stats = torch.zeros(2 + 2 * n_mod, dtype=torch.float64, device=dev)
        for k in range(self.accum):
            sl = slice(k * cfg.physical_batch, (k + 1) * cfg.physical_batch)
            b, c = {key: v[sl] for key, v in batch.items()}, corr.rows(sl)
            sync = k == self.accum - 1
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter on the last only
                model.set_requires_gradient_sync(sync)
            with model.no_sync() if not sync and hasattr(model, "no_sync") else contextlib.nullcontext():
                with self.autocast:
                    logits = model(c.noisy, b["positions"], b["segment_ids"], predict=c.masked)
                out = loss_fn.from_logits(logits, b, c)
                (out.loss_sum * scale).backward()
            stats[0] += out.loss_sum.detach()
            stats[2 : 2 + n_mod] += out.modality_sums
            stats[2 + n_mod :] += out.modality_counts
        stats[1] = (batch["segment_ids"] != 0).sum()
        if cfg.optim.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        else:
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        if hasattr(gnorm, "full_tensor"):
            gnorm = gnorm.full_tensor()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        red = self._allreduce(torch.cat([stats, torch.tensor([wait], dtype=torch.float64, device=dev)]))
        red = red.tolist()  # the step's one host sync
        rec = {
            "loss": red[0] / float(global_count),
            "lr": lr,
            "tokens": red[1],
            "data_wait_s": red[-1] / W,
            "grad_norm": float(gnorm),
        }
        for i, m in enumerate(MASKABLE):
            s_, n_ = red[2 + i], red[2 + n_mod + i]
            if n_ > 0:
                rec[f"loss.{m}"] = s_ / n_
        return rec

    # log, checkpoint, fault -----------------------------------------------------------
    def _after_step(self, done: int, end: int, rec: dict, dt: float) -> None:
        cfg = self.cfg
        if done % cfg.log_every == 0 or done == end:
            out = {
                "step": done,
                "loss": rec["loss"],
                "lr": rec["lr"],
                "tokens_per_s": rec["tokens"] / dt,
                "data_wait_frac": rec["data_wait_s"] / dt,
                "step_time_s": dt,
                "grad_norm": rec["grad_norm"],
            }
            out.update({k: v for k, v in rec.items() if k.startswith("loss.")})
            self._log(out)
        if done % cfg.checkpoint_every == 0 or done == end:
            self._checkpoint(done)
        self._maybe_kill(done)

    def _checkpoint(self, step: int) -> None:
        msd, osd = gather_state(self.model, self.optimizer)  # collective under FSDP
        if self.ctx.rank == 0:
            p = self.progress.state_dict()
            uri = save_checkpoint(
                self.cfg.output,
                step,
                msd,
                osd,
                {"mixer": self.fetch.state_dict(), "metrics": p["metrics"]},
                self.vocab.to_json(),
                to_dict(self.cfg),
                keep=self.cfg.keep_checkpoints,
            )
            self._log({"event": "checkpoint", "step": step, "uri": uri})
            if self.log_dir != self.cfg.output and self._jsonl is not None:
                # Remote runs keep a copy of the metrics beside the checkpoints.
                with open(self._jsonl.name, "rb") as f:
                    resolve(self.cfg.output).join("metrics.jsonl").write_bytes_atomic(f.read())
        if self.ctx.distributed and self.ctx.world_size > 1:
            dist.barrier()

    def _maybe_kill(self, done: int) -> None:
        """Crash injection (TRIMODAL_FAULTS, docs/design.md): SIGKILL this worker after step
        `train_kill_at_step`, once per run directory (a marker file remembers it)."""
        if self._kill_at != done:
            return
        marker = resolve(self.cfg.output).join(f".killed-at-{done}")
        if marker.exists():
            return
        marker.write_bytes_atomic(str(os.getpid()).encode())
        sys.stderr.write(
            f"train_kill_at_step: killing worker rank {self.ctx.rank} (pid {os.getpid()}) after step {done}\n"
        )
        sys.stderr.flush()
        if self._jsonl is not None:
            self._jsonl.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def evaluate(self) -> dict:
        """The deterministic ELBO of the current model on the run's first `eval_batches` logical
        batches (every rank evaluates the same rows: under FSDP each forward is collective),
        in physical-batch pieces, with the unigram entropy of the same rows as the baseline."""
        cfg = self.cfg
        stream = open_stream(cfg.mix, 0, 1, cfg.logical_batch)
        batches = []
        for _ in range(cfg.eval_batches):
            try:
                b = next(stream)
            except StopIteration:
                break
            batches += [
                {k: v[i : i + cfg.physical_batch] for k, v in b.items()}
                for i in range(0, len(b["tokens"]), cfg.physical_batch)
            ]
        with self.autocast:
            res = elbo(self.model, cfg.diffusion, self.vocab, batches, seed=cfg.seed)
        res["unigram"] = unigram_entropy(batches)
        self._log({"event": "eval", **res})
        return res

    # the run ----------------------------------------------------------------------------
    def _start_record(self) -> dict:
        cfg = self.cfg
        return {
            "event": "start",
            "params": self.n_params,
            "world_size": self.ctx.world_size,
            "accum_steps": self.accum,
            "physical_batch": cfg.physical_batch,
            "logical_batch": cfg.logical_batch,
            "seq_len": self.seq_len,
            "start_step": self.progress.step,
            "resumed_from": self.resumed_from,
            "hyper": self.derived.to_dict(),
            "device": str(self.ctx.device),
            "pid": os.getpid(),
        }

    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        self.setup()
        self.resume()
        start = self.progress.step
        self._open_logs()
        self._log(self._start_record())
        for w in self.derived.warnings:
            self._log({"event": "warning", "message": w})

        pin = ctx.device.type == "cuda"
        self.fetch = Prefetcher(self.stream, cfg.prefetch, transform=lambda b: _to_tensors(b, pin=pin))
        self.model.train()
        tot_tokens = tot_time = tot_wait = tot_all = 0.0
        end = min(cfg.steps, cfg.stop_at_step or cfg.steps)
        try:
            for step in range(start, end):
                t0 = time.perf_counter()
                try:
                    batch = next(self.fetch)
                except StopIteration:  # every source reached its max_epochs
                    self._log({"event": "data_exhausted", "step": step})
                    if step > start and step % cfg.checkpoint_every:
                        self._checkpoint(step)
                    end = step
                    break
                wait = time.perf_counter() - t0
                rec = self.train_step(step, batch, wait)
                dt = time.perf_counter() - t0
                p = self.progress
                p.step, p.loss = step + 1, rec["loss"]
                p.first_loss = rec["loss"] if p.first_loss is None else p.first_loss
                tot_all += dt
                tot_wait += wait
                if step > start:  # the first step of a process pays for warm-up (allocations, compile)
                    tot_tokens += rec["tokens"]
                    tot_time += dt
                self._after_step(step + 1, end, rec, dt)
        finally:
            self.fetch.close()
        summary = {
            "step": max(end, start),
            "steps": cfg.steps,
            "start_step": start,
            "first_loss": self.progress.first_loss,
            "final_loss": self.progress.loss,
            "params": self.n_params,
            "hyper": self.derived.to_dict(),
            "resumed_from": self.resumed_from,
            "world_size": ctx.world_size,
            "log_dir": self.log_dir,
            "tokens_per_s": tot_tokens / tot_time if tot_time > 0 else None,
            "data_wait_frac": tot_wait / tot_all if tot_all > 0 else None,
        }
        if cfg.eval_batches:
            summary["eval"] = self.evaluate()
        if ctx.rank == 0:
            summary["checkpoint"] = latest_checkpoint(cfg.output)
            self._log({"event": "done", **summary})
            resolve(cfg.output).join("summary.json").write_bytes_atomic(
                json.dumps(summary, indent=2, sort_keys=True, default=str).encode()
            )
        self._close_logs()
        return summary


def ray_train_loop(config: dict) -> None:
    """`train_loop_per_worker` for Ray Train's TorchTrainer."""
    import ray.train
    import ray.train.torch

    from trimodal.config import from_dict

    cfg = from_dict(TrainConfig, config["train"])
    # Ray workers inherit the environment of the cluster's start, not of this job's driver:
    # the driver forwards what must reach them (TRIMODAL_FAULTS).
    os.environ.update(config.get("env", {}))
    rctx = ray.train.get_context()
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    ctx = WorkerContext(
        rank=rctx.get_world_rank(),
        world_size=rctx.get_world_size(),
        device=ray.train.torch.get_device(),
        distributed=dist.is_initialized(),
    )
    Trainer(cfg, ctx).run()
