"""`trimodal codec init` / `trimodal codec info`: seeded codecs on disk, described offline."""

import json
import os

import pytest

from trimodal.tokenizers.codecs import init_codec


def run_cli(args, capsys):
    from trimodal.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_init_audio_and_info(tmp_path, capsys):
    code, out, _ = run_cli(["codec", "init", "audio", "--out", str(tmp_path / "a"), "--seed", "7", "--json"], capsys)
    assert code == 0
    made = json.loads(out)
    assert made["path"] == str(tmp_path / "a" / "dac.pth") and os.path.isfile(made["path"])
    assert made["fingerprint"]["sample_rate"] == 16000 and made["fingerprint"]["levels"] == 4
    assert not [f for f in os.listdir(tmp_path / "a") if f.endswith(".tmp")]
    code, out, _ = run_cli(["codec", "info", made["path"], "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["kind"] == "dac" and info["fingerprint"] == made["fingerprint"] and info["parameters"] > 1e6
    code, out, _ = run_cli(["codec", "info", made["path"]], capsys)
    assert code == 0 and "16000 Hz" in out and "31.25 frames/s" in out


def test_init_image_is_reproducible(tmp_path, capsys, image_codec_dir):
    code, out, _ = run_cli(["codec", "init", "image", "--config", "small", "--out", str(tmp_path / "i")], capsys)
    assert code == 0 and "1024 codes" in out
    code, out, _ = run_cli(["codec", "info", str(tmp_path / "i"), "--json"], capsys)
    mine = json.loads(out)["fingerprint"]
    code, out, _ = run_cli(["codec", "info", image_codec_dir, "--json"], capsys)
    fixture = json.loads(out)["fingerprint"]
    assert mine["weights_sha256"] == fixture["weights_sha256"]  # same config + seed → same bytes
    assert mine["code_grid"] == [8, 8]


def test_info_sentencepiece_and_unknown(tmp_path, capsys, text_tokenizer_path):
    code, out, _ = run_cli(["codec", "info", text_tokenizer_path], capsys)
    assert code == 0 and "sentencepiece (text), 512 codes" in out
    code, _, err = run_cli(["codec", "info", str(tmp_path)], capsys)
    assert code == 2 and "--kind" in err


def test_bad_config_names():
    from trimodal.errors import ConfigError

    with pytest.raises(ConfigError, match="known: \\['base', 'small'\\]"):
        init_codec("audio", "huge", "/nonexistent")
    with pytest.raises(ConfigError, match="codec kind"):
        init_codec("video", "small", "/nonexistent")
