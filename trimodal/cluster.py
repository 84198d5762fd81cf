"""Starting or joining Ray: one function for every command (tokenize, retokenize, train, demo).

`ensure_ray` uses the Ray already initialized in this process; else joins `address` (or
RAY_ADDRESS, which `ray job submit` sets); else starts a local Ray without a dashboard. It
forwards `FORWARD_ENV` to every worker of a joined cluster through the job's runtime env:
workers of a cluster started elsewhere do not inherit the driver's environment, so without it a
training run on a joined cluster read S3 from AWS instead of the endpoint the driver used (only
the tokenize job forwarded these, before this module). A local Ray gets no runtime env: its
workers inherit the environment of the raylet this process spawns, and a job-level runtime env
there costs ~2.5 s per run on 2 cores (the prestarted workers do not match it, so the first
tasks wait for new ones: 8 tiny tasks took 4.8-5.1 s with it, 2.3-2.5 s without).

What is forwarded is storage endpoints and region, offline mode and the test-only fault switch;
credentials are not: they would be stored in the job's runtime env, visible on the dashboard,
and cluster nodes get theirs from instance roles. A variable the submitted job's own runtime env
already sets (`ray job submit --runtime-env-json`) is left to it: Ray refuses to merge two
runtime envs that set the same variable.

Bottom layer: imports nothing from trimodal, and Ray only inside the functions, so importing it
costs nothing for commands that never start Ray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

# Environment the workers need to see the same storage, mode and faults as the driver.
FORWARD_ENV = (
    "TRIMODAL_S3_ENDPOINT",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "HF_HUB_OFFLINE",
    "TRIMODAL_FAULTS",  # test-only crash injection (trimodal/faults.py)
)

# Set in the driver (not overriding the user) before Ray starts: local runs and tests need no
# token auth, and nothing reports usage.
_DRIVER_DEFAULTS = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

# Ray sets this in the driver of a job submitted with `ray job submit`; it carries that job's
# runtime env (ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR).
_SUBMITTED_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `FORWARD_ENV` variables set (non-empty) in `environ` (default: os.environ), minus
    those the submitted job's runtime env already sets."""
    environ = os.environ if environ is None else environ
    env = {k: environ[k] for k in FORWARD_ENV if environ.get(k)}
    raw = environ.get(_SUBMITTED_JOB_CONFIG)
    if raw:
        try:
            job_env = (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
        except (ValueError, AttributeError):
            job_env = {}
        env = {k: v for k, v in env.items() if k not in job_env}
    return env


def init_kwargs(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    logging_level: str = "warning",
    log_to_driver: bool = True,
    environ: Mapping[str, str] | None = None,
) -> dict:
    """The keyword arguments `ensure_ray` passes to `ray.init` (pure, for tests).

    `address` (else RAY_ADDRESS in `environ`) joins that cluster, and `num_cpus` is ignored
    (Ray refuses it when joining) and the workers get `forwarded_env()`; without one a local
    Ray starts with `num_cpus` (None: all of the machine's), no dashboard and no runtime env."""
    environ = os.environ if environ is None else environ
    address = address or environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"logging_level": logging_level, "log_to_driver": log_to_driver}
    if address:
        kwargs["address"] = address
        env = forwarded_env(environ)
        if env:
            kwargs["runtime_env"] = {"env_vars": env}
    else:
        # address="local" so that an empty RAY_ADDRESS (or one set after this check) never
        # makes ray.init look for a running cluster instead.
        # The dashboard comes with ray[default]: Ray Train's placement-group cleaner and the
        # state API need it (without it every Train run logs "State API may be temporarily
        # unavailable" every few seconds), and it serves `ray job submit` and metrics.
        kwargs.update(address="local", num_cpus=num_cpus, include_dashboard=True)
    return kwargs


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    logging_level: str = "warning",
    log_to_driver: bool = True,
) -> bool:
    """Use the Ray already initialized in this process, else join `address` / RAY_ADDRESS,
    else start a local Ray. Returns True when this call started or joined Ray (the caller may
    then `ray.shutdown()` when done), False when Ray was already initialized."""
    for k, v in _DRIVER_DEFAULTS.items():
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return False
    ray.init(**init_kwargs(address, num_cpus, logging_level=logging_level, log_to_driver=log_to_driver))
    return True
