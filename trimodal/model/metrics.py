"""What a run records about itself: its progress and compute (checkpointed), and the records it
writes (stderr, ``metrics.jsonl``, TensorBoard, ``summary.json``).

`RunProgress` is the run's state beside model, optimizer and stream: the next step, the losses
the summary reports and the compute seen so far (real and padded tokens, FLOPs; flops.py says
what is counted). It travels through checkpoints as ``{"step", "metrics": {...}}``; a
checkpoint written before the compute counters existed loads with them at 0.

`MetricsLog` writes rank 0's records. Kinds of record, told apart by ``event``:

- no event: a training step (``step``, loss, lr, speed, compute), also to TensorBoard;
- ``event: "eval"`` with a ``step``: an evaluation during training, its figures under
  ``eval.*`` (`MetricsLog.eval_record`), also to TensorBoard under eval/; the place for
  per-N-steps evaluation hooks;
- ``start``, ``warning``, ``checkpoint``, ``data_exhausted``, ``done``: events, JSON only.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from trimodal.dataset.storage import is_s3, resolve
from trimodal.model.config import TrainConfig
from trimodal.model.flops import dense_flops_per_token, step_flops

# Constant over a run: in the JSON records, not worth a TensorBoard curve.
_NOT_SCALARS = frozenset({"step", "params", "params_non_embedding", "flops_per_token_dense"})


def log_dir_for(cfg: TrainConfig) -> str:
    """Local directory for metrics.jsonl and TensorBoard (S3 cannot append; a copy of
    metrics.jsonl is uploaded with each checkpoint). Resolve it once, in the driver: Ray
    workers run in other working directories."""
    if cfg.log_dir:
        return os.path.abspath(cfg.log_dir)
    if not is_s3(cfg.output):
        return cfg.output
    return os.path.join(os.path.abspath("trimodal_logs"), cfg.output[len("s3://") :].replace("/", "_"))


_COUNTERS = ("tokens_real", "tokens_padded", "flops", "flops_non_embedding")


@dataclass
class RunProgress:
    """The next step, the first and last loss (the first travels through checkpoints so a
    resumed run reports it) and the compute seen so far, all steps and ranks together:
    real tokens (segment id ≠ 0), padded tokens (every position, padding included) and the
    training FLOPs C, total and non-embedding (total less the output head)."""

    step: int = 0
    first_loss: float | None = None
    loss: float | None = None
    tokens_real: float = 0.0
    tokens_padded: float = 0.0
    flops: float = 0.0
    flops_non_embedding: float = 0.0

    def state_dict(self) -> dict:
        metrics = {"loss": self.loss, "first_loss": self.first_loss}
        metrics.update({k: getattr(self, k) for k in _COUNTERS})
        return {"step": self.step, "metrics": metrics}

    def load_state_dict(self, d: dict) -> None:
        self.step = int(d["step"])
        m = d.get("metrics", {})
        self.first_loss, self.loss = m.get("first_loss"), m.get("loss")
        for k in _COUNTERS:
            setattr(self, k, float(m.get(k, 0.0)))

    def after_step(self, step: int, rec: dict, compute: Compute) -> None:
        """Count step `step` (0-based) done, from its record (`Trainer.train_step`)."""
        self.step, self.loss = step + 1, rec["loss"]
        self.first_loss = rec["loss"] if self.first_loss is None else self.first_loss
        f = compute.step(rec["tokens"], rec["doc_sq"])
        self.tokens_real += rec["tokens"]
        self.tokens_padded += rec["positions"]
        self.flops += f["total"]
        self.flops_non_embedding += f["non_embedding"]


class Compute:
    """The model's compute figures (flops.py) for records: parameter counts, the dense FLOPs
    per token, and per step the FLOPs of its real tokens and documents."""

    def __init__(self, cfg: TrainConfig, vocab_size: int, params: int, params_non_embedding: int):
        self.model_cfg, self.vocab_size = cfg.model, vocab_size
        self.params, self.params_non_embedding = params, params_non_embedding
        self.dense_per_token = dense_flops_per_token(cfg.model, vocab_size)["total"]

    def step(self, real_tokens: float, len_sq_sum: float) -> dict[str, float]:
        return step_flops(self.model_cfg, self.vocab_size, real_tokens, len_sq_sum)

    def fields(self, p: RunProgress) -> dict:
        """The compute fields of every record: parameters, FLOPs per real token (measured so
        far, attention as packed included; the dense figure before any token), tokens, C."""
        return {
            "params": self.params,
            "params_non_embedding": self.params_non_embedding,
            "flops_per_token_dense": self.dense_per_token,
            "flops_per_token": p.flops / p.tokens_real if p.tokens_real else float(self.dense_per_token),
            **{k: getattr(p, k) for k in _COUNTERS},
        }


class MetricsLog:
    """Rank 0's records: each to stderr as a JSON line, to ``metrics.jsonl`` in the log dir, and
    (training steps and evaluations) to TensorBoard. Other ranks write nothing."""

    def __init__(self, cfg: TrainConfig, rank: int, log_dir: str):
        self.cfg, self.rank, self.log_dir = cfg, rank, log_dir
        self._tb = self._jsonl = None

    def open(self) -> None:
        if self.rank != 0:
            return
        os.makedirs(self.log_dir, exist_ok=True)
        self._jsonl = open(os.path.join(self.log_dir, "metrics.jsonl"), "a")
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(self.log_dir, "tb"))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()
        self._tb = self._jsonl = None

    def flush(self) -> None:
        if self._jsonl is not None:
            self._jsonl.flush()

    def log(self, rec: dict) -> None:
        if self.rank != 0:
            return
        line = json.dumps(rec, sort_keys=True)
        # stderr, as stdout is left to results (`--json`); a plain write, as Ray Train patches
        # `print` on its workers to tee into its logger, which would show every line twice.
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        if self._jsonl is not None:
            self._jsonl.write(line + "\n")
            self._jsonl.flush()
        if self._tb is not None and "step" in rec and rec.get("event", "eval") == "eval":
            for k, v in rec.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _NOT_SCALARS:
                    self._tb.add_scalar(k.replace(".", "/"), v, rec["step"])

    def step_record(self, done: int, rec: dict, dt: float, compute: dict) -> None:
        """The record of training step `done` (1-based): its loss, lr, speed and the run's
        compute so far (`Compute.fields`)."""
        out = {
            "step": done,
            "loss": rec["loss"],
            "lr": rec["lr"],
            "tokens_per_s": rec["tokens"] / dt,
            "data_wait_frac": rec["data_wait_s"] / dt,
            "step_time_s": dt,
            "grad_norm": rec["grad_norm"],
            **compute,
        }
        out.update({k: v for k, v in rec.items() if k.startswith("loss.")})
        self.log(out)

    def eval_record(self, step: int, figures: dict, compute: dict | None = None) -> dict:
        """An evaluation at training step `step`: ``{"event": "eval", "step", **figures}`` (flat
        ``eval.*`` scalars, evaluate.flatten) with the compute so far, so held-out loss can be
        plotted against C. Returns the record."""
        rec = {"event": "eval", "step": step, **figures, **(compute or {})}
        self.log(rec)
        return rec

    def upload(self) -> None:
        """Remote runs keep a copy of metrics.jsonl beside their checkpoints."""
        if self.rank == 0 and self.log_dir != self.cfg.output and self._jsonl is not None:
            with open(self._jsonl.name, "rb") as f:
                resolve(self.cfg.output).join("metrics.jsonl").write_bytes_atomic(f.read())

    def write_summary(self, summary: dict) -> None:
        """The ``done`` record, and ``summary.json`` in the run directory (rank 0)."""
        if self.rank != 0:
            return
        self.log({"event": "done", **summary})
        resolve(self.cfg.output).join("summary.json").write_bytes_atomic(
            json.dumps(summary, indent=2, sort_keys=True, default=str).encode()
        )
