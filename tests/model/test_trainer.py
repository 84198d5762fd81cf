"""The training loop in-process (no Ray): kill → resume replays the same loss curve, the loss
does not depend on how the logical batch is cut into micro-batches, checkpoints on S3,
refusing to overwrite a run. The Ray Train path is tested in tests/jobs/test_train.py."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from trimodal.errors import ConfigError
from trimodal.jobs.train import loss_curve, read_metrics, read_summary, run_train
from trimodal.model.checkpoint import list_checkpoints, load_model, read_json

from .conftest import FPS


def config(output, **kw):
    cfg = {
        "mix": {"kind": "synthetic", "fingerprints": FPS, "seq_len": 32, "pool": 12, "seed": 0},
        "output": str(output),
        "steps": 8,
        "physical_batch": 4,
        "logical_batch": 8,
        "checkpoint_every": 4,
        "keep_checkpoints": 0,
        "tensorboard": False,
        "prefetch": 1,
        "optim": {"warmup_steps": 2},
        "hyper": {"lr_base": 3e-3, "base_batch_tokens": 256, "base_horizon_tokens": 2048},
    }
    cfg.update(kw)
    return cfg


@pytest.mark.slow  # spawns a subprocess
def test_kill_and_resume_replays_the_same_loss_curve(tmp_path):
    ref = run_train(config(tmp_path / "ref"), in_process=True)
    ref_curve = loss_curve(ref["log_dir"])
    assert sorted(ref_curve) == list(range(1, 9))

    run = tmp_path / "run"
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(config(run)))
    # crash injection goes through the environment, never the config (docs/design.md)
    env = dict(os.environ, OMP_NUM_THREADS="1", TRIMODAL_FAULTS=json.dumps({"train_kill_at_step": 6}))
    proc = subprocess.run(
        [sys.executable, "-m", "trimodal", "train", str(cfg_path), "--in-process"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILLed after step 6
    assert [s for s, _ in list_checkpoints(str(run))] == [4]  # steps 5 and 6 were lost with the process
    assert max(loss_curve(str(run))) == 6

    with pytest.raises(ConfigError, match="--resume"):
        run_train(str(cfg_path), in_process=True)
    out = run_train(str(cfg_path), in_process=True, resume=True)
    assert out["resumed_from"].endswith("step-00000004") and out["start_step"] == 4
    assert loss_curve(str(run)) == pytest.approx(ref_curve, rel=1e-6, abs=0)
    assert out["final_loss"] == pytest.approx(ref["final_loss"], rel=1e-6)
    assert out["first_loss"] == pytest.approx(ref["first_loss"], rel=1e-6)  # carried through the checkpoint
    assert [s for s, _ in list_checkpoints(str(run))] == [4, 8]


def test_micro_batching_does_not_change_the_losses(tmp_path):
    """The same logical batch cut into 1 or 4 micro-batches: same noise per row, same
    normalization, so the same loss curve up to float summation order."""
    a = run_train(config(tmp_path / "a", physical_batch=8, steps=5), in_process=True)
    b = run_train(config(tmp_path / "b", physical_batch=2, steps=5), in_process=True)
    ca, cb = loss_curve(a["log_dir"]), loss_curve(b["log_dir"])
    assert ca == pytest.approx(cb, rel=1e-4)


def test_checkpoints_and_summary_on_s3(s3_bucket, tmp_path):
    uri = f"s3://{s3_bucket}/runs/r1"
    out = run_train(
        config(uri, steps=3, checkpoint_every=2, keep_checkpoints=1, log_dir=str(tmp_path / "logs")), in_process=True
    )
    assert [s for s, _ in list_checkpoints(uri)] == [3]  # step 2 pruned, keep 1
    assert read_summary(uri)["final_loss"] == pytest.approx(out["final_loss"])
    ck = out["checkpoint"]
    state = read_json(ck, "state.json")
    assert state["step"] == 3 and state["mixer"] == {"position": 24}
    model, vocab, cfg = load_model(uri)
    assert vocab.size == model.vocab_size and cfg.steps == 3
    from trimodal.dataset.storage import resolve

    lines = resolve(uri).join("metrics.jsonl").read_bytes().decode().splitlines()
    assert any(json.loads(l_).get("step") == 3 for l_ in lines)  # a copy of the metrics beside the checkpoints
    assert os.path.exists(tmp_path / "logs" / "metrics.jsonl")


def test_logged_hyperparameters_and_metrics(tmp_path):
    out = run_train(config(tmp_path / "m", steps=2, tensorboard=True), in_process=True)
    recs = [json.loads(l_) for l_ in open(os.path.join(out["log_dir"], "metrics.jsonl"))]
    start = next(r for r in recs if r.get("event") == "start")
    assert start["hyper"]["lr"] == pytest.approx(out["hyper"]["lr"]) and start["accum_steps"] == 2
    step = next(r for r in recs if r.get("step") == 2 and "loss" in r and "event" not in r)
    for k in ("loss", "lr", "tokens_per_s", "data_wait_frac", "grad_norm", "loss.text"):
        assert k in step
    assert os.listdir(os.path.join(out["log_dir"], "tb"))  # TensorBoard event file


def test_training_stops_cleanly_when_the_data_runs_out(tmp_path):
    import numpy as np

    from trimodal.dataset.dataset import build_dataset

    rng = np.random.default_rng(0)
    rows = [
        {
            "id": f"t/{i}",
            "source": "t",
            "text": rng.integers(0, 40, 30).astype(np.int32),
            "image": None,
            "audio": None,
            "origin": "",
        }
        for i in range(20)
    ]
    build_dataset(str(tmp_path / "ds"), rows, {"text": FPS["text"]})
    mix = {
        "sources": [{"name": "t", "dataset": str(tmp_path / "ds"), "share": 1.0, "max_epochs": 1}],
        "seq_len": 32,
        "seed": 0,
    }
    out = run_train(config(tmp_path / "run", mix=mix, steps=50, checkpoint_every=100), in_process=True)
    # 20 documents of 32 tokens (with <bos>/<eos>) fill about 20 packed rows of 32: 3 steps of 8
    assert 2 <= out["step"] < 50
    recs = [json.loads(l_) for l_ in open(os.path.join(out["log_dir"], "metrics.jsonl"))]
    assert any(r.get("event") == "data_exhausted" for r in recs)
    assert [s for s, _ in list_checkpoints(str(tmp_path / "run"))] == [out["step"]]


def test_eval_during_training_logs_records_and_the_summary_holds_the_final_one(tmp_path):
    """`eval: {every, tokens, mix}` logs eval.* records every `every` steps and after the last
    (metrics.jsonl; TensorBoard takes the same records), and summary.json holds the last
    evaluation, equal to `trimodal eval` of the final checkpoint on the same rows and draws."""
    from trimodal.jobs.eval import run_eval

    eval_mix = {"kind": "synthetic", "fingerprints": FPS, "seq_len": 32, "pool": 6, "seed": 7}
    ev = {"every": 3, "tokens": 5 * 32, "mix": eval_mix, "n_t": 2, "seeds": 2, "batch": 2}
    out = run_train(config(tmp_path / "e", steps=7, eval=ev, tensorboard=True), in_process=True)
    recs = [r for r in read_metrics(out["log_dir"]) if "eval.nelbo" in r]
    assert [r["step"] for r in recs] == [3, 6, 7]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(os.path.join(out["log_dir"], "tb"))
    tb.Reload()
    assert [e.step for e in tb.Scalars("eval/nelbo/text")] == [3, 6, 7]
    assert "eval/task/t2i/nelbo" in tb.Tags()["scalars"]
    assert all(r["eval.nelbo.text"] > 0 and r["eval.unigram.text"] > 0 for r in recs)
    final = read_summary(str(tmp_path / "e"))["eval"]
    assert final["step"] == 7 and final["rows"] == 5
    assert final["all"]["nelbo"] == pytest.approx(recs[-1]["eval.nelbo"])
    cli = run_eval(str(tmp_path / "e"), mix=eval_mix, tokens=5 * 32, n_t=2, seeds=2, batch=2, in_process=True)
    assert cli["all"]["nelbo"] == pytest.approx(final["all"]["nelbo"], rel=1e-5)
    assert "eval" not in run_train(config(tmp_path / "n", steps=1), in_process=True)


def test_eval_without_a_mix_needs_a_holdout(tmp_path):
    with pytest.raises(ConfigError, match="eval.mix"):
        run_train(config(tmp_path / "h", eval={"every": 1}), in_process=True)


def test_a_malformed_fault_spec_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIMODAL_FAULTS", json.dumps({"train_kill_at_step": "six"}))
    with pytest.raises(ConfigError, match="train_kill_at_step"):
        run_train(config(tmp_path / "f", steps=1), in_process=True)


def test_start_record_warns_about_padding(tmp_path):
    """One short document per row (pack: false) pads about half of the positions: the start
    record says how much, and a warning follows; the packed default does not warn."""
    import numpy as np

    from trimodal.dataset.dataset import build_dataset

    rng = np.random.default_rng(0)
    text = [rng.integers(0, 40, 14).astype(np.int32) for _ in range(40)]
    rows = [
        {"id": f"t/{i}", "source": "t", "text": t, "image": None, "audio": None, "origin": ""}
        for i, t in enumerate(text)
    ]
    build_dataset(str(tmp_path / "ds"), rows, {"text": FPS["text"]})
    src = {"name": "t", "dataset": str(tmp_path / "ds"), "share": 1.0}
    for pack, warned in ((False, True), (True, False)):
        mix = {"sources": [dict(src, pack=pack)], "seq_len": 32, "seed": 0}
        out = run_train(config(tmp_path / f"run-{pack}", mix=mix, steps=1), in_process=True)
        recs = [json.loads(l_) for l_ in open(os.path.join(out["log_dir"], "metrics.jsonl"))]
        start = next(r for r in recs if r.get("event") == "start")
        warnings = [r["message"] for r in recs if r.get("event") == "warning" and "padding" in r["message"]]
        assert bool(warnings) == warned
        assert (start["padding_frac"] > 0.4) == warned  # 16 of 32 positions per row when padded


def test_compute_accounting_in_every_record_and_through_a_resume(tmp_path):
    """Start, step records and summary hold parameters, FLOPs per token, real and padded
    tokens and the cumulative FLOPs C (model/flops.py), C equal to the count of the batches the
    run took; a run stopped at step 2 and resumed ends with the same totals as one that ran
    through (the counters travel in the checkpoint)."""
    import numpy as np

    from trimodal.config import from_dict
    from trimodal.model.config import TrainConfig
    from trimodal.model.data import open_stream
    from trimodal.model.flops import doc_length_squares, step_flops
    from trimodal.model.transformer import count_params

    mix = {"kind": "synthetic", "fingerprints": FPS, "seq_len": 32, "pool": 12, "seed": 0, "doc_len": 11}
    out = run_train(config(tmp_path / "a", steps=4, mix=mix), in_process=True)
    cfg = from_dict(TrainConfig, config(tmp_path / "a", steps=4, mix=mix))
    stream = open_stream(cfg.mix, 0, 1, cfg.logical_batch)
    batches = [next(stream) for _ in range(4)]
    real = [float((b["segment_ids"] != 0).sum()) for b in batches]
    expect = np.cumsum(
        [
            step_flops(cfg.model, stream.vocab.size, r, doc_length_squares(b["segment_ids"]))["total"]
            for r, b in zip(real, batches)
        ]
    )
    assert sum(real) < 4 * 8 * 32  # this stream pads: real and padded counts differ

    recs = [json.loads(l_) for l_ in open(os.path.join(out["log_dir"], "metrics.jsonl"))]
    start = next(r for r in recs if r.get("event") == "start")
    steps = [r for r in recs if "event" not in r]
    counts = count_params(cfg.model, stream.vocab.size)
    assert (start["params"], start["params_non_embedding"]) == (counts["total"], counts["non_embedding"])
    assert start["flops"] == 0 and start["tokens_real"] == 0
    assert [r["flops"] for r in steps] == pytest.approx(list(expect), rel=1e-12)
    assert [r["tokens_padded"] for r in steps] == [8 * 32 * (i + 1) for i in range(4)]
    assert [r["tokens_real"] for r in steps] == list(np.cumsum(real))
    last = steps[-1]
    assert last["flops_per_token"] == pytest.approx(last["flops"] / last["tokens_real"])
    assert last["flops_per_token"] > last["flops_per_token_dense"]  # attention adds to the dense count
    assert 0 < last["flops_non_embedding"] < last["flops"]
    for k in ("flops", "tokens_real", "tokens_padded", "params", "flops_per_token"):
        assert out[k] == read_summary(str(tmp_path / "a"))[k] == last[k]

    run_train(config(tmp_path / "b", steps=4, mix=mix, stop_at_step=2), in_process=True)
    resumed = run_train(config(tmp_path / "b", steps=4, mix=mix), in_process=True, resume=True)
    assert resumed["start_step"] == 2
    for k in ("flops", "flops_non_embedding", "tokens_real", "tokens_padded"):
        assert resumed[k] == pytest.approx(out[k], rel=1e-12)


def test_a_completep_run_trains_and_says_so(tmp_path):
    """A CompleteP run at 2× the base width and 2× the base depth: its start record carries the
    multipliers, and the loss goes down as the standard run's does."""
    model = {"preset": "tiny", "dim": 128, "n_heads": 8, "n_layers": 4}
    cp = dict(model, parameterization="completep", base_width=64, base_depth=2)
    out = run_train(config(tmp_path / "cp", steps=6, model=cp), in_process=True)
    recs = [json.loads(l_) for l_ in open(os.path.join(out["log_dir"], "metrics.jsonl"))]
    start = next(r for r in recs if r.get("event") == "start")["parameterization"]
    assert (start["name"], start["m_d"], start["m_L"], start["residual"], start["output"]) == (
        "completep",
        2.0,
        2.0,
        0.5,
        0.5,
    )
    assert start["groups"]["hidden"]["lr_scale"] == 0.5
    assert out["final_loss"] < out["first_loss"]
    std = run_train(config(tmp_path / "sp", steps=1, model=model), in_process=True)
    assert std["first_loss"] != out["first_loss"]  # a different model from its first step


def test_resuming_under_another_parameterization_is_refused(tmp_path):
    run_train(config(tmp_path / "r", steps=4, stop_at_step=2), in_process=True)
    cp = {"preset": "tiny", "parameterization": "completep", "base_width": 64, "base_depth": 2}
    with pytest.raises(ConfigError, match="model.parameterization: 'completep'.*'standard'"):
        run_train(config(tmp_path / "r", steps=4, model=cp), in_process=True, resume=True)
    out = run_train(config(tmp_path / "r", steps=4), in_process=True, resume=True)
    assert out["start_step"] == 2 and out["step"] == 4
