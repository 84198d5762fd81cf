"""Connecting to Ray for the tokenize and retokenize jobs."""

from __future__ import annotations

import os

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
    # Under `ray job submit` the job's own runtime env reaches every worker already, and Ray
    # refuses a driver env that sets the same keys: the job's values win.
    job_env = _job_env_vars()
    env = {k: v for k, v in env.items() if k not in job_env}
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


def _job_env_vars() -> dict:
    """Environment variables of the Ray Job this driver runs in (empty outside a job)."""
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return dict(((json.loads(raw).get("runtime_env") or {}).get("env_vars")) or {})
    except (ValueError, AttributeError):
        return {}
