"""Child process of test_multinode.py: the service on a Ray cluster of a head and two worker
nodes on this machine (`ray.cluster_utils.Cluster`, each node its own raylet and workers).

    python multinode_child.py CONFIG.json RESULT.json

CONFIG.json holds the serve config (tokenizers and `serve:` keys). The codec deployments ask for
the `codec` resource, which only the worker nodes have, so the ingress (direct ingress: the head
node) and the codecs sit on different nodes. The child encodes one item per modality over HTTP,
then removes the worker node with the most codec replicas (its raylet and every worker process,
like a machine dying) while image requests keep coming, waits until every modality answers
again, and writes RESULT.json: which replicas ran on which node before and after, the codes
from the service and from the codecs in this process, and every status seen during the loss.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time

import numpy as np

RECOVER_S = 180.0  # node death noticed by the GCS, replicas rescheduled and healthy


def replicas_by_node(nodes: dict) -> dict[str, list[str]]:
    """{node name: sorted Serve replica titles (deployment names) of its worker processes}."""
    from tests.pipeline.multinode_child import busy_titles

    out = {}
    for name, node in nodes.items():
        titles = [t for t in busy_titles(node) if "ServeReplica" in t]
        # ray::ServeReplica:<app>:<deployment>[.<method running now>]
        out[name] = sorted(t.rsplit(":", 1)[-1].split(".")[0] for t in titles)
    return out


def all_running(cfg) -> bool:
    """Every codec deployment has its configured number of replicas running (Serve's status)."""
    from ray import serve

    from trimodal.service.app import APP_NAME

    deps = serve.status().applications[APP_NAME].deployments
    return all(
        deps[f"{m}_codec"].replica_states.get("RUNNING", 0) == cfg.serve.deployment(m).replicas
        for m in cfg.modalities()
    )


def inputs() -> dict[str, str | bytes]:
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    image = buf.getvalue()
    t = np.arange(16000) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 330 * t)).astype("float32"), 16000, format="FLAC")
    return {"text": "Zürich café on two nodes", "image": image, "audio": buf.getvalue()}


def local_codes(cfg, items: dict) -> dict[str, list[int]]:
    """The codes this process's codecs give, through the service's own prepare and encode."""
    from trimodal.service.config import load_tokenizers
    from trimodal.service.replica import encode_batch
    from trimodal.service.requests import prepare_request
    from trimodal.tokenizers.prepare import prepare_params

    toks = load_tokenizers(cfg, device="cpu")
    limits = {"max_audio_seconds": cfg.limits.max_audio_seconds}
    out = {}
    for m, raw in items.items():
        kind = cfg.tokenizers[m].kind
        params = prepare_params(kind, toks[m])
        prepared = prepare_request(m, kind, raw, "local", params, limits)
        ((status, codes, _shape),) = encode_batch(toks[m], m, kind, params, [(prepared, "local")])
        assert status == "ok", codes
        out[m] = np.asarray(codes).ravel().tolist()
    return out


def encode_all(client, items: dict) -> dict[str, list[int]]:
    return {m: [int(c) for c in client.encode(m, raw)["codes"]] for m, raw in items.items()}


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    from tests.ports import start_on_free_port
    from trimodal.client import Client, ServiceHTTPError
    from trimodal.service import app
    from trimodal.service.config import load_serve_config

    config_path, result_path = sys.argv[1], sys.argv[2]
    conf = json.loads(open(config_path).read())
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = {f"worker{i}": cluster.add_node(num_cpus=1, resources={"codec": 4}) for i in range(2)}
    cluster.wait_for_nodes()
    nodes = {"head": cluster.head_node, **workers}
    ray.init(address=cluster.address, logging_level="warning")

    yaml_path = config_path.replace(".json", ".yaml")
    with open(yaml_path, "w") as f:
        json.dump({"tokenizers": conf["tokenizers"]}, f)  # JSON is YAML

    def start(port):
        cfg = load_serve_config(yaml_path, overrides={**conf["serve"], "port": port})
        return cfg, app.start(cfg, address=cluster.address)

    cfg, info = start_on_free_port(start)  # the port is chosen here, retried if taken meanwhile
    client = Client(info["url"], timeout=90)
    items = inputs()
    assert all_running(cfg)  # app.start returns once Serve runs every replica
    result: dict = {"url": info["url"], "before": replicas_by_node(nodes)}
    result["local"] = local_codes(cfg, items)
    result["codes"] = encode_all(client, items)

    # The worker node with the most codec replicas dies while image requests keep coming.
    victim = max(workers, key=lambda n: len(result["before"][n]))
    statuses: list = []
    stop = threading.Event()

    def load():
        c = Client(info["url"], timeout=90)
        while not stop.is_set():
            try:
                c.encode("image", items["image"])
                statuses.append(200)
            except ServiceHTTPError as e:
                statuses.append(f"{e.status}:{e.reason}")
            except Exception as e:  # a dropped connection or a client timeout: the test names it
                statuses.append(type(e).__name__)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    while len(statuses) < 3:  # the load runs before the node goes
        time.sleep(0.05)
    cluster.remove_node(workers[victim], allow_graceful=False)
    t0 = time.monotonic()
    survivor = next(n for n in workers if n != victim)
    # Recovered: every codec replica runs again, all of them on the node left, and Serve counts
    # them running. (Answers alone prove nothing: with direct ingress a replica process of the
    # lost node may keep answering over gRPC for a moment after its raylet is gone.)
    full = sorted(result["before"]["worker0"] + result["before"]["worker1"])
    replaced = None
    while time.monotonic() - t0 < RECOVER_S:
        if replicas_by_node({survivor: nodes[survivor]})[survivor] == full and all_running(cfg):
            replaced = time.monotonic() - t0
            break
        time.sleep(0.5)
    after, last = None, None
    while replaced is not None and time.monotonic() - t0 < RECOVER_S:
        try:
            after = encode_all(client, items)
            break
        except ServiceHTTPError as e:  # a router still trying a lost replica: 503, retried
            last = f"{e.status}:{e.reason}"
            time.sleep(0.5)
    stop.set()
    thread.join(timeout=120)
    result.update(
        victim=victim,
        survivor=survivor,
        during=statuses,
        replaced_s=None if replaced is None else round(replaced, 1),
        codes_after=after,
        last_error=last,
        after=replicas_by_node({n: nodes[n] for n in ("head", survivor)}),
    )
    with open(result_path, "w") as f:
        json.dump(result, f)
    app.stop()
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
