"""The tokenization service under load, next to the in-process batched tokenizer, in one run.

    python bench/bench_serve.py [--seconds 5] [--clients 1,8,32] [--modalities text,image,audio]
                          [--image-px 256] [--image-resolution 64] [--audio-seconds 2]
                          [--threads 1] [--proxy] [--json]

For each modality, on identical inputs and the same machine:

- ``in-process``: the tokenize job's own path without Ray or HTTP: `prepare_item` on each raw
  file (JPEG decode + resize, FLAC decode + resample) then one `encode_prepared` call per batch
  of the service's `max_batch_size` (text: `encode_items`); items per second, best of 3 runs;
- ``http cN``: N client threads, each sending one `POST /v1/encode` after another for
  ``--seconds`` (keep-alive connections, the stdlib client `trimodal.client`): requests per
  second, p50 / p99 latency, and the ratio to the in-process figure.

The service runs on a local Ray started here (2 logical CPUs unless ``--num-cpus``), with one
replica per modality and codec replicas using ``--threads`` torch threads, the same number
the in-process run uses; the client threads share the machine's cores too (their JSON and
base64 work is part of what a caller pays). Besides wall-clock rates, each row reports items
per CPU-second, counted from /proc over this process and every process it started (Ray's
GCS, raylet, Serve's controller, proxy and replicas): on a machine shared with other work the
wall-clock ratio moves with their load, the CPU ratio (the service's overhead) much less.
A last row, ``serve floor``, is an empty Serve app (one replica answering a fixed JSON, on the
service's port and in its mode: direct ingress by default, Serve's proxy in front with
``--proxy``) at the highest client count: what any HTTP request through Ray Serve costs on this
machine, the bound on how close a fast codec can get to its in-process rate.
``--image-resolution`` runs the image codec at another input size (its option ``image_size``;
the small codec's grid is size / 8), i.e. with more work per image. Default ``--threads 1``: on
a loaded 2-core machine two torch threads per codec ran 3-4x
slower than one (spinning OpenMP threads descheduled). Small random-weight codecs and a
SentencePiece model trained on generated text are built in a temporary directory.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_text(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    syl = "ka ri to me su na lo pe vi da en or an is th qu ex ul bo ce gi ha jo ku ly mo".split()
    words = ["".join(rng.choice(syl) for _ in range(rng.randint(1, 3))) for _ in range(2000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(8, 40))) + "." for _ in range(n)]


def make_images(n: int, px: int, seed: int = 0) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        # smooth gradients plus noise: JPEG sizes like a photo's, not like pure noise
        y, x = np.mgrid[0:px, 0:px] / px
        base = np.stack([x, y, (x + y) / 2], -1) * 200 + rng.normal(0, 20, (px, px, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_clips(n: int, seconds: float, rate: int = 16000, seed: int = 0) -> list[bytes]:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t) + rng.normal(0, 0.01, t.size)
        buf = io.BytesIO()
        sf.write(buf, wave.astype(np.float32), rate, format="FLAC")
        out.append(buf.getvalue())
    return out


def build_models(root: str) -> dict:
    from trimodal.tokenizers.codecs import init_codec
    from trimodal.tokenizers.text import train_text_tokenizer

    corpus = os.path.join(root, "corpus.txt")
    with open(corpus, "w") as f:
        f.write("\n".join(make_text(3000, seed=1)) + "\n")
    return {
        "text": {"kind": "sentencepiece", "path": train_text_tokenizer([corpus], os.path.join(root, "spm"), 512)},
        "image": {"kind": "vqmodel", "path": init_codec("image", "small", os.path.join(root, "image"), seed=0)},
        "audio": {"kind": "dac", "path": init_codec("audio", "small", os.path.join(root, "audio"), seed=0)},
    }


# ----------------------------------------------------------------------------- in-process


def in_process(cfg, modality: str, items: list, batch: int, seconds: float) -> tuple[float, float]:
    """(items per second, items per CPU-second) of the tokenize job's prepare + batched encode
    in this process (best of 3)."""
    import torch

    from trimodal.service.config import load_tokenizers
    from trimodal.tokenizers.prepare import encode_items, encode_prepared, prepare_item, prepare_params

    threads = cfg.tokenizers[modality].threads
    if threads and modality != "text":
        torch.set_num_threads(threads)
    tok = load_tokenizers(cfg, device="cpu")[modality]
    kind = cfg.tokenizers[modality].kind
    params = prepare_params(kind, tok)
    limits = {"max_audio_seconds": cfg.limits.max_audio_seconds}

    def run_batch(chunk):
        if params is None:
            return encode_items(tok, modality, chunk, [str(i) for i in range(len(chunk))])
        return encode_prepared(kind, tok, [prepare_item(kind, x, "bench", params, limits) for x in chunk], params)

    run_batch(items[:batch])  # warm-up
    best, best_cpu = 0.0, 0.0
    for _ in range(3):
        n, t0, c0, i = 0, time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - t0 < seconds / 3:
            chunk = [items[(i + k) % len(items)] for k in range(batch)]
            run_batch(chunk)
            n += len(chunk)
            i += batch
        best = max(best, n / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, n / max(1e-9, time.process_time() - c0))
    return best, best_cpu


# ----------------------------------------------------------------------------- over HTTP


def load(url: str, modality: str, items: list, clients: int, seconds: float) -> dict:
    from trimodal.client import Client, ServiceHTTPError

    lat: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop = [0.0]

    def worker(k: int):
        c = Client(url, timeout=60)
        c.encode(modality, items[k % len(items)])  # connection + warm path
        start.wait()
        i = k
        mine, errs = [], {}
        while time.perf_counter() < stop[0]:
            t0 = time.perf_counter()
            try:
                c.encode(modality, items[i % len(items)])
                mine.append(time.perf_counter() - t0)
            except ServiceHTTPError as e:
                errs[str(e.status)] = errs.get(str(e.status), 0) + 1
            i += clients
        with lock:
            lat.extend(mine)
            for k2, v in errs.items():
                errors[k2] = errors.get(k2, 0) + v

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    stop[0] = time.perf_counter() + 3600
    start.wait()
    t0, c0 = time.perf_counter(), tree_cpu_seconds()
    stop[0] = t0 + seconds
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = tree_cpu_seconds() - c0
    a = np.sort(np.asarray(lat)) if lat else np.zeros(1)
    return {
        "clients": clients,
        "requests": len(lat),
        "rps": len(lat) / wall,
        "per_cpu_s": len(lat) / max(1e-9, cpu),
        "p50_ms": float(np.percentile(a, 50) * 1000),
        "p99_ms": float(np.percentile(a, 99) * 1000),
        "errors": errors,
    }


def serve_floor(url: str, clients: int, seconds: float, direct_ingress: bool) -> dict:
    """Requests/s and CPU per request of an empty Serve app answering on the service's port in
    the service's mode (direct ingress: one replica; else the proxy + one replica). Run after
    the service's app is deleted: a direct-ingress port belongs to one app's ingress replica."""
    import http.client

    from ray import serve

    from trimodal.service.app import direct_ingress_env

    port = int(url.rsplit(":", 1)[1])
    actor = {"num_cpus": 0.25}
    if direct_ingress:
        actor["runtime_env"] = {"env_vars": direct_ingress_env(port)}

    @serve.deployment(max_ongoing_requests=256, ray_actor_options=actor)
    class Echo:
        async def __call__(self, request):
            from starlette.responses import Response

            await request.body()
            return Response(b'{"ok":true}', media_type="application/json")

    serve.run(Echo.bind(), name="floor", route_prefix="/floor")
    count, lock, stop = [0], threading.Lock(), [0.0]

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        n = 0
        while time.perf_counter() < stop[0]:
            c.request("POST", "/floor", body=b'{"modality":"text","data":"hello"}')
            c.getresponse().read()
            n += 1
        with lock:
            count[0] += n

    stop[0] = time.perf_counter() + 1.0  # warm-up
    ts = [threading.Thread(target=worker) for _ in range(clients)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    count[0] = 0
    t0, c0 = time.perf_counter(), tree_cpu_seconds()
    stop[0] = t0 + seconds
    ts = [threading.Thread(target=worker) for _ in range(clients)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall, cpu = time.perf_counter() - t0, tree_cpu_seconds() - c0
    serve.delete("floor")
    return {"clients": clients, "rps": count[0] / wall, "cpu_ms_per_request": 1000 * cpu / max(1, count[0])}


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(d)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)  # ppid, utime+stime
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo.extend(children.get(pid, []))
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per load level (and for the in-process runs)")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--modalities", default="text,image,audio")
    ap.add_argument("--image-px", type=int, default=256, help="input JPEG size (the codec resizes it)")
    ap.add_argument("--image-resolution", type=int, default=None, help="codec input size (default: its own, 64)")
    ap.add_argument("--audio-seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per codec (service and in-process)")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument(
        "--proxy", action="store_true", help="serve.direct_ingress: false (requests through Serve's proxy, as before)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from trimodal.config import from_dict
    from trimodal.service import app
    from trimodal.service.config import ServeConfig

    modalities = args.modalities.split(",")
    clients = [int(c) for c in args.clients.split(",")]
    tmp = tempfile.mkdtemp(prefix="bench_serve_")
    specs = build_models(tmp)
    tokenizers = {m: dict(specs[m], threads=args.threads) for m in modalities}
    if args.image_resolution and "image" in tokenizers:
        tokenizers["image"]["options"] = {"image_size": args.image_resolution}
    serve_opts = {
        "port": free_port(),
        "ingress": {"num_cpus": 0.25, "max_ongoing_requests": 512, "max_queued_requests": 512},
        "direct_ingress": not args.proxy,
    }
    for m in modalities:
        serve_opts[m] = {"num_cpus": 0.25, "max_queued_requests": 512}
    cfg = from_dict(ServeConfig, {"tokenizers": tokenizers, "serve": serve_opts})
    data = {
        "text": make_text(256),
        "image": make_images(32, args.image_px),
        "audio": make_clips(16, args.audio_seconds),
    }
    ray.init(
        address="local", num_cpus=args.num_cpus, include_dashboard=False, logging_level="error", log_to_driver=False
    )
    results: dict = {"machine": {"cpus": os.cpu_count(), "ray_cpus": args.num_cpus, "threads": args.threads}}
    try:
        info = app.start(cfg)
        results["startup_s"] = info["startup_s"]
        for m in modalities:
            batch = cfg.serve.deployment(m).batch_size(m)
            ref, ref_cpu = in_process(cfg, m, data[m], batch, args.seconds)
            rows = [load(info["url"], m, data[m], c, args.seconds) for c in clients]
            for r in rows:
                r["vs_in_process"] = r["rps"] / ref
                r["cpu_vs_in_process"] = r["per_cpu_s"] / ref_cpu
            results[m] = {"in_process_per_s": ref, "in_process_per_cpu_s": ref_cpu, "batch": batch, "http": rows}
        serve.delete(app.APP_NAME)
        results["serve_floor"] = serve_floor(info["url"], max(clients), args.seconds, cfg.serve.direct_ingress)
    finally:
        app.stop()
        ray.shutdown()
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(
            f"service startup {results.get('startup_s')} s; {args.num_cpus} Ray CPUs on a {os.cpu_count()}-core machine, "
            f"{args.threads} torch threads per codec; image {args.image_px} px JPEG "
            f"(codec at {args.image_resolution or 64} px), audio {args.audio_seconds} s FLAC"
        )
        print(
            f"{'modality':<8} {'mode':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs in-proc':>10} "
            f"{'per CPU-s':>10} {'vs in-proc':>10}  errors"
        )
        for m in modalities:
            r = results[m]
            print(
                f"{m:<8} {'in-process':<12} {r['in_process_per_s']:>9.1f} {'':>8} {'':>8} {'1.00':>10} "
                f"{r['in_process_per_cpu_s']:>10.1f} {'1.00':>10}  (batch {r['batch']})"
            )
            for h in r["http"]:
                print(
                    f"{m:<8} {'http c' + str(h['clients']):<12} {h['rps']:>9.1f} {h['p50_ms']:>8.1f} "
                    f"{h['p99_ms']:>8.1f} {h['vs_in_process']:>10.2f} {h['per_cpu_s']:>10.1f} "
                    f"{h['cpu_vs_in_process']:>10.2f}  {h['errors'] or ''}"
                )
        f = results["serve_floor"]
        print(
            f"{'-':<8} {'serve floor':<12} {f['rps']:>9.1f} {'':>8} {'':>8} {'':>10} "
            f"{1000 / f['cpu_ms_per_request']:>10.1f} {'':>10}  (empty app, c{f['clients']}: "
            f"{f['cpu_ms_per_request']:.1f} ms CPU per request)"
        )
    return results


if __name__ == "__main__":
    main()
