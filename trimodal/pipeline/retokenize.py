"""`run_retokenize`: re-encode one modality of a dataset with a new tokenizer, from the raw samples.

A better codec should not mean re-running the whole pipeline. For each input the parent dataset
consumed (its manifest's `inputs`), the job reads the parent's rows of that input (`id`,
`origin`), fetches exactly those raw samples again through the readers (the origin names the
file and the record in it; the file is read once, front to back, only as far as the last
wanted record), decodes and encodes the one modality on the same Ray Data graph as `tokenize`,
and writes the parent's rows with that one column replaced. Every other column is copied
unchanged, so text codes, ids and row order stay byte-identical. Inputs whose source has no
such modality (text corpora when retokenizing audio) are copied shard for shard, without Ray.

Samples that the new tokenizer rejects, or whose raw record is gone (`origin_not_found`), are
dropped from the new dataset and quarantined beside the parent's own quarantine records.
Resume works as in `tokenize`: per-input markers in the new dataset's `_progress/`, the
manifest last. The new manifest carries the parent's fingerprints with the new one for the
modality, so the vocabulary check refuses to mix the two datasets' codes for it.

Trade-off: the raw corpus must still be where the parent's origins point (the source configs
are taken from the parent manifest); in exchange no raw media is ever duplicated into datasets.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pyarrow as pa

from trimodal.config import from_dict, to_dict
from trimodal.dataset.dataset import Dataset
from trimodal.dataset.manifest import Manifest
from trimodal.dataset.quarantine import FIELDS as QUARANTINE_FIELDS
from trimodal.dataset.schema import KIND_MODALITIES, MODALITIES
from trimodal.dataset.shards import concat_tables
from trimodal.dataset.storage import resolve
from trimodal.errors import ConfigError
from trimodal.pipeline.assemble import Faults, write_input
from trimodal.pipeline.job import FORMAT, execute, faults_from_env, input_entry, job_stats, load_stage
from trimodal.pipeline.job_config import DEFAULT_BATCH, Limits, ProgressConfig, RayConfig, TokenizerSpec
from trimodal.pipeline.resume import MarkerStore, canonical_hash
from trimodal.pipeline.sources import SourceConfig


@dataclass
class RetokenizeConfig:
    dataset: str  # the parent dataset (local or s3://)
    modality: str  # text | image | audio
    tokenizer: TokenizerSpec  # the new tokenizer
    out: str  # the new dataset
    shard_rows: int | None = None  # default: the parent job's
    shard_bytes: int | None = None
    mode: str = "resume"  # resume | restart
    ray: RayConfig = field(default_factory=RayConfig)
    progress: ProgressConfig = field(default_factory=ProgressConfig)

    def validate(self):
        if self.modality not in MODALITIES:
            raise ConfigError(f"modality: {self.modality!r} is not one of {list(MODALITIES)}")
        if self.mode not in ("resume", "restart"):
            raise ConfigError(f"mode: {self.mode!r} is not one of ['resume', 'restart']")
        if resolve(self.out).uri == resolve(self.dataset).uri:
            raise ConfigError("out: must differ from the dataset being retokenized (it is read while writing)")


def _parent_sources(parent: Manifest, uri: str) -> dict[str, SourceConfig]:
    specs = (parent.job or {}).get("sources")
    if not specs:
        raise ConfigError(
            f"{uri}: its manifest records no sources (not written by `trimodal tokenize`), so "
            "the raw samples cannot be found again"
        )
    return {s["name"]: from_dict(SourceConfig, s, where=f"{uri} manifest job.sources") for s in specs}


class RetokenizeWriter:
    """finalize() for retokenizing: parent rows of one input + new codes → shards, quarantine, marker."""

    def __init__(
        self,
        out: str,
        job: str,
        parent: Dataset,
        modality: str,
        plan: dict,
        store,
        shard_rows: int,
        shard_bytes: int,
        faults: Faults,
    ):
        self.out, self.job, self.parent, self.m = out, job, parent, modality
        self.plan, self.store = plan, store
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.faults = faults

    def __call__(self, key: str, t: pa.Table | None, end: dict) -> dict:
        info = self.plan[key]
        rows = info["rows"]  # the parent's rows of this input, in order
        new_ids = {} if t is None else {v: i for i, v in enumerate(t.column("id").to_pylist())}
        reasons = [] if t is None else t.column("reason").to_pylist()
        messages = [] if t is None else t.column("message").to_pylist()
        keep, take, bad = [], [], []
        for j, (rid, src, origin) in enumerate(
            zip(rows.column("id").to_pylist(), rows.column("source").to_pylist(), rows.column("origin").to_pylist())
        ):
            i = new_ids.get(rid)
            if i is not None and reasons[i] is None:
                keep.append(j)
                take.append(i)
                continue
            if i is None:  # the read stopped before reaching it (the input broke)
                reason, message = "input_error", f"{rid} ({origin}): not re-read: {end.get('message')}"
            else:
                reason, message = reasons[i], messages[i]
            bad.append({"id": rid, "source": src, "origin": origin, "reason": reason, "message": message})
        good = rows.take(pa.array(keep, pa.int64()))
        codes = (
            t.column(f"{self.m}_codes").take(pa.array(take, pa.int64()))
            if t is not None
            else pa.chunked_array([], pa.list_(pa.int32()))
        )
        good = good.set_column(good.schema.get_field_index(self.m), self.m, codes.cast(pa.list_(pa.int32())))
        entries, counts = write_input(self.out, key, good, info["quarantine"] + bad, self.shard_rows, self.shard_bytes)
        self.faults.before_marker()
        marker = _marker(self.job, key, info, entries, counts, info["records"], end)
        self.store.write(key, marker)
        return marker


def _marker(job, key, info, entries, counts, records, end) -> dict:
    return {
        "job": job,
        "key": key,
        "uri": info["uri"],
        "source": info["source"],
        "status": "failed" if end.get("reason") else "done",
        "error": end.get("message"),
        "records": records,
        "rows": sum(e["rows"] for e in entries),
        "shards": entries,
        "quarantine": counts,
        "tokens": {m: sum(e["tokens"].get(m, 0) for e in entries) for m in MODALITIES},
        "bytes": sum(e["bytes"] for e in entries),
    }


def _parent_quarantine(parent_uri: str, key: str) -> list[dict]:
    loc = resolve(parent_uri).join(f"quarantine/{key}.jsonl")
    if not loc.exists():
        return []
    return [
        {k: r.get(k) for k in QUARANTINE_FIELDS}
        for r in (json.loads(line) for line in loc.read_bytes().decode().splitlines() if line.strip())
    ]


def run_retokenize(config: RetokenizeConfig | dict, *, address: str | None = None, quiet: bool = False) -> dict:
    """Write `config.out`: the parent dataset with `config.modality` re-encoded; returns the summary."""
    from trimodal.pipeline.graph import ensure_ray

    cfg = config if isinstance(config, RetokenizeConfig) else from_dict(RetokenizeConfig, config)
    t0 = time.monotonic()
    m = cfg.modality
    parent = Dataset.open(cfg.dataset)
    pm = parent.manifest
    sources = _parent_sources(pm, cfg.dataset)
    pjob = pm.job or {}
    limits = from_dict(Limits, pjob.get("limits") or {}, where=f"{cfg.dataset} manifest job.limits")
    shard_rows = cfg.shard_rows or (pjob.get("output") or {}).get("shard_rows") or 8192
    shard_bytes = cfg.shard_bytes or (pjob.get("output") or {}).get("shard_bytes") or 256 << 20
    spec = cfg.tokenizer
    fp, stage = load_stage(
        m, spec, spec.load_options(m, limits), spec.batch_size or DEFAULT_BATCH[m], cfg.ray.actors_for(m)
    )
    fps = dict(pm.fingerprints)
    fps[m] = fp
    parts = {
        "format": FORMAT,
        "kind": "retokenize",
        "modality": m,
        "fingerprint": fp,
        "parent": {"fingerprints": pm.fingerprints, "shards": [s["sha256"] for s in pm.shards]},
        "limits": to_dict(limits),
    }
    job_fp = canonical_hash(parts)
    store = MarkerStore(cfg.out)
    store.begin(job_fp, parts, cfg.mode)
    done = store.load_all(job_fp)

    shard_index = {s["path"]: i for i, s in enumerate(pm.shards)}
    order, plan, items, copies = [], {}, [], []
    for entry in pm.inputs:
        k = entry["key"]
        order.append(k)
        info = {
            "key": k,
            "uri": entry["uri"],
            "source": entry["source"],
            "shards": entry.get("shards") or [],
            "records": entry.get("records") or 0,
        }
        plan[k] = info
        if k in done:
            continue
        src = sources.get(entry["source"])
        if src is None:
            raise ConfigError(
                f"{cfg.dataset}: input {entry['uri']} names source {entry['source']!r}, "
                "which its manifest does not describe"
            )
        if m in KIND_MODALITIES[src.kind] and entry.get("rows"):
            tables = [parent.read_shard(shard_index[p]) for p in info["shards"]]
            rows = concat_tables(tables).select(["id", "source", "text", "image", "audio", "origin"])
            info["rows"] = rows
            info["quarantine"] = _parent_quarantine(cfg.dataset, k)
            items.append(
                {
                    "key": k,
                    "source": entry["source"],
                    "uri": entry["uri"],
                    "origins": [
                        {"id": i, "origin": o}
                        for i, o in zip(rows.column("id").to_pylist(), rows.column("origin").to_pylist())
                    ],
                }
            )
        else:
            copies.append(k)

    # Inputs without this modality: the parent's shards and quarantine, byte for byte.
    for k in copies:
        plan[k]["marker"] = _copy_input(cfg.dataset, cfg.out, job_fp, plan[k], parent, shard_index, store)

    if items:
        ensure_ray(address or cfg.ray.address, cfg.ray.num_cpus)
    faults = faults_from_env()
    writer = RetokenizeWriter(cfg.out, job_fp, parent, m, plan, store, shard_rows, shard_bytes, Faults(faults))
    results, progress = execute(
        items,
        writer,
        total_inputs=len(order),
        skipped=len(order) - len(items),
        progress_cfg=cfg.progress,
        label="retokenize",
        quiet=quiet,
        sources=sources,
        stages=[stage],
        kinds={n: s.kind for n, s in sources.items()},
        limits=to_dict(limits),
        ray_cfg=cfg.ray,
        faults=faults,
        only=m,
    )
    markers = [done.get(k) or results.get(k) or plan[k]["marker"] for k in order]
    summary, stats = job_stats(markers, progress, time.monotonic() - t0, len(items) + len(copies))
    job = dict(pjob)
    job["tokenizers"] = dict(pjob.get("tokenizers") or {})
    job["tokenizers"][m] = to_dict(spec)
    job.update(
        {
            "kind": "retokenize",
            "fingerprint": job_fp,
            "retokenized": {"modality": m, "parent": cfg.dataset, "parent_fingerprint": pm.fingerprints.get(m)},
            "output": {"shard_rows": shard_rows, "shard_bytes": shard_bytes},
        }
    )
    manifest = Manifest(
        fingerprints=fps,
        shards=[e for mk in markers for e in mk["shards"]],
        inputs=[input_entry(mk) for mk in markers],
        quarantine=summary["quarantined"],
        stats=stats,
        job=job,
    )
    manifest.save(cfg.out)
    progress.maybe_print(force=True)
    return {"output": cfg.out, "job_fingerprint": job_fp, **stats}


def _copy_input(parent_uri, out, job_fp, info, parent: Dataset, shard_index, store) -> dict:
    entries = []
    for p in info["shards"]:
        i = shard_index[p]
        parent.read_shard(i)  # verifies it against the parent manifest before it is copied
        data = parent.shard_location(i).read_bytes()
        resolve(out).join(p).write_bytes_atomic(data)
        entries.append(dict(parent.manifest.shards[i]))
    q = _parent_quarantine(parent_uri, info["key"])
    counts: dict[str, int] = {}
    if q:
        from trimodal.dataset.quarantine import write_quarantine

        counts = write_quarantine(out, info["key"], q)
    marker = _marker(job_fp, info["key"], info, entries, counts, info["records"], {})
    store.write(info["key"], marker)
    return marker


__all__ = ["RetokenizeConfig", "run_retokenize"]
