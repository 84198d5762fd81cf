"""The HTTP ingress deployment: routes, auth, size limits and the per-item work around a codec
call (parsing and preparation before it, PNG / WAV bytes after it, service/requests.py).

Validation and media decoding are CPU work that scales with ingress replicas, and a rejected
upload never reaches a (GPU) codec replica. Text requests go to the text deployment in batches
(a Serve call costs more than SentencePiece on a whole batch), image and audio requests one
call each; docs/service.md has the figures behind both choices. The ingress receives only the
sha256 of the bearer token and compares digests in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging

from ray import serve

from trimodal.dataset.schema import MODALITIES
from trimodal.service import requests
from trimodal.service.batcher import Batcher
from trimodal.service.errors import ServiceError, retry_later

log = logging.getLogger("ray.serve")


def _json(body: dict, status: int = 200, headers: dict | None = None):
    from starlette.responses import Response

    blob = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(blob, status_code=status, media_type="application/json", headers=headers)


@serve.deployment
class Ingress:
    """HTTP routes: POST /v1/encode, POST /v1/decode, GET /v1/tokenizers, GET /healthz."""

    def __init__(self, info: dict, token_sha256: str | None, **codecs):
        """`codecs`: modality -> the handle of its codec deployment."""
        from trimodal.tokenizers.vocab import Vocabulary

        self.info = info
        self.handles = {m: codecs[m] for m in MODALITIES if codecs.get(m) is not None}
        if info.get("direct_ingress"):
            # Throughput mode calls codec replicas over gRPC, but a handle's transport is fixed
            # where it was made (the driver, without the mode's environment): ask for it here.
            self.handles = {m: h.options(_by_reference=False) for m, h in self.handles.items()}
        self.served = {m: info["modalities"][m] for m in self.handles}
        self.vocab = Vocabulary.from_dict(info["vocab"])
        self.token_sha256 = token_sha256
        self.limits = info["limits"]
        self.retry_after = info["retry_after"]
        self.timeout_s = float(info["request_timeout_s"])
        # Text requests go to the codec deployment in batches (send_sizes): `calls` batches in
        # flight, the rest wait here, at most `queued` of them. Image and audio: one call each.
        self.encoders, self.decoders = {}, {}
        for m, h in self.handles.items():
            send = info["send"].get(m)
            if send is None:
                continue
            for table, method in ((self.encoders, h.encode_many), (self.decoders, h.decode_many)):
                table[m] = Batcher(
                    lambda items, method=method: self._call(method.remote(items)),
                    send["batch"],
                    0.0,
                    max_concurrent=send["calls"],
                    max_queued=send["queued"],
                )
        self.routes = {
            ("POST", "/v1/encode"): self.encode,
            ("POST", "/v1/decode"): self.decode,
            ("GET", "/v1/tokenizers"): self.tokenizers,
            ("GET", "/healthz"): self.healthz,
        }

    async def __call__(self, request):
        try:
            route = self.routes.get((request.method, request.url.path))
            if route is None:
                if any(path == request.url.path for _, path in self.routes):
                    raise ServiceError("method_not_allowed", f"{request.method} is not allowed here")
                raise ServiceError("not_found", f"no route {request.url.path}")
            if route != self.healthz:
                self._authorize(request)
            return await route(request)
        except ServiceError as e:
            return _json(e.body(), e.status, e.headers)
        except Exception as e:  # a bug, not the request's fault; never echo headers
            log.exception("trimodal ingress: %s on %s", type(e).__name__, request.url.path)
            bug = ServiceError("internal", f"{type(e).__name__}: {e}")
            return _json(bug.body(), bug.status)

    # plumbing ---------------------------------------------------------------------------
    def _authorize(self, request) -> None:
        if self.token_sha256 is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.token_sha256):
            raise ServiceError(
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' header is required",
                {"WWW-Authenticate": "Bearer"},
            )

    async def _body(self, request) -> object:
        limit = int(self.info["max_request_bytes"])
        declared = requests.declared_length(request.headers.get("content-length"))
        if declared is not None and declared > limit:
            raise ServiceError("too_large", f"request body of {declared} bytes exceeds serve.max_request_bytes={limit}")
        from starlette.requests import ClientDisconnect

        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise ServiceError("too_large", f"request body exceeds serve.max_request_bytes={limit}")
        except ClientDisconnect:  # the client's doing, not a bug (and it will not read the answer)
            raise ServiceError("bad_request", "the client went away before sending the whole body") from None
        return requests.parse_body(bytes(body))

    async def _send(self, batcher: Batcher, item):
        """One item through a modality's batcher to its codec deployment."""
        return await self._call(batcher.submit(item))

    async def _call(self, answer):
        """Await a codec answer; overload, a lost replica and a timeout become 503 + Retry-After
        (service/errors.py), anything else stays a bug (500)."""
        try:
            return await asyncio.wait_for(answer, timeout=self.timeout_s)
        except Exception as e:
            retry = retry_later(e, self.timeout_s, self.retry_after)
            if retry is None:
                raise
            raise retry from None

    async def _each(self, request, one) -> object:
        """Run `one(item, where)` over a single item or an {"items": [...]} list. In a list,
        per-item 4xx errors are returned in place (status 200); 5xx fails the whole request."""
        body = await self._body(request)
        items, is_list = requests.request_items(body, int(self.info["max_items"]))
        if not is_list:
            return _json(await one(items[0], ""))
        results = await asyncio.gather(*(one(it, f"items[{i}].") for i, it in enumerate(items)), return_exceptions=True)
        out = []
        for r in results:
            if isinstance(r, ServiceError) and r.status < 500:
                out.append(r.body())
            elif isinstance(r, BaseException):
                raise r
            else:
                out.append(r)
        return _json({"items": out})

    # routes -----------------------------------------------------------------------------
    async def encode(self, request):
        return await self._each(request, self._encode_one)

    async def _encode_one(self, item: dict, where: str) -> dict:
        m = requests.check_modality(item, self.served, None, where)
        raw = requests.raw_media(item, m, where)
        info = self.served[m]
        name = where.rstrip(".") or "request"
        if info["params"] is not None:
            prepared = await asyncio.to_thread(
                requests.prepare_request, m, info["kind"], raw, name, info["params"], self.limits
            )
        else:
            prepared = raw
        if m in self.encoders:
            result = await self._send(self.encoders[m], (prepared, name))
        else:
            result = (await self._call(self.handles[m].encode_many.remote([(prepared, name)])))[0]
        if result[0] == "error":
            raise ServiceError(result[1], result[2])
        _, codes, shape = result
        return {
            "modality": m,
            "codes": codes.tolist(),
            "ids": self.vocab.codes_to_ids(m, codes).tolist(),
            "shape": shape,
            "fingerprint": info["fingerprint_id"],
        }

    async def decode(self, request):
        return await self._each(request, self._decode_one)

    async def _decode_one(self, item: dict, where: str) -> dict:
        m = requests.check_modality(item, self.served, None, where)
        info = self.served[m]
        flat = requests.parse_codes(
            item, m, info["fingerprint"], self.vocab, self.limits.get("max_audio_seconds"), where
        )
        if m in self.decoders:
            media = await self._send(self.decoders[m], flat)
        else:
            media = (await self._call(self.handles[m].decode_many.remote([flat])))[0]
        out = await asyncio.to_thread(requests.media_payload, m, media)
        out["fingerprint"] = info["fingerprint_id"]
        return out

    async def tokenizers(self, request):
        vocab = self.vocab.to_dict()
        return _json(
            {
                "tokenizers": {
                    m: {
                        "kind": info["kind"],
                        "fingerprint": info["fingerprint_id"],
                        "details": info["fingerprint"],
                        "ids": vocab["ranges"][m],
                    }
                    for m, info in self.served.items()
                },
                "vocab": {k: vocab[k] for k in ("size", "specials", "ranges")},
                "limits": self.limits,
                "dataset": self.info.get("dataset"),
            }
        )

    async def healthz(self, request):
        return _json({"status": "ok", "modalities": list(self.served)})
