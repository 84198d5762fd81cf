"""The held-out NELBO during training (``eval:`` in the train config, `EvalConfig`).

The trainer calls `TrainEval.after_step` after every step and `TrainEval.final` for the
summary; everything else lives here, so the trainer's part is a hook. Every `every` steps and
after the last one, each rank evaluates its shard of the eval stream (eval_data.py: batch i to
rank i mod W) with the estimator of evaluate.py, the float64 partial sums are all-reduced, and
rank 0 logs one record ``{"event": "eval", "step", "eval.nelbo", "eval.nelbo.text", ...,
"eval.time_s"}`` with the compute so far (`Compute.fields`: tokens, FLOPs) to
stderr, metrics.jsonl and TensorBoard (as eval/nelbo/text, ...). The figures are those
`trimodal eval` gives for the same checkpoint, rows and draws, up to float summation order.

Under FSDP every forward is collective, so each rank runs the same number of forwards: ranks
agree each batch whether any still has rows (one all-reduce) and a rank without runs a
throwaway all-padding batch; the conditional pass then runs on every batch. Under DDP the
wrapped module is called directly (a forward without grad needs no collective).
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist

from trimodal.errors import ConfigError
from trimodal.model.eval_data import eval_rows, rows_for_tokens
from trimodal.model.evaluate import EvalSums, accumulate, flatten, summarize


class TrainEval:
    def __init__(self, trainer):
        self.tr, self.cfg = trainer, trainer.cfg.eval
        self.last: dict | None = None
        self._vocab_uri: str | None = None

    def after_step(self, done: int, end: int) -> None:
        if self.cfg is None:
            return
        if (self.cfg.every and done % self.cfg.every == 0) or done == end or done in self.cfg.at:
            self.evaluate(done)

    def final(self, step: int) -> dict | None:
        """The evaluation of the model after `step` (taken now unless the last one was)."""
        if self.cfg is None:
            return None
        if self.last is None or self.last["step"] != step:
            self.evaluate(step)
        return self.last

    def _vocab(self) -> str:
        """The model's vocabulary as a file, for the mixer to lay the eval ids out with (in a
        temporary directory removed with this object)."""
        if self._vocab_uri is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="trimodal-eval-")
            self._vocab_uri = os.path.join(self._tmp.name, "vocab.json")
            with open(self._vocab_uri, "w") as f:
                f.write(self.tr.vocab.to_json())
        return self._vocab_uri

    def evaluate(self, step: int) -> dict:
        tr, cfg, ctx = self.tr, self.cfg, self.tr.ctx
        t0 = time.perf_counter()
        source, split = (cfg.mix, "train") if cfg.mix is not None else (tr.cfg.mix, "eval")
        max_rows = rows_for_tokens(cfg.tokens, source.seq_len)
        vocab, rows = eval_rows(source, split, ctx.rank, ctx.world_size, cfg.batch, max_rows, self._vocab())
        if vocab.to_json() != tr.vocab.to_json():
            raise ConfigError("eval.mix: its vocabulary differs from the training stream's")
        model = tr.model
        fsdp = ctx.distributed and ctx.world_size > 1 and not hasattr(model, "module")
        if hasattr(model, "module"):  # DDP: the plain module, no collective in its forward
            model = model.module
        acc = EvalSums(cfg.n_t, cfg.seeds, tr.vocab.size)
        was_training = tr.model.training
        tr.model.eval()
        try:
            with tr.autocast:
                while True:
                    item = next(rows, None)
                    if fsdp:
                        more = torch.tensor([0.0 if item is None else 1.0], device=ctx.device)
                        dist.all_reduce(more, op=dist.ReduceOp.MAX)
                        if more.item() == 0:
                            break
                        if item is None:  # keep step with the ranks that still have rows
                            pad = {
                                k: np.zeros((1, tr.seq_len), np.int64)
                                for k in ("tokens", "modality", "segment_ids", "positions")
                            }
                            accumulate(
                                model,
                                vocab,
                                pad,
                                0,
                                EvalSums(cfg.n_t, cfg.seeds, vocab.size),
                                cfg.seed,
                                always_cond=True,
                            )
                            continue
                    elif item is None:
                        break
                    first, batch = item
                    accumulate(model, vocab, batch, first, acc, cfg.seed, always_cond=fsdp)
        finally:
            tr.model.train(was_training)
        if ctx.distributed and ctx.world_size > 1:
            v = torch.from_numpy(acc.flat()).to(ctx.device)
            dist.all_reduce(v)
            acc = acc.from_flat(v.cpu().numpy())
        res = {"step": step, "split": split, **summarize(acc), "time_s": time.perf_counter() - t0}
        tr.metrics.eval_record(step, {**flatten(res), "eval.time_s": res["time_s"]}, tr.compute.fields(tr.progress))
        self.last = res
        return res
