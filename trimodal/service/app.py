"""The tokenization service as a Ray Serve application: one codec deployment per modality
(service/replica.py) behind one HTTP ingress (service/ingress.py); this module sizes, places,
starts and stops them.

    HTTP ──► ingress replica ──(gRPC)──► <modality> codec replicas (GPU when the cluster has GPUs)

Direct ingress (`serve.direct_ingress`, the default) runs Serve in its throughput mode: the
ingress replica listens on host:port itself instead of behind Serve's proxy, which cuts Serve's
own cost per request by an order of magnitude, at the price of one ingress replica, on the head
node, per port. Every queue is bounded (503 + Retry-After beyond it), and a replica that dies
fails only the requests it held. docs/service.md has the figures, dated, and the trade-offs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time

from ray import serve

from trimodal.cluster import ensure_ray
from trimodal.service.ingress import Ingress
from trimodal.service.replica import CodecServer

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


# Modalities whose requests the ingress sends to the codec deployment in batches. A Serve call
# costs more CPU than SentencePiece on a whole batch, so text goes in lists; an image or audio
# call is mostly codec work, and batches formed at the replica when the codec is free are
# fuller than batches formed here (docs/service.md, "Measured").
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

    from trimodal.tokenizers.placement import CodecLoad, gpu_placement

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
        codec = CodecLoad(m, spec.kind, os.path.abspath(os.path.expanduser(spec.path)), options, spec.threads)
        codecs[m] = dep.bind(
            codec,
            info["modalities"][m]["params"],
            info["modalities"][m]["fingerprint"],
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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (for Serve's unused proxy, or a service started on any port)."""
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
        http["port"] = free_port(host)
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
