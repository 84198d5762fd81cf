"""`run_tokenize`: raw corpora → a tokenized dataset, on Ray, resumable and quarantining.

Order of work: validate the config and expand every input (fail in seconds, naming the key);
load the tokenizers on the driver once for their fingerprints and decode parameters; claim the
output (`_progress/job.json`, refusing progress of a different job); skip inputs with
completion markers; run one task per remaining input (worker.py: read, decode, encode, write
its own shards); then commit the manifest from all markers, in input order (runner.py).

An input that cannot be read (or breaks part way) does not stop the job: what the readers
trust is kept (the records before the damage of an uncompressed input; nothing of a damaged
compressed, empty or missing one, see `trimodal.pipeline.readers`), the input is listed in the
manifest (`inputs[].status = failed`, `stats.failed_inputs`) and the summary with its path and
error, and the next run retries it.
The job still exits 0, because the dataset it committed is complete and consistent for what
could be read, and on a multi-terabyte corpus one bad object must not cost the run; a pipeline
that wants a hard failure sets `strict: true` (or `--strict`), which exits 4 after committing.
"""

from __future__ import annotations

import time

from trimodal.config import from_dict, to_dict
from trimodal.dataset.digest import canonical_hash
from trimodal.errors import ConfigError
from trimodal.pipeline.job_config import JobConfig, check_inputs
from trimodal.pipeline.resume import MarkerStore, input_key
from trimodal.pipeline.runner import FORMAT, Plan, faults_from_env, load_stage, run
from trimodal.pipeline.worker import TaskSpec
from trimodal.tokenizers.base import code_identity


def run_tokenize(
    config: JobConfig | dict, *, address: str | None = None, restart: bool = False, quiet: bool = False, stream=None
) -> dict:
    """Tokenize the configured sources into `config.output.uri`; return the summary dict
    (the manifest's `stats` plus `output`, `job_fingerprint`)."""
    from trimodal.pipeline.readers.common import input_name

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
    # so that a source can grow new files and a codec file can move, and still resume.
    parts = {
        "format": FORMAT,
        "kind": "tokenize",
        "fingerprints": {m: code_identity(fp) for m, fp in fps.items()},
        "limits": limits,
        "sources": [{k: v for k, v in s.items() if k != "paths"} for s in sources],
    }
    job_fp = canonical_hash(parts)
    out = cfg.output.uri
    store = MarkerStore(out)
    store.begin(job_fp, parts, cfg.output.mode)
    done = store.load_all(job_fp)

    items: dict[str, dict] = {}
    order: list[str] = []
    for s, uris in zip(cfg.sources, inputs):
        for uri in uris:
            k = input_key(s.name, uri, input_name(s, uri))
            if k in items:
                raise ConfigError(f"sources: input {uri} is listed twice (source {s.name!r})")
            items[k] = {"key": k, "source": s.name, "uri": uri}
            order.append(k)
    pending = [items[k] for k in order if k not in done]

    task = TaskSpec(
        out=out,
        sources={src.name: to_dict(src) for src in cfg.sources},
        stages={st.modality: st for st in stages},
        pools={},
        limits=limits,
        shard_rows=cfg.output.shard_rows,
        shard_bytes=cfg.output.shard_bytes,
        chunk_rows=cfg.ray.read_chunk_rows,
        inflight_chunks=cfg.ray.inflight_chunks,
        faults=faults_from_env(),
    )
    plan = Plan("tokenize", out, job_fp, order, pending, done, task, stages)
    job = {
        "kind": "tokenize",
        "sources": sources,
        "tokenizers": {m: to_dict(cfg.tokenizers[m]) for m in modalities},
        "limits": limits,
        "output": {"shard_rows": cfg.output.shard_rows, "shard_bytes": cfg.output.shard_bytes},
    }
    return run(
        plan,
        store,
        ray_cfg=cfg.ray,
        progress_cfg=cfg.progress,
        quiet=quiet,
        address=address,
        t0=t0,
        fingerprints=fps,
        job=job,
        stream=stream,
    )
