"""Shared test setup: environment for offline, auth-less local runs, and the fixture plugins.

Fixtures live in tests/fixtures/*.py, one file per concern, so that parts can be tested alone:
`ray_cluster` (one local Ray per session), `s3` (a moto server on 127.0.0.1), small codecs,
small datasets.
"""

import os

import pytest

from tests.ports import free_port

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
    # The S3 endpoint is fixed before anything starts so that Ray workers (which inherit the
    # environment when the cluster starts) and subprocesses see the same test server.
    if "TRIMODAL_TEST_S3_PORT" not in os.environ:
        os.environ["TRIMODAL_TEST_S3_PORT"] = str(free_port())
    port = os.environ["TRIMODAL_TEST_S3_PORT"]
    os.environ["TRIMODAL_S3_ENDPOINT"] = f"http://127.0.0.1:{port}"
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
