"""Retokenizing the audio of the tiny dataset with a different codec (other weights)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from tests.fixtures.datasets import PLANTED, read_rows
from trimodal.dataset.dataset import Dataset
from trimodal.dataset.manifest import Manifest
from trimodal.dataset.quarantine import read_quarantine
from trimodal.errors import ConfigError, IntegrityError
from trimodal.pipeline.retokenize import run_retokenize

pytestmark = pytest.mark.slow  # starts Ray (the tokenize and retokenize jobs)


@pytest.fixture(scope="module")
def retokenized(tiny_dataset, audio_codec_path_alt, ray_cluster, tmp_path_factory):
    """Through the command line: `trimodal retokenize DATASET --modality audio --tokenizer dac:PATH`."""
    from trimodal.cli import main

    out = str(tmp_path_factory.mktemp("retok") / "ds")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as exit_:
        main(
            [
                "retokenize",
                tiny_dataset["uri"],
                "--modality",
                "audio",
                "--tokenizer",
                f"dac:{audio_codec_path_alt}",
                "--out",
                out,
                "--address",
                ray_cluster,
                "--json",
                "--quiet",
            ]
        )
    assert exit_.value.code == 0
    cfg = {
        "dataset": tiny_dataset["uri"],
        "modality": "audio",
        "out": out,
        "tokenizer": {"kind": "dac", "path": audio_codec_path_alt},
        "progress": {"enabled": False},
    }
    return {"uri": out, "config": cfg, "summary": json.loads(buf.getvalue())}


def test_only_the_audio_column_and_fingerprint_change(tiny_dataset, retokenized, tokenizer_specs):
    old, new = read_rows(tiny_dataset["uri"]), read_rows(retokenized["uri"])
    assert new.keys() == old.keys()
    audio_rows = [i for i, r in old.items() if r["audio"] is not None]
    assert audio_rows
    changed = 0
    for i, r in old.items():
        n = new[i]
        assert {k: v for k, v in n.items() if k != "audio"} == {k: v for k, v in r.items() if k != "audio"}, i
        assert (n["audio"] is None) == (r["audio"] is None), i
        if r["audio"] is not None:
            # Same codec config (frames x levels) with other weights: same length, other codes.
            assert len(n["audio"]) == len(r["audio"])
            changed += n["audio"] != r["audio"]
    assert changed == len(audio_rows)
    fa, fb = Dataset.open(tiny_dataset["uri"]).fingerprints, Dataset.open(retokenized["uri"]).fingerprints
    assert fa["text"] == fb["text"] and fa["image"] == fb["image"]
    assert fa["audio"]["weights_sha256"] != fb["audio"]["weights_sha256"]
    # The unified vocabulary refuses to mix the two datasets' audio codes.
    from trimodal.tokenizers.vocab import Vocabulary

    with pytest.raises(IntegrityError):
        Vocabulary.from_fingerprints(fa).check("audio", fb["audio"], retokenized["uri"])
    for m in ("text", "image", "audio"):
        Vocabulary.from_fingerprints(fb).check(m, fb[m], retokenized["uri"])


def test_new_codes_are_the_new_codecs(retokenized, audio_codec_path_alt, tiny_corpus):
    from trimodal.config import from_dict
    from trimodal.pipeline.readers import read_origin
    from trimodal.pipeline.sources import CorpusSource
    from trimodal.tokenizers.base import load_tokenizer, to_storage

    m = Dataset.open(retokenized["uri"]).manifest
    sources = {s["name"]: from_dict(CorpusSource, s) for s in m.job["sources"]}
    rows = [r for r in read_rows(retokenized["uri"]).values() if r["audio"] is not None][:3]
    tok = load_tokenizer("dac", audio_codec_path_alt, max_seconds=m.job["limits"]["max_audio_seconds"])
    assert m.fingerprints["audio"] == tok.fingerprint()
    raw = [read_origin(r["origin"], sources[r["source"]])["audio"] for r in rows]
    for r, codes in zip(rows, tok.encode(raw)):
        assert r["audio"] == to_storage("audio", codes).tolist()


def test_quarantine_and_inputs_carry_over(tiny_dataset, retokenized):
    assert retokenized["summary"]["inputs_failed"] == 0 and retokenized["summary"]["samples"] > 0
    a, b = Dataset.open(tiny_dataset["uri"]).manifest, Dataset.open(retokenized["uri"]).manifest
    assert b.quarantine == a.quarantine
    assert {r["id"]: r["reason"] for r in read_quarantine(retokenized["uri"]) if r["id"] in PLANTED} == PLANTED
    assert [i["key"] for i in b.inputs] == [i["key"] for i in a.inputs]
    # Inputs without audio were copied byte for byte.
    sha_a = {e["path"]: e["sha256"] for e in a.shards}
    for e in b.shards:
        if "audio" not in e["path"]:
            assert sha_a[e["path"]] == e["sha256"]
    assert b.job["retokenized"]["modality"] == "audio" and b.job["tokenizers"]["audio"]["path"]


def test_rerun_resumes_everything(retokenized, ray_cluster):
    before = Manifest.load(retokenized["uri"]).to_dict()
    s = run_retokenize(dict(retokenized["config"]), address=ray_cluster, quiet=True)
    after = Manifest.load(retokenized["uri"]).to_dict()
    assert s["inputs_resumed"] == s["inputs"] and s["run"]["samples"] == 0
    assert after["shards"] == before["shards"]


def test_refuses_to_overwrite_its_parent(tiny_dataset, audio_codec_path_alt):
    with pytest.raises(ConfigError, match="out"):
        run_retokenize(
            {
                "dataset": tiny_dataset["uri"],
                "modality": "audio",
                "out": tiny_dataset["uri"],
                "tokenizer": {"kind": "dac", "path": audio_codec_path_alt},
            }
        )


def test_tokenizer_argument_forms(audio_codec_path_alt, image_codec_dir):
    from trimodal.jobs.retokenize import parse_options, parse_tokenizer

    assert parse_tokenizer(f"dac:{audio_codec_path_alt}", None) == ("dac", audio_codec_path_alt)
    assert parse_tokenizer(audio_codec_path_alt, None) == ("dac", audio_codec_path_alt)
    assert parse_tokenizer(str(image_codec_dir), "vqmodel") == ("vqmodel", str(image_codec_dir))
    with pytest.raises(ConfigError, match="--kind"):
        parse_tokenizer(f"dac:{audio_codec_path_alt}", "vqmodel")
    assert parse_options(("max_seconds=12.5", "resample=bilinear", "jpeg_draft=false")) == {
        "max_seconds": 12.5,
        "resample": "bilinear",
        "jpeg_draft": False,
    }
