"""MixConfig: its sources are `MixSource`s (the corpus source of a tokenize job is another
class, `trimodal.pipeline.sources.CorpusSource`), loaded from a mapping or a YAML path."""

import dataclasses

import pytest
import yaml

import trimodal.mixer
import trimodal.mixer.config as mixer_config
import trimodal.pipeline.sources as pipeline_sources
from trimodal.errors import ConfigError
from trimodal.mixer.config import MixConfig, MixSource, load_mix
from trimodal.pipeline.sources import CorpusSource

MIX = {"sources": [{"name": "web", "dataset": "d", "share": 1.0, "reverse_prob": 0.1}], "seq_len": 64}


def test_mix_sources_are_mix_sources_and_the_old_name_is_gone(tmp_path):
    p = tmp_path / "mix.yaml"
    p.write_text(yaml.safe_dump(MIX))
    for cfg in (load_mix(MIX), load_mix(str(p))):
        assert isinstance(cfg, MixConfig) and type(cfg.sources[0]) is MixSource
        assert cfg.source("web").reverse_prob == 0.1
    assert MixSource is not CorpusSource
    assert {f.name for f in dataclasses.fields(MixSource)} >= {"dataset", "share"}
    assert {f.name for f in dataclasses.fields(CorpusSource)} >= {"kind", "paths"}
    for module in (mixer_config, trimodal.mixer, pipeline_sources):
        assert not hasattr(module, "SourceConfig")
    assert "MixSource" in trimodal.mixer.__all__


def test_mix_source_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"mix\.sources\[0\]: reverse_prob: must be in \[0, 1\]"):
        load_mix({**MIX, "sources": [{"name": "web", "dataset": "d", "share": 1.0, "reverse_prob": 2}]})
