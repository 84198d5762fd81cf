"""Held-out evaluation against training on the same model: tokens per second.

    python bench/bench_eval.py                          # CPU: preset tiny, seq 128, batch 8
    python bench/bench_eval.py --preset small --seq-len 256 --n-t 8 --seeds 2

Rows come from the synthetic stream (text documents and image-text / audio-text pairs, so the
conditional pass runs too). Training: the trainer's step on those rows (corruption, forward +
fused loss, backward, AdamW step), `--steps` timed after `--warmup`. Evaluation
(trimodal/model/evaluate.py `accumulate`): forward only under no_grad, K·S joint forwards per
batch plus K·S conditional ones on batches holding a pair. Figures, per position (padding
included, as both run every position):

- train tokens/s: positions of the optimizer steps per second;
- eval forward tokens/s: positions through the model per second during evaluation; at most
  the train figure is the claim to check (a forward is ~1/3 of a training step's work);
- eval tokens/s: positions EVALUATED per second (each costs K·S·(1 or 2) forwards), and
  the cost of one evaluated token in training-token equivalents.

The machine may be shared: the figures are wall-clock and say which device ran them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from trimodal.model.config import DiffusionConfig, ModelConfig, SyntheticStreamConfig  # noqa: E402
from trimodal.model.data import SyntheticStream  # noqa: E402
from trimodal.model.diffusion import DiffusionLoss  # noqa: E402
from trimodal.model.evaluate import EvalSums, accumulate  # noqa: E402
from trimodal.model.transformer import Transformer  # noqa: E402

FPS = {
    "text": {"kind": "sentencepiece", "name": "b", "codebook_size": 8000, "levels": 1, "weights_sha256": "t"},
    "image": {
        "kind": "vqmodel",
        "name": "i",
        "codebook_size": 1024,
        "levels": 1,
        "code_grid": [4, 4],
        "weights_sha256": "i",
    },
    "audio": {"kind": "dac", "name": "a", "codebook_size": 256, "levels": 2, "frame_rate": 8.0, "weights_sha256": "a"},
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--n-t", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--eval-batches", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = SyntheticStreamConfig(fingerprints=FPS, seq_len=args.seq_len, pool=64, seed=0)
    stream = SyntheticStream(spec, 0, 1, args.batch)
    vocab = stream.vocab
    model = Transformer(ModelConfig(preset=args.preset), vocab.size).to(dev)
    model.init_weights(0)
    batches = [next(stream) for _ in range(args.warmup + max(args.steps, args.eval_batches))]
    tensors = [{k: torch.as_tensor(v).long().to(dev) for k, v in b.items()} for b in batches]
    positions = args.batch * args.seq_len

    loss_fn = DiffusionLoss(DiffusionConfig(), vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        out = loss_fn(model, tensors[i], generator=g)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    train_tps = positions / statistics.median(times)

    model.eval()
    acc = EvalSums(args.n_t, args.seeds, vocab.size)
    accumulate(model, vocab, batches[0], 0, EvalSums(args.n_t, args.seeds, vocab.size))  # warm-up
    t0 = time.perf_counter()
    for i in range(args.eval_batches):
        accumulate(model, vocab, batches[i], i * args.batch, acc)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    res = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else f"cpu ({args.threads} thread(s))",
        "preset": args.preset,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "n_t": args.n_t,
        "seeds": args.seeds,
        "train_tokens_per_s": train_tps,
        "eval_forward_tokens_per_s": acc.forward_tokens / dt,
        "eval_tokens_per_s": acc.rows * args.seq_len / dt,
        "forwards_per_eval_token": acc.forward_tokens / (acc.rows * args.seq_len),
    }
    # > 1: an eval forward costs less per position than a training step does
    res["forward_vs_train_step"] = res["eval_forward_tokens_per_s"] / train_tps
    res["eval_token_cost_in_train_tokens"] = train_tps / res["eval_tokens_per_s"]
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:34} {v:.4g}" if isinstance(v, float) else f"{k:34} {v}")
    return res


if __name__ == "__main__":
    main()
