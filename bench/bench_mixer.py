"""The mixer against MosaicML `streaming` and `litdata` on the same tokens, and at cluster scale.

    make bench-install                       # the peers (without their declared dependencies)
    python bench/bench_mixer.py                    # everything below, in one run
    python bench/bench_mixer.py --only throughput,workers,scaling,planning,start,memory

Sections (each prints its table; figures in docs/mixer.md):

- throughput: three sources (text documents, image-text pairs with 256 image codes, audio-text
  pairs with 2-level codes), written once as a trimodal dataset, as MDS shards and as litdata
  chunks, per document and — each peer's documented fastest path for LLM tokens — as
  pre-packed blocks of seq_len tokens (litdata `TokensLoader`; LLM-Foundry-style concatenated
  MDS samples). Every loader runs in this process pinned to one core, shares set for target
  token shares of 60/25/15, and is timed for `--seconds` after a warm-up; blocks are stacked
  into batches of 64 (what a collate does). Reported: real tokens per wall and per CPU second,
  realized token shares, and what each loader cannot do.
- workers: the same loaders through one DataLoader worker against in-process, CPU per token
  of the whole process tree (the worker's CPU included).
- scaling: ranks W = 1, 8, 64 simulated in one process (rank 0 of each), on the local
  datasets and on a copy served by a local S3 server (moto on 127.0.0.1): bytes read per global
  batch against code bytes rendered, S3 requests, and planning CPU per global batch.
- planning: rows planned per CPU second against the number of sources (1 to 256).
- start: `Mixer()` on a synthetic dataset of `--start-shards` shards (a shard table only,
  built directly as Arrow like bench/bench_manifest.py), in a fresh process: seconds and RSS.
- memory: `--big` GB of text written once, `--big-sources` mix sources streaming it, RSS
  (anonymous and file-backed) every few seconds and the peak.

CPU seconds are the steadier figure on a shared machine; each throughput figure is the best of
`--repeats` interleaved runs. `streaming` imports `transformers` and `torchvision` at module
level; where they are not installed, placeholder modules stand in (never called here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from trimodal.dataset.dataset import build_dataset  # noqa: E402
from trimodal.dataset.manifest import Manifest  # noqa: E402
from trimodal.dataset.shards import SCHEMA, write_shard  # noqa: E402
from trimodal.mixer import Mixer  # noqa: E402

SECTIONS = ("throughput", "workers", "scaling", "planning", "start", "memory")
BATCH = 64
SOURCE_SHIFT = 24  # pre-packed peer blocks carry their source in the ids' high bits (for shares)

SHARES = {"text": 0.60, "image": 0.25, "audio": 0.15}
FPS = {
    "text": {"kind": "sentencepiece", "name": "bench-text", "codebook_size": 32000, "levels": 1, "weights_sha256": "t"},
    "image": {"kind": "vqmodel", "name": "bench-image", "codebook_size": 16384, "levels": 1, "weights_sha256": "i"},
    "audio": {"kind": "dac", "name": "bench-audio", "codebook_size": 1024, "levels": 2, "weights_sha256": "a"},
}


# data ----------------------------------------------------------------------------------
def make_samples(total_tokens: float, seed: int = 0) -> dict[str, list[dict]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, share in SHARES.items():
        budget, rows = int(total_tokens * share), []
        while budget > 0:
            i = len(rows)
            if name == "text":
                text = rng.integers(0, 32000, int(np.clip(rng.lognormal(6.0, 0.9), 8, 16000)), dtype=np.int32)
                image = audio = None
            elif name == "image":
                text = rng.integers(0, 32000, int(rng.integers(8, 48)), dtype=np.int32)
                image, audio = rng.integers(0, 16384, 256, dtype=np.int32), None
            else:
                text = rng.integers(0, 32000, int(rng.integers(8, 60)), dtype=np.int32)
                image, audio = None, rng.integers(0, 1024, 2 * int(rng.integers(60, 300)), dtype=np.int32)
            rows.append(
                {"id": f"{name}/{i}", "source": name, "text": text, "image": image, "audio": audio, "origin": ""}
            )
            budget -= len(text) + (0 if image is None else len(image)) + (0 if audio is None else len(audio))
        out[name] = rows
    return out


def codes_of(r: dict) -> np.ndarray:
    return np.concatenate([x for x in (r["text"], r["image"], r["audio"]) if x is not None])


def write_trimodal(root: str, samples: dict, shard_rows: int = 20000, sub: str = "trimodal") -> dict[str, str]:
    paths = {}
    for name, rows in samples.items():
        paths[name] = os.path.join(root, sub, name)
        fps = {"text": FPS["text"], **({name: FPS[name]} if name != "text" else {})}
        build_dataset(paths[name], rows, fps, shard_rows=shard_rows)
    return paths


def write_mds(root: str, samples: dict) -> dict[str, str]:
    from streaming import MDSWriter

    paths = {}
    for k, (name, rows) in enumerate(samples.items()):
        paths[name] = os.path.join(root, "mds", name)
        with MDSWriter(
            out=paths[name], columns={"tokens": "ndarray:int32", "source": "int"}, compression=None, size_limit="64mb"
        ) as w:
            for r in rows:
                w.write({"tokens": codes_of(r), "source": k})
    return paths


def _litdata_item(args):
    path, i, k = args
    arr = np.load(path, mmap_mode="r")
    off = np.load(path.replace(".npy", ".off.npy"))
    return {"tokens": np.array(arr[off[i] : off[i + 1]]), "source": k}


def write_litdata(root: str, samples: dict) -> dict[str, str]:
    from litdata import optimize

    paths = {}
    for k, (name, rows) in enumerate(samples.items()):
        flat = os.path.join(root, f"ld-{name}.npy")
        arrays = [codes_of(r) for r in rows]
        np.save(flat, np.concatenate(arrays))
        np.save(flat.replace(".npy", ".off.npy"), np.r_[0, np.cumsum([len(a) for a in arrays])])
        paths[name] = os.path.join(root, "litdata", name)
        optimize(
            fn=_litdata_item,
            inputs=[(flat, i, k) for i in range(len(rows))],
            output_dir=paths[name],
            chunk_bytes="64MB",
            num_workers=1,
            verbose=False,
        )
    return paths


def _source_streams(samples: dict, seq_len: int):
    """Per source, its documents' codes concatenated and cut into blocks of seq_len (the
    remainder dropped), ids tagged with the source in their high bits."""
    for k, (name, rows) in enumerate(samples.items()):
        flat = np.concatenate([codes_of(r) for r in rows]) + np.int32(k << SOURCE_SHIFT)
        n = len(flat) // seq_len
        yield k, name, flat[: n * seq_len].reshape(n, seq_len)


def write_mds_blocks(root: str, samples: dict, seq_len: int) -> dict[str, str]:
    """LLM-Foundry's layout (convert_dataset_hf --concat_tokens): one sample per block."""
    from streaming import MDSWriter

    paths = {}
    for _, name, blocks in _source_streams(samples, seq_len):
        paths[name] = os.path.join(root, "mds-blocks", name)
        with MDSWriter(out=paths[name], columns={"tokens": "ndarray:int32"}, compression=None, size_limit="64mb") as w:
            for b in blocks:
                w.write({"tokens": b})
    return paths


def _ld_stream(args):
    path = args
    yield np.load(path)


def write_litdata_blocks(root: str, samples: dict, seq_len: int) -> dict[str, str]:
    """litdata's LLM recipe: token arrays optimized with TokensLoader, read as blocks."""
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    paths = {}
    for _, name, blocks in _source_streams(samples, seq_len):
        flat = os.path.join(root, f"ldb-{name}.npy")
        np.save(flat, blocks.reshape(-1))
        paths[name] = os.path.join(root, "litdata-blocks", name)
        optimize(
            fn=_ld_stream,
            inputs=[flat],
            output_dir=paths[name],
            chunk_size=seq_len * 512,
            item_loader=TokensLoader(),
            num_workers=1,
            verbose=False,
        )
    return paths


# loaders (in this process) -------------------------------------------------------------
def _tree_pids() -> list[int]:
    """This process's descendants (DataLoader workers)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [os.getpid()]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def tree_cpu() -> float:
    """CPU seconds of this process and its live descendants."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _tree_pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def timed(items, seconds: float, count, warmup: int = 20, cpu=None) -> dict:
    """Drain `items` for `seconds` after `warmup` items; count(item) -> {source: tokens}."""
    cpu = cpu or tree_cpu  # helper threads and processes count too
    it = iter(items)
    for _ in range(warmup):
        next(it)
    per: dict = {}
    w0, c0 = time.perf_counter(), cpu()
    n = 0
    while True:
        for s, t in count(next(it)).items():
            per[s] = per.get(s, 0) + t
        n += 1
        if n % 8 == 0 and time.perf_counter() - w0 >= seconds:
            break
    wall, cpu_s = time.perf_counter() - w0, cpu() - c0
    total = sum(per.values())
    return {
        "tokens": total,
        "wall_s": wall,
        "cpu_s": cpu_s,
        "tokens_per_s": total / wall,
        "tokens_per_cpu_s": total / cpu_s,
        "shares": {s: per.get(s, 0) / total for s in SHARES},
    }


def mix_config(paths: dict, seq_len: int, pack_pairs: bool) -> dict:
    return {
        "sources": [
            {"name": n, "dataset": p, "share": SHARES[n], **({"pack": True} if pack_pairs else {"pack": n == "text"})}
            for n, p in paths.items()
        ],
        "seq_len": seq_len,
        "global_batch": BATCH,
        "seed": 0,
    }


def run_mixer(paths: dict, seconds: float, seq_len: int, pack_pairs: bool, workers: int | None = None) -> dict:
    cfg = mix_config(paths, seq_len, pack_pairs)
    if workers is None:
        m = Mixer(cfg)
        items, cpu = m, tree_cpu
    else:
        import torch

        from trimodal.mixer import MixerDataset

        m = None
        items = torch.utils.data.DataLoader(MixerDataset(cfg), batch_size=None, num_workers=workers)
        cpu = tree_cpu
    seg = "segment_ids"

    def count(batch):  # numpy on both paths (a loader worker's batch holds tensors)
        return {"_": int(np.count_nonzero(np.asarray(batch[seg])))}

    r = timed(items, seconds, count, warmup=3, cpu=cpu)
    if m is not None:
        s = m.stats()
        done = {n: s["sources"][n]["tokens"] for n in paths}
        total = sum(done.values())
        r["shares"] = {n: done[n] / total for n in paths}
        r["pad_fraction"] = s["pad_fraction"]
    else:
        r["shares"] = {}
    return r


def run_streaming(paths: dict, seconds: float, weights: dict) -> dict:
    from streaming import Stream, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    names = list(paths)
    streams = [Stream(local=paths[n], proportion=weights[n]) for n in names]
    ds = StreamingDataset(streams=streams, shuffle=True, shuffle_seed=0, batch_size=BATCH, epoch_size=10**7)

    def count(sample):
        return {names[int(sample["source"])]: len(sample["tokens"])}

    return timed(ds, seconds, count)


def run_litdata(paths: dict, seconds: float, weights: dict) -> dict:
    from litdata import CombinedStreamingDataset, StreamingDataset

    names = list(paths)
    dss = [StreamingDataset(paths[n], shuffle=True, seed=0) for n in names]
    ds = CombinedStreamingDataset(dss, seed=0, weights=[weights[n] for n in names], iterate_over_all=False)

    def count(sample):
        return {names[int(sample["source"])]: len(sample["tokens"])}

    def epochs():  # a smaller source running out ends litdata's epoch; start the next one
        while True:
            yield from ds

    return timed(epochs(), seconds, count)


def _block_batches(items, names):
    """Blocks stacked into batches of BATCH (what a collate does), with their sources."""
    buf = []
    for x in items:
        buf.append(np.asarray(x if not isinstance(x, dict) else x["tokens"]))
        if len(buf) == BATCH:
            yield np.stack(buf)
            buf = []


def _count_blocks(names):
    def count(batch):
        batch = np.asarray(batch)
        src = batch[:, 0] >> SOURCE_SHIFT
        per = np.bincount(src, minlength=len(names)) * batch.shape[1]
        return {n: int(per[k]) for k, n in enumerate(names)}

    return count


def run_litdata_blocks(paths: dict, seconds: float, seq_len: int, workers: int | None = None) -> dict:
    from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset
    from litdata.streaming.item_loader import TokensLoader

    names = list(paths)
    dss = [
        StreamingDataset(paths[n], item_loader=TokensLoader(block_size=seq_len), shuffle=True, drop_last=True, seed=0)
        for n in names
    ]
    ds = CombinedStreamingDataset(dss, seed=0, weights=[SHARES[n] for n in names], iterate_over_all=False)
    if workers is not None:
        loader = StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers)

        def batches():
            while True:
                yield from loader

        return timed(batches(), seconds, _count_blocks(names), warmup=3, cpu=tree_cpu)

    def epochs():
        while True:
            yield from ds

    return timed(_block_batches(epochs(), names), seconds, _count_blocks(names), warmup=3)


def _stack_tokens(samples: list) -> np.ndarray:
    return np.stack([x["tokens"] for x in samples])


def run_streaming_blocks(paths: dict, seconds: float, workers: int | None = None) -> dict:
    from streaming import Stream, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    names = list(paths)
    streams = [Stream(local=paths[n], proportion=SHARES[n]) for n in names]
    ds = StreamingDataset(streams=streams, shuffle=True, shuffle_seed=0, batch_size=BATCH, epoch_size=10**7)
    if workers is not None:
        import torch

        loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers, collate_fn=_stack_tokens)
        return timed(loader, seconds, _count_blocks(names), warmup=3, cpu=tree_cpu)
    return timed(_block_batches(ds, names), seconds, _count_blocks(names), warmup=3)


CANNOT = {
    "trimodal": "-",
    "streaming, per document": "no packing or rendering; shares are proportions per epoch, drifting over shorter spans",
    "litdata, per document": "no packing or rendering; shares are sampling weights (approximate)",
    "streaming, pre-packed blocks": (
        "pairs cut across rows; no segment ids / positions; shares approximate (per epoch); "
        "shuffles whole blocks only (documents of a block stay together)"
    ),
    "litdata TokensLoader, blocks": (
        "pairs cut across rows; no segment ids / positions; shares are sampling weights; shuffles whole blocks only"
    ),
}


def _stub_missing(roots=("transformers", "torchvision")) -> None:
    """Placeholder modules for packages `streaming` imports but never calls here."""
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import types

    missing = {r for r in roots if importlib.util.find_spec(r) is None}
    if not missing:
        return

    class Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in missing:
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            mod = types.ModuleType(spec.name)
            mod.__path__ = []

            def getattr_(attr):
                if attr.startswith("__"):
                    raise AttributeError(attr)
                return type(attr, (), {})

            mod.__getattr__ = getattr_
            return mod

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Stubs())


def write_big(root: str, gigabytes: float, shard_mb: int = 64) -> str:
    """A text dataset of about `gigabytes` GB, written shard by shard (never all in memory)."""
    import pyarrow as pa

    path = os.path.join(root, "big")
    rng = np.random.default_rng(1)
    entries, written, k = [], 0, 0
    while written < gigabytes * 2**30:
        n_tokens = shard_mb * 2**20 // 4
        lens = np.clip(rng.lognormal(6.0, 0.9, n_tokens // 500).astype(np.int64), 8, 16000)
        lens = lens[: np.searchsorted(np.cumsum(lens), n_tokens)]
        off = np.r_[0, np.cumsum(lens)].astype(np.int32)
        vals = rng.integers(0, 32000, int(off[-1]), dtype=np.int32)
        n = len(lens)
        table = pa.table(
            {
                "id": pa.array([f"big/{k}/{i}" for i in range(n)]),
                "source": pa.array(["big"] * n).dictionary_encode().cast(SCHEMA.field("source").type),
                "text": pa.ListArray.from_arrays(pa.array(off), pa.array(vals)),
                "image": pa.nulls(n, pa.list_(pa.int32())),
                "audio": pa.nulls(n, pa.list_(pa.int32())),
                "origin": pa.nulls(n, pa.string()),
            },
            schema=SCHEMA,
        )
        entries.append(write_shard(path, f"part-{k:05d}", table))
        written += entries[-1]["bytes"]
        k += 1
        print(f"  wrote shard {k}: {written / 2**30:.2f} GB", file=sys.stderr)
    Manifest(fingerprints={"text": FPS["text"]}, shards=entries).save(path)
    return path


# sections ------------------------------------------------------------------------------
def _fmt_shares(shares: dict) -> str:
    return "/".join(f"{100 * v:.1f}" for v in shares.values()) if shares else "-"


def prepare(work: str, tokens: float, seq_len: int, peers: bool, small_shards: bool = False) -> dict:
    samples = None

    def get():
        nonlocal samples
        if samples is None:
            samples = make_samples(tokens)
        return samples

    out = {"trimodal": {n: os.path.join(work, "trimodal", n) for n in SHARES}}
    if not all(os.path.exists(os.path.join(p, "manifest.json")) for p in out["trimodal"].values()):
        out["trimodal"] = write_trimodal(work, get())
    if small_shards:  # the scaling runs: shards of 1000 rows (moto serves ranges at ~0.7 ms per MB of object)
        out["trimodal_1k"] = {n: os.path.join(work, "trimodal-1k", n) for n in SHARES}
        if not all(os.path.exists(os.path.join(p, "manifest.json")) for p in out["trimodal_1k"].values()):
            out["trimodal_1k"] = write_trimodal(work, get(), shard_rows=1000, sub="trimodal-1k")
    if peers:
        _stub_missing()
        for key, sub, fn, marker in (
            ("mds", "mds", lambda: write_mds(work, get()), "index.json"),
            ("litdata", "litdata", lambda: write_litdata(work, get()), "index.json"),
            ("mds_blocks", "mds-blocks", lambda: write_mds_blocks(work, get(), seq_len), "index.json"),
            ("litdata_blocks", "litdata-blocks", lambda: write_litdata_blocks(work, get(), seq_len), "index.json"),
        ):
            out[key] = {n: os.path.join(work, sub, n) for n in SHARES}
            if not all(os.path.exists(os.path.join(p, marker)) for p in out[key].values()):
                out[key] = fn()
    if samples is not None:
        mean = {n: np.mean([len(codes_of(r)) for r in rows]) for n, rows in samples.items()}
        with open(os.path.join(work, "mean_lengths.json"), "w") as f:
            json.dump(mean, f)
    with open(os.path.join(work, "mean_lengths.json")) as f:
        mean = json.load(f)
    weights = {n: SHARES[n] / mean[n] for n in SHARES}  # per-document weights giving the token shares
    out["doc_weights"] = {n: w / sum(weights.values()) for n, w in weights.items()}
    return out


def loader_fns(data: dict, args) -> dict:
    """name -> fn(workers: None for in-process, or a number of DataLoader workers)."""
    p, sec, L = data["trimodal"], args.seconds, args.seq_len
    fns = {
        "trimodal, all sources packed": lambda k: run_mixer(p, sec, L, True, workers=k),
        "trimodal, pairs padded": lambda k: run_mixer(p, sec, L, False, workers=k),
        "trimodal, text only, packed": lambda k: run_mixer({"text": p["text"]}, sec, L, True, workers=k),
    }
    if "mds" in data:
        w = data["doc_weights"]
        fns["streaming, per document"] = lambda k: run_streaming(data["mds"], sec, w)
        fns["litdata, per document"] = lambda k: run_litdata(data["litdata"], sec, w)
        fns["streaming, pre-packed blocks"] = lambda k: run_streaming_blocks(data["mds_blocks"], sec, workers=k)
        fns["litdata TokensLoader, blocks"] = lambda k: run_litdata_blocks(data["litdata_blocks"], sec, L, workers=k)
    return fns


def run_child(name: str, workers: int | None, work: str, args) -> dict:
    """One loader measured in a fresh process (no worker, thread or cache left over from the
    others), pinned like this one."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--one",
        name,
        "--one-workers",
        str(-1 if workers is None else workers),
        "--workdir",
        work,
        "--seconds",
        str(args.seconds),
        "--seq-len",
        str(args.seq_len),
        "--tokens",
        str(args.tokens),
        "--core",
        str(args.core),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(f"{name}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def throughput(data: dict, args, work: str) -> dict:
    names = list(loader_fns(data, args))
    results = {}
    for _ in range(args.repeats):  # interleaved: a shared machine's noise only slows runs down
        for name in names:
            r = run_child(name, None, work, args)
            if name not in results or r["tokens_per_cpu_s"] > results[name]["tokens_per_cpu_s"]:
                results[name] = r
    print(
        f"\n## throughput: {args.tokens / 1e6:.0f}M tokens in 3 sources, target token shares 60/25/15, "
        f"seq_len {args.seq_len}, batches of {BATCH}, one core, each run in a fresh process; "
        f"best of {args.repeats} x {args.seconds:.0f} s"
    )
    print("| loader | M tokens / wall s | M tokens / CPU s | realized token shares | cannot |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        extra = f" (pad {100 * r['pad_fraction']:.1f}%)" if "pad_fraction" in r else ""
        cannot = CANNOT.get(name, CANNOT["trimodal"] if name.startswith("trimodal") else "")
        print(
            f"| {name} | {r['tokens_per_s'] / 1e6:.2f} | {r['tokens_per_cpu_s'] / 1e6:.2f} | "
            f"{_fmt_shares(r['shares'])}{extra} | {cannot} |"
        )
    return results


def workers_section(data: dict, args, work: str) -> dict:
    names = [
        n for n in loader_fns(data, args) if n.startswith("trimodal") and "padded" not in n or n.endswith("blocks")
    ]
    out: dict = {}
    for _ in range(args.repeats):
        for name in names:
            a, b = run_child(name, None, work, args), run_child(name, 1, work, args)
            best = out.setdefault(name, [a, b])
            if a["tokens_per_cpu_s"] > best[0]["tokens_per_cpu_s"]:
                best[0] = a
            if b["tokens_per_cpu_s"] > best[1]["tokens_per_cpu_s"]:
                best[1] = b
    print(
        "\n## one DataLoader worker against in-process (CPU of the whole process tree, fresh process per run; "
        f"best of {args.repeats})"
    )
    print("| loader | in-process M tokens / CPU s | one worker M tokens / CPU s | CPU per token, worker / in-process |")
    print("|---|---|---|---|")
    for name, (a, b) in out.items():
        ratio = a["tokens_per_cpu_s"] / b["tokens_per_cpu_s"]
        print(f"| {name} | {a['tokens_per_cpu_s'] / 1e6:.2f} | {b['tokens_per_cpu_s'] / 1e6:.2f} | {ratio:.2f}x |")
    return {n: {"in_process": a, "one_worker": b} for n, (a, b) in out.items()}


def _s3_copy(paths: dict) -> tuple[dict, object]:
    """Start a local S3 server (its own process: its CPU is not the rank's), upload the
    datasets, point trimodal at it."""
    import socket

    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    os.environ.update(
        {
            "TRIMODAL_S3_ENDPOINT": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="mixbench")
    out = {}
    for name, path in paths.items():
        for dirpath, _, files in os.walk(path):
            for f in files:
                local = os.path.join(dirpath, f)
                s3.upload_file(local, "mixbench", f"{name}/{os.path.relpath(local, path)}")
        out[name] = f"s3://mixbench/{name}"
    return out, server


def scaling(data: dict, args) -> dict:
    local = data["trimodal_1k"]
    remote, server = _s3_copy(local)
    steps = args.scaling_steps
    rows, out = [], {}
    try:
        for where, paths, window in (
            ("local", local, None),
            ("S3", remote, None),
            ("local", local, 4),
            ("S3", remote, 4),
        ):
            cfg = {**mix_config(paths, args.seq_len, pack_pairs=True), "shuffle_window": window}
            for world in (1, 8, 64):
                planner = Mixer(cfg, rank=0, world_size=world)
                planner.advance(5)
                c = time.process_time()
                planner.advance(steps)
                plan_cpu = (time.process_time() - c) / steps
                m = Mixer(cfg, rank=0, world_size=world, read_ahead=0)  # per-batch counts exact
                n = steps if where == "local" or world > 1 else max(5, steps // 6)  # W = 1 on S3: slow on moto
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(n):
                    next(m)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                io = list(m.io_stats().values())
                read = sum(s["bytes_read"] for s in io) / n
                code = sum(s["code_bytes"] for s in io) / n
                req = sum(s["requests"] for s in io) / n
                r = {
                    "bytes_read_per_batch": read,
                    "code_bytes_per_batch": code,
                    "read_over_rendered": read / code,
                    "requests_per_batch": req,
                    "planning_cpu_ms_per_batch": 1e3 * plan_cpu,
                    "rank_cpu_ms_per_batch": 1e3 * cpu / n,
                    "rank_wall_ms_per_batch": 1e3 * wall / n,
                    "batches": n,
                }
                order = f"blocks of 1024, window {window}" if window else "per-sample global"
                out[f"{where} {order} W={world}"] = r
                rows.append((where, order, world, r))
    finally:
        server.terminate()
        server.wait()
    print(
        f"\n## rank scaling: rank 0 of W, {steps} global batches of {BATCH} x {args.seq_len} ({max(5, steps // 6)} for "
        "W = 1 on S3), 3 sources all packed, shards of 1000 rows, one process; S3: moto on 127.0.0.1"
    )
    print(
        "| data | shuffle | W | bytes read / batch | code bytes rendered / batch | read / rendered "
        "| S3 requests / batch | planning CPU ms / batch | rank CPU ms / batch |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for where, order, world, r in rows:
        print(
            f"| {where} | {order} | {world} | {r['bytes_read_per_batch'] / 1e3:.1f} KB | {r['code_bytes_per_batch'] / 1e3:.1f} KB "
            f"| {r['read_over_rendered']:.3f} | {r['requests_per_batch']:.1f} | {r['planning_cpu_ms_per_batch']:.2f} "
            f"| {r['rank_cpu_ms_per_batch']:.2f} |"
        )
    return out


def planning(data: dict, args) -> dict:
    paths = list(data["trimodal"].values())
    out = {}
    for n in (1, 4, 16, 64, 256):
        rng = np.random.default_rng(n)
        cfg = {
            "sources": [
                {"name": f"s{i}", "dataset": paths[i % 3], "share": float(rng.uniform(0.1, 1.0)), "pack": True}
                for i in range(n)
            ],
            "seq_len": args.seq_len,
            "global_batch": BATCH,
            "seed": 0,
        }
        m = Mixer(cfg)
        m.advance(20)
        best = 0.0
        steps = 300 if n < 64 else 150
        for _ in range(args.repeats + 1):
            c = time.process_time()
            m.advance(steps)
            best = max(best, steps * BATCH / (time.process_time() - c))
        out[n] = best
    print(f"\n## planning: rows per CPU second (seq_len {args.seq_len}, all packed; best of {args.repeats + 1})")
    print("| sources | " + " | ".join(str(n) for n in out) + " |")
    print("|---|" + "---|" * len(out))
    print("| rows / CPU s | " + " | ".join(f"{v / 1e3:.0f}k" for v in out.values()) + " |")
    return out


START_CHILD = """
import json, os, sys, time
sys.path.insert(0, sys.argv[2])
def rss():
    d = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile"):
            d[k] = int(v.split()[0]) / 1024
    return d
from trimodal.mixer import Mixer
import trimodal.mixer.mixer, trimodal.mixer.packer, pyarrow as pa, pyarrow.compute  # imports are not the start
pa.chunked_array([pa.array([1, 2])]).to_numpy()  # nor pyarrow's one-time set-up (~25 MB, any process)
r0 = rss()
t = time.perf_counter()
m = Mixer({"sources": [{"name": "t", "dataset": sys.argv[1], "share": 1}], "seq_len": 2048, "global_batch": 64})
s = time.perf_counter() - t
r1 = rss()
print(json.dumps({"start_s": s, "rss_mb": r1["VmRSS"] - r0["VmRSS"], "anon_mb": r1["RssAnon"] - r0["RssAnon"],
                  "file_mb": r1["RssFile"] - r0["RssFile"], "samples": m.streams["t"].n}))
"""


def start(work: str, args) -> dict:
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from bench_manifest import synthetic_table

    from trimodal.dataset.manifest import ShardTable

    path = os.path.join(work, f"synthetic-{args.start_shards}")
    if not os.path.exists(os.path.join(path, "manifest.json")):
        Manifest(fingerprints={"text": FPS["text"]}, shards=ShardTable(synthetic_table(args.start_shards))).save(path)
    best = None
    for _ in range(3):
        r = json.loads(subprocess.check_output([sys.executable, "-c", START_CHILD, path, ROOT], text=True))
        if best is None or r["start_s"] < best["start_s"]:
            best = r
    print(
        f"\n## start: Mixer() on {args.start_shards:,} shards ({best['samples']:,} samples), fresh process, best of 3"
    )
    print(
        f"{best['start_s']:.3f} s; +{best['rss_mb']:.1f} MB RSS (anonymous +{best['anon_mb']:.1f}, "
        f"file-backed +{best['file_mb']:.1f})"
    )
    return best


def memory(work: str, args) -> dict:
    """Write the dataset here, stream it in a fresh process (its peak RSS is the mixer's)."""
    path = os.path.join(work, "big")
    if not os.path.exists(os.path.join(path, "manifest.json")):
        write_big(work, args.big)
    cmd = [sys.executable, os.path.abspath(__file__), "--one", "memory", "--workdir", work, "--core", str(args.core)]
    cmd += [
        "--seq-len",
        str(args.seq_len),
        "--big-sources",
        str(args.big_sources),
        "--big-seconds",
        str(args.big_seconds),
    ]
    cmd += ["--drop-cache"] if args.drop_cache else []
    cmd += ["--shuffle-window", str(args.shuffle_window)] if args.shuffle_window else []
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    lines = out.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))
    return json.loads(lines[-1])


def memory_stream(work: str, args) -> dict:
    path = os.path.join(work, "big")
    shards = [os.path.join(path, "shards", f) for f in sorted(os.listdir(os.path.join(path, "shards")))]
    size = sum(os.path.getsize(s) for s in shards)
    cfg = {
        "sources": [{"name": f"big{i}", "dataset": path, "share": 1 + i % 3} for i in range(args.big_sources)],
        "seq_len": args.seq_len,
        "global_batch": BATCH,
        "seed": 0,
        "shuffle_window": args.shuffle_window,
    }
    if args.shuffle_window:
        cfg["cache_files"] = max(64, 2 * args.shuffle_window * args.big_sources)
    m = Mixer(cfg)
    print(
        f"\n## memory: {size / 2**30:.2f} GB in {len(shards)} shards, {args.big_sources} mix sources on it, "
        f"shuffle_window {args.shuffle_window}, default caches; page cache dropped every 1 s: {args.drop_cache}"
    )
    print("| t (s) | tokens (M) | RSS (MB) | anonymous | file-backed |")
    print("|---|---|---|---|---|")
    t0 = last = time.perf_counter()
    tokens, peak_file = 0, 0
    while True:
        b = next(m)
        tokens += int((b["segment_ids"] != 0).sum())
        now = time.perf_counter()
        if now - last >= 1.0:
            last = now
            if args.drop_cache:
                for s in shards:
                    fd = os.open(s, os.O_RDONLY)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.close(fd)
            r = _rss()
            peak_file = max(peak_file, r["RssFile"])
            if int(now - t0) % 10 == 0 or now - t0 >= args.big_seconds:
                print(
                    f"| {now - t0:.0f} | {tokens / 1e6:.1f} | {r['VmRSS']} | {r['RssAnon']} | {r['RssFile']} |",
                    flush=True,
                )
            if now - t0 >= args.big_seconds:
                break
    hwm = _rss()["VmHWM"]
    print(
        f"peak RSS of this process (VmHWM, file-backed included): {hwm} MB; peak file-backed seen {peak_file} MB; "
        f"{tokens / (time.perf_counter() - t0) / 1e6:.1f}M tokens/s"
    )
    return {"peak_rss_mb": hwm, "peak_file_mb": peak_file, "tokens": tokens, "dataset_gb": size / 2**30}


def _rss() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) // 1024
    return out


# main ----------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--tokens", type=float, default=40e6, help="tokens across the three sources")
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per loader")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per loader; the best is kept")
    ap.add_argument("--workdir", default=None, help="keep data here (default: a temporary directory)")
    ap.add_argument("--no-peers", action="store_true", help="only the trimodal mixer")
    ap.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    ap.add_argument("--scaling-steps", type=int, default=60)
    ap.add_argument("--start-shards", type=int, default=1_000_000)
    ap.add_argument("--big", type=float, default=2.5, help="memory: GB of text to write and stream")
    ap.add_argument("--big-sources", type=int, default=8, help="memory: mix sources over that one dataset")
    ap.add_argument("--big-seconds", type=float, default=60.0)
    ap.add_argument("--drop-cache", action="store_true", help="memory: evict shard pages every second")
    ap.add_argument("--shuffle-window", type=int, default=None, help="memory: block shuffle (see MixConfig)")
    ap.add_argument("--json", default=None, help="also write all figures to this JSON file")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one loader, in this process
    ap.add_argument("--one-workers", type=int, default=-1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown sections {bad}; choose from {SECTIONS}")
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    work = args.workdir or tempfile.mkdtemp(prefix="trimodal-bench-")
    os.makedirs(work, exist_ok=True)
    if args.one == "memory":
        print(json.dumps(memory_stream(work, args)))
        return
    if args.one:
        data = prepare(work, args.tokens, args.seq_len, peers=not args.one.startswith("trimodal"))
        r = loader_fns(data, args)[args.one](None if args.one_workers < 0 else args.one_workers)
        print(json.dumps(r))
        return
    figures = {}
    try:
        needs_data = {"throughput", "workers", "scaling", "planning"} & set(only)
        data = (
            prepare(
                work,
                args.tokens,
                args.seq_len,
                peers=not args.no_peers and bool({"throughput", "workers"} & set(only)),
                small_shards="scaling" in only,
            )
            if needs_data
            else {}
        )
        for section in only:
            t = time.perf_counter()
            if section == "throughput":
                figures[section] = throughput(data, args, work)
            elif section == "workers":
                figures[section] = workers_section(data, args, work)
            elif section == "scaling":
                figures[section] = scaling(data, args)
            elif section == "planning":
                figures[section] = planning(data, args)
            elif section == "start":
                figures[section] = start(work, args)
            elif section == "memory":
                figures[section] = memory(work, args)
            print(f"({section}: {time.perf_counter() - t:.0f} s)", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=1, default=str)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


_stub_missing()  # also in DataLoader workers started by spawn (they import this module)

if __name__ == "__main__":
    main()
