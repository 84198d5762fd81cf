"""`trimodal eval` on a tiny run: JSON and table output, exit codes, the same figures for two
configs that differ only in their noise schedule, for 1 and 2 shards, on an eval mix read once
and with a token cap; on Ray (slow) the same figures as in-process."""

import json
import shutil

import numpy as np
import pytest
import yaml

from tests.model.conftest import text_image_dataset
from trimodal.cli import main
from trimodal.jobs.eval import run_eval
from trimodal.jobs.train import run_train


def _train(mix, output, steps, **extra):
    """Train a tiny run in process (`steps` steps of 4 rows, a checkpoint after the last); its config."""
    cfg = {
        "mix": mix,
        "output": output,
        "steps": steps,
        "physical_batch": 4,
        "logical_batch": 4,
        "checkpoint_every": steps,
        "tensorboard": False,
        "prefetch": 0,
        "optim": {"warmup_steps": 1},
        **extra,
    }
    run_train(cfg, in_process=True)
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run of 3 steps on a mixer mix with text and image-text pairs, and an eval mix on
    another dataset with the same tokenizers."""
    root = tmp_path_factory.mktemp("evalrun")
    train_ds, eval_ds = text_image_dataset(root / "train"), text_image_dataset(root / "eval", n=18, seed=1)
    mix = {"sources": [{"name": "d", "dataset": train_ds, "share": 1.0, "reverse_prob": 0.5}], "seq_len": 32, "seed": 0}
    cfg = _train(mix, str(root / "run"), 3)
    eval_mix = root / "eval.yaml"
    eval_mix.write_text(
        yaml.safe_dump(
            {
                "sources": [{"name": "e", "dataset": eval_ds, "share": 1.0, "reverse_prob": 0.5}],
                "seq_len": 32,
                "seed": 3,
            }
        )
    )
    return {"root": root, "run": str(root / "run"), "mix": str(eval_mix), "cfg": cfg}


def test_json_output_has_every_figure_and_one_finite_pass(run, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", run["run"], "--mix", run["mix"], "--n-t", "2", "--seeds", "2", "--in-process", "--json"])
    assert e.value.code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["checkpoint"].endswith("step-00000003") and res["step"] == 3 and res["split"] == "train"
    assert set(res["modality"]) == {"text", "image"}
    # forward pairs (<t2i>) and reverse ones (<i2t>), and text documents
    assert set(res["task"]) == {"text", "t2i", "i2t"}
    for fig in [*res["modality"].values(), *res["task"].values(), res["all"]]:
        assert set(fig) == {"tokens", "nelbo", "se", "bits", "ppl", "unigram"}
        assert fig["nelbo"] > 0 and fig["se"] >= 0 and fig["unigram"] > 0
        assert fig["bits"] == pytest.approx(fig["nelbo"] / np.log(2))
    # one pass: every eval sample once: 9 × 4 image codes, 9 × 12 + 9 × 5 text tokens
    assert res["modality"]["image"]["tokens"] == 36 and res["modality"]["text"]["tokens"] == 9 * 12 + 9 * 5
    # targets: the image of each forward pair, the caption of each reverse one, all of a text
    n_fwd = res["task"]["t2i"]["tokens"] // 4
    assert res["task"]["i2t"]["tokens"] == (9 - n_fwd) * 5 and 0 < n_fwd < 9
    assert res["task"]["text"]["tokens"] == 9 * 12


def test_human_table_and_exit_codes(run, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["eval", run["run"], "--mix", run["mix"], "--n-t", "1", "--seeds", "1", "--in-process"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "modality text" in out and "task t2i" in out and "unigram" in out
    # the run's mix has no holdout: --split eval (the default without --mix) is a config error
    with pytest.raises(SystemExit) as e:
        main(["eval", run["run"], "--in-process"])
    assert e.value.code == 2
    assert "holdout" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["eval", run["run"], "--mix", run["mix"], "--n-t", "0", "--in-process"])
    assert e.value.code == 2 and "--n-t" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tmp_path / "nothing"), "--mix", run["mix"], "--in-process"])
    assert e.value.code == 4


def test_two_shards_and_a_token_cap(run):
    one = run_eval(run["run"], mix=run["mix"], n_t=2, seeds=2, batch=2, in_process=True)
    two = run_eval(run["run"], mix=run["mix"], n_t=2, seeds=2, batch=2, workers=2, in_process=True)
    assert two["rows"] == one["rows"]
    for key in ("modality", "task"):
        for name, fig in one[key].items():
            assert two[key][name]["tokens"] == fig["tokens"]
            assert two[key][name]["nelbo"] == pytest.approx(fig["nelbo"], rel=1e-6)
            assert two[key][name]["se"] == pytest.approx(fig["se"], rel=1e-4, abs=1e-9)
    capped = run_eval(
        run["run"], mix=run["mix"], tokens=3 * 32 - 5, n_t=1, seeds=1, batch=2, workers=2, in_process=True
    )
    assert capped["rows"] == 3


def test_the_training_schedule_does_not_change_the_figures(run, tmp_path):
    """The same weights under a config that differs only in its diffusion schedule (and t_min):
    the estimator never reads either, so the figures are identical."""
    other = tmp_path / "other"
    shutil.copytree(run["run"], other)
    ck = next((other / "checkpoints").iterdir())
    cfg = json.loads((ck / "config.json").read_text())
    cfg["diffusion"]["schedule"] = {"name": "cosine"}
    cfg["diffusion"]["modality_schedules"] = {"image": {"name": "polynomial", "exponent": 3.0}}
    cfg["diffusion"]["t_min"] = 0.05
    (ck / "config.json").write_text(json.dumps(cfg))
    a = run_eval(run["run"], mix=run["mix"], n_t=2, seeds=2, in_process=True)
    b = run_eval(str(other), mix=run["mix"], n_t=2, seeds=2, in_process=True)
    for key in ("modality", "task"):
        assert a[key] == b[key]
    assert a["all"] == b["all"]


def test_split_train_reads_the_runs_own_mix_once(run):
    res = run_eval(run["run"], split="train", n_t=1, seeds=1, in_process=True)
    assert res["split"] == "train" and res["modality"]["image"]["tokens"] == 12 * 4


@pytest.mark.slow  # starts Ray
def test_ray_workers_give_the_in_process_figures(run, ray_cluster):
    local = run_eval(run["run"], mix=run["mix"], n_t=2, seeds=2, batch=2, in_process=True)
    ray = run_eval(
        run["run"], mix=run["mix"], n_t=2, seeds=2, batch=2, workers=2, cpus_per_worker=0.25, address=ray_cluster
    )
    assert ray["workers"] == 2 and ray["rows"] == local["rows"]
    assert ray["all"]["nelbo"] == pytest.approx(local["all"]["nelbo"], rel=1e-6)
    for t, fig in local["task"].items():
        assert ray["task"][t]["nelbo"] == pytest.approx(fig["nelbo"], rel=1e-6)


def test_eval_mix_dataset_paths_are_made_absolute_for_ray_workers(tmp_path, monkeypatch):
    from trimodal.jobs.train import load_train_config

    monkeypatch.chdir(tmp_path)
    mix = {"sources": [{"name": "e", "dataset": "data/e", "share": 1.0}], "seq_len": 64}
    cfg = load_train_config({"mix": mix, "output": "run", "eval": {"mix": mix}})
    assert cfg.eval.mix.sources[0].dataset == str(tmp_path / "data" / "e")
    assert cfg.mix.sources[0].dataset == str(tmp_path / "data" / "e")


def test_a_run_with_a_holdout_evaluates_its_held_out_split(tmp_path):
    """A mix with `holdout` trains on the rest and, with `eval:` and no eval mix, evaluates
    during training on exactly the held-out samples; `trimodal eval --split eval` of the final
    checkpoint gives the summary's figures on the same rows and draws."""
    ds = text_image_dataset(tmp_path / "d", n=60)
    mix = {
        "sources": [{"name": "d", "dataset": ds, "share": 1.0}],
        "seq_len": 32,
        "seed": 0,
        "holdout": {"fraction": 0.25, "seed": 1},
    }
    ev = {"every": 0, "tokens": 1 << 20, "n_t": 2, "seeds": 2, "batch": 4}  # every held-out row
    _train(mix, str(tmp_path / "run"), 2, eval=ev)
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["eval"]
    assert final["split"] == "eval"
    res = run_eval(str(tmp_path / "run"), split="eval", n_t=2, seeds=2, batch=4, in_process=True)
    assert res["all"]["nelbo"] == pytest.approx(final["all"]["nelbo"])
    # the held-out documents' text tokens (+<bos>/<eos> per document), counted from the ids
    from trimodal.dataset.shards import sample_keys
    from trimodal.mixer.holdout import Split

    ids = np.array([f"d/{i}" for i in range(60)], dtype=object)
    held = Split(0.25, 1, True).keep(sample_keys(ids))
    assert 0 < held.sum() < 60
    assert res["modality"]["image"]["tokens"] == 4 * int(held[1::2].sum())  # 4 codes per odd (pair) sample
