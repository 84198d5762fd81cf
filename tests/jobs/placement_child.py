"""Child process of test_placement_gpus.py: a Ray of its own with 2 fake GPUs
(`ray.init(num_gpus=2)`: Ray schedules them like real ones and sets CUDA_VISIBLE_DEVICES; nothing
touches CUDA), so the session's Ray stays untouched.

    python placement_child.py RESULT.json

Where the tokenize job's codec actors, the service's codec replicas and the Train workers land,
with the options the code under test builds: CodecPool itself (its actor class swapped for a stub
that reports its GPU ids instead of loading a codec on `cuda`), the service's `gpu_placement` +
`_actor_options` (what build_app passes Serve), and Ray Train with `scaling_config(cfg)` and a loop
that reports each worker's GPU ids.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace


class StubActor:
    """Stands in for CodecActor / CodecServer: where Ray put it and the device it would load on."""

    def __init__(self, codec=None, prepared=None, faults=None, options=None):
        self.device = (codec.options if codec is not None else options or {}).get("device")

    def where(self) -> dict:
        import ray

        return {"gpus": [str(g) for g in ray.get_gpu_ids()], "device": self.device}


def codec_pools(ray) -> dict:
    from trimodal.pipeline import codec_pool

    codec_pool.CodecActor = StubActor
    out = {}
    cases = {
        "auto": ({"num_gpus_per_actor": None, "actors": {}}, 1),  # one actor per GPU, one GPU each
        "half": ({"num_gpus_per_actor": 0.5, "actors": {"image": 4}}, 4),  # four actors on two GPUs
        "none": ({"num_gpus_per_actor": 0.0, "actors": {"image": 2}}, 2),  # configured off
    }
    for name, (rc, actors) in cases.items():
        ray_cfg = SimpleNamespace(num_cpus_per_actor=0.01, actor_memory_mb=None, max_retries=1, **rc)
        stage = SimpleNamespace(modality="image", options={}, actors=actors, kind="vqmodel", path="-", threads=None)
        stage.prepared = None
        pool = codec_pool.CodecPool(stage, {}, ray_cfg, 2.0, None)
        out[name] = {"num_gpus": pool.num_gpus, "actors": ray.get([a.where.remote() for a in pool.actors])}
        for a in pool.actors:
            ray.kill(a)
    return out


def service_replicas(ray) -> dict:
    from trimodal.service.app import _actor_options
    from trimodal.service.config import DeploymentOptions
    from trimodal.tokenizers.placement import gpu_placement

    out = {}
    for name, (m, d) in {
        "image_auto": ("image", DeploymentOptions(replicas=2)),
        "audio_half": ("audio", DeploymentOptions(replicas=2, num_gpus=0.5)),
        "text": ("text", DeploymentOptions(replicas=1)),
    }.items():
        num_gpus, options = gpu_placement(m, {}, d.num_gpus, 2.0)  # as build_app computes them
        opts = _actor_options(d, {}, num_gpus)
        opts["num_cpus"] = 0.01
        actors = [ray.remote(StubActor).options(**opts).remote(options=options) for _ in range(d.replicas)]
        out[name] = {"num_gpus": opts.get("num_gpus", 0), "actors": ray.get([a.where.remote() for a in actors])}
        for a in actors:
            ray.kill(a)
    return out


def train_workers(tmp: str) -> list:
    from ray.train import RunConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer  # the trainer Ray Train 2.60 runs

    from trimodal.model.config import SyntheticStreamConfig, TrainConfig
    from trimodal.model.trainer import scaling_config

    mix = SyntheticStreamConfig(fingerprints={})
    cfg = TrainConfig(mix=mix, output=tmp, num_workers=2, use_gpu=True, cpus_per_worker=0.25)

    def loop(config):
        import ray
        import ray.train

        rank = ray.train.get_context().get_world_rank()
        with open(os.path.join(config["dir"], f"rank{rank}.json"), "w") as f:
            json.dump(
                {"gpus": [str(g) for g in ray.get_gpu_ids()], "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}, f
            )

    DataParallelTrainer(
        loop,
        train_loop_config={"dir": tmp},
        scaling_config=scaling_config(cfg),
        run_config=RunConfig(name="placement", storage_path=os.path.join(tmp, "ray")),
    ).fit()
    return [json.load(open(os.path.join(tmp, f"rank{r}.json"))) for r in range(2)]


def main() -> None:
    import ray

    result_path = sys.argv[1]
    # address="local": a new Ray of its own, never one found running on this machine
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="warning")
    result = {"codec_pools": codec_pools(ray), "service": service_replicas(ray)}
    result["train"] = train_workers(os.path.dirname(os.path.abspath(result_path)))
    with open(result_path, "w") as f:
        json.dump(result, f)
    ray.shutdown()


if __name__ == "__main__":
    main()
