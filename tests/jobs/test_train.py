"""The trainer through the real Ray Train path (TorchTrainer, 2 CPU workers, DDP over gloo), fed
by the real mixer on a small dataset written with the pipeline's own writer.

Two Ray Train runs in all (each costs ~30 s here): an uninterrupted one, which must overfit the
dataset, and one whose rank-1 worker is SIGKILLed after a checkpoint and restarted by Ray Train,
which must reproduce the uninterrupted loss curve. A one-worker run in this process then shows
that the losses do not depend on the world size.
"""

import json

import numpy as np
import pytest
import torch

from trimodal.dataset.dataset import build_dataset
from trimodal.jobs.eval import run_eval
from trimodal.jobs.train import loss_curve, read_metrics, run_train
from trimodal.model.checkpoint import list_checkpoints, load_model
from trimodal.model.data import open_stream
from trimodal.model.evaluate import elbo, unigram_entropy

pytestmark = pytest.mark.slow  # starts Ray (Ray Train)

FPS = {
    "text": {
        "kind": "sentencepiece",
        "name": "t",
        "modality": "text",
        "codebook_size": 100,
        "levels": 1,
        "weights_sha256": "a",
    },
    "image": {
        "kind": "vqmodel",
        "name": "i",
        "modality": "image",
        "codebook_size": 64,
        "levels": 1,
        "code_grid": [4, 4],
        "image_size": 32,
        "weights_sha256": "b",
    },
}
STEPS, CKPT, KILL = 150, 50, 120

pytestmark = pytest.mark.slow  # Ray Train


@pytest.fixture(scope="module")
def tiny_mix(tmp_path_factory):
    """8 text documents and 4 caption+image pairs: small enough to memorize."""
    root = tmp_path_factory.mktemp("trainmix")
    rng = np.random.default_rng(0)
    text = [
        {
            "id": f"web/{i}",
            "source": "web",
            "text": rng.integers(0, 100, rng.integers(12, 20)).astype(np.int32),
            "image": None,
            "audio": None,
            "origin": f"raw://web/{i}",
        }
        for i in range(8)
    ]
    pairs = [
        {
            "id": f"img/{i}",
            "source": "img",
            "text": rng.integers(0, 100, 4).astype(np.int32),
            "image": rng.integers(0, 64, 16).astype(np.int32),
            "audio": None,
            "origin": f"raw://img/{i}",
        }
        for i in range(4)
    ]
    build_dataset(str(root / "text"), text, {"text": FPS["text"]}, shard_rows=4)
    build_dataset(str(root / "image"), pairs, FPS, shard_rows=4)
    return {
        "sources": [
            {"name": "text", "dataset": str(root / "text"), "share": 0.6},
            {"name": "image", "dataset": str(root / "image"), "share": 0.4},
        ],
        "seq_len": 48,
        "seed": 3,
    }


def config(mix, output, **kw):
    cfg = {
        "mix": mix,
        "output": str(output),
        "steps": STEPS,
        "num_workers": 2,
        "physical_batch": 16,
        "logical_batch": 32,
        "checkpoint_every": CKPT,
        "keep_checkpoints": 0,
        "tensorboard": False,
        "optim": {"warmup_steps": 10, "weight_decay": 0.0},
        # the reference batch and horizon are this run's: κ = 1, lr = lr_base
        "hyper": {"lr_base": 1e-2, "base_batch_tokens": 32 * 48, "base_horizon_tokens": STEPS * 32 * 48},
        "diffusion": {"cfg_drop_prob": 0.1},
    }
    cfg.update(kw)
    return cfg


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_ray_train_overfits_then_kill_resume_and_world_size_give_the_same_curve(
    ray_cluster, tiny_mix, tmp_path, monkeypatch
):
    ev = {"mix": tiny_mix, "tokens": 8 * 48, "n_t": 2, "seeds": 2, "batch": 2}
    ref = run_train(config(tiny_mix, tmp_path / "ref", eval=ev), address=ray_cluster)
    ref_curve = loss_curve(ref["log_dir"])
    assert sorted(ref_curve) == list(range(1, STEPS + 1)) and ref["world_size"] == 2

    # The eval of 2 DDP workers (each its batches, sums all-reduced) is `trimodal eval` of the
    # final checkpoint in one process, and far below the unigram line on these seen rows.
    one = run_eval(str(tmp_path / "ref"), mix=tiny_mix, tokens=8 * 48, n_t=2, seeds=2, batch=2, in_process=True)
    assert ref["eval"]["step"] == STEPS and ref["eval"]["rows"] == one["rows"] == 8
    assert ref["eval"]["all"]["nelbo"] == pytest.approx(one["all"]["nelbo"], rel=1e-5)
    assert ref["eval"]["all"]["nelbo"] < 0.6 * ref["eval"]["all"]["unigram"]
    assert [s for s, _ in list_checkpoints(str(tmp_path / "ref"))] == [50, 100, 150]

    # Overfits: the deterministic ELBO of the final model is far below the unigram entropy
    # (the loss of the best context-free model), and far below where it started.
    model, vocab, cfg = load_model(str(tmp_path / "ref"))
    stream = open_stream(tiny_mix, 0, 1, 8)
    batches = [next(stream) for _ in range(4)]
    h = unigram_entropy(batches)
    final = elbo(model, vocab, batches, n_t=8)
    assert final["all"]["nelbo"] < 0.6 * h, (final, h)
    assert final["all"]["unigram"] == pytest.approx(h)
    assert ref["first_loss"] > h
    assert set(final["modality"]) >= {"text", "image"}

    # A worker is SIGKILLed after step 120 (last checkpoint: 100); Ray Train restarts the group,
    # which resumes from step 100 with the identical data stream and noise.
    run = tmp_path / "killed"
    monkeypatch.setenv("TRIMODAL_FAULTS", json.dumps({"train_kill_at_step": KILL, "train_kill_rank": 1}))
    out = run_train(config(tiny_mix, run, max_failures=1), address=ray_cluster)
    monkeypatch.delenv("TRIMODAL_FAULTS")
    assert (run / f".killed-at-{KILL}").exists()
    starts = [r for r in read_metrics(out["log_dir"]) if r.get("event") == "start"]
    resumed = KILL // CKPT * CKPT
    assert [s["start_step"] for s in starts] == [0, resumed]
    assert starts[1]["resumed_from"].endswith(f"step-{resumed:08d}")
    assert loss_curve(out["log_dir"]) == pytest.approx(ref_curve, rel=1e-6, abs=0)
    assert out["final_loss"] == pytest.approx(ref["final_loss"], rel=1e-6)

    # One worker in this process with 2 micro-batches instead of 2 workers × 1: the same rows,
    # noise and normalization, so the same curve up to float summation order (compared while
    # rounding differences are still small).
    solo = run_train(config(tiny_mix, tmp_path / "solo", stop_at_step=CKPT), in_process=True)
    solo_curve = loss_curve(solo["log_dir"])
    assert sorted(solo_curve) == list(range(1, CKPT + 1)) and solo["world_size"] == 1
    diffs = [abs(solo_curve[s] / ref_curve[s] - 1) for s in sorted(solo_curve)]
    assert max(diffs) < 1e-4, diffs  # measured: ~1e-6 after 50 steps
