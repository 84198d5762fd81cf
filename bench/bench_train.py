"""Training throughput with the mixer feeding the model: tokens/s, model FLOPs utilization (on a
GPU) and the fraction of step time spent waiting for data.

    python bench/bench_train.py                                  # GPU: preset 1b, seq 2048; CPU: small, seq 512
    python bench/bench_train.py --preset 100m --seq-len 1024 --batch 8 --steps 30
    python bench/bench_train.py --stream synthetic               # the same model without the mixer

A three-source dataset (text documents, image-text pairs of 256 image codes, audio-text pairs
of 4-level codes; shares 60/25/15) is written once with the pipeline's writer and mixed with the
mixer's defaults (every source packed), then the trainer runs in this process (`Trainer`, the
code a Ray Train worker runs) with its defaults for `--steps` optimizer steps: on CUDA bf16
autocast, flex attention with the document block mask built once per step, model + fused loss
compiled as one graph (`--no-compile` to compare); SDPA with a boolean mask and no compilation on
CPU. The first `--warmup` steps (allocations, compilation) are left out of the figures.

Figures: real (non-padding) tokens/s; model FLOPs per step = 6·N·tokens for the blocks
(N = non-embedding parameters) + 6·d·V per masked token for the output head + 12·layers·d·Σ len²
over documents for attention (document-masked, so only in-document pairs count); MFU = those
FLOPs / step time / peak (`--peak-tflops`, default from the GPU's name: H100/H200 989, A100 312
dense bf16). These are USEFUL FLOPs: the head runs on every position (a static shape; see
trimodal/model/head_loss.py) but only masked positions count, so its extra ~5% of work shows as
lost MFU. Data wait = time blocked in `next(stream)` / step time: the mixer runs on a prefetch
thread, so it only shows when the mixer is slower than the model.

The machine may be shared: the figures are wall-clock and say which device ran them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from trimodal.config import from_dict  # noqa: E402
from trimodal.dataset.dataset import build_dataset  # noqa: E402
from trimodal.model.config import ModelConfig, TrainConfig  # noqa: E402
from trimodal.model.data import open_stream  # noqa: E402
from trimodal.model.trainer import Trainer, WorkerContext  # noqa: E402
from trimodal.model.transformer import count_params  # noqa: E402

SHARES = {"text": 0.60, "image": 0.25, "audio": 0.15}
FPS = {
    "text": {"kind": "sentencepiece", "name": "bench-text", "codebook_size": 32000, "levels": 1, "weights_sha256": "t"},
    "image": {
        "kind": "vqmodel",
        "name": "bench-image",
        "codebook_size": 16384,
        "levels": 1,
        "code_grid": [16, 16],
        "weights_sha256": "i",
    },
    "audio": {
        "kind": "dac",
        "name": "bench-audio",
        "codebook_size": 1024,
        "levels": 4,
        "frame_rate": 50.0,
        "weights_sha256": "a",
    },
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def write_dataset(root: str, total_tokens: float, seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    paths = {}
    for name, share in SHARES.items():
        budget, rows = int(total_tokens * share), []
        while budget > 0:
            i = len(rows)
            image = audio = None
            if name == "text":
                text = rng.integers(0, 32000, int(np.clip(rng.lognormal(6.0, 0.9), 8, 8000)), dtype=np.int32)
            elif name == "image":
                text = rng.integers(0, 32000, int(rng.integers(8, 48)), dtype=np.int32)
                image = rng.integers(0, 16384, 256, dtype=np.int32)
            else:
                text = rng.integers(0, 32000, int(rng.integers(8, 60)), dtype=np.int32)
                audio = rng.integers(0, 1024, 4 * int(rng.integers(50, 200)), dtype=np.int32)
            rows.append(
                {"id": f"{name}/{i}", "source": name, "text": text, "image": image, "audio": audio, "origin": ""}
            )
            budget -= len(text) + (0 if image is None else len(image)) + (0 if audio is None else len(audio))
        paths[name] = os.path.join(root, name)
        fps = {"text": FPS["text"], **({name: FPS[name]} if name != "text" else {})}
        build_dataset(paths[name], rows, fps, shard_rows=20000)
    return paths


def bench_mix(paths: dict[str, str], seq_len: int) -> dict:
    """The bench's mix: the three sources at SHARES with the mixer's defaults (every source
    packed); tests/model/test_bench_mix.py checks its padding."""
    return {
        "sources": [{"name": n, "dataset": p, "share": SHARES[n]} for n, p in paths.items()],
        "seq_len": seq_len,
        "seed": 0,
    }


def attention_pairs(mix: dict, batch: int, n: int = 4) -> float:
    """Mean Σ len² over documents per row (in-document query-key pairs), from the stream itself."""
    s = open_stream(mix, 0, 1, batch)
    total, rows = 0.0, 0
    for _ in range(n):
        b = next(s)
        for seg in b["segment_ids"]:
            _, counts = np.unique(seg[seg > 0], return_counts=True)
            total += float((counts.astype(np.float64) ** 2).sum())
            rows += 1
    return total / rows


def main(argv=None):
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="1b" if cuda else "small")
    ap.add_argument("--seq-len", type=int, default=2048 if cuda else 512)
    ap.add_argument("--batch", type=int, default=8 if cuda else 4, help="physical batch (sequences per micro-step)")
    ap.add_argument("--accum", type=int, default=1, help="micro-steps per optimizer step")
    ap.add_argument("--steps", type=int, default=30 if cuda else 12)
    ap.add_argument("--warmup", type=int, default=5 if cuda else 2)
    ap.add_argument("--stream", choices=["mixer", "synthetic"], default="mixer")
    ap.add_argument("--tokens", type=float, default=30e6 if cuda else 4e6, help="dataset size in tokens")
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile model + loss (default: the trainer's, on CUDA only)",
    )
    ap.add_argument("--attention", default="auto", choices=["auto", "sdpa", "flex"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument(
        "--sync-debug",
        action="store_true",
        help="CUDA: count host syncs per optimizer step (torch.cuda.set_sync_debug_mode); the target is 1",
    )
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    work = args.workdir or tempfile.mkdtemp(prefix="trimodal-bench-train-")
    t0 = time.perf_counter()
    data_dir = os.path.join(work, "data")
    if os.path.exists(os.path.join(data_dir, "audio", "manifest.json")):
        paths = {n: os.path.join(data_dir, n) for n in SHARES}
    else:
        paths = write_dataset(data_dir, args.tokens)
    write_s = time.perf_counter() - t0
    if args.stream == "mixer":
        mix = bench_mix(paths, args.seq_len)
    else:
        mix = {
            "kind": "synthetic",
            "fingerprints": FPS,
            "seq_len": args.seq_len,
            "pool": 64,
            "doc_len": args.seq_len // 3,
        }
    logical = args.batch * args.accum
    out_dir = os.path.join(work, f"run-{args.preset}-{args.stream}-{int(time.time())}")
    cfg = from_dict(
        TrainConfig,
        {
            "mix": mix,
            "output": out_dir,
            "steps": args.steps,
            "physical_batch": args.batch,
            "logical_batch": logical,
            "checkpoint_every": 10**9,
            "tensorboard": False,
            "compile": args.compile,
            "prefetch": 2,
            "model": {"preset": args.preset, "attention": args.attention},
            # the bench measures speed; no final checkpoint of a 1B model
            "stop_at_step": args.steps,
            "optim": {"warmup_steps": 2},
        },
    )
    device = torch.device("cuda" if cuda else "cpu")
    trainer = Trainer(cfg, WorkerContext(device=device))
    trainer._checkpoint = lambda *a, **k: None  # speed only: skip the final checkpoint write
    syncs = []
    if args.sync_debug and cuda:
        # Count the synchronizing calls inside each optimizer step (warnings of the sync debug
        # mode); the step's one `.tolist()` is expected, anything else is a stall.
        step_fn = trainer.train_step

        def counted(*a, **k):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = step_fn(*a, **k)
            syncs.append(sum("synchroniz" in str(w.message) for w in caught))
            return out

        trainer.train_step = counted
        torch.cuda.set_sync_debug_mode("warn")
    trainer.run()
    if syncs:
        torch.cuda.set_sync_debug_mode(0)

    recs = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]
    steps = [r for r in recs if "step_time_s" in r and "event" not in r][args.warmup :]
    start = next(r for r in recs if r.get("event") == "start")
    step_s = statistics.median(r["step_time_s"] for r in steps)
    tps = statistics.median(r["tokens_per_s"] for r in steps)
    wait = sum(r["data_wait_frac"] * r["step_time_s"] for r in steps) / sum(r["step_time_s"] for r in steps)

    vocab_size = open_stream(mix, 0, 1, logical).vocab.size
    mcfg = ModelConfig(preset=args.preset).resolve()
    n_params = count_params(mcfg, vocab_size)["non_embedding"]
    tokens_per_step = statistics.median(r["tokens_per_s"] * r["step_time_s"] for r in steps)
    pairs = attention_pairs(mix, logical) * logical
    masked = 0.5 * tokens_per_step  # E[1 − α(t)] = 1/2 for the default linear schedule
    flops = 6 * n_params * tokens_per_step + 6 * mcfg.dim * vocab_size * masked + 12 * mcfg.n_layers * mcfg.dim * pairs
    res = {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "preset": args.preset,
        "params_non_embedding": n_params,
        "params_total": start["params"],
        "vocab": vocab_size,
        "seq_len": args.seq_len,
        "physical_batch": args.batch,
        "accum": args.accum,
        "stream": args.stream,
        "steps_timed": len(steps),
        "step_time_s": step_s,
        "tokens_per_s": tps,
        "model_tflops_per_s": flops / step_s / 1e12,
        "data_wait_frac": wait,
        "max_data_wait_frac": max(r["data_wait_frac"] for r in steps),
        "dataset_write_s": write_s,
        "padding_frac": 1 - tokens_per_step / (logical * args.seq_len),
        "compile": start["compile"],
        "attention": start["attention"],
    }
    if syncs:
        timed = syncs[args.warmup :]
        res["host_syncs_per_step_median"] = statistics.median(timed)
        res["host_syncs_per_step_max"] = max(timed)
    if cuda:
        name = torch.cuda.get_device_name(0)
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        if peak:
            res["mfu"] = res["model_tflops_per_s"] / peak
            res["peak_tflops"] = peak
        res["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>22}: {v:.4g}" if isinstance(v, float) else f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
