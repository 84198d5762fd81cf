"""The Ray Serve application: one codec deployment per modality behind one HTTP ingress.

    HTTP ──► Ingress replica         ──(gRPC)──► <modality> codec replicas
             listens on host:port                 dynamic batching: concurrent
             itself (direct ingress);             requests → one codec call
             auth, size limits, JSON,             (GPU when the cluster has
             base64, the tokenize job's           GPUs), codes / media back
             per-sample preparation (422
             here), PNG / WAV writing

Why the split: validation and media decoding are CPU work that scales with ingress replicas,
and a rejected upload never reaches a (GPU) codec replica; the codec replicas run only what the
tokenize job's encode actors run (`encode_prepared` / `encode_raw`), so codes are the job's, byte
for byte, for the same fingerprint and device. The cost is one extra hop (a Serve call with the
prepared pixels or waveform, ~12 KiB for a 64 px image, 64 KiB per second of 16 kHz audio).

Why direct ingress (`serve.direct_ingress`, default): Ray Serve's throughput mode
(`RAY_SERVE_THROUGHPUT_OPTIMIZED`, set for the controller and every replica through their
runtime env, direct_ingress_env) lets the ingress replica run the HTTP server itself instead of
Serve's proxy forwarding each request to it, calls codec replicas over gRPC, runs user code on
the replica's event loop and buffers request logs. Measured on 2 shared cores: an empty Serve
app went from 7-8.5 ms of CPU per request (proxy + replica) to 0.5 ms; text at 8 clients from
p99 155 ms to 25 ms. The price: one ingress replica, on the head node, per port (several
ingress replicas need `direct_ingress: false`, i.e. the proxy in front); Serve's proxy still
runs, on another free port of the same host, unused.

Text requests are sent to the text deployment in batches (BATCHED_SEND; a Serve call costs
more than SentencePiece on a whole batch); image and audio requests one call each.

Bounded queues: each codec deployment has `max_ongoing_requests` per replica (2 batches by
default) and `max_queued_requests`; beyond them the ingress gets `BackPressureError` (or, for
text, finds `max_queued_requests` already waiting to be sent) at once and answers 503 with
Retry-After, and the ingress's own queue is bounded the same way by Serve (its
`BackpressureConfig`: 503 + Retry-After at once, with Serve's plain-text body "Request dropped
due to backpressure" instead of the JSON error; tests/service/test_ingress_queue.py). A replica
that dies fails only the requests it held (503, "unavailable"); Serve restarts it and routes new
requests to the others.

Auth: the ingress receives only the sha256 of the bearer token (the token itself never leaves
the process that read it from the environment, so it is in no Serve config, checkpoint or log)
and compares digests in constant time. Nothing from a request is unpickled.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import socket
import time

from ray import serve

from trimodal.cluster import ensure_ray
from trimodal.service import codec
from trimodal.service.batcher import Batcher, QueueFull
from trimodal.service.codec import ServiceError

log = logging.getLogger("ray.serve")

HEALTH_CHECK_PERIOD_S = 2.0  # how fast a dead replica is noticed and replaced
APP_NAME = "trimodal"


# With direct ingress Serve runs its proxy on the head node only; the ingress replica that now
# listens on host:port goes there too, so the service's address is the head node's, as before.
HEAD_NODE = {"node:__internal_head__": 0.001}  # a resource only the head node has


def direct_ingress_env(port: int) -> dict[str, str]:
    """Environment for Serve's controller and every replica with `serve.direct_ingress`: Ray
    Serve's throughput mode (ray/serve/_private/constants.py) with the ingress replica's HTTP
    port range pinned to exactly `port`. Serve reads these when its modules are imported, so
    they go into the runtime env of the controller (which starts the proxy) and of each
    deployment, not into this process."""
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),  # exclusive
        # One replica on one fixed port and no external load balancer to drain: a port of a
        # dead ingress replica is free for its replacement at once, and shutdown does not wait
        # out the 30 s default drain.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
    }


@serve.deployment
class CodecServer:
    """One modality's tokenizer, loaded once per replica; batched encode and decode."""

    def __init__(
        self,
        modality: str,
        kind: str,
        path: str,
        options: dict,
        params: dict | None,
        fingerprint: dict,
        threads: int | None,
        max_batch_size: int,
        batch_wait_s: float,
    ):
        from trimodal.tokenizers.base import load_tokenizer
        from trimodal.tokenizers.placement import set_codec_threads

        set_codec_threads(modality, threads)
        self.modality, self.kind, self.params, self.fingerprint = modality, kind, params, fingerprint
        self.tok = load_tokenizer(kind, path, **options)
        self._encoder = Batcher(self._encode_batch, max_batch_size, batch_wait_s)
        self._decoder = Batcher(self._decode_batch, max_batch_size, batch_wait_s)

    async def encode_many(self, items: list) -> list:
        """[(prepared or raw item, name)] from one ingress call → one result per item; calls
        from several ingress batches share codec batches."""
        return await asyncio.gather(*(self._encoder.submit(it) for it in items))

    async def decode_many(self, flats: list) -> list:
        return await asyncio.gather(*(self._decoder.submit(f) for f in flats))

    def pid(self) -> int:
        return os.getpid()

    def batch_stats(self) -> dict:
        return {
            "encode": [self._encoder.batches, self._encoder.items],
            "decode": [self._decoder.batches, self._decoder.items],
        }

    async def _encode_batch(self, items: list) -> list:
        if self.modality == "text":  # microseconds: a thread hop would cost more than the call
            return codec.encode_batch(self.tok, self.modality, self.kind, self.params, items)
        # In a thread: the codec releases the GIL, and the replica keeps taking requests for
        # the next batch meanwhile.
        return await asyncio.to_thread(codec.encode_batch, self.tok, self.modality, self.kind, self.params, items)

    async def _decode_batch(self, flats: list) -> list:
        return await asyncio.to_thread(codec.decode_batch, self.tok, self.modality, self.fingerprint, flats)


def _json(body: dict, status: int = 200, headers: dict | None = None):
    from starlette.responses import Response

    blob = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(blob, status_code=status, media_type="application/json", headers=headers)


@serve.deployment
class Ingress:
    """HTTP routes: POST /v1/encode, POST /v1/decode, GET /v1/tokenizers, GET /healthz."""

    def __init__(self, info: dict, token_sha256: str | None, text=None, image=None, audio=None):
        from trimodal.tokenizers.vocab import Vocabulary

        self.info = info
        self.handles = {m: h for m, h in (("text", text), ("image", image), ("audio", audio)) if h is not None}
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
                    raise ServiceError(405, "method_not_allowed", f"{request.method} is not allowed here")
                raise ServiceError(404, "not_found", f"no route {request.url.path}")
            if route != self.healthz:
                self._authorize(request)
            return await route(request)
        except ServiceError as e:
            return _json(e.body(), e.status, e.headers)
        except Exception as e:  # a bug, not the request's fault; never echo headers
            log.exception("trimodal ingress: %s on %s", type(e).__name__, request.url.path)
            return _json({"error": {"reason": "internal", "message": f"{type(e).__name__}: {e}"}}, 500)

    # plumbing ---------------------------------------------------------------------------
    def _authorize(self, request) -> None:
        if self.token_sha256 is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.token_sha256):
            raise ServiceError(
                401,
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' header is required",
                {"WWW-Authenticate": "Bearer"},
            )

    async def _body(self, request) -> object:
        limit = int(self.info["max_request_bytes"])
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ServiceError(
                413, "too_large", f"request body of {declared} bytes exceeds serve.max_request_bytes={limit}"
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ServiceError(413, "too_large", f"request body exceeds serve.max_request_bytes={limit}")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ServiceError(400, "malformed_json", f"the request body is not valid JSON ({e})") from None

    async def _send(self, batcher: Batcher, item):
        """One item through a modality's batcher to its codec deployment (503 when too many wait)."""
        try:
            return await asyncio.wait_for(batcher.submit(item), timeout=self.timeout_s)
        except QueueFull:
            raise ServiceError(
                503, "overloaded", "the service is at capacity; retry later", {"Retry-After": self.retry_after}
            ) from None
        except asyncio.TimeoutError:
            raise ServiceError(
                503, "timeout", f"no answer within {self.timeout_s:g} s; retry later", {"Retry-After": self.retry_after}
            ) from None

    async def _call(self, response):
        """Await a codec replica, mapping overload and replica loss to 503 + Retry-After."""
        from grpc.aio import AioRpcError
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

        retry = {"Retry-After": self.retry_after}
        try:
            return await asyncio.wait_for(response, timeout=self.timeout_s)
        except BackPressureError:
            raise ServiceError(503, "overloaded", "the service is at capacity; retry later", retry) from None
        # Over gRPC (direct ingress) Serve turns UNAVAILABLE into an actor error; other gRPC codes
        # from a replica or node going away (a reset stream, a cancelled call it had accepted)
        # come through as they are, and are the same failure for the client.
        except (RayActorError, DeploymentUnavailableError, ReplicaUnavailableError, AioRpcError) as e:
            raise ServiceError(
                503, "unavailable", f"the codec replica failed ({type(e).__name__}); retry", retry
            ) from None
        except asyncio.TimeoutError:
            raise ServiceError(503, "timeout", f"no answer within {self.timeout_s:g} s; retry later", retry) from None

    async def _each(self, request, one) -> object:
        """Run `one(item, where)` over a single item or an {"items": [...]} list. In a list,
        per-item 4xx errors are returned in place (status 200); 5xx fails the whole request."""
        body = await self._body(request)
        items, is_list = codec.request_items(body, int(self.info["max_items"]))
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
        m = codec.check_modality(item, self.served, None, where)
        raw = codec.raw_media(item, m, where)
        info = self.served[m]
        name = where.rstrip(".") or "request"
        if info["params"] is not None:
            prepared = await asyncio.to_thread(
                codec.prepare_request, m, info["kind"], raw, name, info["params"], self.limits
            )
        else:
            prepared = raw
        if m in self.encoders:
            result = await self._send(self.encoders[m], (prepared, name))
        else:
            result = (await self._call(self.handles[m].encode_many.remote([(prepared, name)])))[0]
        if result[0] == "error":
            raise ServiceError(422, result[1], result[2])
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
        m = codec.check_modality(item, self.served, None, where)
        info = self.served[m]
        flat = codec.parse_codes(item, m, info["fingerprint"], self.vocab, self.limits.get("max_audio_seconds"), where)
        if m in self.decoders:
            media = await self._send(self.decoders[m], flat)
        else:
            media = (await self._call(self.handles[m].decode_many.remote([flat])))[0]
        out = await asyncio.to_thread(codec.media_payload, m, media)
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


# ----------------------------------------------------------------------------- building


def service_info(cfg, toks: dict, vocab) -> dict:
    """What the ingress knows (plain JSON-safe data): per modality its kind, prepare params and
    fingerprint; limits; request limits; the vocabulary."""
    from trimodal.config import to_dict
    from trimodal.service.config import retry_after_header
    from trimodal.tokenizers.prepare import prepare_params

    mods = {}
    for m, tok in toks.items():
        fp = tok.fingerprint()
        kind = cfg.tokenizers[m].kind
        mods[m] = {
            "kind": kind,
            "params": prepare_params(kind, tok),
            "fingerprint": fp,
            "fingerprint_id": tok.fingerprint_id(),
        }
    s = cfg.serve
    return {
        "modalities": mods,
        "send": {m: send_sizes(s.deployment(m), m) for m in toks if m in BATCHED_SEND},
        "limits": to_dict(cfg.limits),
        "vocab": vocab.to_dict(),
        "max_request_bytes": s.max_request_bytes,
        "max_items": s.max_items,
        "request_timeout_s": s.request_timeout_s,
        "retry_after": retry_after_header(s.retry_after_s),
        "dataset": cfg.dataset,
        "direct_ingress": s.direct_ingress,
    }


# Modalities whose requests the ingress sends to the codec deployment in batches. A call through
# Serve costs ~1 ms of CPU (ingress and replica together) whatever it carries: more than a
# SentencePiece call on a whole batch, so one call per text request was half a text request's
# cost (2.1-2.6 ms per request at 32 clients, 1.1 ms with batched sends). An image or audio
# call is 4-300 ms of codec work per item, so there the call is a few percent, and batches
# formed at the replica (when the codec is free) are fuller than batches formed here before
# the codec is free (measured with image sends batched: 11 instead of 15 images per codec call
# at 32 clients, and no gain in requests/s).
BATCHED_SEND = ("text",)


def send_sizes(d, modality: str) -> dict:
    """How the ingress sends text requests: batches of the codec's `max_batch_size`,
    `max_ongoing_requests // max_batch_size` batches in flight per replica (at least 1; the
    codec replica's `max_ongoing_requests` in Serve is set to the same number of calls), and up
    to `max_queued_requests` requests waiting for a free call."""
    batch = d.batch_size(modality)
    per_replica = max(1, d.ongoing(modality) // batch)
    replicas = d.autoscaling.max_replicas if d.autoscaling else d.replicas
    return {
        "batch": batch,
        "calls": per_replica * replicas,
        "per_replica": per_replica,
        "queued": d.max_queued_requests,
    }


def _actor_options(d, runtime_env: dict, num_gpus: float = 0.0, head: bool = False) -> dict:
    """A deployment's replica actor options: CPUs, GPUs, memory reservation and custom resources,
    plus, with `head` (the direct ingress), the head node (where Serve's proxy runs and the
    service's address is)."""
    actor = {"num_cpus": d.num_cpus, **runtime_env}
    if num_gpus:
        actor["num_gpus"] = num_gpus
    if d.memory_mb:
        actor["memory"] = d.memory_mb * 1024 * 1024
    resources = {**d.resources, **(HEAD_NODE if head else {})}
    if resources:
        actor["resources"] = resources
    return actor


def build_app(cfg, info: dict, token: str | None, gpus: float = 0.0, env: dict | None = None):
    """The bound Serve application for `cfg` (tokenizers already checked on the driver); `env`:
    environment variables for every replica."""
    from ray.serve.config import BackpressureConfig

    from trimodal.tokenizers.placement import gpu_placement

    s = cfg.serve
    runtime_env = {"runtime_env": {"env_vars": dict(env)}} if env else {}
    codecs = {}
    for m in cfg.modalities():
        spec, d = cfg.tokenizers[m], s.deployment(m)
        num_gpus, options = gpu_placement(m, spec.load_options(m, cfg.limits), d.num_gpus, gpus)
        dep = CodecServer.options(
            name=f"{m}_codec",
            ray_actor_options=_actor_options(d, runtime_env, num_gpus),
            max_ongoing_requests=send_sizes(d, m)["per_replica"] if m in BATCHED_SEND else d.ongoing(m),
            max_queued_requests=d.max_queued_requests,
            health_check_period_s=HEALTH_CHECK_PERIOD_S,
            graceful_shutdown_timeout_s=5,
            max_constructor_retry_count=3,
            **({"autoscaling_config": d.autoscaling.to_serve()} if d.autoscaling else {"num_replicas": d.replicas}),
        )
        codecs[m] = dep.bind(
            m,
            spec.kind,
            os.path.abspath(os.path.expanduser(spec.path)),
            options,
            info["modalities"][m]["params"],
            info["modalities"][m]["fingerprint"],
            spec.threads,
            d.batch_size(m),
            d.batch_wait(m),
        )
    g = s.ingress
    ingress = Ingress.options(
        name="ingress",
        ray_actor_options=_actor_options(g, runtime_env, head=s.direct_ingress),
        max_ongoing_requests=g.ongoing(None),
        max_queued_requests=g.max_queued_requests,
        backpressure_config=BackpressureConfig(retry_after_s=s.retry_after_s),
        graceful_shutdown_timeout_s=5,
        max_constructor_retry_count=3,
        **({"autoscaling_config": g.autoscaling.to_serve()} if g.autoscaling else {"num_replicas": g.replicas}),
    )
    token_sha256 = hashlib.sha256(token.encode("utf-8")).hexdigest() if token else None
    return ingress.bind(info, token_sha256, **codecs)


def _check_port(host: str, port: int) -> None:
    from trimodal.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise ConfigError(f"serve.port: cannot listen on {host}:{port} ({e.strerror or e})") from None


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start(
    cfg,
    *,
    host: str | None = None,
    port: int | None = None,
    insecure: bool = False,
    address: str | None = None,
    environ=None,
) -> dict:
    """Check the config and bind address, load the tokenizers on the driver, start Serve's proxy
    on host:port and run the app; returns {url, tokenizers: {modality: fingerprint id}, ...}
    once every replica is up. Errors before Ray starts name the key (ConfigError) or the
    mismatching fingerprint (IntegrityError)."""
    from trimodal.service.config import bind_token, load_tokenizers, load_vocab

    host = host or cfg.serve.host
    port = cfg.serve.port if port is None else port
    token = bind_token(host, insecure, cfg.serve.auth_token_env, environ)
    t0 = time.monotonic()
    toks = load_tokenizers(cfg, device="cpu")
    vocab = load_vocab(cfg, {m: t.fingerprint() for m, t in toks.items()})
    info = service_info(cfg, toks, vocab)
    del toks
    _check_port(host, port)
    ensure_ray(address or cfg.ray.address, cfg.ray.num_cpus)
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0))
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the driver's; callers print their own line
    http = {"host": host, "port": port, "request_timeout_s": cfg.serve.request_timeout_s + 5}
    env = None
    if cfg.serve.direct_ingress:
        # The ingress replica listens on host:port; Serve's proxy (which direct ingress still
        # starts, on the head node) gets a free port on the same host.
        env = direct_ingress_env(port)
        http["port"] = _free_port(host)
    serve.start(http_options=http, controller_options={"runtime_env": {"env_vars": env}} if env else None)
    serve.run(build_app(cfg, info, token, gpus, env), name=APP_NAME, route_prefix="/", blocking=False)
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{port}"
    _wait_answering(url)
    return {
        "url": url,
        "tokenizers": {m: i["fingerprint_id"] for m, i in info["modalities"].items()},
        "auth": token is not None,
        "dataset": cfg.dataset,
        "startup_s": round(time.monotonic() - t0, 1),
    }


def _wait_answering(url: str, timeout_s: float = 30.0) -> None:
    """The app is running; make sure it is *our* proxy that answers at `url` (Serve keeps the
    HTTP options of an instance already running on the cluster and only warns)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = e
        time.sleep(0.2)
    raise RuntimeError(
        f"the service is not answering at {url} ({last}); is a Serve instance with other HTTP options "
        "already running on this cluster? (`serve shutdown` stops it)"
    )


def stop() -> None:
    """Shut Serve down (its proxy, controller and replicas); Ray itself stays up."""
    serve.shutdown()
