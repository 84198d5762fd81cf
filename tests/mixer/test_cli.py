"""`trimodal mix preview` and `trimodal mix check`."""

import json

import pytest
import yaml
from click.testing import CliRunner

from tests.mixer.conftest import FPS, build, image_rows, mix_cfg, text_rows
from trimodal.cli import cli, main
from trimodal.dataset.dataset import build_dataset


def write_mix(tmp_path, cfg, name="mix.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_preview_table_json_and_plot(mix_data, tmp_path):
    cfg = mix_cfg(mix_data, schedule=[{"step": 10, "shares": {"audio": 0.5}}])
    del cfg["global_batch"]
    path = write_mix(tmp_path, cfg)
    plot = tmp_path / "shares.png"
    r = CliRunner().invoke(cli, ["mix", "preview", path, "--steps", "40", "--global-batch", "16", "--plot", str(plot)])
    assert r.exit_code == 0, r.output
    assert "text" in r.output and "pad fraction" in r.output and "positions" in r.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(cli, ["mix", "preview", path, "--steps", "40", "--global-batch", "16", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["step"] == 40 and out["rows"] == 640 and out["global_batch"] == 16
    s = out["sources"]
    assert abs(sum(v["tokens_share"] for v in s.values()) - 1) < 1e-9
    assert abs(sum(v["positions_share"] for v in s.values()) - 1) < 1e-9
    assert s["audio"]["share"] == 0.5 / 1.3  # the schedule's share in force at the end
    for v in s.values():  # realized token shares track the accumulated targets within one row
        assert abs(v["tokens_share"] - v["expected"]) * out["tokens"] <= 128
        assert v["epochs"] > 0
    assert 0 < out["pad_fraction"] < 1
    assert len(out["history"]["step"]) == 40


def test_check_refuses_mismatched_sources_with_exit_code_3(mix_data, tmp_path, capsys):
    other = dict(FPS["text"], levels=2, name="t2")
    build_dataset(str(tmp_path / "t2"), text_rows(5), {"text": other})
    cfg = mix_cfg(mix_data)
    good = write_mix(tmp_path, cfg)
    r = CliRunner().invoke(cli, ["mix", "check", good, "--vocab-out", str(tmp_path / "vocab.json"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["vocab_size"] == json.loads((tmp_path / "vocab.json").read_text())["size"]
    cfg["sources"].append({"name": "other", "dataset": str(tmp_path / "t2"), "share": 1})
    bad = write_mix(tmp_path, cfg, "bad.yaml")
    with pytest.raises(SystemExit) as e:
        main(["mix", "check", bad])
    assert e.value.code == 3
    err = capsys.readouterr().err
    assert "'other'" in err and "levels" in err


def test_check_counts_only_the_corpora_a_source_draws_from(tmp_path):
    # One dataset of 700 web + 300 img + 50 other samples mixed as two sources: each counts its
    # own corpora (it used to report all 1050 for both).
    rows = text_rows(700, source="web") + image_rows(300, source="img") + text_rows(50, source="other", seed=9)
    path = build(tmp_path / "both", rows, fps=("text", "image"), shard_rows=400)
    cfg = {
        "sources": [
            {"name": "t", "dataset": path, "share": 0.6, "dataset_sources": ["web", "other"]},
            {"name": "i", "dataset": path, "share": 0.4, "dataset_sources": ["img"]},
            {"name": "all", "dataset": path, "share": 0.1},
        ],
        "seq_len": 128,
    }
    mix = write_mix(tmp_path, cfg)
    r = CliRunner().invoke(cli, ["mix", "check", mix, "--json"])
    assert r.exit_code == 0, r.output
    src = json.loads(r.output)["sources"]
    assert (src["t"]["samples"], src["i"]["samples"], src["all"]["samples"]) == (750, 300, 1050)
    # Shards of 400 rows in order: [web], [web, img], [img, other].
    assert (src["t"]["shards"], src["i"]["shards"], src["all"]["shards"]) == (3, 2, 3)
    r = CliRunner().invoke(cli, ["mix", "check", mix])
    assert "t: 750 samples in 3 shards" in r.output and ", only web, other)" in r.output, r.output
    assert "i: 300 samples in 2 shards" in r.output and "all: 1,050 samples in 3 shards" in r.output


def test_config_errors_name_the_key_with_exit_code_2(mix_data, tmp_path, capsys):
    cfg = mix_cfg(mix_data)
    cfg["sources"][0]["shares"] = 0.5
    path = write_mix(tmp_path, cfg)
    with pytest.raises(SystemExit) as e:
        main(["mix", "preview", path])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "sources[0].shares" in err and "did you mean 'share'" in err
