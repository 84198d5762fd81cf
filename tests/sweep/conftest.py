"""Shared sweep test data: two small datasets built without Ray (`build_dataset`), a train
mix with two sources on them, an eval mix, and a sweep config factory over them."""

import pytest
import yaml

from tests.model.conftest import text_image_dataset


@pytest.fixture(scope="session")
def sweep_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweepdata")
    text = text_image_dataset(root / "text", 32, 0, pairs=False)
    pairs = text_image_dataset(root / "pairs", 32, 1, pairs=True)
    held = text_image_dataset(root / "held", 12, 2, pairs=True)
    eval_mix = root / "heldout.yaml"
    eval_mix.write_text(
        yaml.safe_dump({"sources": [{"name": "h", "dataset": held, "share": 1.0, "reverse_prob": 0.5}], "seq_len": 32})
    )
    base = {
        "mix": {
            "sources": [
                {"name": "text", "dataset": text, "share": 0.6},
                {"name": "pairs", "dataset": pairs, "share": 0.4, "reverse_prob": 0.5},
            ],
            "seq_len": 32,
            "seed": 0,
        },
        "steps": 4,
        "physical_batch": 4,
        "logical_batch": 4,
        "checkpoint_every": 2,
        "tensorboard": False,
        "prefetch": 0,
        "optim": {"warmup_steps": 1},
        "hyper": {"lr_base": 3e-3, "base_batch_tokens": 128, "base_horizon_tokens": 1e4},
        "num_workers": 1,
        "cpus_per_worker": 0.5,
    }
    return {"root": root, "base": base, "eval_mix": str(eval_mix)}


def sweep_config(data, storage, **kw) -> dict:
    cfg = {
        "name": "t",
        "base": data["base"],
        "storage_path": str(storage),
        "eval": {"mix": data["eval_mix"], "tokens": 256, "n_t": 2, "seeds": 2, "batch": 4},
    }
    cfg.update(kw)
    return cfg
