"""`trimodal tokenize` / `python -m trimodal.jobs.tokenize`: config errors, exit codes, JSON, local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from trimodal.cli import main


def _run_cli(argv) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def _text_config(tmp_path, tokenizer_path, **extra) -> dict:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"a short document, number {i}"}) + "\n" for i in range(8)))
    cfg = {
        "sources": [{"name": "docs", "kind": "text", "paths": [str(docs)]}],
        "tokenizers": {"text": {"kind": "sentencepiece", "path": tokenizer_path}},
        "output": {"uri": str(tmp_path / "ds")},
    }
    cfg.update(extra)
    return cfg


def _write(tmp_path, cfg) -> str:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


@pytest.mark.parametrize(
    "mutate, named",
    [
        (lambda c: c["output"].update(shard_row=5), "output.shard_row: unknown key (did you mean 'shard_rows'?)"),
        (lambda c: c["tokenizers"]["text"].update(path="/nowhere/spm.model"), "/nowhere/spm.model"),
        (lambda c: c["sources"][0].update(paths=["/nowhere/*.jsonl"]), "sources[0].paths"),
        (
            lambda c: c["sources"].append({"name": "pics", "kind": "image_text", "paths": ["/x.tar"]}),
            "tokenizers.image",
        ),
        (lambda c: c.update(ray={"actors": {"vidoe": 2}}), "actors.vidoe"),
        (lambda c: c.update(limits={"max_audio_seconds": -1}), "max_audio_seconds"),
    ],
)
def test_config_errors_name_the_key_and_exit_2(tmp_path, text_tokenizer_path, capsys, mutate, named):
    cfg = _text_config(tmp_path, text_tokenizer_path)
    mutate(cfg)
    assert _run_cli(["tokenize", _write(tmp_path, cfg)]) == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert not (tmp_path / "ds").exists()  # validated before any work


def test_help_lists_the_options():
    from click.testing import CliRunner

    from trimodal.jobs.tokenize import tokenize

    out = CliRunner().invoke(tokenize, ["--help"]).output
    for opt in ("--address", "--json", "--restart", "--strict"):
        assert opt in out


@pytest.mark.slow  # a subprocess that starts its own Ray
def test_module_entry_point_on_its_own_local_ray(tmp_path, text_tokenizer_path):
    """`python -m trimodal.jobs.tokenize` with no address starts a local Ray; an unreadable input
    is listed in the JSON summary, and --strict turns it into exit code 4 after committing."""
    cfg = _text_config(tmp_path, text_tokenizer_path, ray={"num_cpus": 1}, progress={"interval_s": 0})
    broken = tmp_path / "broken.jsonl.zst"
    broken.write_bytes(b"\x00not zstd")
    cfg["sources"][0]["paths"].append(str(broken))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "trimodal.jobs.tokenize", _write(tmp_path, cfg), "--json", "--strict"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 4, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["samples"] == 8 and summary["tokens"]["text"] > 8
    assert [f["uri"] for f in summary["failed_inputs"]] == [str(broken)]
    assert "[tokenize] inputs" in proc.stderr  # progress lines
    from trimodal.dataset.dataset import Dataset

    assert Dataset.open(str(tmp_path / "ds")).num_rows == 8
