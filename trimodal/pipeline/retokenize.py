"""`run_retokenize`: re-encode one modality of a dataset with a new tokenizer, from the raw samples.

A better codec should not mean re-running the whole pipeline. For each input the parent dataset
consumed (its manifest's `inputs`), the job reads the parent's rows of that input (`id`,
`origin`), fetches exactly those raw samples again through the readers (the origin names the
file and the record in it; the file is read once, front to back, only as far as the last
wanted record), decodes and encodes the one modality in the same input tasks as `tokenize`
(worker.py; the parent's rows of the input are read by the task, never by the driver), and
writes the parent's rows with that one column replaced. Every other column is copied
unchanged, so text codes, ids and row order stay byte-identical. Inputs whose source has no
such modality (text corpora when retokenizing audio) are copied shard for shard by a task.

Samples that the new tokenizer rejects, or whose raw record is gone (`origin_not_found`), are
dropped from the new dataset and quarantined beside the parent's own quarantine records.
Resume works as in `tokenize`: per-input markers in the new dataset's `_progress/`, the
manifest last. The new manifest carries the parent's fingerprints with the new one for the
modality, so the vocabulary check refuses to mix the two datasets' codes for it.

Trade-off: the raw corpus must still be where the parent's origins point (the source configs
are taken from the parent manifest); in exchange no raw media is ever duplicated into datasets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from trimodal.config import from_dict, to_dict
from trimodal.dataset.dataset import Dataset
from trimodal.dataset.digest import canonical_hash
from trimodal.dataset.manifest import Manifest
from trimodal.dataset.schema import KIND_MODALITIES, MODALITIES
from trimodal.dataset.storage import resolve
from trimodal.errors import ConfigError
from trimodal.pipeline.job_config import DEFAULT_BATCH, Limits, ProgressConfig, RayConfig
from trimodal.pipeline.resume import MarkerStore
from trimodal.pipeline.runner import FORMAT, Plan, faults_from_env, load_stage, run
from trimodal.pipeline.sources import CorpusSource
from trimodal.pipeline.worker import TaskSpec
from trimodal.tokenizers.base import code_identity
from trimodal.tokenizers.spec import TokenizerSpec


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
        try:
            self.tokenizer.check_path()
        except ConfigError as e:
            raise ConfigError(f"tokenizer: {e}") from e
        if resolve(self.out).uri == resolve(self.dataset).uri:
            raise ConfigError("out: must differ from the dataset being retokenized (it is read while writing)")


def _parent_sources(parent: Manifest, uri: str) -> dict[str, CorpusSource]:
    specs = (parent.job or {}).get("sources")
    if not specs:
        raise ConfigError(
            f"{uri}: its manifest records no sources (not written by `trimodal tokenize`), so "
            "the raw samples cannot be found again"
        )
    return {s["name"]: from_dict(CorpusSource, s, where=f"{uri} manifest job.sources") for s in specs}


def run_retokenize(
    config: RetokenizeConfig | dict, *, address: str | None = None, quiet: bool = False, stream=None
) -> dict:
    """Write `config.out`: the parent dataset with `config.modality` re-encoded; returns the summary."""
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
        "fingerprint": code_identity(fp),
        "parent": {
            "fingerprints": {k: code_identity(v) if v else v for k, v in pm.fingerprints.items()},
            "shards": canonical_hash([s["sha256"] for s in pm.shards]),
        },
        "limits": to_dict(limits),
    }
    job_fp = canonical_hash(parts)
    store = MarkerStore(cfg.out)
    store.begin(job_fp, parts, cfg.mode)
    done = store.load_all(job_fp)

    by_path = {s["path"]: s for s in pm.shards}
    order, pending = [], []
    for entry in pm.inputs:
        k = entry["key"]
        order.append(k)
        if k in done:
            continue
        src = sources.get(entry["source"])
        if src is None:
            raise ConfigError(
                f"{cfg.dataset}: input {entry['uri']} names source {entry['source']!r}, "
                "which its manifest does not describe"
            )
        # Inputs with rows of this modality are re-read and re-encoded; the others (a text
        # corpus when retokenizing audio, or an input that kept no row) are copied byte for byte.
        reencode = m in KIND_MODALITIES[src.kind] and bool(entry.get("rows"))
        pending.append(
            {
                "key": k,
                "source": entry["source"],
                "uri": entry["uri"],
                "status": entry.get("status"),
                "error": entry.get("error"),
                "records": entry.get("records") or 0,
                "parent": cfg.dataset,
                "parent_shards": [by_path[p] for p in entry.get("shards") or []],
                "copy": not reencode,
            }
        )

    task = TaskSpec(
        out=cfg.out,
        sources={n: to_dict(s) for n, s in sources.items()},
        stages={m: stage},
        pools={},
        limits=to_dict(limits),
        shard_rows=shard_rows,
        shard_bytes=shard_bytes,
        chunk_rows=cfg.ray.read_chunk_rows,
        inflight_chunks=cfg.ray.inflight_chunks,
        only=m,
        faults=faults_from_env(),
    )
    plan = Plan("retokenize", cfg.out, job_fp, order, pending, done, task, [stage])
    job = dict(pjob)
    job["tokenizers"] = dict(pjob.get("tokenizers") or {})
    job["tokenizers"][m] = to_dict(spec)
    job.update(
        {
            "kind": "retokenize",
            "retokenized": {"modality": m, "parent": cfg.dataset, "parent_fingerprint": pm.fingerprints.get(m)},
            "output": {"shard_rows": shard_rows, "shard_bytes": shard_bytes},
        }
    )
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


__all__ = ["RetokenizeConfig", "run_retokenize"]
