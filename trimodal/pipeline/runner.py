"""The skeleton shared by `tokenize` and `retokenize`: plan inputs → claim the output and load
markers → run one task per pending input on Ray → write each input's marker → commit.

The driver does no per-sample work: it lists inputs, starts the codec pools, submits one task
per input (worker.py) with at most `ray.read_tasks` (default: the cluster's CPUs) in flight,
and for each finished input writes its completion marker (`_progress/<key>.json`) from the
task's metadata. The commit assembles the manifest from the markers in input order, writes its
tables and then `manifest.json` (last, atomically), and removes files no manifest references
(shards of dead attempts, `*.tmp-*` of writes cut short). A rerun after any crash skips inputs
with a marker and ends with the same dataset as an uninterrupted run.

Measured driver cost (`bench/bench_pipeline.py`, text job, local Ray): well under 0.01 CPU-s
per 1M tokens, since the driver handles ~1 KB of metadata per input whatever its size.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from trimodal.dataset.dataset import remove_unreferenced
from trimodal.dataset.manifest import Manifest
from trimodal.dataset.schema import MODALITIES
from trimodal.errors import ConfigError
from trimodal.faults import faults_from_env  # test-only crash injection; see docs/design.md
from trimodal.pipeline.progress import Progress, start_board
from trimodal.pipeline.resume import MarkerStore
from trimodal.tokenizers.placement import cpu_only

FORMAT = 2  # of the job's markers and fingerprint parts


@dataclass
class Stage:
    """One tokenizer of a job (plain data: it is shipped to tasks and actors)."""

    modality: str
    kind: str
    path: str
    options: dict = field(default_factory=dict)  # load_tokenizer(**options)
    batch_size: int = 16
    threads: int | None = None
    prepared: dict | None = None  # decode params (encode.PREPARERS), None: raw bytes
    actors: int = 1


def load_stage(modality: str, spec, options: dict, batch_size: int, actors: int) -> tuple[dict, Stage]:
    """Load a tokenizer once on the driver: proves it loads (errors name the key) and yields
    its fingerprint and the Stage the tasks run. Returns (fingerprint, Stage)."""
    from trimodal.pipeline.encode import prepare_params
    from trimodal.tokenizers.base import load_tokenizer
    from trimodal.tokenizers.placement import with_device

    # On the driver the codec only has to load; the actors get the configured device.
    try:
        tok = load_tokenizer(spec.kind, spec.path, **with_device(modality, options, "cpu"))
    except ConfigError as e:
        raise ConfigError(f"tokenizers.{modality}: {e}") from e
    except TypeError as e:  # an option this tokenizer does not take
        raise ConfigError(f"tokenizers.{modality}.options: {e}") from e
    if tok.modality != modality:
        raise ConfigError(f"tokenizers.{modality}.kind: {spec.kind!r} tokenizes {tok.modality}, not {modality}")
    stage = Stage(
        modality=modality,
        kind=spec.kind,
        path=os.path.abspath(os.path.expanduser(spec.path)),
        options=options,
        batch_size=batch_size,
        threads=spec.threads,
        prepared=prepare_params(spec.kind, tok),
        actors=actors,
    )
    return tok.fingerprint(), stage


@dataclass
class Plan:
    """What a job will do: every input in order, the ones still to run, and how."""

    label: str  # "tokenize" | "retokenize"
    out: str
    job_fp: str
    order: list[str]  # input keys in manifest order
    pending: list[dict]  # task items: {key, source, uri, ...}
    done: dict[str, dict]  # key -> marker of a completed input (this job's)
    task: object  # worker.TaskSpec (pools filled in by `execute`)
    stages: list[Stage]


class _DriverFaults:
    """`kill_before_marker: N` SIGKILLs the driver after the N-th input's shards are written
    but before its marker (test-only, TRIMODAL_FAULTS)."""

    def __init__(self, spec: dict):
        self.n = int(spec.get("kill_before_marker") or 0)
        self.markers = 0
        self.lock = threading.Lock()

    def before_marker(self) -> None:
        if not self.n:
            return
        with self.lock:
            self.markers += 1
            if self.markers >= self.n:
                os.kill(os.getpid(), signal.SIGKILL)


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def execute(plan: Plan, store: MarkerStore, ray_cfg, progress: Progress, faults: dict) -> dict[str, dict]:
    """Run every pending input as a task; returns key -> marker of the inputs run now."""
    import ray

    from trimodal.pipeline.codec_pool import CodecPool

    if not plan.pending:
        return {}
    gpus = float(ray.cluster_resources().get("GPU", 0))
    task = plan.task
    pools = {
        st.modality: CodecPool(st, {}, ray_cfg, gpus, faults)
        for st in plan.stages
        if not cpu_only(st.modality) and any(it.get("copy") is not True for it in plan.pending)
    }
    task.pools = {m: p.actors for m, p in pools.items()}
    board = start_board() if progress.enabled else None
    task.board = board
    task.report_s = max(0.2, min(2.0, progress.interval))
    spec_ref = ray.put(task)
    remote = ray.remote(_run_item).options(
        num_cpus=ray_cfg.read_num_cpus,
        resources=dict(ray_cfg.resources) or None,
        max_retries=ray_cfg.max_retries,
        retry_exceptions=False,  # only system failures (a dead worker or node) are retried
    )
    window = min(ray_cfg.read_tasks or cluster_cpus(), len(plan.pending))
    queue = list(reversed(plan.pending))
    inflight: dict = {}
    results: dict[str, dict] = {}
    driver_faults = _DriverFaults(faults)
    try:
        while queue or inflight:
            while queue and len(inflight) < window:
                it = queue.pop()
                inflight[remote.remote(it, spec_ref)] = it
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=min(max(0.5, progress.interval), 2.0))
            for ref in ready:
                it = inflight.pop(ref)
                try:
                    meta = ray.get(ref)
                except Exception as e:
                    raise RuntimeError(
                        f"input {it['uri']} ({it['key']}) failed to process: {e}; the inputs finished so far "
                        "have markers, rerun to resume"
                    ) from e
                marker = {"job": plan.job_fp, **meta}
                driver_faults.before_marker()
                store.write(it["key"], marker)
                results[it["key"]] = marker
                rejected = sum((meta.get("quarantine") or {}).values())
                progress.add_records(meta.get("records", 0), rejected, meta.get("tokens") or {})
                progress.input_done(it.get("size") or 0, key=it["key"])
            if progress.due():
                if board is not None:
                    _update_live(progress, board, inflight.values())
                if pools:
                    progress.extra = "codecs " + ", ".join(
                        f"{m} {len(p.actors)}x busy {f:.0%}" if (f := p.busy_fraction()) is not None else f"{m} busy ?"
                        for m, p in pools.items()
                    )
            progress.maybe_print()
    finally:
        for ref in inflight:
            ray.cancel(ref, force=True)
        for p in pools.values():
            for a in p.actors:
                ray.kill(a)
        if board is not None:
            ray.kill(board)
    return results


def _update_live(progress: Progress, board, running) -> None:
    """Running inputs' counts from the board (inputs that finished since are left out; their
    markers count). A board that does not answer in time leaves the last counts."""
    import ray

    keys = {it["key"]: it.get("size") or 0 for it in running}
    try:
        snap = ray.get(board.snapshot.remote(), timeout=2.0)
    except Exception:
        return
    live = {}
    for k, c in snap.items():
        if k in keys:
            c = dict(c)
            if keys[k]:  # never more than the listed size (a file that grew since listing)
                c["bytes_read"] = min(c.get("bytes_read", 0), keys[k])
            live[k] = c
    gone = [k for k in snap if k not in keys]
    if gone:
        board.forget.remote(gone)
    progress.set_live(live)


def input_sizes(items: list[dict], threads: int = 16) -> None:
    """Set each item's `size` (bytes of its file, for the ETA): one stat per input, in
    parallel threads (object stores answer a HEAD in tens of ms). Unknown sizes stay 0."""
    from concurrent.futures import ThreadPoolExecutor

    from trimodal.dataset.storage import resolve

    def size(uri: str) -> int:
        try:
            loc = resolve(uri)
            return max(0, int(loc.fs.get_file_info(loc.path).size or 0))
        except Exception:
            return 0

    todo = [it for it in items if not it.get("copy")]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(todo)))) as pool:
        for it, n in zip(todo, pool.map(size, [it["uri"] for it in todo])):
            it["size"] = n


def _run_item(item: dict, spec) -> dict:
    from trimodal.pipeline.worker import copy_input, run_input

    return copy_input(item, spec) if item.get("copy") else run_input(item, spec)


def summarize_markers(markers: list[dict]) -> dict:
    q: Counter = Counter()
    for mk in markers:
        q.update(mk.get("quarantine") or {})
    failed = [
        {"uri": mk["uri"], "key": mk["key"], "error": mk.get("error")} for mk in markers if mk.get("status") == "failed"
    ]
    return {
        "samples": sum(mk["rows"] for mk in markers),
        "records": sum(mk["records"] for mk in markers),
        "tokens": {m: sum(mk["tokens"].get(m, 0) for mk in markers) for m in MODALITIES},
        "bytes": sum(mk["bytes"] for mk in markers),
        "shards": sum(len(mk["shards"]) for mk in markers),
        "quarantined": dict(sorted(q.items())),
        "failed_inputs": failed,
    }


def input_entry(mk: dict) -> dict:
    """The manifest's record of one consumed input (retokenize reads these back)."""
    return {k: mk.get(k) for k in ("key", "uri", "source", "status", "error", "records", "rows", "quarantine")} | {
        "shards": [e["path"] for e in mk["shards"]]
    }


def job_stats(markers: list[dict], progress: Progress, wall: float, pending: int) -> tuple[dict, dict]:
    """(summary of the whole dataset, stats for the manifest)."""
    summary = summarize_markers(markers)
    stats = {
        "wall_seconds": round(wall, 3),
        "inputs": len(markers),
        "inputs_resumed": len(markers) - pending,
        "inputs_failed": len(summary["failed_inputs"]),
        "failed_inputs": summary["failed_inputs"],
        "samples": summary["samples"],
        "records": summary["records"],
        "tokens": summary["tokens"],
        "quarantined": summary["quarantined"],
        "bytes": summary["bytes"],
        "shards": summary["shards"],
        # Throughput of this run only (resumed inputs cost nothing now).
        "run": {
            "samples": progress.samples,
            "tokens": dict(progress.tokens),
            "samples_per_s": round(progress.samples / wall, 2) if wall > 0 else None,
            "tokens_per_s": {m: round(v / wall, 1) for m, v in progress.tokens.items()} if wall > 0 else None,
        },
    }
    return summary, stats


def run(
    plan: Plan,
    store: MarkerStore,
    *,
    ray_cfg,
    progress_cfg,
    quiet: bool,
    address: str | None,
    t0: float,
    fingerprints: dict,
    job: dict,
    stream=None,
) -> dict:
    """Execute `plan` and commit its manifest; returns the job's stats (the CLI's summary).
    Progress goes to `stream` (default stderr)."""
    faults = faults_from_env()
    enabled = progress_cfg.enabled and not quiet
    if enabled and plan.pending:
        input_sizes(plan.pending)
    progress = Progress(
        len(plan.order),
        len(plan.order) - len(plan.pending),
        interval_s=progress_cfg.interval_s,
        enabled=enabled,
        label=plan.label,
        bytes_total=sum(it.get("size") or 0 for it in plan.pending),
        stream=stream,
    )
    if plan.pending:
        from trimodal.cluster import ensure_ray

        # --quiet: no worker log lines forwarded to this terminal either, only errors.
        ensure_ray(
            address or ray_cfg.address,
            ray_cfg.num_cpus,
            log_to_driver=not quiet,
            logging_level="error" if quiet else "warning",
        )
    try:
        results = execute(plan, store, ray_cfg, progress, faults)
    except BaseException:
        progress.close()
        raise
    markers = [plan.done.get(k) or results[k] for k in plan.order]
    summary, stats = job_stats(markers, progress, time.monotonic() - t0, len(plan.pending))
    manifest = Manifest(
        fingerprints=fingerprints,
        shards=[e for mk in markers for e in mk["shards"]],
        inputs=[input_entry(mk) for mk in markers],
        quarantine=summary["quarantined"],
        stats=stats,
        job={**job, "fingerprint": plan.job_fp},
    )
    manifest.save(plan.out)
    removed = remove_unreferenced(plan.out, manifest)
    stats["removed_unreferenced"] = len(removed)
    progress.close()
    return {"output": plan.out, "job_fingerprint": plan.job_fp, **stats}
