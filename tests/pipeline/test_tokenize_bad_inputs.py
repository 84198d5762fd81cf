"""End to end over real-world-shaped bad inputs: one small tokenize run on the session Ray,
then a resume after the codec file moved.

The corpus: a good JSONL file; a .jsonl.gz with bytes flipped mid-stream (gzip's CRC only
fails at the end, after 740 of its 930 records were decoded, 261 of them garbled); a zero-byte
.jsonl.gz; a dangling symlink in the listed directory; a tar with a 1 s and a 32 s clip under
`limits.max_audio_seconds: null`. The readers' and config's own tests cover each rule in detail;
this checks that the job reports what they decide.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner

from tests.fixtures.datasets import read_rows

pytestmark = pytest.mark.slow

RATE = 16000  # the session's small DAC


def _clip(seconds: float) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * RATE)) / RATE
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE, format="FLAC")
    return buf.getvalue()


def _corpus(root) -> dict:
    text = root / "text"
    text.mkdir()
    (text / "good.jsonl").write_text("".join(json.dumps({"text": f"good document {i}."}) + "\n" for i in range(10)))
    docs = "".join(
        json.dumps({"text": f"document {i} " + "lorem ipsum dolor sit amet " * 8}) + "\n" for i in range(930)
    )
    gz = bytearray(gzip.compress(docs.encode(), mtime=0))
    for j in range(len(gz) // 2, len(gz) // 2 + 8):
        gz[j] ^= 0x55
    (text / "flipped.jsonl.gz").write_bytes(bytes(gz))
    (text / "empty.jsonl.gz").write_bytes(b"")
    os.symlink(root / "moved-away.jsonl", text / "linked.jsonl")
    audio = root / "audio"
    audio.mkdir()
    with tarfile.open(audio / "clips.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in [
            ("short.flac", _clip(1.0)),
            ("short.txt", b"one second"),
            ("long.flac", _clip(32.0)),
            ("long.txt", b"longer than the codec's 30 s default"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return {"text": text, "audio": audio}


def test_bad_inputs_are_failed_inputs_and_a_moved_codec_resumes(
    tmp_path, tokenizer_specs, ray_cluster, audio_codec_path, capsys
):
    from trimodal.cli import cli
    from trimodal.dataset.dataset import Dataset
    from trimodal.pipeline.job import run_tokenize

    paths = _corpus(tmp_path)
    codec = tmp_path / "codecs" / "v1" / "dac.pth"
    codec.parent.mkdir(parents=True)
    shutil.copyfile(audio_codec_path, codec)
    out = str(tmp_path / "ds")
    cfg = {
        "sources": [
            {"name": "web", "kind": "text", "paths": [str(paths["text"])]},
            {"name": "speech", "kind": "audio_text", "paths": [str(paths["audio"])]},
        ],
        "tokenizers": {
            "text": {"kind": "sentencepiece", "path": tokenizer_specs["text"]["path"]},
            "audio": {"kind": "dac", "path": str(codec)},
        },
        "limits": {"max_audio_seconds": None},
        "output": {"uri": out, "shard_rows": 16},
        "progress": {"interval_s": 3600},
    }
    s = run_tokenize(copy.deepcopy(cfg), address=ray_cluster)

    # Every bad input is a failed input, named with its reason; nothing of them is kept.
    failed = {os.path.basename(f["uri"]): f["error"] for f in s["failed_inputs"]}
    assert set(failed) == {"flipped.jsonl.gz", "empty.jsonl.gz", "linked.jsonl"}, failed
    assert "damaged gzip data" in failed["flipped.jsonl.gz"] and "whole input is left out" in failed["flipped.jsonl.gz"]
    assert "empty file (0 bytes)" in failed["empty.jsonl.gz"]
    assert "a symlink to" in failed["linked.jsonl"] and "does not exist" in failed["linked.jsonl"]
    m = Dataset.open(out).manifest
    for inp in m.inputs:
        if os.path.basename(inp["uri"]) in failed:
            assert (inp["status"], inp["records"], inp["rows"], inp["shards"]) == ("failed", 0, 0, [])
    rows = read_rows(out)
    assert sorted(rows) == sorted([f"web/good/{i}" for i in range(1, 11)] + ["speech/clips/short", "speech/clips/long"])

    # No limit means no cut: all 32 s of the long clip are encoded (30 s would be 938 frames).
    levels = m.fingerprints["audio"]["levels"]
    assert m.fingerprints["audio"]["preprocess"]["max_seconds"] is None
    assert len(rows["speech/clips/long"]["audio"]) == levels * -(-32 * RATE // 512)

    # The progress line counts kept samples, the summary and inspect name the failed inputs.
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("[tokenize] inputs")][-1]
    assert f"samples {len(rows)} (" in line and "quarantined 0 of 12 records" in line, line
    assert s["run"]["samples"] == s["samples"] == len(rows)
    text = CliRunner().invoke(cli, ["inspect", out, "--verify"]).output
    assert "inputs    5, 3 FAILED" in text and text.count("FAILED INPUT") == 3, text

    # Move the codec file (same bytes, another directory and name) and resume: weights and
    # settings decide, not where the file lies. The failed inputs are removed meanwhile, so the
    # resume has nothing left to do and needs no Ray.
    moved = tmp_path / "elsewhere" / "speech-codec.pth"
    moved.parent.mkdir()
    shutil.move(codec, moved)
    for name in failed:
        os.unlink(paths["text"] / name)
    cfg["tokenizers"]["audio"]["path"] = str(moved)
    again = run_tokenize(copy.deepcopy(cfg), quiet=True)
    assert again["inputs_resumed"] == again["inputs"] == 2 and again["inputs_failed"] == 0
    assert again["job_fingerprint"] == s["job_fingerprint"]
    assert read_rows(out) == rows
