"""Shared test setup: environment for offline, auth-less local runs, and the fixture plugins.

Fixtures live in tests/fixtures/*.py, one file per concern, so that parts can be tested alone:
`ray_cluster` (one local Ray per session), `s3` (a moto server on 127.0.0.1), small codecs,
small datasets.
"""

import os

import pytest
from hypothesis import settings

# Hypothesis: every failure prints its `@reproduce_failure` blob (print_blob), and under CI
# (CI=true, set by .ci/run) the examples are derandomized: a CI failure reproduces on the next run
# and on any machine, instead of depending on the run's random seed. Loaded here, at import,
# because a test's own `@settings(...)` inherits from the profile active when it is decorated.
# Both from hypothesis's "default": hypothesis itself switches to a built-in profile whenever a CI
# variable exists (even empty), and that one would leak into "dev".
_base = settings.get_profile("default")
settings.register_profile("ci", parent=_base, derandomize=True, print_blob=True, database=None, deadline=None)
settings.register_profile("dev", parent=_base, derandomize=False, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev")

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.s3",
    "tests.fixtures.codecs",
    "tests.fixtures.datasets",
]


def pytest_configure(config):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The S3 endpoint (TRIMODAL_S3_ENDPOINT) is set by the `s3_server` fixture once its server
    # listens (on a port the kernel chose); `ray_cluster` starts after it, so Ray workers inherit it.
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ["AWS_REGION"] = "us-east-1"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"


def pytest_collection_modifyitems(config, items):
    # A test that uses the session's Ray (directly or through a fixture such as tiny_dataset)
    # must be marked slow, so that `pytest -m "not slow"` stays the quick inner loop.
    unmarked = [
        i.nodeid for i in items if "ray_cluster" in getattr(i, "fixturenames", ()) and not i.get_closest_marker("slow")
    ]
    if unmarked:
        raise pytest.UsageError(f"tests that start Ray must be marked @pytest.mark.slow: {', '.join(unmarked)}")
