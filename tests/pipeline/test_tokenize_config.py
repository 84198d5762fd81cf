"""The tokenize job's config: typed loading, validation naming the key, options for the tokenizers."""

from __future__ import annotations

import pytest

from trimodal.config import from_dict, from_yaml
from trimodal.errors import ConfigError
from trimodal.pipeline.job_config import JobConfig, Limits, check_inputs
from trimodal.tokenizers.spec import TokenizerSpec


def _cfg(tmp_path, **over) -> dict:
    model = tmp_path / "m.model"
    model.write_bytes(b"x")
    docs = tmp_path / "a.jsonl"
    docs.write_text('{"text": "hi"}\n')
    cfg = {
        "sources": [{"name": "docs", "kind": "text", "paths": [str(docs)]}],
        "tokenizers": {"text": {"kind": "sentencepiece", "path": str(model)}},
        "output": {"uri": str(tmp_path / "out")},
    }
    cfg.update(over)
    return cfg


def test_defaults_are_fractional_and_resume(tmp_path):
    cfg = from_dict(JobConfig, _cfg(tmp_path))
    assert 0 < cfg.ray.num_cpus_per_actor < 1 and 0 < cfg.ray.read_num_cpus < 1
    assert cfg.output.mode == "resume" and cfg.ray.num_gpus_per_actor is None
    assert cfg.modalities() == ["text"] and cfg.batch_size("text") == 512
    assert cfg.ray.actors_for("image") == 1


def test_yaml_round_trip_and_unknown_key(tmp_path):
    import yaml

    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(_cfg(tmp_path, ray={"actors": {"text": 3}, "num_cpus_per_actor": 0.5})))
    cfg = from_yaml(JobConfig, p)
    assert cfg.ray.actors_for("text") == 3 and cfg.ray.num_cpus_per_actor == 0.5
    bad = _cfg(tmp_path)
    bad["limits"] = {"max_audio_second": 3}
    with pytest.raises(ConfigError, match=r"limits\.max_audio_second: unknown key \(did you mean 'max_audio_seconds'"):
        from_dict(JobConfig, bad)


@pytest.mark.parametrize(
    "over, key",
    [
        ({"sources": []}, "sources"),
        ({"output": {"uri": "x", "shard_rows": 0}}, "shard_rows"),
        ({"ray": {"num_cpus_per_actor": -1}}, "num_cpus_per_actor"),
        ({"ray": {"actors": {"text": 0}}}, "actors.text"),
        ({"progress": {"interval_s": -2}}, "interval_s"),
        ({"limits": {"image_resolution": 0}}, "image_resolution"),
    ],
)
def test_ranges_are_checked(tmp_path, over, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(JobConfig, _cfg(tmp_path, **over))


def test_duplicate_source_and_missing_tokenizer(tmp_path):
    c = _cfg(tmp_path)
    c["sources"].append(dict(c["sources"][0]))
    with pytest.raises(ConfigError, match=r"sources\[1\]\.name: duplicate"):
        from_dict(JobConfig, c)
    c = _cfg(tmp_path)
    c["sources"].append({"name": "clips", "kind": "audio_text", "paths": ["x.tar"]})
    with pytest.raises(ConfigError, match=r"tokenizers\.audio: required by sources\[1\]"):
        from_dict(JobConfig, c)


def test_missing_input_is_named_before_work(tmp_path):
    cfg = from_dict(JobConfig, _cfg(tmp_path))
    cfg.sources[0].paths = [str(tmp_path / "nope" / "*.jsonl")]
    with pytest.raises(ConfigError, match=r"sources\[0\]\.paths: .*nope"):
        check_inputs(cfg)


def test_limits_and_fields_become_tokenizer_options(tmp_path):
    limits = Limits(max_text_tokens=100, max_audio_seconds=12.5, image_resolution=128, max_image_pixels=10_000)
    p = str(tmp_path)
    assert TokenizerSpec("sentencepiece", p, threads=3, device="cuda").load_options("text", limits) == {
        "num_threads": 3,
        "max_tokens": 100,
    }
    assert TokenizerSpec("vqmodel", p, batch_size=4, device="cuda").load_options("image", limits) == {
        "batch_size": 4,
        "device": "cuda",
        "image_size": 128,
        "max_pixels": 10_000,
    }
    assert TokenizerSpec("dac", p, levels=2).load_options("audio", limits) == {"n_levels": 2, "max_seconds": 12.5}


def test_audio_is_never_cut_by_the_codec(tmp_path):
    p = str(tmp_path)
    # No limit: the codec must not fall back on its own 30 s cut.
    assert TokenizerSpec("dac", p).load_options("audio", Limits(max_audio_seconds=None)) == {"max_seconds": None}
    # A codec cut other than the limit would truncate clips the limit keeps.
    with pytest.raises(ConfigError, match=r"options\.max_seconds: 5.0 differs from limits\.max_audio_seconds \(12.5\)"):
        TokenizerSpec("dac", p, options={"max_seconds": 5.0}).load_options("audio", Limits(max_audio_seconds=12.5))
    same = TokenizerSpec("dac", p, options={"max_seconds": 12.5}).load_options("audio", Limits(max_audio_seconds=12.5))
    assert same == {"max_seconds": 12.5}


def test_unlimited_audio_reaches_the_codec_whole(audio_codec_path):
    # limits.max_audio_seconds: null used to leave the codec's default 30 s cut in place, so a
    # 40 s clip was silently encoded as its first 30 s.
    import numpy as np

    from trimodal.pipeline.encode import PREPARERS, prepare_params
    from trimodal.tokenizers.base import load_tokenizer

    limits = Limits(max_audio_seconds=None)
    tok = load_tokenizer(
        "dac", audio_codec_path, **TokenizerSpec("dac", audio_codec_path).load_options("audio", limits)
    )
    assert tok.fingerprint()["preprocess"]["max_seconds"] is None
    rate = 16000
    clip = (0.1 * np.sin(np.arange(40 * rate) / 7.0)).astype(np.float32)
    _, prepare, _ = PREPARERS["dac"]
    prepared = prepare(_flac(clip, rate), "long", prepare_params("dac", tok), {"max_audio_seconds": None})
    assert len(np.frombuffer(prepared, dtype=np.float32)) == 40 * tok.sample_rate
    # With a limit, the same clip is quarantined (audio_too_long), not cut.
    from trimodal.errors import SampleError

    with pytest.raises(SampleError, match="exceeds limits.max_audio_seconds=30"):
        prepare(_flac(clip, rate), "long", prepare_params("dac", tok), {"max_audio_seconds": 30.0})


def _flac(wave, rate) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="FLAC")
    return buf.getvalue()


def test_sources_are_corpus_sources_and_tokenizer_paths_must_exist(tmp_path):
    from trimodal.pipeline.retokenize import RetokenizeConfig
    from trimodal.pipeline.sources import CorpusSource

    cfg = from_dict(JobConfig, _cfg(tmp_path))
    assert type(cfg.sources[0]) is CorpusSource and type(cfg.tokenizers["text"]) is TokenizerSpec
    c = _cfg(tmp_path)
    c["tokenizers"]["text"]["path"] = str(tmp_path / "none.model")
    with pytest.raises(ConfigError, match=r"^job\.yaml: tokenizers\.text: path: tokenizer not found: .*none\.model$"):
        from_dict(JobConfig, c, where="job.yaml")
    retok = {"dataset": "a", "modality": "text", "out": "b", "tokenizer": {"kind": "sentencepiece", "path": "/no/m"}}
    with pytest.raises(ConfigError, match=r"tokenizer: path: tokenizer not found: /no/m"):
        from_dict(RetokenizeConfig, retok)
    with pytest.raises(ConfigError, match=r"RetokenizeConfig\.tokenizer: levels: must be >= 1, got 0"):
        from_dict(RetokenizeConfig, {**retok, "tokenizer": {"kind": "dac", "path": "/no/m", "levels": 0}})
