"""The GPU acceptance command: every path that runs only on a GPU, run once, in a few minutes, with
one table and an exit code.

    python bench/bench_gpu.py              # or `make gpu-check`; on a GPU machine
    python bench/bench_gpu.py --cpu-smoke  # the same code paths at tiny sizes on CPU (tested)

Paths (each a row: ok / FAIL / skip, with its figures):
- train: the trainer with its defaults at preset 1b (seq 2048, batch 8, synthetic packed rows):
  compile on, flex attention with the compiled block mask, bf16 autocast, fused chunked head.
  MFU, data-wait fraction, peak memory; fails on a graph break (dynamo's counters) or on more than
  the step's one host sync (`torch.cuda.set_sync_debug_mode`, counted by bench_train.py);
- attention: compiled flex_attention with the document block mask against SDPA with the boolean
  mask, forward and backward, same packed batch: max difference and both timings;
- image / audio codecs: the codec bare against the tokenize job's codec path (the tokenizer's
  `encode`, decode + resize / resample included), from bench_tokenizers.py; skipped when the
  machine lacks the codec packages;
- generate: samples/s of the sampler (bench_generate.py).

Exit codes: 0 every path ok (skips allowed), 1 a path failed, 6 no GPU and no --cpu-smoke (the
message says so). The pieces are bench_train.py, bench_generate.py and bench_tokenizers.py, called
with their own arguments; nothing is copied from them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling bench scripts
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EXIT_OK, EXIT_FAILED, EXIT_NO_GPU = 0, 1, 6

# per path: GPU arguments, and the tiny CPU ones of --cpu-smoke
TRAIN = {
    "gpu": ["--preset", "1b", "--stream", "synthetic", "--steps", "20", "--warmup", "5", "--sync-debug"],
    "cpu": [
        *("--preset", "tiny", "--stream", "synthetic", "--seq-len", "64", "--batch", "2"),
        *("--steps", "3", "--warmup", "1", "--compile", "--tokens", "2e4"),
    ],
}
GENERATE = {
    "gpu": ["--preset", "1b", "--compile"],
    "cpu": ["--preset", "tiny", "--batch", "2", "--steps", "2", "--seconds", "0.5", "--text-tokens", "8"],
}
ATTENTION = {"gpu": (8, 16, 2048, 128), "cpu": (2, 2, 256, 16)}  # B, H, L, head dim
CODECS = {"gpu": {"config": "base", "images": 64, "clips": 16, "seconds": 10.0, "repeat": 3}}
CODECS["cpu"] = {"config": "small", "images": 2, "clips": 1, "seconds": 0.5, "repeat": 1}


def _json_of(main, argv: list[str]) -> dict:
    """Run a bench script's main with --json and read its one JSON line."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main([*argv, "--json"])
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def check_train(mode: str, workdir: str) -> dict:
    import bench_train

    torch._dynamo.utils.counters.clear()
    res = _json_of(bench_train.main, [*TRAIN[mode], "--workdir", os.path.join(workdir, "train")])
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    problems = []
    if not res["compile"]:
        problems.append("not compiled")
    if breaks:
        problems.append(f"{breaks} graph breaks: {dict(torch._dynamo.utils.counters['graph_break'])}")
    if mode == "gpu":
        if res["attention"] != "flex":
            problems.append(f"attention {res['attention']}, not flex")
        if res.get("host_syncs_per_step_max", 0) > 1:
            problems.append(f"{res['host_syncs_per_step_max']} host syncs in a step (1 expected: the metrics)")
    figures = {
        "tokens/s": res["tokens_per_s"],
        "MFU": res.get("mfu"),
        "data wait": res["data_wait_frac"],
        "peak GB": res.get("max_memory_gb"),
        "graph breaks": breaks,
        "host syncs/step": res.get("host_syncs_per_step_max"),
    }
    return {"status": "FAIL" if problems else "ok", "figures": figures, "detail": "; ".join(problems)}


def check_attention(mode: str, workdir: str) -> dict:
    import torch.nn.functional as F

    from trimodal.model.attention import attention_masks, flex_attention, segment_mask

    B, H, L, D = ATTENTION[mode]
    dev = "cuda" if mode == "gpu" else "cpu"
    dtype = torch.bfloat16 if mode == "gpu" else torch.float32
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(L // 16, L // 2, (64,), generator=g)
    seg = torch.zeros(B, L, dtype=torch.long)
    for b in range(B):  # packed rows of random-length documents, the tail padding
        i, s = 0, 1
        for n in lens[b * 8 : (b + 1) * 8].tolist():
            n = min(n, L - i)
            seg[b, i : i + n] = s
            i, s = i + n, s + 1
    seg = seg.to(dev)
    q, k, v = (torch.randn(B, H, L, D, generator=g).to(dev, dtype).requires_grad_(mode == "gpu") for _ in range(3))
    (block,) = attention_masks("flex", seg, B)
    dense = segment_mask(seg)

    def timed(fn) -> tuple[torch.Tensor, float]:
        out = fn()  # warm-up (compile)
        if mode == "gpu":
            out.float().sum().backward()  # flex has no CPU backward (docs/training.md)
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if mode == "gpu":
            out.float().sum().backward()
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    of, tf = timed(lambda: flex_attention(q, k, v, block))
    os_, ts = timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense))
    real = (seg != 0)[:, None, :, None]
    err = ((of - os_).abs() * real).max().item()
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    figures = {
        "max |flex - sdpa|": err,
        "flex ms": tf * 1e3,
        "sdpa ms": ts * 1e3,
        "pass": "fwd+bwd" if mode == "gpu" else "fwd",
    }
    return {"status": "ok" if err <= tol else "FAIL", "figures": figures, "detail": "" if err <= tol else f"> {tol}"}


def check_codec(modality: str, mode: str, workdir: str) -> dict:
    try:
        import bench_tokenizers
    except ImportError as e:
        return {"status": "skip", "figures": {}, "detail": f"missing package: {e.name}"}
    c, dev = CODECS[mode], "cuda" if mode == "gpu" else "cpu"
    try:
        if modality == "image":
            rows = bench_tokenizers.bench_image(None, c["config"], workdir, c["repeat"], c["images"], dev)
        else:
            rows = bench_tokenizers.bench_audio(None, c["config"], workdir, c["repeat"], c["clips"], c["seconds"], dev)
    except ImportError as e:  # diffusers / descript-audio-codec not installed here
        return {"status": "skip", "figures": {}, "detail": f"missing package: {e.name}"}
    job, codec = rows[0], rows[1]  # with decode + resize / resample; the codec alone
    figures = {
        f"bare {job['unit']}": job["bare"],
        f"job path {job['unit']}": job["wrapper"],
        "job path overhead %": job["overhead_pct"],
        f"codec only {codec['unit']}": codec["bare"],
    }
    return {"status": "ok", "figures": figures, "detail": f"{c['config']} codec"}


def check_generate(mode: str, workdir: str) -> dict:
    import bench_generate

    res = _json_of(bench_generate.main, GENERATE[mode])
    figures = {f"{t} samples/s": r["samples_per_s"] for t, r in res["tasks"].items()}
    return {"status": "ok", "figures": figures, "detail": ""}


PATHS = {
    "train": check_train,
    "attention": check_attention,
    "image codec": lambda mode, w: check_codec("image", mode, w),
    "audio codec": lambda mode, w: check_codec("audio", mode, w),
    "generate": check_generate,
}


def run(mode: str, only: list[str] | None = None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="trimodal-gpu-check-") as work:
        for name, fn in PATHS.items():
            if only and name not in only:
                continue
            t0 = time.perf_counter()
            try:
                r = fn(mode, work)
            except Exception as e:  # a path that raises is a failed path; the others still run
                r = {"status": "FAIL", "figures": {}, "detail": f"{type(e).__name__}: {e}"}
                traceback.print_exc()
            r.update(path=name, seconds=time.perf_counter() - t0)
            rows.append(r)
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_table(rows: list[dict], device: str) -> None:
    print(f"GPU acceptance on {device}")
    head = f"{'path':<12} {'status':<6} {'s':>6}  figures"
    print(head)
    print("-" * 100)
    for r in rows:
        figs = ", ".join(f"{k} {_fmt(v)}" for k, v in r["figures"].items() if v is not None)
        detail = f"  [{r['detail']}]" if r["detail"] else ""
        print(f"{r['path']:<12} {r['status']:<6} {r['seconds']:>6.1f}  {figs}{detail}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="the same paths at tiny sizes on CPU (no GPU needed)")
    ap.add_argument("--only", action="append", choices=list(PATHS), help="run only these paths")
    ap.add_argument("--json", action="store_true", help="print the rows as one JSON line after the table")
    args = ap.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(
            "bench_gpu: no GPU here (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda is not None}). Nothing was run. "
            f"Run it on a GPU machine, or `--cpu-smoke` to check the script on CPU. Exit code {EXIT_NO_GPU}.",
            file=sys.stderr,
        )
        return EXIT_NO_GPU
    mode = "cpu" if args.cpu_smoke else "gpu"
    if mode == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    device = torch.cuda.get_device_name(0) if mode == "gpu" else f"cpu (smoke, {torch.get_num_threads()} threads)"
    rows = run(mode, args.only)
    print_table(rows, device)
    if args.json:
        print(json.dumps({"device": device, "rows": rows}, default=str))
    return EXIT_FAILED if any(r["status"] == "FAIL" for r in rows) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
