"""The train config owns its parts: the mix is a typed MixConfig (inline or a YAML path) or a
synthetic stream, checked with the train config; a training mix leaves `global_batch` to the
trainer; tokenizers are the one TokenizerSpec."""

import typing

import pytest
import yaml

import trimodal.model.config as model_config
from trimodal.config import from_dict, to_dict
from trimodal.errors import ConfigError
from trimodal.mixer.config import MixConfig, MixSource
from trimodal.model.config import SyntheticStreamConfig, TrainConfig, stream_config
from trimodal.pipeline.job_config import JobConfig
from trimodal.tokenizers.spec import TokenizerSpec

from .conftest import FPS

MIX = {"sources": [{"name": "web", "dataset": "data/web", "share": 1.0}], "seq_len": 64}


def train(mix, **kw) -> dict:
    return {"mix": mix, "output": "run", **kw}


def test_inline_mix_is_typed():
    cfg = from_dict(TrainConfig, train(MIX))
    assert isinstance(cfg.mix, MixConfig) and isinstance(cfg.mix.sources[0], MixSource)
    assert cfg.mix.seq_len == 64 and cfg.mix.global_batch is None
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg  # what Ray workers and checkpoints get back


def test_a_typo_in_the_mix_names_its_full_key():
    bad = {**MIX, "sources": [{"name": "web", "dataset": "d", "sahre": 1.0}]}
    with pytest.raises(ConfigError, match=r"train\.mix\.sources\[0\]\.sahre: unknown key \(did you mean 'share'\?\)"):
        from_dict(TrainConfig, train(bad), where="train")
    with pytest.raises(ConfigError, match=r"train\.mix\.sources\[0\]: share: must be >= 0"):
        from_dict(TrainConfig, train({**MIX, "sources": [{"name": "w", "dataset": "d", "share": -1}]}), where="train")
    with pytest.raises(ConfigError, match=r"train\.mix: seq_len: must be >= 8"):
        from_dict(TrainConfig, train({**MIX, "seq_len": 4}), where="train")


def test_a_mix_path_is_read_with_the_train_config(tmp_path):
    p = tmp_path / "mix.yaml"
    p.write_text(yaml.safe_dump(MIX))
    cfg = from_dict(TrainConfig, train(str(p)))
    assert isinstance(cfg.mix, MixConfig) and cfg.mix.sources[0].name == "web"
    p.write_text(yaml.safe_dump({**MIX, "seq_lne": 64}))
    with pytest.raises(ConfigError, match=rf"{p}: train\.mix\.seq_lne: unknown key \(did you mean 'seq_len'\?\)"):
        from_dict(TrainConfig, train(str(p)), where="train")


def test_a_missing_mix_path_is_named(tmp_path):
    missing = tmp_path / "nope" / "mix.yaml"
    with pytest.raises(ConfigError, match=rf"^train\.mix: config file not found: {missing}$"):
        from_dict(TrainConfig, train(str(missing)), where="train")
    with pytest.raises(ConfigError, match=r"train\.mix: expected a mix mapping or the path of a mix YAML, got 3"):
        from_dict(TrainConfig, train(3), where="train")


def test_global_batch_is_the_trainers(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.mix\.global_batch: 16: leave it out of a training mix"):
        from_dict(TrainConfig, train({**MIX, "global_batch": 16}, logical_batch=16), where="train")
    p = tmp_path / "mix.yaml"
    p.write_text(yaml.safe_dump({**MIX, "global_batch": 512}))
    with pytest.raises(ConfigError, match=rf"{p}: train\.mix\.global_batch: 512"):
        from_dict(TrainConfig, train(str(p)), where="train")
    # the same mix on its own (Mixer, mix preview) may carry one
    assert stream_config({**MIX, "kind": "mixer"}).global_batch is None
    assert from_dict(MixConfig, {**MIX, "global_batch": 512}).global_batch == 512


def test_the_stream_kind_chooses_the_config():
    from trimodal.model.data import STREAMS

    assert set(STREAMS) == set(model_config.STREAM_KINDS)  # config.py names them without importing data.py
    spec = {"kind": "synthetic", "fingerprints": FPS, "seq_len": 32, "pool": 4}
    cfg = from_dict(TrainConfig, train(spec))
    assert isinstance(cfg.mix, SyntheticStreamConfig) and cfg.mix.pool == 4 and cfg.mix.doc_len is None
    assert stream_config(to_dict(cfg.mix)) == cfg.mix
    with pytest.raises(ConfigError, match=r"train\.mix\.kind: 'nope' is not one of \['mixer', 'synthetic'\]"):
        from_dict(TrainConfig, train({"kind": "nope"}), where="train")
    with pytest.raises(ConfigError, match=r"train\.mix\.sources: unknown key"):
        from_dict(TrainConfig, train({**spec, "sources": []}), where="train")
    with pytest.raises(ConfigError, match=r"train\.mix: pool: must be >= 1"):
        from_dict(TrainConfig, train({**spec, "pool": 0}), where="train")


def test_one_tokenizer_spec_for_jobs_and_training(tmp_path):
    hints = typing.get_type_hints(TrainConfig)
    assert typing.get_args(hints["tokenizers"])[1] is TokenizerSpec
    assert typing.get_args(typing.get_type_hints(JobConfig)["tokenizers"])[1] is TokenizerSpec
    assert not hasattr(model_config, "TokenizerRef")
    cfg = from_dict(
        TrainConfig, train(MIX, tokenizers={"audio": {"kind": "dac", "path": "/models/dac.pth", "levels": 2}})
    )
    assert cfg.tokenizers["audio"].load_options("audio") == {"n_levels": 2}  # the path need not exist here
    with pytest.raises(ConfigError, match=r"tokenizers\.audio: levels: must be >= 1"):
        from_dict(TrainConfig, train(MIX, tokenizers={"audio": {"kind": "dac", "path": "x", "levels": 0}}))


def test_the_eval_section_is_typed_and_checked_once(tmp_path):
    p = tmp_path / "eval_mix.yaml"
    p.write_text(yaml.safe_dump(dict(MIX, global_batch=16)))  # an eval mix's own batch is ignored
    cfg = from_dict(TrainConfig, train(MIX, eval={"every": 5, "tokens": 4096, "mix": str(p)}))
    assert cfg.eval.every == 5 and isinstance(cfg.eval.mix, MixConfig) and cfg.eval.mix.global_batch is None
    assert from_dict(TrainConfig, to_dict(cfg)).eval == cfg.eval
    with pytest.raises(ConfigError, match=r"train\.eval: n_t: must be >= 1"):
        from_dict(TrainConfig, train(MIX, eval={"mix": MIX, "n_t": 0}), where="train")
    with pytest.raises(ConfigError, match=r"train\.eval\.evry: unknown key"):
        from_dict(TrainConfig, train(MIX, eval={"mix": MIX, "evry": 1}), where="train")
    with pytest.raises(ConfigError, match=r"train\.eval\.mix: seq_len: must be >= 8"):
        from_dict(TrainConfig, train(MIX, eval={"mix": {"sources": MIX["sources"], "seq_len": 4}}), where="train")
    # no eval mix and no holdout in the training mix: nothing to evaluate on
    with pytest.raises(ConfigError, match=r"eval\.mix: not given, and the training mix has no holdout"):
        from_dict(TrainConfig, train(MIX, eval={"every": 5}), where="train")


def test_eval_batches_is_replaced_by_eval_but_old_checkpoint_configs_load():
    assert from_dict(TrainConfig, train(MIX, eval_batches=0)).eval is None
    with pytest.raises(ConfigError, match=r"eval_batches: replaced by `eval:"):
        from_dict(TrainConfig, train(MIX, eval_batches=2))
