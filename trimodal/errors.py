"""Error types shared by every part, so callers can tell bad input from bad code.

`SampleError` is a per-sample rejection: the pipeline quarantines the sample under `reason`
and goes on. `InputError` means a whole input file could not be read. `ConfigError` is raised
before any work starts and names the offending key.
"""

from __future__ import annotations


class TrimodalError(Exception):
    """Base class for the errors trimodal raises on purpose."""


class ConfigError(TrimodalError, ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


class SampleError(TrimodalError, ValueError):
    """One sample cannot be used. `reason` is a short stable code used for quarantine counts
    (e.g. ``corrupt_image``, ``empty_text``); the message names the input."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class InputError(TrimodalError, OSError):
    """A whole input (file, object, shard) cannot be read; the message names its path."""


class IntegrityError(TrimodalError, ValueError):
    """Stored data does not match its manifest or vocabulary; the message names the shard."""
