"""The training loop one worker runs: inside a Ray Train worker (DDP / FSDP2 over the process
group Ray set up) or in-process without Ray (bench, single-machine debugging).

In steps, torchtitan-style: `setup` (stream, model built on the meta device and materialized per
shard by build.py, optimizer, loss), `resume` (the newest checkpoint, on any world size), then per step
`train_step` and `_after_step` (log, checkpoint, crash injection). The stateful parts (model,
optimizer, stream, `RunProgress`) each have their state dict; checkpoints are sharded (checkpoint.py).

Per optimizer step: take this rank's share of the logical batch from its own stream (opened
with the logical batch as the global batch, data.py), noise it, all-reduce the count of
maskable tokens so the loss is normalized by the whole logical batch (diffusion.py), build the
attention masks of all micro-batches once, then forward/backward the micro-batches of
`physical_batch` rows (DDP / FSDP sync only on the last), clip, step.

A step the GPU never waits on: the batch's t and noise are drawn on the prefetch thread and
copied from pinned memory without blocking; model + fused loss have static shapes and compile as
one graph (`compile` defaults to on under CUDA); the step's metrics are read back with ONE
`.tolist()` at its end, the only host sync of the step.

Randomness is a function of the data, not of the process layout: t comes from stratified
strata over the global batch (one shared draw and permutation per step), the mask and CFG noise
of a row from a generator seeded by (seed, global row index), each parameter's init from
(seed, its name). With the lr a pure function of the step, a resumed run replays the
uninterrupted one exactly, and a run on another world size or accumulation factor computes
the same losses up to float summation order (bit for bit when nothing reduces over shards, as
tested with clipping off). A checkpoint therefore needs only model, optimizer, step and the
stream's position.

Metrics (loss, per-modality loss, lr, tokens/s, data-wait fraction, grad norm, and the compute
so far: parameters, FLOPs per token, real and padded tokens, cumulative FLOPs C; flops.py) go to
stderr as JSON lines and to ``metrics.jsonl`` and TensorBoard in the log dir (rank 0, metrics.py);
the start record holds the planned padding share (a warning above 20%); the run's summary goes
to ``summary.json`` in the run directory at the end. With ``eval:`` the held-out NELBO is taken
every `eval.every` steps and at the end (eval_train.py, one hook in `_after_step`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

import numpy as np
import torch
import torch.distributed as dist

from trimodal.config import to_dict
from trimodal.dataset.storage import resolve
from trimodal.errors import ConfigError
from trimodal.faults import fault_int, faults_from_env
from trimodal.model.attention import attention_masks, choose_backend
from trimodal.model.batch_size import derive
from trimodal.model.build import WorkerContext, autocast_for, bf16_enabled, build_model, compile_enabled
from trimodal.model.checkpoint import latest_checkpoint, load_into, read_json, save_checkpoint
from trimodal.model.config import TrainConfig
from trimodal.model.data import Prefetcher, open_stream, planned_padding
from trimodal.model.diffusion import MASKABLE, DiffusionLoss, Noise, stratified_t
from trimodal.model.eval_train import TrainEval
from trimodal.model.flops import doc_length_squares
from trimodal.model.metrics import Compute, MetricsLog, RunProgress, log_dir_for
from trimodal.model.optim import build_optimizer, lr_factor, set_lr
from trimodal.model.parameterization import parameterization_record
from trimodal.model.seeding import seed_for
from trimodal.model.transformer import count_params

__all__ = [
    "Trainer",
    "WorkerContext",
    "build_model",
    "compile_enabled",
    "log_dir_for",
    "ray_train_loop",
    "seed_for",
]


_BATCH_KEYS = ("tokens", "modality", "segment_ids", "positions")
# train_step's stats vector: loss sum, real tokens, positions (padding included), Σ doc len²,
# data wait, then the per-modality loss sums and counts from _MOD on
_LOSS, _TOKENS, _POSITIONS, _DOC_SQ, _WAIT, _MOD = range(6)


class _PrepareSteps:
    """The prefetch thread's transform: a stream batch -> host tensors for step `step` (counted
    from `first_step` in stream order): the batch, its rows' t (the step's shared stratified
    draw, already scaled to [t_min, 1]) and their per-row mask / CFG noise. Pinned on CUDA so
    that the step copies them without blocking: all of the step's randomness is drawn here, off
    the training thread, and none of it needs a host sync."""

    def __init__(self, trainer: Trainer, first_step: int, pin: bool):
        self.tr, self.step, self.pin = trainer, first_step, pin

    def __call__(self, batch: dict) -> dict:
        tr, cfg = self.tr, self.tr.cfg
        step, first_row = self.step, tr.ctx.rank * tr.per_rank
        self.step += 1
        out = {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in _BATCH_KEYS}
        shared = torch.Generator().manual_seed(seed_for(cfg.seed, "t", step))
        out["t"] = tr.loss_fn.scale_t(
            stratified_t(cfg.logical_batch, first_row, tr.per_rank, cfg.diffusion.t_sampling, shared)
        )
        base = step * cfg.logical_batch + first_row
        noise = Noise.per_row([seed_for(cfg.seed, "noise", base + i) for i in range(tr.per_rank)], tr.seq_len)
        out["noise_token"], out["noise_doc"] = noise.token, noise.doc
        # compute accounting: Σ len² of this rank's documents, one bincount (flops.py)
        out["doc_sq"] = torch.tensor(float(doc_length_squares(batch["segment_ids"])), dtype=torch.float64)
        return {k: v.pin_memory() for k, v in out.items()} if self.pin else out


def kill_point(rank: int) -> int | None:
    """The step after which this worker SIGKILLs itself, from TRIMODAL_FAULTS
    (``train_kill_at_step``, ``train_kill_rank``, default rank 0); None when no fault is set."""
    spec = faults_from_env()
    at = fault_int(spec, "train_kill_at_step")
    return at if at is not None and rank == fault_int(spec, "train_kill_rank", 0) else None


def pause_point() -> tuple[int | None, int]:
    """(step after which every worker pauses, for how many seconds), from TRIMODAL_FAULTS
    (``train_pause_at_step``, ``train_pause_s``, default 300): a drill holds the run still at a
    known step (after its checkpoint) while it removes a node; (None, 0) when no fault is set."""
    spec = faults_from_env()
    return fault_int(spec, "train_pause_at_step"), fault_int(spec, "train_pause_s", 300)


def check_same_parameterization(cfg: TrainConfig, saved: dict, uri: str) -> None:
    """A run resumes under the parameterization it started with: another one changes the
    optimizer's groups (the checkpoint would not load) and every layer's scale."""
    old = saved.get("model", {})
    for k, default in (("parameterization", "standard"), ("base_width", None), ("base_depth", None)):
        if old.get(k, default) != getattr(cfg.model, k):
            raise ConfigError(
                f"model.{k}: {getattr(cfg.model, k)!r}, but the run's checkpoint {uri} was trained with "
                f"{old.get(k, default)!r}; resume with the same value or start a new output"
            )


class Trainer:
    """One worker's run in steps: `setup` (stream, model, optimizer), `resume` (newest
    checkpoint), then per step `train_step` and `_after_step` (log, checkpoint, fault)."""

    def __init__(self, cfg: TrainConfig, ctx: WorkerContext | None = None):
        self.cfg, self.ctx = cfg, ctx or WorkerContext()
        self.log_dir = log_dir_for(cfg)
        self.metrics = MetricsLog(cfg, self.ctx.rank, self.log_dir)
        self.progress = RunProgress()
        self.resumed_from: str | None = None
        self._kill_at = kill_point(self.ctx.rank)
        self._pause_at, self._pause_s = pause_point()

    def _log(self, rec: dict) -> None:
        self.metrics.log(rec)

    def _allreduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.ctx.distributed and self.ctx.world_size > 1:
            dist.all_reduce(x)
        return x

    # setup and resume -----------------------------------------------------------------
    def setup(self) -> None:
        """Check the batch layout, open this rank's stream, derive the hyperparameters and build
        model (meta device, sharded, materialized per shard), optimizer and loss."""
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

        self.model, self.n_params = build_model(cfg, self.vocab.size, ctx)
        non_embedding = count_params(cfg.model, self.vocab.size)["non_embedding"]
        self.compute = Compute(cfg, self.vocab.size, self.n_params, non_embedding)
        self.compiled = compile_enabled(cfg, ctx.device)
        self.backend = choose_backend(cfg.model.attention, ctx.device)
        self.optimizer = build_optimizer(self.model, self.derived, cfg.optim, cfg.model)
        self.loss_fn = DiffusionLoss(cfg.diffusion, self.vocab)
        self.autocast = autocast_for(cfg, ctx.device)

    def resume(self) -> None:
        """Load the newest complete checkpoint of the run, if any: model, optimizer, stream
        position and progress."""
        latest = latest_checkpoint(self.cfg.output)
        if latest is None:
            return
        check_same_parameterization(self.cfg, read_json(latest, "config.json"), latest)
        state = load_into(latest, self.model, self.optimizer)
        self.stream.load_state_dict(state["mixer"])
        self.progress.load_state_dict(state)
        self.resumed_from = latest

    # one optimizer step ---------------------------------------------------------------
    def train_step(self, step: int, batch: dict, wait: float = 0.0) -> dict:
        """One optimizer step over this rank's rows (a batch from `_PrepareSteps`: tokens,
        layout, t, noise and Σ doc len²). Everything stays on the device: the corruption, one
        attention mask build for all micro-batches, the compiled forward + fused loss of each
        micro-batch, the clip and the optimizer step; the metrics are read back once at the end
        (the step's one host sync). `wait` (seconds this rank waited for the batch) is reduced
        with them."""
        cfg, dev = self.cfg, self.ctx.device
        lr = self.derived.lr * lr_factor(step, cfg.steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
        set_lr(self.optimizer, lr)
        if "doc_sq" not in batch:  # not from _PrepareSteps: count on the host here
            batch["doc_sq"] = torch.tensor(float(doc_length_squares(batch["segment_ids"].cpu().numpy())))
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        stats = torch.zeros(_MOD + 2 * len(MASKABLE), dtype=torch.float64, device=dev)
        stats[_DOC_SQ], stats[_WAIT] = batch.pop("doc_sq"), wait
        t, noise = batch.pop("t"), Noise(batch.pop("noise_token"), batch.pop("noise_doc"))
        corr = self.loss_fn.corrupt(batch, t=t, noise=noise)
        global_count = self._allreduce(corr.maskable.sum(dtype=torch.float64)).clamp_min(1.0)
        self._micro_steps(batch, corr, global_count, stats)
        stats[_TOKENS] = (batch["segment_ids"] != 0).sum()
        stats[_POSITIONS] = batch["segment_ids"].numel()
        gnorm = self._optimizer_step()
        red = self._allreduce(stats)
        red = torch.cat([red, gnorm.reshape(1).to(red), global_count.reshape(1)]).tolist()  # the one host sync
        return self._step_record(red, lr)

    def _micro_steps(self, batch: dict, corr, global_count: torch.Tensor, stats: torch.Tensor) -> None:
        """Forward + backward of each micro-batch of `physical_batch` rows (gradient sync on the
        last only), adding the loss sums to `stats`."""
        cfg, model, n_mod = self.cfg, self.model, len(MASKABLE)
        scale = (self.ctx.world_size / global_count).float()  # DDP / FSDP average grads over W: undo it
        masks = attention_masks(self.backend, batch["segment_ids"], cfg.physical_batch)
        for k in range(self.accum):
            sl = slice(k * cfg.physical_batch, (k + 1) * cfg.physical_batch)
            b, c = {key: v[sl] for key, v in batch.items()}, corr.rows(sl)
            sync = k == self.accum - 1
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter on the last only
                model.set_requires_gradient_sync(sync)
            with model.no_sync() if not sync and hasattr(model, "no_sync") else contextlib.nullcontext():
                with self.autocast:
                    out = self.loss_fn.compute(model, b, c, mask=masks[k])
                (out.loss_sum * scale).backward()
            stats[_LOSS] += out.loss_sum.detach()
            stats[_MOD : _MOD + n_mod] += out.modality_sums
            stats[_MOD + n_mod : _MOD + 2 * n_mod] += out.modality_counts

    def _optimizer_step(self) -> torch.Tensor:
        """Clip (or only measure) the gradient norm, step, zero the gradients; the norm stays on
        the device."""
        params = [p for p in self.model.parameters()]
        if self.cfg.optim.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        else:
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if hasattr(gnorm, "full_tensor"):
            gnorm = gnorm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return gnorm

    def _step_record(self, red: list[float], lr: float) -> dict:
        """The step's figures from the reduced stats + [grad norm, global maskable count]."""
        n_mod = len(MASKABLE)
        rec = {
            "loss": red[_LOSS] / red[-1],
            "lr": lr,
            "tokens": red[_TOKENS],
            "positions": red[_POSITIONS],
            "doc_sq": red[_DOC_SQ],
            "data_wait_s": red[_WAIT] / self.ctx.world_size,
            "grad_norm": red[-2],
        }
        for i, m in enumerate(MASKABLE):
            s_, n_ = red[_MOD + i], red[_MOD + n_mod + i]
            if n_ > 0:
                rec[f"loss.{m}"] = s_ / n_
        return rec

    # log, checkpoint, fault -----------------------------------------------------------
    def _after_step(self, done: int, end: int, rec: dict, dt: float) -> None:
        cfg = self.cfg
        if done % cfg.log_every == 0 or done == end:
            self.metrics.step_record(done, rec, dt, self.compute.fields(self.progress))
        if done % cfg.checkpoint_every == 0 or done == end:
            self._checkpoint(done)
        self.evals.after_step(done, end)  # held-out NELBO (eval_train.py)
        self._maybe_pause(done)
        self._maybe_kill(done)

    def _checkpoint(self, step: int) -> None:
        """Every rank writes its own shards (checkpoint.py); rank 0 adds the JSON files."""
        p = self.progress.state_dict()
        uri = save_checkpoint(
            self.cfg.output,
            step,
            self.model,
            self.optimizer,
            {"mixer": self.fetch.state_dict(), "metrics": p["metrics"]},
            self.vocab.to_json(),
            to_dict(self.cfg),
            rank=self.ctx.rank,
            keep=self.cfg.keep_checkpoints,
        )
        if self.ctx.rank == 0:
            self._log({"event": "checkpoint", "step": step, "uri": uri})
            self.metrics.upload()
        if self.ctx.distributed and self.ctx.world_size > 1:
            dist.barrier()

    def _maybe_pause(self, done: int) -> None:
        """Crash drill (TRIMODAL_FAULTS): after step `train_pause_at_step` every worker writes a
        `.paused-at-N.rankR` marker (its pid) in `output` and waits `train_pause_s` seconds, once per
        run directory: the drill waits on the markers, then removes a node while nothing moves."""
        if self._pause_at != done:
            return
        marker = resolve(self.cfg.output).join(f".paused-at-{done}.rank{self.ctx.rank}")
        if marker.exists():
            return
        self.metrics.flush()
        marker.write_bytes_atomic(str(os.getpid()).encode())
        sys.stderr.write(
            f"train_pause_at_step: worker rank {self.ctx.rank} (pid {os.getpid()}) paused after step {done}\n"
        )
        sys.stderr.flush()
        threading.Event().wait(self._pause_s)

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
        self.metrics.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    # the run ----------------------------------------------------------------------------
    def _start_record(self) -> dict:
        cfg = self.cfg
        return {
            "event": "start",
            **self.compute.fields(self.progress),
            "world_size": self.ctx.world_size,
            "accum_steps": self.accum,
            "physical_batch": cfg.physical_batch,
            "logical_batch": cfg.logical_batch,
            "seq_len": self.seq_len,
            "start_step": self.progress.step,
            "resumed_from": self.resumed_from,
            "hyper": self.derived.to_dict(),
            "parameterization": parameterization_record(cfg.model),
            "device": str(self.ctx.device),
            "compile": self.compiled,
            "bf16": bf16_enabled(cfg, self.ctx.device),
            "attention": self.backend,
            "pid": os.getpid(),
        }

    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        self.setup()
        self.resume()
        self.evals = TrainEval(self)
        start = self.progress.step
        self.metrics.open()
        warnings = list(self.derived.warnings)
        rec = self._start_record()
        if ctx.rank == 0:
            from trimodal.mixer.preview import padding_warning

            rec["padding_frac"] = pad = planned_padding(self.stream)
            if padding_warning(pad):
                warnings.append(padding_warning(pad))
        self._log(rec)
        for w in warnings:
            self._log({"event": "warning", "message": w})

        prepare = _PrepareSteps(self, start, pin=ctx.device.type == "cuda")
        self.fetch = Prefetcher(self.stream, cfg.prefetch, transform=prepare)
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
                self.progress.after_step(step, rec, self.compute)
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
            **self.compute.fields(self.progress),
            "hyper": self.derived.to_dict(),
            "resumed_from": self.resumed_from,
            "world_size": ctx.world_size,
            "log_dir": self.log_dir,
            "tokens_per_s": tot_tokens / tot_time if tot_time > 0 else None,
            "data_wait_frac": tot_wait / tot_all if tot_all > 0 else None,
        }
        if cfg.eval is not None:
            summary["eval"] = self.evals.final(summary["step"])
        if ctx.rank == 0:
            summary["checkpoint"] = latest_checkpoint(cfg.output)
        self.metrics.write_summary(summary)
        self.metrics.close()
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


def scaling_config(cfg: TrainConfig):
    """Ray Train's ScalingConfig of a run: `num_workers` workers of `cpus_per_worker` CPUs, and one
    GPU each with `use_gpu` (tested with fake GPUs: tests/jobs/test_placement_gpus.py). One home
    for the train job and the sweep's multi-worker trials."""
    from ray.train import ScalingConfig

    return ScalingConfig(
        num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
    )


def torch_config(cfg: TrainConfig):
    """Ray Train's TorchConfig: NCCL between GPU workers, gloo on CPU."""
    from ray.train.torch import TorchConfig

    return TorchConfig(backend="nccl" if cfg.use_gpu else "gloo")
