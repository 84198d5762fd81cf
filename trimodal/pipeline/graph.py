"""The Ray Data graph of the tokenize job, and connecting to Ray.

    inputs (listed on the driver, one item per file)
      → read_inputs + decode_media   CPU tasks, one per input file: read the container, emit
                                     record blocks, decode images / audio for the codecs
      → EncodeStage                  one actor pool per modality needed (text, image, audio):
                                     the tokenizer is loaded once per actor; a GPU per codec
                                     actor when the cluster has GPUs
      → driver                       iter_batches → per-input assembly, shards, markers

Stages ask for fractional CPUs by default: on a 2-core node an actor holding a whole CPU leaves
the read tasks none and Ray Data waits forever without an error. Read tasks carry `max_retries`,
which also keeps Ray Data from fusing them into the first actor pool (where all reading would
run on that pool's few actors instead of on every free CPU). At most `ray.read_tasks` (default:
the cluster's CPUs) run at once: each concurrent task is a worker process that imports the
readers and decoders, and a storm of them costs more start-up than it saves.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

from trimodal.pipeline.encode import EncodeStage, decode_media, read_inputs

# Environment the workers need to see the same storage as the driver (when joining a cluster
# started elsewhere, workers do not inherit the driver's environment). Credentials are not
# forwarded: they would be stored in the job's runtime env; cluster nodes use instance roles.
_FORWARD_ENV = (
    "TRIMODAL_S3_ENDPOINT",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "HF_HUB_OFFLINE",
)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Use the Ray already initialized in this process, else join `address` / RAY_ADDRESS,
    else start a local Ray (no dashboard)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env = {k: os.environ[k] for k in _FORWARD_ENV if os.environ.get(k)}
    if address:
        ray.init(address=address, logging_level="warning", runtime_env={"env_vars": env} if env else None)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="warning")


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@dataclass
class Stage:
    """One tokenizer stage of the graph (plain data: it is shipped to the workers)."""

    modality: str
    kind: str
    path: str
    options: dict = field(default_factory=dict)  # load_tokenizer(**options)
    batch_size: int = 16
    threads: int | None = None
    prepared: dict | None = None  # decode params (encode.PREPARERS), None: raw bytes
    actors: int = 1


def build_graph(
    items: list[dict],
    *,
    sources: dict,
    stages: list[Stage],
    kinds: dict,
    limits: dict,
    ray_cfg,
    faults: dict | None = None,
    only: str | None = None,
):
    """items: [{key, source, uri[, origins]}] in input order → a streaming ray.data.Dataset of
    records with ``<modality>_codes`` columns (see encode.py)."""
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = ray_cfg.preserve_order
    ctx.enable_progress_bars = False  # the job prints its own progress lines
    gpus = cluster_gpus()
    with warnings.catch_warnings():
        # Retry counts are plain Ray remote args, which Ray 2.60 warns will be renamed in 2.64
        # (pyproject pins ray < 2.61).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
        return _build(items, sources, stages, kinds, limits, ray_cfg, faults, only, gpus)


def _build(items, sources, stages, kinds, limits, ray_cfg, faults, only, gpus):
    import ray
    import ray.data

    # One block per input, so that each read task reads one file (capped: huge input lists
    # get a few inputs per task).
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4096)))
    read_tasks = min(ray_cfg.read_tasks or cluster_cpus(), len(items))
    task_args = {
        "num_cpus": ray_cfg.read_num_cpus,
        "max_retries": ray_cfg.max_retries,
        "compute": ray.data.TaskPoolStrategy(size=read_tasks),
    }
    ds = ds.map_batches(
        read_inputs,
        batch_size=1,
        batch_format="pyarrow",
        **task_args,
        fn_kwargs={"sources": sources, "chunk_rows": ray_cfg.read_chunk_rows, "only": only},
    )
    decode = {s.modality: {"kind": s.kind, "params": s.prepared} for s in stages if s.prepared is not None}
    if decode:
        ds = ds.map_batches(
            decode_media,
            batch_size=None,
            batch_format="pyarrow",
            **task_args,
            fn_kwargs={"stages": decode, "kinds": kinds, "limits": limits},
        )
    for st in stages:
        auto_gpu = 1.0 if (st.modality != "text" and gpus > 0) else 0.0
        num_gpus = ray_cfg.num_gpus_per_actor if ray_cfg.num_gpus_per_actor is not None else auto_gpu
        options = dict(st.options)
        if num_gpus > 0 and st.modality != "text":
            options.setdefault("device", "cuda")
        ds = ds.map_batches(
            EncodeStage,
            fn_constructor_kwargs={
                "modality": st.modality,
                "kind": st.kind,
                "path": st.path,
                "options": options,
                "kinds": kinds,
                "prepared": st.prepared,
                "threads": st.threads,
                "batch_size": st.batch_size,
                "faults": faults or {},
            },
            # Text takes whole read blocks (cut to batch_size inside the actor): bundling rows up
            # to a batch across blocks would hold every later stage until that many rows are read.
            batch_size=None if st.modality == "text" else st.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, st.actors)),
            num_cpus=ray_cfg.num_cpus_per_actor,
            num_gpus=(num_gpus if st.modality != "text" else 0) or None,
            max_restarts=ray_cfg.max_retries,
            max_task_retries=ray_cfg.max_retries,
        )
    return ds
