"""The tokenization service against a real Ray Serve app on the session's local Ray, over real
HTTP on 127.0.0.1.

One small corpus (good and bad records of every kind) is tokenized by the real tokenize job;
one Serve app is then started from that dataset (`--dataset` mode: its manifest's tokenizers and
limits, checked by fingerprint) and shared by the module. Tests then check: round trips; codes
byte-identical to the job's rows and the same rejection reasons as its quarantine; every error
status; a replica killed under load; the CLI commands and `inspect --render`.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.fixtures.datasets import job_config, read_rows
from tests.ports import start_on_free_port
from trimodal.client import Client, ServiceHTTPError
from trimodal.errors import QUARANTINE_REASONS

pytestmark = pytest.mark.slow

TOKEN = "test-token-0123456789abcdef"
IMAGE_ONGOING = 4  # per image replica: what a killed replica can hold in flight


# ----------------------------------------------------------------------------- the corpus


def _img(w: int, h: int, mode: str = "RGB", fmt: str = "JPEG", seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    chans = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    a = rng.integers(0, 255, (h, w, chans), dtype=np.uint8)
    img = Image.fromarray(a[..., 0] if chans == 1 else a, mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _clip(seconds: float, rate: int = 16000, channels: int = 1, fmt: str = "FLAC", hz: float = 440.0) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * hz * t)).astype("float32")
    if channels == 2:
        wave = np.stack([wave, 0.5 * wave], axis=1)
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt)
    return buf.getvalue()


def _tar(path, members) -> None:
    import tarfile

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))


TEXTS = ["A red circle on white.", "", "Zürich café, naïve ñandú: 42 3.14!", "  ", "the end of a short document"]
IMAGES = {  # key -> (bytes, caption)
    "square": (_img(64, 64, seed=1), "a noisy square"),
    "wide": (_img(96, 80, fmt="PNG", seed=2), "a wide picture, resized"),
    "tall": (_img(50, 70, seed=3), "a tall one, cropped"),
    "gray": (_img(64, 64, "L", "PNG", seed=4), "grey noise"),
    "alpha": (_img(72, 72, "RGBA", "PNG", seed=5), "transparent parts on white"),
    "truncated": (_img(64, 64, seed=6)[:300], "half of a picture"),
    "oversize": (_img(256, 256, fmt="PNG", seed=7), "too many pixels"),
}
CLIPS = {  # key -> (bytes, transcript)
    "tone": (_clip(1.0), "a steady tone"),
    "stereo": (_clip(1.5, rate=22050, channels=2, fmt="WAV", hz=300.0), "two channels at another rate"),
    "empty": (b"", "nothing at all"),
    "long": (_clip(11.0, hz=200.0), "longer than the limit"),
}
JOB_REASONS = {"i/images/truncated": "corrupt_image", "i/images/oversize": "image_too_large"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("service_corpus")
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    members = []
    for k, (data, cap) in IMAGES.items():
        ext = "jpg" if data[:2] == b"\xff\xd8" else "png"
        members += [(f"{k}.{ext}", data), (f"{k}.txt", cap.encode())]
    _tar(root / "images.tar", members)
    members = []
    for k, (data, cap) in CLIPS.items():
        ext = "wav" if data[:4] == b"RIFF" else "flac"
        members += [(f"{k}.{ext}", data), (f"{k}.txt", cap.encode())]
    _tar(root / "clips.tar", members)
    sources = [
        {"name": "t", "kind": "text", "paths": [str(docs)]},
        {"name": "i", "kind": "image_text", "paths": [str(root / "images.tar")]},
        {"name": "a", "kind": "audio_text", "paths": [str(root / "clips.tar")]},
    ]
    return {"root": str(root), "sources": sources}


@pytest.fixture(scope="module")
def dataset(corpus, tokenizer_specs, ray_cluster, tmp_path_factory) -> dict:
    from trimodal.pipeline.job import run_tokenize

    out = str(tmp_path_factory.mktemp("service_ds") / "ds")
    summary = run_tokenize(job_config(corpus, tokenizer_specs, out), address=ray_cluster, quiet=True)
    return {"uri": out, "summary": summary}


@pytest.fixture(scope="module")
def service(dataset, ray_cluster):
    """One Serve app for the module, from the dataset's manifest, with a bearer token."""
    from trimodal.service import app
    from trimodal.service.config import load_serve_config

    def start(port):
        cfg = load_serve_config(
            dataset=dataset["uri"],
            overrides={
                "port": port,
                "max_request_bytes": 1 << 20,
                "max_items": 8,
                "request_timeout_s": 60.0,
                "retry_after_s": 2.0,
                "ingress": {"max_ongoing_requests": 128, "max_queued_requests": 128},
                "text": {"max_batch_size": 16},
                "image": {"replicas": 2, "max_batch_size": 4, "max_ongoing_requests": IMAGE_ONGOING},
                # A deliberately tiny queue: the overload test fills it.
                "audio": {"max_batch_size": 2, "max_ongoing_requests": 2, "max_queued_requests": 1},
            },
        )
        info = app.start(cfg, environ={"TRIMODAL_SERVE_TOKEN": TOKEN})
        info["config"] = cfg
        return info

    info = start_on_free_port(start)
    yield info
    app.stop()


@pytest.fixture()
def client(service) -> Client:
    return Client(service["url"], token=TOKEN, timeout=60)


def _post_raw(url: str, path: str, body: bytes, token: str | None = TOKEN, headers: dict | None = None):
    req = urllib.request.Request(url + path, data=body, method="POST", headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {"raw": raw.decode("utf-8", "replace")}
        return e.code, dict(e.headers), doc


def _local_tokenizers(service):
    from trimodal.service.config import load_tokenizers

    return load_tokenizers(service["config"], device="cpu")


# ----------------------------------------------------------------------------- round trips


def test_health_and_tokenizers(service, client):
    assert client.healthz()["status"] == "ok"
    info = client.tokenizers()
    assert set(info["tokenizers"]) == {"text", "image", "audio"}
    assert {m: t["fingerprint"] for m, t in info["tokenizers"].items()} == service["tokenizers"]
    # ranges follow the [specials | text | image | audio levels] layout
    r = info["vocab"]["ranges"]
    assert r["text"]["start"] == len(info["vocab"]["specials"])
    assert r["image"]["start"] == r["text"]["start"] + r["text"]["codebook_size"]
    assert r["audio"]["start"] == r["image"]["start"] + r["image"]["codebook_size"]
    assert info["dataset"] == service["dataset"]


def test_text_round_trip(client):
    s = "Zürich café, naïve ñandú: 42 3.14!  two  spaces\tand a tab"
    enc = client.encode("text", s)
    assert enc["shape"] == [len(enc["codes"])] and len(enc["ids"]) == len(enc["codes"])
    assert client.decode("text", codes=enc["codes"])["data"] == s
    assert client.decode("text", ids=enc["ids"])["data"] == s


def test_image_round_trip(service, client):
    from PIL import Image

    enc = client.encode("image", IMAGES["wide"][0])
    assert enc["shape"] == [8, 8] and len(enc["codes"]) == 64
    dec = client.decode("image", codes=enc["codes"])
    assert dec["media_type"] == "image/png"
    img = Image.open(io.BytesIO(dec["bytes"]))
    assert img.size == (64, 64) and img.mode == "RGB"
    # the service decodes exactly as the codec does in-process
    tok = _local_tokenizers(service)["image"]
    local = tok.decode([np.asarray(enc["codes"]).reshape(8, 8)])[0]
    assert np.array_equal(np.asarray(img), np.asarray(local))
    # ids and the nested (h, w) form decode to the same picture
    assert client.decode("image", ids=enc["ids"])["bytes"] == dec["bytes"]
    nested = np.asarray(enc["codes"]).reshape(8, 8).tolist()
    assert client.decode("image", codes=nested)["bytes"] == dec["bytes"]
    # decoding then encoding the decoded PNG works too (a full loop through the API)
    assert client.encode("image", dec["bytes"])["shape"] == [8, 8]


def test_audio_round_trip(service, client):
    import soundfile as sf

    enc = client.encode("audio", CLIPS["tone"][0])
    levels, frames = enc["shape"]
    assert levels == 4 and frames == 32  # 1 s at 16 kHz, hop 512
    assert len(enc["codes"]) == levels * frames
    dec = client.decode("audio", codes=enc["codes"])
    assert dec["media_type"] == "audio/wav"
    wave, rate = sf.read(io.BytesIO(dec["bytes"]), dtype="float32")
    assert rate == 16000 and wave.shape == (frames * 512,)
    tok = _local_tokenizers(service)["audio"]
    stored = np.asarray(enc["codes"], np.int32).reshape(frames, levels).T
    local, _ = tok.decode([stored])[0]
    assert np.abs(wave - np.clip(local, -1, 1)).max() < 2 / 32768  # 16-bit PCM rounding only
    assert client.decode("audio", ids=enc["ids"])["bytes"] == dec["bytes"]


def test_list_form_mixes_modalities_and_errors(client):
    out = client.encode_many([("text", "hello there"), ("image", IMAGES["square"][0]), ("text", "   ")])
    assert [("error" in r) for r in out] == [False, False, True]
    assert out[0]["modality"] == "text" and out[1]["shape"] == [8, 8]
    assert out[2]["error"]["reason"] == "empty_text"


# ----------------------------------------------------------------------------- same as the job


def test_codes_byte_identical_to_the_tokenize_job(dataset, client):
    rows = read_rows(dataset["uri"])
    expected = {"t": 3, "i": 5, "a": 2}
    assert {s: sum(r["source"] == s for r in rows.values()) for s in expected} == expected
    checked = {"text": 0, "image": 0, "audio": 0}
    for rid, row in rows.items():
        source, _, key = rid.split("/", 2)
        key = key.split("/")[-1]
        if source == "t":
            text = TEXTS[int(key) - 1]
            assert client.encode("text", text)["codes"] == list(row["text"]), rid
            checked["text"] += 1
        elif source == "i":
            data, cap = IMAGES[key]
            assert client.encode("image", data)["codes"] == list(row["image"]), rid
            assert client.encode("text", cap)["codes"] == list(row["text"]), rid
            checked["image"] += 1
        else:
            data, cap = CLIPS[key]
            assert client.encode("audio", data)["codes"] == list(row["audio"]), rid
            assert client.encode("text", cap)["codes"] == list(row["text"]), rid
            checked["audio"] += 1
    assert checked == {"text": 3, "image": 5, "audio": 2}


def _quarantined(uri: str) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(os.path.join(uri, "quarantine")):
        for f in files:
            for line in open(os.path.join(root, f), encoding="utf-8"):
                q = json.loads(line)
                out[q["id"]] = q["reason"]
    return out


def test_rejections_match_the_job_quarantine(dataset, client):
    q = _quarantined(dataset["uri"])
    cases = {
        "t/docs/2": ("text", TEXTS[1]),
        "t/docs/4": ("text", TEXTS[3]),
        "i/images/truncated": ("image", IMAGES["truncated"][0]),
        "i/images/oversize": ("image", IMAGES["oversize"][0]),
        "a/clips/empty": ("audio", CLIPS["empty"][0]),
        "a/clips/long": ("audio", CLIPS["long"][0]),
    }
    assert set(cases) <= set(q), q
    for rid, (m, data) in cases.items():
        with pytest.raises(ServiceHTTPError) as e:
            client.encode(m, data)
        assert e.value.status == 422, rid
        assert e.value.reason == q[rid], (rid, e.value)
        assert e.value.reason in QUARANTINE_REASONS
    assert {q[k] for k in cases} == {"empty_text", "corrupt_image", "image_too_large", "empty_audio", "audio_too_long"}


# ----------------------------------------------------------------------------- error statuses


def test_400_malformed_json_unknown_modality_bad_input(service):
    url = service["url"]
    status, _, doc = _post_raw(url, "/v1/encode", b"{not json")
    assert (status, doc["error"]["reason"]) == (400, "malformed_json")
    status, _, doc = _post_raw(url, "/v1/encode", json.dumps({"modality": "video", "data": "x"}).encode())
    assert (status, doc["error"]["reason"]) == (400, "unknown_modality")
    status, _, doc = _post_raw(url, "/v1/decode", json.dumps({"modality": "smell", "codes": [1]}).encode())
    assert (status, doc["error"]["reason"]) == (400, "unknown_modality")
    for body in (
        {"data": "no modality"},
        {"modality": "image", "data": "***not base64***"},
        {"modality": "image"},
        [1, 2, 3],
    ):
        status, _, doc = _post_raw(url, "/v1/encode", json.dumps(body).encode())
        assert status == 400, body
    for body in (
        {"modality": "image", "codes": [5] * 63},  # not the 8x8 grid
        {"modality": "image", "codes": [5000] * 64},  # outside the codebook
        {"modality": "text", "codes": [1.5, 2]},
        {"modality": "audio", "codes": [1, 2, 3]},  # not a multiple of 4 levels
        {"modality": "text", "ids": [0, 1]},  # specials are not text ids
        {"modality": "text", "codes": [1], "ids": [40]},
    ):
        status, _, doc = _post_raw(url, "/v1/decode", json.dumps(body).encode())
        assert status == 400 and doc["error"]["reason"] in ("bad_codes", "bad_request"), (body, doc)


def test_413_over_size(service):
    url = service["url"]
    big = json.dumps({"modality": "text", "data": "x" * (1 << 20)}).encode()
    status, _, doc = _post_raw(url, "/v1/encode", big)
    assert (status, doc["error"]["reason"]) == (413, "too_large")
    many = {"items": [{"modality": "text", "data": "hi"}] * 9}
    status, _, doc = _post_raw(url, "/v1/encode", json.dumps(many).encode())
    assert (status, doc["error"]["reason"]) == (413, "too_many_items")
    # audio codes that would decode to more than limits.max_audio_seconds (10 s = 313 frames)
    status, _, doc = _post_raw(url, "/v1/decode", json.dumps({"modality": "audio", "codes": [1] * 4 * 400}).encode())
    assert status == 413


def test_401_without_the_token_and_token_never_logged(service):
    url = service["url"]
    body = json.dumps({"modality": "text", "data": "hello"}).encode()
    assert _post_raw(url, "/v1/encode", body, token=None)[0] == 401
    status, headers, _ = _post_raw(url, "/v1/encode", body, token="wrong-token-0123456789")
    assert status == 401 and headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
    assert _post_raw(url, "/v1/encode", body)[0] == 200
    # /healthz is open (load balancers), and says nothing but the modalities
    with urllib.request.urlopen(url + "/healthz", timeout=30) as r:
        assert r.status == 200
    import ray

    logs = os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs")
    for root, _, files in os.walk(logs):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert TOKEN.encode() not in fh.read(), f"bearer token found in {f}"


def test_404_and_405(service):
    assert _post_raw(service["url"], "/v2/encode", b"{}")[0] == 404
    assert _post_raw(service["url"], "/healthz", b"{}")[0] == 405


def test_503_with_retry_after_when_overloaded(service):
    """The audio deployment holds 2 requests and queues 1: 24 at once must be refused fast."""
    clip = _clip(3.0, hz=330.0)
    body = json.dumps({"modality": "audio", "data": base64.b64encode(clip).decode()}).encode()
    barrier = threading.Barrier(24)

    done = itertools.count()  # the order in which answers came back (next() is atomic)

    def one(_):
        barrier.wait()
        status, headers, doc = _post_raw(service["url"], "/v1/encode", body)
        return status, headers, doc, next(done)

    with ThreadPoolExecutor(24) as ex:
        results = list(ex.map(one, range(24)))
    statuses = [r[0] for r in results]
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in results if r[0] == 503]
    assert refused and statuses.count(200) >= 1, statuses
    last_served = max(order for status, _, _, order in results if status == 200)
    for _, headers, doc, order in refused:
        assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "2"
        assert doc["error"]["reason"] == "overloaded"
        # refused, not queued until a timeout: back before the accepted work ended
        assert order < last_served, (order, last_served)


# ----------------------------------------------------------------------------- replica loss


def _image_pids(n: int = 2, timeout: float = 120.0, exclude: int | None = None) -> set[int]:
    from ray import serve

    h = serve.get_deployment_handle("image_codec", app_name="trimodal")
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < n and time.monotonic() < deadline:
        try:
            pid = h.pid.remote().result(timeout_s=10)
        except Exception:
            time.sleep(0.2)
            continue
        if pid != exclude:
            pids.add(pid)
    return pids


def test_killed_replica_fails_only_its_requests_and_recovers(service):
    """Driven by events, not by the clock: the replica is killed once 8 requests have been
    answered, the load stops once 16 more have been answered after the kill, and a request counts
    as "in flight at the kill" by whether it started before the kill event, not by a time window.
    The timeouts below only bound a hang."""
    import signal

    pids = _image_pids(2)
    assert len(pids) == 2
    victim = sorted(pids)[0]
    data = [IMAGES[k][0] for k in ("square", "wide", "tall", "gray", "alpha")]
    warm, killed, stop = threading.Event(), threading.Event(), threading.Event()
    results: list[tuple[bool, int | str]] = []  # (started after the kill, outcome)
    lock = threading.Lock()

    def answered_since_kill() -> int:
        return sum(after and r == 200 for after, r in results)

    def worker(i):
        c = Client(service["url"], token=TOKEN, timeout=45)
        k = i
        while not stop.is_set():
            after = killed.is_set()
            try:
                c.encode("image", data[k % len(data)])
                r = 200
            except ServiceHTTPError as e:
                r = e.status if e.status != 503 else f"503:{e.reason}"
            except OSError as e:  # a timeout: a hung request
                r = f"client:{type(e).__name__}"
            with lock:
                results.append((after, r))
                if sum(x == 200 for _, x in results) >= 8:
                    warm.set()
                if answered_since_kill() >= 16:
                    stop.set()
            k += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        assert warm.wait(timeout=120), "no 8 answers before the kill"
        os.kill(victim, signal.SIGKILL)
        killed.set()
        assert stop.wait(timeout=180), f"the service did not answer 16 requests after the kill: {results[-20:]}"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request hung"
    failed = [(after, r) for after, r in results if r != 200]
    assert not [r for _, r in failed if str(r).startswith("client:")], failed  # nothing hung
    assert all(r == "503:unavailable" for _, r in failed), failed
    # only what the dead replica held in flight (it takes at most IMAGE_ONGOING at once) ...
    assert len(failed) <= IMAGE_ONGOING, failed
    # ... and the load ended on answers: the replica left serves every request
    assert [r for _, r in results[-8:]] == [200] * 8, results[-8:]
    # recovery: Serve replaces the replica, and both serve again
    new = _image_pids(2, exclude=victim)
    assert len(new) == 2 and victim not in new
    assert Client(service["url"], token=TOKEN).encode("image", data[0])["shape"] == [8, 8]


# ----------------------------------------------------------------------------- commands


def _run_cli(argv, capsys) -> tuple[int, str, str]:
    from trimodal.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_encode_decode_commands(service, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRIMODAL_SERVE_TOKEN", TOKEN)
    url = service["url"]
    img = tmp_path / "pic.png"
    img.write_bytes(IMAGES["wide"][0])
    rc, out, err = _run_cli(["encode", str(img), "--url", url], capsys)
    assert rc == 0, err
    enc = json.loads(out)
    assert enc["modality"] == "image" and enc["shape"] == [8, 8]
    codes = tmp_path / "codes.json"
    codes.write_text(out)
    rc, out, err = _run_cli(["decode", str(codes), "--url", url, "--out", str(tmp_path / "back.png"), "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out)["media_type"] == "image/png" and (tmp_path / "back.png").stat().st_size > 0
    # a sample the job would quarantine: exit 4 with the reason
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(IMAGES["truncated"][0])
    rc, _, err = _run_cli(["encode", str(bad), "--url", url], capsys)
    assert rc == 4 and "corrupt_image" in err
    # no token: exit 2 (a usage problem), and the token is not printed anywhere
    monkeypatch.delenv("TRIMODAL_SERVE_TOKEN")
    rc, out, err = _run_cli(["encode", str(img), "--url", url], capsys)
    assert rc == 2 and "401" in err and TOKEN not in out + err


def test_inspect_render(dataset, tmp_path, capsys):
    import soundfile as sf
    from PIL import Image

    out = tmp_path / "render"
    rc, stdout, err = _run_cli(["inspect", dataset["uri"], "--render", "2", "--out", str(out), "--json"], capsys)
    assert rc == 0, err
    r = json.loads(stdout)["render"]
    assert r["samples"] == {"t": 2, "i": 2, "a": 2}
    # each image and audio sample beside its original (fetched through its origin), scored
    assert r["files"] == 2 + 2 * 3 + 2 * 3
    assert set(r["metrics"]) == {"image", "audio"} and r["metrics"]["image"]["psnr"]["n"] == 2
    assert r["metrics"]["audio"]["snr"]["mean"] < 30 and r["metrics"]["audio"]["mel_distance"]["mean"] > 0
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count("<img ") == 4 and page.count("<audio ") == 4 and page.count("original | decoded: ") == 4
    assert "a noisy square" in page and "a steady tone" in page and "A red circle on white." in page
    pngs = sorted(p for p in (out / "i").glob("*.png") if "-original" not in p.name)
    wavs = sorted(p for p in (out / "a").glob("*.wav") if "-original" not in p.name)
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (64, 64)
    assert len(wavs) == 2 and sf.info(str(wavs[0])).samplerate == 16000
    # captions and transcripts decode to exactly what was tokenized
    txts = {p.read_text(encoding="utf-8") for p in (out / "i").glob("*.txt")}
    assert txts <= {cap for _, cap in IMAGES.values()} and len(txts) == 2
