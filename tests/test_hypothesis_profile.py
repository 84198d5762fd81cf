"""The hypothesis profile of tests/conftest.py: failures print their reproduce blob, and under
CI (CI=true) examples are derandomized, so a failure in CI reproduces on the next run."""

import os

from hypothesis import settings


def test_the_profile_prints_blobs_and_derandomizes_under_ci():
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    assert settings.default.print_blob is True
    assert settings.default.derandomize is ci
    assert settings._current_profile == ("ci" if ci else "dev")
