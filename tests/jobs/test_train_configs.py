"""The shipped training configs parse and validate, and their κ-derived values are sane."""

import glob
import os

import pytest

from trimodal.config import from_yaml
from trimodal.model.batch_size import derive
from trimodal.model.config import TrainConfig

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "train*.yaml")))


def test_there_are_configs():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_validates(path):
    cfg = from_yaml(TrainConfig, path)
    cfg.model.validate()
    seq_len = cfg.mix["seq_len"]
    horizon = cfg.horizon_tokens or cfg.steps * cfg.logical_batch * seq_len
    assert horizon == pytest.approx(cfg.steps * cfg.logical_batch * seq_len, rel=0.05)
    d = derive(cfg.hyper, cfg.logical_batch, seq_len, horizon)
    assert 0 < d.lr < 1e-2 and all(0.5 < b < 1 for b in d.betas)
    assert not d.warnings or "tiny" in path  # the GPU configs stay below the critical batch
