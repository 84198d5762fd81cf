"""The service's error -> HTTP status map (service/errors.py) and how the ingress maps a failed
codec call, without Ray running."""

from __future__ import annotations

import pytest

from trimodal.errors import QUARANTINE_REASONS, SampleError
from trimodal.service.errors import STATUS, ServiceError, bad_request, rejected


def test_every_reason_has_one_status():
    assert ServiceError("too_many_items", "x").status == 413
    assert bad_request("items: must be a list").status == 400
    assert bad_request("modality: 'smell'", "unknown_modality").status == 400
    assert ServiceError("unauthorized", "token", {"WWW-Authenticate": "Bearer"}).headers == {
        "WWW-Authenticate": "Bearer"
    }
    assert {STATUS[r] for r in QUARANTINE_REASONS} == {422}  # the job's own reasons, as 422
    assert {STATUS[r] for r in ("overloaded", "unavailable", "timeout")} == {503}
    assert ServiceError("internal", "bug").body() == {"error": {"reason": "internal", "message": "bug"}}


def test_a_rejected_sample_is_422_with_the_job_reason():
    e = rejected(SampleError("image_too_large", "x.png: 9000x9000"))
    assert (e.status, e.reason, e.message) == (422, "image_too_large", "x.png: 9000x9000")


def test_an_unknown_reason_is_refused():
    with pytest.raises(AssertionError, match="no_such_reason"):
        ServiceError("no_such_reason", "x")


def test_replica_and_transport_failures_become_503_unavailable():
    """A codec call that fails because its replica or node went away is the client's 503 (retry),
    whichever way it surfaces: an actor error, or a raw gRPC error under direct ingress."""
    import asyncio

    import grpc
    from grpc.aio import AioRpcError, Metadata
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    from trimodal.service.ingress import Ingress

    ingress = object.__new__(Ingress.func_or_class)
    ingress.retry_after, ingress.timeout_s = "2", 5.0

    async def failing(exc):
        raise exc

    cases = [
        (ActorDiedError(), "unavailable"),
        (AioRpcError(grpc.StatusCode.INTERNAL, Metadata(), Metadata(), details="stream reset"), "unavailable"),
        (BackPressureError(num_queued_requests=3, max_queued_requests=3), "overloaded"),
    ]
    for exc, reason in cases:
        with pytest.raises(ServiceError) as e:
            asyncio.run(ingress._call(failing(exc)))
        assert (e.value.status, e.value.reason, e.value.headers["Retry-After"]) == (503, reason, "2")
    with pytest.raises(ValueError):  # a bug stays a bug (500), not a retry
        asyncio.run(ingress._call(failing(ValueError("boom"))))
    with pytest.raises(ServiceError) as e:
        asyncio.run(ingress._call(failing(asyncio.TimeoutError())))
    assert (e.value.status, e.value.reason, e.value.message) == (503, "timeout", "no answer within 5 s; retry later")
