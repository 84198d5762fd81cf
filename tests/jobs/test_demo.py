"""`trimodal demo` end to end, as a user runs it: a real subprocess, its own local Ray."""

import json
import os
import sys

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from tests.children import run_child

pytestmark = pytest.mark.slow  # runs the demo in a subprocess


def test_demo_runs_the_whole_flow(tmp_path):
    workdir = tmp_path / "demo"
    env = dict(os.environ, RAY_ADDRESS="")  # its own Ray, not the test session's
    proc = run_child(
        [sys.executable, "-m", "trimodal", "demo", "--workdir", str(workdir), "--steps", "30", "--json"], env=env
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])

    # every corpus sample tokenized, none quarantined (the demo corpus is clean)
    assert summary["samples"] == 400 + 96 + 48
    assert summary["quarantined"] == {}
    assert all(summary["tokens"][m] > 0 for m in ("text", "image", "audio"))
    # the mix met its targets on real tokens
    for name, src in summary["mix"]["sources"].items():
        assert abs(src["tokens_share"] - src["share"]) < 0.02, (name, src)
    # training ran through Ray Train and learned something
    assert summary["train"]["step"] == 30
    assert summary["train"]["final_loss"] < summary["train"]["first_loss"]
    # one decodable sample per modality
    gen = summary["generated"]
    assert Image.open(gen["image"]).size == (64, 64)
    wave, rate = sf.read(gen["audio"])
    assert rate == 16000 and wave.ndim == 1 and len(wave) > 0 and np.isfinite(wave).all()
    with open(gen["text"], encoding="utf-8") as f:
        assert f.read().strip(), "the generated text is empty"
    # the tokenization service encoded the dataset's own codes over HTTP and decoded them back
    svc = summary["service"]
    assert svc["codes_match_dataset"] == {"text": True, "image": True, "audio": True}
    assert svc["text_round_trip"] is True
    assert Image.open(svc["files"]["image"]).size == (64, 64)
    assert sf.read(svc["files"]["audio"])[1] == 16000
    cmp = summary["codec_compare"]  # two image codecs on four samples, page written
    assert cmp["samples"] == 4 and os.path.isfile(cmp["index"]) and cmp["a"] != cmp["b"]
    for name in ("tokenize.yaml", "mix.yaml", "train.yaml", "mix_shares.png", "demo_summary.json"):
        assert (workdir / name).is_file(), name
    # training held a tenth of every source out and evaluated the model on it
    assert set(summary["eval"]) == {"text", "image", "audio"}
    assert all(0 < f["nelbo"] and 0 < f["unigram"] for f in summary["eval"].values())
