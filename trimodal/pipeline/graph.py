"""Connecting to Ray for the tokenize and retokenize jobs."""

from __future__ import annotations

from trimodal.cluster import ensure_ray  # noqa: F401  (the one way to start or join Ray; runner.py imports it here)


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
