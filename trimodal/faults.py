"""Crash injection for tests and recovery drills: one environment variable, never user config.

``TRIMODAL_FAULTS`` holds a JSON object; each part reads only its own keys (docs/design.md,
"Crash injection for tests", lists them all). An environment variable rather than a config
field because a fault is a property of one test run, not of the job: a config written with a
kill switch in it would crash again in whoever reruns it, and the variable also reaches
subprocesses and (forwarded explicitly) Ray workers. This module sits at the bottom layer, beside
`trimodal.config`, so the pipeline and the trainer parse it the same way without importing
each other.
"""

from __future__ import annotations

import json
import os

from trimodal.errors import ConfigError

FAULTS_ENV = "TRIMODAL_FAULTS"


def faults_from_env() -> dict:
    """The fault spec of this process (empty when the variable is unset or empty)."""
    raw = os.environ.get(FAULTS_ENV)
    if not raw:
        return {}
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{FAULTS_ENV}: not valid JSON: {e}") from e
    if not isinstance(spec, dict):
        raise ConfigError(f"{FAULTS_ENV}: must be a JSON object, got {type(spec).__name__}")
    return spec


def fault_int(spec: dict, key: str, default: int | None = None) -> int | None:
    """An integer entry of the spec, or `default`; anything else is a ConfigError naming the key."""
    v = spec.get(key, default)
    if v is None or (isinstance(v, int) and not isinstance(v, bool)):
        return v
    raise ConfigError(f"{FAULTS_ENV}.{key}: must be an integer, got {v!r}")
