"""The service's answers other than 200: one map from a stable reason to its HTTP status, the
error body, and which failures of a codec call the client should retry (503 + Retry-After).

Like the CLI's exit codes (cli.py), the status follows from the kind of failure, written once
here; docs/service.md ("Errors") is this table for clients. A 422 carries the tokenize job's own
quarantine reason, so a client sees the name the job's manifest counts.
"""

from __future__ import annotations

import asyncio

from trimodal.errors import QUARANTINE_REASONS, SampleError

# reason -> HTTP status
STATUS: dict[str, int] = {
    "bad_request": 400,  # a field is missing or has the wrong type, base64 is invalid
    "malformed_json": 400,
    "unknown_modality": 400,  # not a modality, or not one this service serves
    "bad_codes": 400,  # not integers, out of the codebook, not the grid
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "too_large": 413,  # the body exceeds serve.max_request_bytes
    "too_many_items": 413,  # a list exceeds serve.max_items
    "too_long": 413,  # codes that decode past limits.max_audio_seconds
    **{reason: 422 for reason in QUARANTINE_REASONS},  # a sample the tokenize job would quarantine
    "internal": 500,  # a bug
    "overloaded": 503,  # a codec deployment's queue is full
    "unavailable": 503,  # the replica holding the request died, or its node went away
    "timeout": 503,  # no answer within serve.request_timeout_s
}

# The 503 reasons (with Retry-After) and what their bodies say.
RETRY_MESSAGES: dict[str, str] = {
    "overloaded": "the service is at capacity; retry later",
    "unavailable": "the codec replica failed ({error}); retry",
    "timeout": "no answer within {timeout_s:g} s; retry later",
}


class ServiceError(Exception):
    """An answer other than 200: a stable `reason` (its status from `STATUS`), a message, extra
    headers."""

    def __init__(self, reason: str, message: str, headers: dict | None = None):
        if reason not in STATUS:
            raise AssertionError(f"service error reason {reason!r} has no status; add it to service.errors.STATUS")
        super().__init__(message)
        self.status, self.reason, self.message = STATUS[reason], reason, message
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"reason": self.reason, "message": self.message}}


def bad_request(message: str, reason: str = "bad_request") -> ServiceError:
    return ServiceError(reason, message)


def rejected(e: SampleError) -> ServiceError:
    """A sample the tokenize job would quarantine: 422 with the job's reason."""
    return ServiceError(e.reason, str(e))


def _retryable() -> dict[type, str]:
    """Failure of a codec call -> its 503 reason. Over gRPC (direct ingress) Serve turns
    UNAVAILABLE into an actor error; other gRPC codes from a replica or node going away (a reset
    stream, a cancelled call it had accepted) come through as they are, and are the same failure
    for the client. Imported on use: only the ingress replica needs Ray's and gRPC's types."""
    from grpc.aio import AioRpcError
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

    from trimodal.service.batcher import QueueFull

    return {
        QueueFull: "overloaded",  # too many text requests wait at the ingress for a call
        BackPressureError: "overloaded",
        RayActorError: "unavailable",
        DeploymentUnavailableError: "unavailable",
        ReplicaUnavailableError: "unavailable",
        AioRpcError: "unavailable",
        asyncio.TimeoutError: "timeout",
    }


def retry_later(e: BaseException, timeout_s: float, retry_after: str) -> ServiceError | None:
    """The 503 + Retry-After for a codec call that failed through no fault of the request
    (overload, a lost replica, a timeout); None for anything else, which is a bug (500)."""
    for kind, reason in _retryable().items():
        if isinstance(e, kind):
            message = RETRY_MESSAGES[reason].format(error=type(e).__name__, timeout_s=timeout_s)
            return ServiceError(reason, message, {"Retry-After": retry_after})
    return None
