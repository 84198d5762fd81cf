"""`trimodal demo`: the whole flow on a generated corpus, offline and on CPU, in one command.

corpus → text tokenizer → codecs → tokenize (Ray tasks on a local Ray) → inspect → codec
compare (two image codecs on four of the dataset's samples, `codec_compare/index.html`) → tokenization
service (Ray Serve: one sample per modality encoded and decoded over HTTP) → mix preview →
train (Ray Train, 2 CPU workers) → generate one text, one image and one audio sample.

Every stage writes under `--workdir` and leaves the YAML it ran from there (`tokenize.yaml`,
`mix.yaml`, `train.yaml`), so each step can be rerun by hand with the regular commands. A rerun
reuses what is complete: the tokenize job resumes from its markers and training from its newest
checkpoint. Trade-off: sizes are picked to finish in a few minutes on 2 cores, so the model
learns the corpus only roughly; the point is that every part runs for real, end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import click
import yaml

from trimodal.cluster import ensure_ray
from trimodal.dataset.schema import KIND_MODALITIES, MODALITIES

MODALITY_OF_TASK = {"text": "text", "t2i": "image", "t2s": "audio"}


def _stage(name: str, quiet: bool):
    if not quiet:
        click.secho(f"\n== {name}", bold=True, err=True)
    return time.monotonic()


def _write_yaml(path: str, data: dict) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return path


def build_inputs(workdir: str, seed: int, quiet: bool) -> dict:
    """Corpus, SentencePiece model and codecs; cheap, so rebuilt every run (deterministic)."""
    from trimodal.jobs.demo_corpus import corpus_text_files, write_demo_corpus
    from trimodal.tokenizers.codecs import init_codec
    from trimodal.tokenizers.text import train_text_tokenizer

    t0 = _stage("corpus: text documents, captioned shapes, described audio clips", quiet)
    corpus = write_demo_corpus(workdir, seed=seed)
    text_files = corpus_text_files(corpus, os.path.join(workdir, "tokenizers"))
    text_model = train_text_tokenizer(
        text_files, os.path.join(workdir, "tokenizers", "text"), vocab_size=512, model_type="bpe", seed=seed
    )
    image_codec = init_codec("image", "small", os.path.join(workdir, "codecs", "image"), seed=seed)
    audio_codec = init_codec("audio", "small", os.path.join(workdir, "codecs", "audio"), seed=seed)
    if not quiet:
        click.echo(
            f"corpus {corpus['counts']} in {corpus['root']}\ntext tokenizer {text_model}\n"
            f"codecs {image_codec}, {audio_codec} ({time.monotonic() - t0:.1f}s)",
            err=True,
        )
    return {
        "sources": corpus["sources"],
        "tokenizers": {
            "text": {"kind": "sentencepiece", "path": text_model},
            "image": {"kind": "vqmodel", "path": image_codec},
            "audio": {"kind": "dac", "path": audio_codec},
        },
    }


def tokenize_stage(workdir: str, inputs: dict, quiet: bool) -> dict:
    from trimodal.config import from_yaml
    from trimodal.dataset.dataset import Dataset, summarize
    from trimodal.jobs.inspect import format_summary
    from trimodal.pipeline.job import run_tokenize
    from trimodal.pipeline.job_config import JobConfig

    t0 = _stage("tokenize (one Ray task per input, local Ray)", quiet)
    dataset = os.path.join(workdir, "dataset")
    config = {
        "sources": inputs["sources"],
        "tokenizers": inputs["tokenizers"],
        "output": {"uri": dataset, "shard_rows": 256},
        "limits": {"max_audio_seconds": 10.0},
    }
    # Run from the YAML written here, exactly as `trimodal tokenize tokenize.yaml` would.
    path = _write_yaml(os.path.join(workdir, "tokenize.yaml"), config)
    summary = run_tokenize(from_yaml(JobConfig, path), quiet=quiet)
    if not quiet:
        click.echo(f"tokenized in {time.monotonic() - t0:.1f}s\n", err=True)
        click.echo(format_summary(summarize(Dataset.open(dataset))))
    return summary


def codec_stage(workdir: str, dataset: str, image_codec: str, seed: int, quiet: bool, n: int = 4) -> dict:
    """`trimodal codec compare` of the demo's image codec and a second one (other seed) on a few
    samples of the dataset, fetched through their origins: the page a team would look at before
    a retokenize. A handful of samples keeps it to a few seconds."""
    from trimodal.jobs.codec_eval import compare, format_compare
    from trimodal.tokenizers.base import load_tokenizer
    from trimodal.tokenizers.codecs import init_codec

    t0 = _stage("codec compare (two image codecs on the dataset's samples)", quiet)
    other = init_codec("image", "small", os.path.join(workdir, "codecs", "image_alt"), seed=seed + 1)
    a = load_tokenizer("vqmodel", image_codec, device="cpu")
    b = load_tokenizer("vqmodel", other, device="cpu")
    result = compare(a, b, [dataset], n, os.path.join(workdir, "codec_compare"), names=(image_codec, other))
    if not quiet:
        click.echo(format_compare(result))
        click.echo(f"compared in {time.monotonic() - t0:.1f}s", err=True)
    return {"index": result["index"], "a": image_codec, "b": other, "samples": result["a"]["samples"]}


def service_stage(workdir: str, dataset: str, sources: list[dict], quiet: bool) -> dict:
    """Serve the dataset's tokenizers (Ray Serve on the demo's Ray), encode the first record of
    each kind over HTTP, check the codes against the ones the tokenize job stored for it,
    decode each back into samples/service_*, and stop the service."""
    from trimodal.client import SUFFIX, Client
    from trimodal.config import from_dict
    from trimodal.dataset.dataset import Dataset
    from trimodal.errors import IntegrityError
    from trimodal.pipeline.readers import list_inputs, read_input
    from trimodal.pipeline.sources import CorpusSource
    from trimodal.service import app
    from trimodal.service.config import load_serve_config

    t0 = _stage("tokenization service (Ray Serve): encode and decode one sample per modality over HTTP", quiet)
    firsts = {}
    for spec in sources:
        src = from_dict(CorpusSource, spec)
        first = next(iter(read_input(src, list_inputs(src)[0])))
        firsts[KIND_MODALITIES[src.kind][-1]] = first  # the kind's media (text for text)
    stored = {}
    want = {r["id"] for r in firsts.values()}
    for table in Dataset.open(dataset).iter_tables():
        for row in table.select(["id", *MODALITIES]).to_pylist():
            if row["id"] in want:
                stored[row["id"]] = row
    info = app.start(load_serve_config(dataset=dataset, overrides={"port": app.free_port()}))
    samples = os.path.join(workdir, "samples")
    out = {"url": info["url"], "startup_s": info["startup_s"], "files": {}, "codes_match_dataset": {}}
    try:
        client = Client(info["url"], timeout=120)
        for m, rec in firsts.items():
            enc = client.encode(m, rec[m])
            match = enc["codes"] == list(stored[rec["id"]][m])
            out["codes_match_dataset"][m] = match
            if not match:
                raise IntegrityError(f"service: {m} codes for {rec['id']} differ from the dataset's")
            path = os.path.join(samples, f"service_{m}{SUFFIX[m]}")
            client.decode_to_file(m, enc["codes"], path)
            out["files"][m] = path
        with open(out["files"]["text"], encoding="utf-8") as f:
            out["text_round_trip"] = f.read() == firsts["text"]["text"]
        if not out["text_round_trip"]:
            raise IntegrityError("service: text did not survive encode + decode")
    finally:
        app.stop()
    out["wall_s"] = round(time.monotonic() - t0, 1)
    if not quiet:
        click.echo(
            f"service at {info['url']} up in {info['startup_s']}s; codes match the dataset; "
            f"decoded into {samples}/service_* ({out['wall_s']}s)",
            err=True,
        )
    return out


def mix_stage(workdir: str, dataset: str, seq_len: int, seed: int, quiet: bool) -> dict:
    """One dataset, three sources (filtered by source name inside it), the paper's default:
    text packed, pairs padded; a tenth of every source held out for evaluation."""
    from trimodal.mixer.preview import format_preview, preview_mix

    _stage("mix preview", quiet)
    mix = {
        "seq_len": seq_len,
        "seed": seed,
        "sources": [
            {"name": "text", "dataset": dataset, "share": 0.4, "dataset_sources": ["demo_text"]},
            {"name": "image_text", "dataset": dataset, "share": 0.3, "dataset_sources": ["demo_images"]},
            {"name": "audio_text", "dataset": dataset, "share": 0.3, "dataset_sources": ["demo_audio"]},
        ],
        "holdout": {"fraction": 0.1, "seed": seed},
    }
    _write_yaml(os.path.join(workdir, "mix.yaml"), mix)
    result = preview_mix(mix, steps=200, global_batch=16, plot=os.path.join(workdir, "mix_shares.png"))
    if not quiet:
        click.echo(format_preview(result))
    return mix | {"preview": {k: v for k, v in result.items() if k != "history"}}


def train_stage(workdir: str, mix: dict, tokenizers: dict, steps: int, seed: int, quiet: bool) -> dict:
    from trimodal.jobs.train import run_train
    from trimodal.model.checkpoint import latest_checkpoint

    _stage(f"train a tiny masked diffusion model ({steps} steps, Ray Train, 2 CPU workers)", quiet)
    run = os.path.join(workdir, "run")
    config = {
        "mix": os.path.join(workdir, "mix.yaml"),  # the mix mix_stage wrote and previewed at this batch
        "output": run,
        "steps": steps,
        "physical_batch": 8,
        "logical_batch": 16,
        "num_workers": 2,
        "cpus_per_worker": 0.5,
        "model": {"preset": "tiny"},
        "optim": {"warmup_steps": max(1, steps // 20)},
        "hyper": {
            "lr_base": 3e-3,
            "base_batch_tokens": 16 * mix["seq_len"],
            "base_horizon_tokens": float(steps * 16 * mix["seq_len"]),
            # A toy horizon: S_crit scaled down so the demo batch stays under B_crit.
            "s_crit": max(1.0, steps / 16),
        },
        "checkpoint_every": max(1, steps // 2),
        "log_every": 10,
        # the held-out tenth of the mix, every row, after the last step (summary.json "eval")
        "eval": {"every": 0, "tokens": 1 << 20, "n_t": 4, "seeds": 2, "batch": 8},
        "seed": seed,
        "tokenizers": tokenizers,
    }
    _write_yaml(os.path.join(workdir, "train.yaml"), config)
    return run_train(config, resume=latest_checkpoint(run) is not None)


def generate_stage(workdir: str, checkpoint: str, seed: int, quiet: bool) -> dict:
    from trimodal.jobs.generate import run_generate

    _stage("generate one sample per modality", quiet)
    samples = os.path.join(workdir, "samples")
    jobs = {
        "text": ("the", "text.txt"),
        "t2i": ("a red circle in the top left", "image.png"),
        "t2s": ("a rising tone", "audio.wav"),
    }
    out = {}
    for task, (prompt, name) in jobs.items():
        info = run_generate(checkpoint, task, prompt, os.path.join(samples, name), steps=16, seed=seed)
        out[MODALITY_OF_TASK[task]] = info
        if not quiet:
            click.echo(f"{task:5s} {prompt!r} -> {info['out']}", err=True)
    return out


@click.command("demo")
@click.option(
    "--workdir",
    default="trimodal-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the corpus, dataset, run and samples go.",
)
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=1), help="Training steps.")
@click.option(
    "--seq-len",
    default=320,
    show_default=True,
    type=click.IntRange(min=32),
    help="Sequence length (320 fits the corpus's longest audio pair).",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--fresh", is_flag=True, help="Delete the work directory first instead of reusing it.")
@click.option("--quiet", is_flag=True, help="Only the final summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON on stdout.")
def demo(workdir, steps, seq_len, seed, fresh, quiet, as_json):
    """Run the whole flow offline on CPU: corpus, tokenizers, Ray tokenize job, mix, training, generation."""
    import ray

    t0 = time.monotonic()
    workdir = os.path.abspath(workdir)
    if fresh and os.path.exists(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir, exist_ok=True)
    quiet = quiet or as_json
    # One Ray for tokenizing and training; a local one gets 2 logical CPUs whatever the machine
    # so the demo behaves the same everywhere (the jobs use fractional CPUs per actor and worker).
    started_ray = ensure_ray(num_cpus=2, logging_level="error", log_to_driver=not quiet)
    try:
        inputs = build_inputs(workdir, seed, quiet)
        tok = tokenize_stage(workdir, inputs, quiet)
        codecs = codec_stage(workdir, tok["output"], inputs["tokenizers"]["image"]["path"], seed, quiet)
        service = service_stage(workdir, tok["output"], inputs["sources"], quiet)
        mix = mix_stage(workdir, tok["output"], seq_len, seed, quiet)
        train = train_stage(workdir, mix, inputs["tokenizers"], steps, seed, quiet)
        samples = generate_stage(workdir, train["checkpoint"], seed, quiet)
    finally:
        if started_ray:
            ray.shutdown()
    summary = {
        "workdir": workdir,
        "wall_s": round(time.monotonic() - t0, 1),
        "dataset": tok["output"],
        "samples": tok["samples"],
        "tokens": tok["tokens"],
        "quarantined": tok["quarantined"],
        "mix": mix["preview"],
        "train": {k: train[k] for k in ("step", "first_loss", "final_loss", "checkpoint", "log_dir")},
        "eval": {m: {k: f[k] for k in ("nelbo", "se", "unigram")} for m, f in train["eval"]["modality"].items()},
        "generated": {m: info["out"] for m, info in samples.items()},
        "service": service,
        "codec_compare": codecs,
    }
    with open(os.path.join(workdir, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    if as_json:
        click.echo(json.dumps(summary, default=str))
    else:
        from trimodal.jobs.eval import format_table

        click.echo(format_table({**train["eval"], "checkpoint": train["checkpoint"]}))
        click.secho(
            f"\ndemo done in {summary['wall_s']}s: {tok['samples']} samples tokenized; loss "
            f"{train['first_loss']:.3f} -> {train['final_loss']:.3f} over {train['step']} steps; "
            f"samples in {os.path.join(workdir, 'samples')}",
            bold=True,
        )
        click.echo(f"codec comparison of the two image codecs: file://{codecs['index']}")
