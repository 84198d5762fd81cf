"""The service's config and bind rules, without Ray: every check here runs before a replica
starts, so a wrong key or an unsafe bind costs a second, not a cluster."""

from __future__ import annotations

import pytest
import yaml

from trimodal.errors import ConfigError, IntegrityError
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
