"""The ingress's own queue under direct ingress: beyond `ingress.max_ongoing_requests` +
`max_queued_requests` requests, the ingress replica (which listens on the port itself) refuses at
once with 503 and the configured Retry-After, and keeps answering afterwards.

A separate app from test_service.py's: the ingress here holds one request and queues one, while
the audio deployment behind it queues plenty, so every refusal comes from the ingress.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from tests.ports import start_on_free_port
from tests.service.test_service import _clip, _post_raw

pytestmark = pytest.mark.slow

TOKEN = "ingress-queue-token-0123456789"


@pytest.fixture(scope="module")
def small_ingress(tokenizer_specs, ray_cluster, tmp_path_factory):
    from trimodal.service import app
    from trimodal.service.config import load_serve_config

    path = tmp_path_factory.mktemp("ingress_queue") / "serve.yaml"
    path.write_text(yaml.safe_dump({"tokenizers": tokenizer_specs}))

    def start(port):
        cfg = load_serve_config(
            str(path),
            overrides={
                "port": port,
                "retry_after_s": 3.0,
                "ingress": {"max_ongoing_requests": 1, "max_queued_requests": 1},
                "audio": {"max_batch_size": 1, "max_ongoing_requests": 1, "max_queued_requests": 64},
            },
        )
        assert cfg.serve.direct_ingress  # the default this test is about
        return app.start(cfg, environ={"TRIMODAL_SERVE_TOKEN": TOKEN})

    info = start_on_free_port(start)
    yield info
    app.stop()


def test_ingress_refuses_beyond_its_queue_and_recovers(small_ingress):
    url = small_ingress["url"]
    body = json.dumps({"modality": "audio", "data": base64.b64encode(_clip(3.0, hz=250.0)).decode()}).encode()
    n = 12
    barrier = threading.Barrier(n)

    done = itertools.count()  # the order in which answers came back (next() is atomic)

    def one(_):
        barrier.wait()
        status, headers, doc = _post_raw(url, "/v1/encode", body, token=TOKEN)
        return status, {k.lower(): v for k, v in headers.items()}, doc, next(done)

    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(one, range(n)))
    statuses = [r[0] for r in results]
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in results if r[0] == 503]
    # One running and one queued at a time: most of twelve simultaneous requests are refused.
    assert len(refused) >= n // 2 and statuses.count(200) >= 1, statuses
    last_served = max(order for status, _, _, order in results if status == 200)
    for _, headers, doc, order in refused:
        assert headers["retry-after"] == "3"
        assert "backpressure" in doc.get("raw", "")  # Serve's own refusal, not a codec's 503
        # refused at once, not held until the request timeout: back before the accepted work ended
        assert order < last_served, (order, last_served)
    for status, _, doc, _ in results:
        if status == 200:
            assert doc["modality"] == "audio" and doc["codes"]
    # Once the burst is over the ingress answers again.
    status, _, doc = _post_raw(url, "/v1/encode", body, token=TOKEN)
    assert status == 200 and doc["codes"]
