"""Shared sweep test data: two small datasets built without Ray (`build_dataset`), a train
mix with two sources on them, an eval mix, and a sweep config factory over them."""

import numpy as np
import pytest
import yaml

from trimodal.dataset.dataset import build_dataset

FPS = {
    "text": {"kind": "sentencepiece", "name": "t", "codebook_size": 40, "levels": 1, "weights_sha256": "t"},
    "image": {
        "kind": "vqmodel",
        "name": "i",
        "codebook_size": 16,
        "levels": 1,
        "code_grid": [2, 2],
        "weights_sha256": "i",
    },
}


def _dataset(path, n, seed, pairs: bool):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pair = pairs and i % 2 == 1
        rows.append(
            {
                "id": f"d/{i}",
                "source": "d",
                "text": rng.integers(0, 40, 5 if pair else 12).astype(np.int32),
                "image": rng.integers(0, 16, 4).astype(np.int32) if pair else None,
                "audio": None,
                "origin": "",
            }
        )
    build_dataset(str(path), rows, FPS)
    return str(path)


@pytest.fixture(scope="session")
def sweep_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweepdata")
    text = _dataset(root / "text", 32, 0, pairs=False)
    pairs = _dataset(root / "pairs", 32, 1, pairs=True)
    held = _dataset(root / "held", 12, 2, pairs=True)
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
