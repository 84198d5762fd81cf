"""`run_tokenize`: raw corpora → a tokenized dataset, on Ray Data, resumable and quarantining.

Order of work: validate the config and expand every input (fail in seconds, naming the key);
load the tokenizers on the driver once for their fingerprints and decode parameters; claim the
output (`_progress/job.json`, refusing progress of a different job); skip inputs with
completion markers; run the graph over the rest (graph.py), assembling shards per input on the
driver (assemble.py); then commit the manifest from all markers, in input order, atomically
and last.

An input that cannot be read (or breaks part way) does not stop the job: the records read
before the damage are kept, the input is listed in the manifest (`inputs[].status = failed`,
`stats.failed_inputs`) and the summary with its path and error, and the next run retries it.
The job still exits 0, because the dataset it committed is complete and consistent for what
could be read, and on a multi-terabyte corpus one bad object must not cost the run; a pipeline
that wants a hard failure sets `strict: true` (or `--strict`), which exits 4 after committing.
Shared with retokenize: `execute` (graph + assembly + progress), `load_stage`, the summary.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

from trimodal.config import from_dict, to_dict
from trimodal.dataset.manifest import Manifest
from trimodal.dataset.schema import MODALITIES
from trimodal.errors import ConfigError
from trimodal.pipeline.assemble import Assembler, Faults, InputWriter
from trimodal.pipeline.job_config import JobConfig, TokenizerSpec, check_inputs
from trimodal.pipeline.progress import Progress
from trimodal.pipeline.resume import MarkerStore, canonical_hash, input_key

FORMAT = 1  # of the job's markers and fingerprint parts


def faults_from_env() -> dict:
    """Test-only fault injection (see assemble.Faults), read from TRIMODAL_FAULTS (JSON)."""
    raw = os.environ.get("TRIMODAL_FAULTS")
    return json.loads(raw) if raw else {}


def load_stage(modality: str, spec: TokenizerSpec, options: dict, batch_size: int, actors: int):
    """Load a tokenizer once on the driver: proves it loads (errors name the key) and yields
    its fingerprint and the Stage the graph runs. Returns (fingerprint, Stage)."""
    from trimodal.pipeline.encode import prepare_params
    from trimodal.pipeline.graph import Stage
    from trimodal.tokenizers.base import load_tokenizer

    # On the driver (often a CPU-only head node) the codec only has to load: devices do not
    # change fingerprints, and the actors get the configured device.
    local = dict(options, device="cpu") if modality != "text" else options
    try:
        tok = load_tokenizer(spec.kind, spec.path, **local)
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


def execute(
    items: list[dict],
    finalize,
    *,
    total_inputs: int,
    skipped: int,
    progress_cfg,
    label: str,
    quiet: bool = False,
    **graph_kwargs,
) -> tuple[dict, Progress]:
    """Run the graph over `items` and assemble every input; returns (key -> marker, progress)."""
    from trimodal.pipeline.graph import build_graph

    progress = Progress(
        total_inputs,
        skipped,
        interval_s=progress_cfg.interval_s,
        enabled=progress_cfg.enabled and not quiet,
        label=label,
    )
    if not items:
        return {}, progress
    ds = build_graph(items, **graph_kwargs)
    asm = Assembler([it["key"] for it in items], finalize, progress)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
            asm.add(batch)
    except BaseException:
        asm.pool.shutdown(wait=True, cancel_futures=True)  # finish started writes, then fail
        raise
    return asm.finish(), progress


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


def run_tokenize(
    config: JobConfig | dict, *, address: str | None = None, restart: bool = False, quiet: bool = False
) -> dict:
    """Tokenize the configured sources into `config.output.uri`; return the summary dict
    (the manifest's `stats` plus `output`, `job_fingerprint`)."""
    from trimodal.pipeline.readers.common import input_key as source_key

    cfg = config if isinstance(config, JobConfig) else from_dict(JobConfig, config)
    if restart:
        cfg.output.mode = "restart"
    t0 = time.monotonic()
    inputs = check_inputs(cfg)
    modalities = cfg.modalities()
    fps, stages = {}, []
    for m in modalities:
        spec = cfg.tokenizers[m]
        fps[m], st = load_stage(m, spec, spec.load_options(m, cfg.limits), cfg.batch_size(m), cfg.ray.actors_for(m))
        stages.append(st)
    limits = to_dict(cfg.limits)
    sources = [to_dict(s) for s in cfg.sources]
    # Everything that changes which rows are kept or what their codes are; paths are left out
    # so that a source can grow new files and resume.
    parts = {
        "format": FORMAT,
        "kind": "tokenize",
        "fingerprints": fps,
        "limits": limits,
        "sources": [{k: v for k, v in s.items() if k != "paths"} for s in sources],
    }
    job_fp = canonical_hash(parts)
    out = cfg.output.uri
    store = MarkerStore(out)
    store.begin(job_fp, parts, cfg.output.mode)
    done = store.load_all(job_fp)

    plan: dict[str, dict] = {}
    order: list[str] = []
    for s, uris in zip(cfg.sources, inputs):
        for uri in uris:
            k = input_key(s.name, uri, source_key(s, uri))
            if k in plan:
                raise ConfigError(f"sources: input {uri} is listed twice (source {s.name!r})")
            plan[k] = {"key": k, "source": s.name, "uri": uri}
            order.append(k)
    pending = [plan[k] for k in order if k not in done]

    if pending:
        from trimodal.pipeline.graph import ensure_ray

        ensure_ray(address or cfg.ray.address, cfg.ray.num_cpus)
    faults = faults_from_env()
    writer = InputWriter(out, job_fp, plan, store, cfg.output.shard_rows, cfg.output.shard_bytes, Faults(faults))
    results, progress = execute(
        pending,
        writer,
        total_inputs=len(order),
        skipped=len(order) - len(pending),
        progress_cfg=cfg.progress,
        label="tokenize",
        quiet=quiet,
        sources={s.name: s for s in cfg.sources},
        stages=stages,
        kinds={s.name: s.kind for s in cfg.sources},
        limits=limits,
        ray_cfg=cfg.ray,
        faults=faults,
    )
    markers = [done.get(k) or results[k] for k in order]
    summary, stats = job_stats(markers, progress, time.monotonic() - t0, len(pending))
    manifest = Manifest(
        fingerprints=fps,
        shards=[e for mk in markers for e in mk["shards"]],
        inputs=[input_entry(mk) for mk in markers],
        quarantine=summary["quarantined"],
        stats=stats,
        job={
            "kind": "tokenize",
            "fingerprint": job_fp,
            "sources": sources,
            "tokenizers": {m: to_dict(cfg.tokenizers[m]) for m in modalities},
            "limits": limits,
            "output": {"shard_rows": cfg.output.shard_rows, "shard_bytes": cfg.output.shard_bytes},
        },
    )
    manifest.save(out)
    progress.maybe_print(force=True)
    return {"output": out, "job_fingerprint": job_fp, **stats}
