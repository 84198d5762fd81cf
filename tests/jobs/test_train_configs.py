"""The shipped training configs parse and validate, and their κ-derived values are sane; the
shipped mixes serve as a train config's `mix:`; loading a train config checks its mix in the
driver, before any Ray start."""

import glob
import os

import pytest
import yaml

from trimodal.config import from_yaml
from trimodal.errors import ConfigError
from trimodal.jobs.train import load_train_config, run_train
from trimodal.mixer.config import MixConfig
from trimodal.model.batch_size import derive
from trimodal.model.config import TrainConfig

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "train*.yaml")))
MIXES = sorted(glob.glob(os.path.join(ROOT, "configs", "mix*.yaml")))


def test_there_are_configs():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_validates(path):
    cfg = from_yaml(TrainConfig, path)
    cfg.model.validate()
    seq_len = cfg.mix.seq_len
    horizon = cfg.horizon_tokens or cfg.steps * cfg.logical_batch * seq_len
    assert horizon == pytest.approx(cfg.steps * cfg.logical_batch * seq_len, rel=0.05)
    d = derive(cfg.hyper, cfg.logical_batch, seq_len, horizon)
    assert 0 < d.lr < 1e-2 and all(0.5 < b < 1 for b in d.betas)
    assert not d.warnings or "tiny" in path  # the GPU configs stay below the critical batch


@pytest.mark.parametrize("path", MIXES, ids=os.path.basename)
def test_shipped_mixes_serve_as_a_train_mix(path):
    assert MIXES and "global_batch" not in yaml.safe_load(open(path))  # the trainer's to set
    cfg = load_train_config({"mix": path, "output": "run", "logical_batch": 8})
    assert isinstance(cfg.mix, MixConfig) and cfg.mix.global_batch is None
    local = [s.dataset for s in cfg.mix.sources if not s.dataset.startswith("s3://")]
    assert local and all(os.path.isabs(d) for d in local)  # Ray workers run elsewhere


def test_a_typo_in_the_mix_fails_before_ray_starts(monkeypatch, tmp_path):
    import ray

    def no_ray(*a, **k):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr("trimodal.jobs.train.ensure_ray", no_ray)
    mix = {"sources": [{"name": "web", "dataset": str(tmp_path), "sahre": 1.0}], "seq_len": 64}
    with pytest.raises(ConfigError, match=r"mix\.sources\[0\]\.sahre: unknown key \(did you mean 'share'\?\)"):
        load_train_config({"mix": mix, "output": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match=r"mix\.sources\[0\]\.sahre: unknown key"):
        run_train({"mix": mix, "output": str(tmp_path / "run")})
    p = tmp_path / "train.yaml"
    p.write_text(yaml.safe_dump({"mix": str(tmp_path / "missing.yaml"), "output": str(tmp_path / "run")}))
    with pytest.raises(ConfigError, match=r"mix: config file not found: .*missing\.yaml"):
        run_train(str(p))
    # (Ray may already run in this test session; the patched entry points prove none was used.)
