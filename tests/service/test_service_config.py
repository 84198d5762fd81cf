"""The service's config, bind rules and request parsing, without Ray: every check here runs
before a replica starts, so a wrong key or an unsafe bind costs a second, not a cluster."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import yaml

from trimodal.errors import ConfigError, IntegrityError
from trimodal.service import codec
from trimodal.service.codec import ServiceError
from trimodal.service.config import bind_token, is_loopback, load_serve_config, load_tokenizers

TOKEN = "a-token-of-enough-length"


def _write(tmp_path, data: dict) -> str:
    p = tmp_path / "serve.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def _cfg(specs: dict, **extra) -> dict:
    return {"tokenizers": {m: dict(s, path=str(s["path"])) for m, s in specs.items()}, **extra}


# ----------------------------------------------------------------------------- binding


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_token(host):
    assert is_loopback(host)
    assert bind_token(host, insecure=False, environ={}) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.com"])
def test_off_loopback_requires_a_token_or_insecure(host):
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match=r"TRIMODAL_SERVE_TOKEN") as e:
        bind_token(host, insecure=False, environ={})
    assert "serve.host" in str(e.value)
    assert bind_token(host, insecure=True, environ={}) is None
    assert bind_token(host, insecure=False, environ={"TRIMODAL_SERVE_TOKEN": TOKEN}) == TOKEN


def test_token_env_is_configurable_and_short_tokens_refused():
    assert bind_token("0.0.0.0", False, "MY_TOKEN", {"MY_TOKEN": TOKEN}) == TOKEN
    with pytest.raises(ConfigError, match="shorter than 16") as e:
        bind_token("127.0.0.1", False, environ={"TRIMODAL_SERVE_TOKEN": "short"})
    assert "short" not in str(e.value).replace("shorter", "")  # the value is never echoed


def test_serve_command_refuses_off_loopback_before_ray(tmp_path, text_tokenizer_path, monkeypatch, capsys):
    """The CLI check, without binding anything: exit 2 naming the variable, no Ray started."""
    import ray

    from trimodal.cli import main

    monkeypatch.delenv("TRIMODAL_SERVE_TOKEN", raising=False)
    path = _write(tmp_path, _cfg({"text": {"kind": "sentencepiece", "path": text_tokenizer_path}}))
    was_up = ray.is_initialized()
    with pytest.raises(SystemExit) as e:
        main(["serve", path, "--host", "0.0.0.0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "TRIMODAL_SERVE_TOKEN" in err and "--insecure" in err
    assert ray.is_initialized() == was_up


# ----------------------------------------------------------------------------- config


def test_config_defaults_and_overrides(tmp_path, tokenizer_specs):
    path = _write(tmp_path, _cfg(tokenizer_specs, limits={"max_audio_seconds": 5}))
    cfg = load_serve_config(path, overrides={"port": 9001, "host": None})
    assert cfg.modalities() == ["text", "image", "audio"]
    assert (cfg.serve.host, cfg.serve.port) == ("127.0.0.1", 9001)
    assert cfg.limits.max_audio_seconds == 5.0
    assert cfg.serve.image.batch_size("image") == 16 and cfg.serve.image.ongoing("image") == 32
    assert cfg.serve.ingress.ongoing(None) == 256
    assert cfg.serve.direct_ingress is True
    # several ingress replicas: behind Serve's proxy
    cfg = load_serve_config(path, overrides={"direct_ingress": False, "ingress": {"replicas": 2}})
    assert (cfg.serve.direct_ingress, cfg.serve.ingress.replicas) == (False, 2)


def test_replica_actor_options_and_the_head_node_with_direct_ingress():
    from trimodal.service.app import HEAD_NODE, _actor_options
    from trimodal.service.config import DeploymentOptions

    g = DeploymentOptions(num_cpus=0.5, resources={"edge": 0.1})
    assert _actor_options(g, {}, head=True) == {"num_cpus": 0.5, "resources": {"edge": 0.1, **HEAD_NODE}}
    assert _actor_options(g, {}) == {"num_cpus": 0.5, "resources": {"edge": 0.1}}
    assert _actor_options(DeploymentOptions(), {}) == {"num_cpus": 0.25}
    codec = DeploymentOptions(memory_mb=2, resources={"codec": 0.01})
    assert _actor_options(codec, {}, num_gpus=1.0) == {
        "num_cpus": 0.25,
        "num_gpus": 1.0,
        "memory": 2 * 1024 * 1024,
        "resources": {"codec": 0.01},
    }


def test_direct_ingress_env_pins_the_port():
    from trimodal.service.app import direct_ingress_env

    env = direct_ingress_env(8123)
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    # Serve allocates ingress ports from range(min, max): exactly the configured one
    ports = range(
        int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]), int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
    )
    assert list(ports) == [8123]
    assert all(isinstance(v, str) for v in env.values())


@pytest.mark.parametrize(
    "serve, key",
    [
        ({"prot": 1}, "serve.prot"),
        ({"image": {"replicas": 0}}, "serve.image"),
        ({"audio": {"max_batch_size": 8, "max_ongoing_requests": 4}}, "max_ongoing_requests"),
        ({"text": {"autoscaling": {"min_replicas": 2, "max_replicas": 1}}}, "max_replicas"),
        ({"max_request_bytes": 10}, "max_request_bytes"),
        ({"port": 70000}, "port"),
        ({"image": {"batch_wait_s": "soon"}}, "serve.image.batch_wait_s"),
        ({"ingress": {"replicas": 2}}, "direct_ingress"),
        ({"ingress": {"autoscaling": {"max_replicas": 2}}}, "direct_ingress"),
        ({"audio": {"resources": {"codec": 0}}}, "resources.codec"),
        ({"image": {"resources": {"GPU": 1}}}, "resources.GPU"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text_tokenizer_path, serve, key):
    path = _write(tmp_path, _cfg({"text": {"kind": "sentencepiece", "path": text_tokenizer_path}}, serve=serve))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_serve_config(path)


def test_config_errors_for_tokenizers(tmp_path, text_tokenizer_path):
    with pytest.raises(ConfigError, match=r"tokenizers\.smell"):
        load_serve_config(_write(tmp_path, {"tokenizers": {"smell": {"kind": "x", "path": text_tokenizer_path}}}))
    with pytest.raises(ConfigError, match="path"):
        load_serve_config(_write(tmp_path, {"tokenizers": {"text": {"kind": "sentencepiece", "path": "/nope"}}}))
    cfg = load_serve_config(
        _write(tmp_path, {"tokenizers": {"text": {"kind": "vqmodel", "path": text_tokenizer_path}}})
    )
    with pytest.raises(ConfigError, match=r"tokenizers\.text"):
        load_tokenizers(cfg)
    with pytest.raises(ConfigError, match="CONFIG.yaml or --dataset"):
        load_serve_config(None)


def _dataset(tmp_path, specs: dict, fingerprints: dict) -> str:
    from trimodal.dataset.manifest import Manifest

    uri = str(tmp_path / "ds")
    m = Manifest(fingerprints=fingerprints, job={"tokenizers": specs, "limits": {"max_audio_seconds": 10.0}})
    m.save(uri)
    return uri


def test_dataset_mode_takes_tokenizers_and_limits_from_the_manifest(tmp_path, tokenizer_specs):
    from trimodal.tokenizers.base import load_tokenizer

    spec = {"kind": "sentencepiece", "path": tokenizer_specs["text"]["path"]}
    fp = load_tokenizer(spec["kind"], spec["path"]).fingerprint()
    uri = _dataset(tmp_path, {"text": spec}, {"text": fp})
    cfg = load_serve_config(dataset=uri)
    assert cfg.modalities() == ["text"] and cfg.limits.max_audio_seconds == 10.0 and cfg.dataset == uri
    assert load_tokenizers(cfg)["text"].fingerprint() == fp
    # serve: may come from a config beside --dataset, tokenizers may not
    path = _write(tmp_path, {"serve": {"port": 9100}})
    assert load_serve_config(path, dataset=uri).serve.port == 9100
    with pytest.raises(ConfigError, match="manifest"):
        load_serve_config(_write(tmp_path, _cfg({"text": spec})), dataset=uri)


def test_dataset_mode_refuses_other_weights(tmp_path, tokenizer_specs, audio_codec_path_alt):
    """The manifest's fingerprint names other weights than the file now at the path: exit 3."""
    from trimodal.tokenizers.base import load_tokenizer

    spec = {"kind": "dac", "path": str(audio_codec_path_alt)}
    fp = load_tokenizer("dac", str(tokenizer_specs["audio"]["path"]), max_seconds=10.0).fingerprint()
    uri = _dataset(tmp_path, {"audio": spec}, {"audio": fp})
    with pytest.raises(IntegrityError, match=r"tokenizers\.audio.*weights_sha256"):
        load_tokenizers(load_serve_config(dataset=uri))


# ----------------------------------------------------------------------------- requests


SERVED = {"text": {}, "image": {}}


def test_request_items_and_modality():
    assert codec.request_items({"modality": "text", "data": "x"}, 4) == ([{"modality": "text", "data": "x"}], False)
    items, is_list = codec.request_items({"modality": "text", "items": [{"data": "a"}, {"modality": "image"}]}, 4)
    assert is_list and [i["modality"] for i in items] == ["text", "image"]
    with pytest.raises(ServiceError) as e:
        codec.request_items({"items": [{}] * 5}, 4)
    assert (e.value.status, e.value.reason) == (413, "too_many_items")
    for bad in ([], "text", {"items": []}, {"items": [1]}):
        with pytest.raises(ServiceError) as e:
            codec.request_items(bad, 4)
        assert e.value.status == 400
    with pytest.raises(ServiceError) as e:
        codec.check_modality({"modality": "audio"}, SERVED, None, "")
    assert (e.value.status, e.value.reason) == (400, "unknown_modality") and "serves text, image" in e.value.message
    assert codec.check_modality({}, SERVED, "image", "") == "image"


def test_raw_media_base64_is_strict():
    assert codec.raw_media({"data": base64.b64encode(b"\x00\xff").decode()}, "image", "") == b"\x00\xff"
    assert codec.raw_media({"data": "plain text"}, "text", "") == "plain text"
    for data in ("no spaces allowed!", 5, None):
        with pytest.raises(ServiceError) as e:
            codec.raw_media({"data": data}, "audio", "items[2].")
        assert e.value.status == 400 and e.value.message.startswith("items[2].data")


IMAGE_FP = {"codebook_size": 1024, "levels": 1, "code_grid": [8, 8]}
AUDIO_FP = {"codebook_size": 1024, "levels": 4, "frame_rate": 31.25}


def test_parse_codes_layouts_and_checks():
    flat = list(range(64))
    assert codec.parse_codes({"codes": flat}, "image", IMAGE_FP, None, None, "").tolist() == flat
    nested = np.arange(64).reshape(8, 8).tolist()
    assert codec.parse_codes({"codes": nested}, "image", IMAGE_FP, None, None, "").tolist() == flat
    # audio nested as (levels, frames) → frame-major storage layout
    a = np.arange(12).reshape(4, 3)
    got = codec.parse_codes({"codes": a.tolist()}, "audio", AUDIO_FP, None, 10.0, "")
    assert got.tolist() == a.T.reshape(-1).tolist()
    for obj, fp, m in (
        ({"codes": flat[:-1]}, IMAGE_FP, "image"),
        ({"codes": [True] * 64}, IMAGE_FP, "image"),
        ({"codes": [[1, 2], [3]]}, IMAGE_FP, "image"),
        ({"codes": [2**70] * 64}, IMAGE_FP, "image"),
        ({"codes": [-1] + flat[1:]}, IMAGE_FP, "image"),
        ({"codes": list(range(5))}, AUDIO_FP, "audio"),
        ({"codes": np.zeros((3, 4), int).tolist()}, AUDIO_FP, "audio"),
        ({"codes": "0 1 2"}, IMAGE_FP, "image"),
        ({}, IMAGE_FP, "image"),
    ):
        with pytest.raises(ServiceError) as e:
            codec.parse_codes(obj, m, fp, None, 10.0, "")
        assert e.value.status == 400, obj
    with pytest.raises(ServiceError) as e:  # 10 s at 31.25 frames/s is 313 frames
        codec.parse_codes({"codes": [0] * 4 * 314}, "audio", AUDIO_FP, None, 10.0, "")
    assert e.value.status == 413


def test_prepare_request_uses_the_job_reasons(image_codec_dir):
    from PIL import Image

    from trimodal.tokenizers.base import load_tokenizer
    from trimodal.tokenizers.prepare import prepare_params

    tok = load_tokenizer("vqmodel", str(image_codec_dir), max_pixels=100 * 100)
    params = prepare_params("vqmodel", tok)
    buf = io.BytesIO()
    Image.new("RGB", (120, 120), (1, 2, 3)).save(buf, format="PNG")
    for data, reason in (
        (buf.getvalue(), "image_too_large"),
        (b"GIF89a junk", "corrupt_image"),
        (b"", "corrupt_image"),
    ):
        with pytest.raises(ServiceError) as e:
            codec.prepare_request("image", "vqmodel", data, "request", params, {})
        assert (e.value.status, e.value.reason) == (422, reason)
    small = io.BytesIO()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(small, format="PNG")
    px = codec.prepare_request("image", "vqmodel", small.getvalue(), "request", params, {})
    assert len(px) == 64 * 64 * 3


def test_media_payload():
    assert codec.media_payload("audio", (np.zeros(4, np.float32), 8000))["media_type"] == "audio/wav"


def test_replica_and_transport_failures_become_503_unavailable():
    """A codec call that fails because its replica or node went away is the client's 503 (retry),
    whichever way it surfaces: an actor error, or a raw gRPC error under direct ingress."""
    import asyncio

    import grpc
    from grpc.aio import AioRpcError, Metadata
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    from trimodal.service.app import Ingress
    from trimodal.service.codec import ServiceError

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
