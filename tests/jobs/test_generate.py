"""`trimodal generate`: a checkpoint trained (briefly, in-process) over the vocabulary of the real
small codecs decodes to a valid PNG, WAV and text through those codecs; a tokenizer whose
fingerprint differs from the checkpoint's vocabulary is refused (exit code 3)."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from PIL import Image

from trimodal.cli import cli, main
from trimodal.jobs.generate import run_generate
from trimodal.jobs.train import run_train
from trimodal.tokenizers.base import load_tokenizer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer_specs):
    fps = {m: load_tokenizer(spec["kind"], str(spec["path"])).fingerprint() for m, spec in tokenizer_specs.items()}
    out = tmp_path_factory.mktemp("genrun") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_train(
            {
                "mix": {"kind": "synthetic", "fingerprints": fps, "seq_len": 96, "pool": 4},
                "output": str(out),
                "steps": 2,
                "physical_batch": 2,
                "logical_batch": 2,
                "tensorboard": False,
                "tokenizers": {
                    m: {"kind": spec["kind"], "path": str(spec["path"])} for m, spec in tokenizer_specs.items()
                },
            },
            in_process=True,
        )
    finally:
        torch.set_num_threads(n)
    return str(out)


def test_t2i_writes_a_png_from_image_codes(run_dir, tmp_path):
    res = CliRunner().invoke(
        cli,
        [
            "generate",
            run_dir,
            "--task",
            "t2i",
            "--prompt",
            "a red square",
            "--out",
            str(tmp_path / "img.png"),
            "--steps",
            "4",
            "--cfg-scale",
            "2.0",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.output.strip().splitlines()[-1])
    img = Image.open(tmp_path / "img.png")
    img.verify()
    img = Image.open(tmp_path / "img.png")
    assert img.format == "PNG" and img.size == tuple(info["size"]) and info["target_tokens"] == 64  # 8×8 grid


def test_t2s_writes_a_wav_through_the_dac_decoder(run_dir, tmp_path):
    out = tmp_path / "speech.wav"
    info = run_generate(
        run_dir, "t2s", "hello there", str(out), steps=3, seconds=0.5, remasking="random", temperature=0.8
    )
    wave, rate = sf.read(str(out))
    assert rate == info["sample_rate"] == 16000
    assert wave.ndim == 1 and len(wave) > 0 and np.isfinite(wave).all()
    assert info["seconds"] == pytest.approx(len(wave) / rate)


def test_text_continuation(run_dir, tmp_path):
    out = tmp_path / "cont.txt"
    info = run_generate(run_dir, "text", "Ka ri to", str(out), steps=4, length=12, temperature=0.0)
    assert out.read_text(encoding="utf-8") == info["text"] and info["target_tokens"] == 12


def test_a_tokenizer_that_does_not_match_the_vocabulary_is_refused(run_dir, tmp_path, audio_codec_path_alt, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "generate",
                run_dir,
                "--task",
                "t2s",
                "--prompt",
                "x",
                "--out",
                str(tmp_path / "a.wav"),
                "--tokenizer",
                f"audio=dac:{audio_codec_path_alt}",
            ]
        )
    assert e.value.code == 3
    err = capsys.readouterr().err
    assert "weights_sha256" in err and "audio" in err
    assert not (tmp_path / "a.wav").exists()


def test_bad_options_exit_2(run_dir, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["generate", run_dir, "--task", "t2i", "--out", str(tmp_path / "x.png"), "--tokenizer", "bogus"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["generate", str(tmp_path / "nothing"), "--task", "t2i", "--out", str(tmp_path / "x.png")])
    assert e.value.code == 4
