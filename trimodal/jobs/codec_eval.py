"""`trimodal codec eval` / `codec compare`: what a codec keeps of real samples, before a team
spends a cluster-week on `trimodal retokenize`.

Samples come from `--on`: a tokenized dataset (its first N rows with the modality, fetched
again through each row's `origin` with the sources its manifest records, as `retokenize` and
`inspect --render` do), or raw files: images and audio files as they are, Parquet and WebDataset
through the pipeline's readers. Each codec prepares them as the tokenize job does (resize + crop,
or mono + resample to its rate), encodes the batch, decodes it, and the reconstruction is scored
against that prepared input (metrics in trimodal/tokenizers/quality.py), with tokens per sample
and the encode / decode speed of this process (`--device`; CPU by default).

`compare` runs two codecs of one modality on the same samples and reports each metric's mean
with a 95% t-interval, the paired difference B - A with its interval, and which is better
where the interval excludes zero; `--out` writes an `index.html` with input | A | B per sample
(page in codec_page.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from trimodal.errors import ConfigError, InputError, SampleError
from trimodal.tokenizers import quality

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif")


@dataclass
class Sample:
    """One raw sample to score: its name (id), where it came from, and its bytes (or decoded
    media, as the readers give it)."""

    name: str
    origin: str
    raw: object


@dataclass
class CodecRun:
    """One codec's pass over the samples: per-sample scores and the media to show."""

    label: str  # "A", "B" (compare) or "codec" (eval)
    name: str  # what the user called it: its path
    fingerprint: dict
    modality: str
    kept: list[int] = field(default_factory=list)  # indices into the samples it accepted
    skipped: list[dict] = field(default_factory=list)  # {name, reason, message}
    scores: dict[str, list[float]] = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)
    inputs: list = field(default_factory=list)  # prepared inputs (uint8 pixels / waveform)
    outputs: list = field(default_factory=list)  # reconstructions, same form
    rate: int | None = None  # audio: the codec's sample rate
    encode_s: float = 0.0
    decode_s: float = 0.0

    def summary(self) -> dict:
        n = len(self.kept)
        seconds = sum(len(x) for x in self.inputs) / self.rate if self.rate else None
        out = {
            "codec": self.name,
            "kind": self.fingerprint.get("kind"),
            "fingerprint": self.fingerprint,
            "samples": n,
            "skipped": self.skipped,
            "metrics": {m: quality.mean_ci([quality.capped(v) for v in vs]) for m, vs in self.scores.items()},
            "tokens_per_sample": quality.mean_ci(self.tokens),
            "encode": {"seconds": round(self.encode_s, 4), "samples_per_s": _per_s(n, self.encode_s)},
            "decode": {"seconds": round(self.decode_s, 4), "samples_per_s": _per_s(n, self.decode_s)},
        }
        if seconds is not None:
            out["audio_seconds"] = round(seconds, 3)
            out["tokens_per_audio_second"] = round(sum(self.tokens) / seconds, 2) if seconds else None
            out["encode"]["audio_s_per_s"] = _per_s(seconds, self.encode_s)
            out["decode"]["audio_s_per_s"] = _per_s(seconds, self.decode_s)
        return out


def _per_s(n: float, secs: float) -> float | None:
    return round(n / secs, 2) if secs > 0 else None


# ----------------------------------------------------------------------------- samples


def is_dataset(uri: str) -> bool:
    from trimodal.dataset.storage import resolve

    try:
        return resolve(uri).join("manifest.json").exists()
    except Exception:
        return False


def load_samples(on: list[str], modality: str, n: int) -> list[Sample]:
    """The first `n` samples of `modality` from a dataset (one `--on`) or raw files."""
    if len(on) == 1 and is_dataset(on[0]):
        return dataset_samples(on[0], modality, n)
    return file_samples(on, modality, n)


def dataset_samples(uri: str, modality: str, n: int) -> list[Sample]:
    """The first `n` rows holding `modality`, in shard order, fetched again by their origin with
    the source configs the manifest recorded."""
    from trimodal.config import from_dict
    from trimodal.dataset.dataset import Dataset
    from trimodal.pipeline.readers import read_origins
    from trimodal.pipeline.sources import CorpusSource

    ds = Dataset.open(uri)
    specs = {s["name"]: s for s in (ds.manifest.job or {}).get("sources") or []}
    rows: list[dict] = []
    for i in range(len(ds.shards)):
        table = ds.read_shard(i)
        for rid, src, origin, codes in zip(
            table["id"].to_pylist(),
            table["source"].to_pylist(),
            table["origin"].to_pylist(),
            table[modality].to_pylist(),
        ):
            if codes is not None and len(rows) < n:
                rows.append({"id": rid, "source": src, "origin": origin})
        if len(rows) >= n:
            break
    if not rows:
        raise InputError(f"{uri}: no row holds {modality}")
    by_source: dict[str, list[str]] = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r["origin"])
    found: dict[str, dict] = {}
    for name, origins in by_source.items():
        src = from_dict(CorpusSource, specs[name], where=f"{uri} manifest job.sources") if name in specs else None
        found.update(read_origins(src, origins))
    return [Sample(r["id"], r["origin"], found[r["origin"]].get(modality)) for r in rows]


def file_samples(paths: list[str], modality: str, n: int) -> list[Sample]:
    """Samples of `modality` from files: image / audio files whole, Parquet and WebDataset
    records through the readers (globs and directories are expanded)."""
    from trimodal.dataset.storage import expand, resolve
    from trimodal.pipeline.readers import guess_source, read_input

    suffixes = IMAGE_SUFFIXES if modality == "image" else AUDIO_SUFFIXES
    other = AUDIO_SUFFIXES if modality == "image" else IMAGE_SUFFIXES
    out: list[Sample] = []
    for p in paths:
        for uri in expand(p):
            if len(out) >= n:
                return out
            ext = os.path.splitext(uri)[1].lower()
            if ext in suffixes:
                out.append(Sample(os.path.basename(uri), uri, resolve(uri).read_bytes()))
                continue
            if ext in other or ext in (".txt", ".json", ".jsonl", ".md"):
                continue  # a caption beside an image, the other modality's files
            try:
                src = guess_source(uri)
            except InputError:
                continue
            for rec in read_input(src, uri):
                if len(out) >= n:
                    break
                if rec.get(modality) is not None and not rec.get("error_reason"):
                    out.append(Sample(rec.get("id") or rec["origin"], rec["origin"], rec[modality]))
    if not out:
        raise InputError(f"no {modality} samples in {', '.join(paths)}")
    return out


# ----------------------------------------------------------------------------- scoring


def run_codec(tok, samples: list[Sample], label: str, name: str | None = None) -> CodecRun:
    """Prepare, encode, decode and score `samples` with tokenizer `tok` (image or audio)."""
    m = tok.modality
    if m not in quality.METRICS:
        raise ConfigError(f"{name or label}: a {m} tokenizer has no reconstruction to score (image or audio only)")
    fp = tok.fingerprint()
    run = CodecRun(label, name or fp.get("name") or label, fp, m, scores={k: [] for k in quality.METRICS[m]})
    for i, s in enumerate(samples):
        try:
            run.inputs.append(tok.prepare(s.raw, s.name))
            run.kept.append(i)
        except SampleError as e:
            run.skipped.append({"name": s.name, "reason": e.reason, "message": str(e)})
    if not run.inputs:
        return run
    t0 = time.perf_counter()
    if m == "image":
        codes = list(tok.encode_pixels(np.stack(run.inputs)))
    else:
        codes = tok.encode_waveforms(run.inputs)
    run.encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = tok.decode(codes)
    run.decode_s = time.perf_counter() - t0
    run.tokens = [int(np.asarray(c).size) for c in codes]
    if m == "image":
        run.outputs = [np.asarray(im.convert("RGB"), np.uint8) for im in decoded]
        for x, y in zip(run.inputs, run.outputs):
            run.scores["psnr"].append(quality.psnr(x, y))
            run.scores["ssim"].append(quality.ssim(x, y))
    else:
        run.rate = int(tok.sample_rate)
        for x, (y, _) in zip(run.inputs, decoded):
            y = np.asarray(y, np.float32)[: len(x)]
            if len(y) < len(x):  # a decoder returning fewer samples: the gap is lost signal
                y = np.concatenate([y, np.zeros(len(x) - len(y), np.float32)])
            run.outputs.append(y)
            run.scores["snr"].append(quality.snr(x, y))
            run.scores["mel_distance"].append(quality.mel_distance(x, y, run.rate))
    return run


def compare_runs(a: CodecRun, b: CodecRun) -> dict:
    """Paired differences B - A per metric over the samples both codecs accepted."""
    if a.modality != b.modality:
        raise ConfigError(f"codecs of different modalities ({a.modality}, {b.modality}) cannot be compared")
    both = sorted(set(a.kept) & set(b.kept))
    ia = {k: j for j, k in enumerate(a.kept)}
    ib = {k: j for j, k in enumerate(b.kept)}
    out = {}
    for metric in quality.METRICS[a.modality]:
        va = [quality.capped(a.scores[metric][ia[k]]) for k in both]
        vb = [quality.capped(b.scores[metric][ib[k]]) for k in both]
        out[metric] = quality.paired(va, vb, metric)
    out["tokens_per_sample"] = quality.mean_ci([b.tokens[ib[k]] - a.tokens[ia[k]] for k in both])
    return out


def load_codec(path: str, kind: str | None, device: str):
    from trimodal.jobs.codec import detect_kind
    from trimodal.tokenizers.base import load_tokenizer

    kind = kind or detect_kind(path)
    return load_tokenizer(kind, path, device=device)


def evaluate(tok, on: list[str], n: int, out: str | None = None, name: str | None = None) -> dict:
    """`codec eval`: score one tokenizer on `n` samples from `on`; with `out`, the page."""
    samples = load_samples(on, tok.modality, n)
    run = run_codec(tok, samples, "codec", name)
    result = {"modality": tok.modality, "on": on, **run.summary(), "per_sample": per_sample(samples, [run])}
    if out:
        from trimodal.jobs.codec_page import write_page

        result["index"] = write_page(out, samples, [run], None, on)
    return result


def compare(tok_a, tok_b, on: list[str], n: int, out: str | None = None, names=(None, None)) -> dict:
    """`codec compare`: both tokenizers on the same samples, paired."""
    if tok_a.modality != tok_b.modality:
        raise ConfigError(f"codecs of different modalities ({tok_a.modality}, {tok_b.modality}) cannot be compared")
    samples = load_samples(on, tok_a.modality, n)
    a = run_codec(tok_a, samples, "A", names[0])
    b = run_codec(tok_b, samples, "B", names[1])
    result = {
        "modality": tok_a.modality,
        "on": on,
        "a": a.summary(),
        "b": b.summary(),
        "paired": compare_runs(a, b),
        "per_sample": per_sample(samples, [a, b]),
    }
    if out:
        from trimodal.jobs.codec_page import write_page

        result["index"] = write_page(out, samples, [a, b], result["paired"], on)
    return result


def per_sample(samples: list[Sample], runs: list[CodecRun]) -> list[dict]:
    rows = []
    for i, s in enumerate(samples):
        row: dict = {"name": s.name, "origin": s.origin}
        for r in runs:
            if i in r.kept:
                j = r.kept.index(i)
                row[r.label] = {
                    "tokens": r.tokens[j],
                    **{m: _finite(v[j]) for m, v in r.scores.items()},
                }
        rows.append(row)
    return rows


def _finite(v: float) -> float | str:
    return "inf" if v == float("inf") else round(v, 4)


# ----------------------------------------------------------------------------- text


def _fmt(ci: dict, digits: int = 2) -> str:
    if ci.get("mean") is None:
        return "-"
    if ci["lo"] == ci["hi"]:
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"


UNITS = {"psnr": "PSNR dB", "ssim": "SSIM", "snr": "SNR dB", "mel_distance": "mel distance"}


def format_eval(r: dict) -> str:
    lines = [
        f"codec {r['codec']} ({r['kind']}, {r['modality']}) on {r['samples']} samples"
        + (f", {len(r['skipped'])} skipped" if r["skipped"] else "")
        + " (means, 95% t-intervals; dB capped at 100 = perfect)"
    ]
    for m, ci in r["metrics"].items():
        lines.append(f"  {UNITS[m]:<16}{_fmt(ci, 4 if m == 'ssim' else 2)}")
    lines.append(f"  {'tokens/sample':<16}{_fmt(r['tokens_per_sample'], 1)}")
    for what in ("encode", "decode"):
        sp = r[what]
        lines.append(
            f"  {what + ' speed':<16}{sp['samples_per_s']} samples/s"
            + (f", {sp['audio_s_per_s']} audio-s/s" if sp.get("audio_s_per_s") is not None else "")
        )
    for s in r["skipped"][:5]:
        lines.append(f"  skipped {s['name']}: {s['reason']}")
    if r.get("index"):
        lines.append(f"page    {r['index']}")
    return "\n".join(lines)


def format_compare(r: dict) -> str:
    a, b, p = r["a"], r["b"], r["paired"]
    w = 30
    lines = [
        f"{r['modality']} codecs on {min(a['samples'], b['samples'])} samples "
        "(means, 95% t-intervals; B - A paired over the same samples; dB capped at 100 = perfect)",
        f"  A = {a['codec']}",
        f"  B = {b['codec']}",
        f"{'metric':<16}{'A':<{w}}{'B':<{w}}{'B - A':<{w}}better",
    ]
    for m in a["metrics"]:
        d = 4 if m == "ssim" else 2
        lines.append(
            f"{UNITS[m]:<16}{_fmt(a['metrics'][m], d):<{w}}{_fmt(b['metrics'][m], d):<{w}}"
            f"{_fmt(p[m], d):<{w}}{p[m]['better']}"
        )
    lines.append(
        f"{'tokens/sample':<16}{_fmt(a['tokens_per_sample'], 1):<{w}}{_fmt(b['tokens_per_sample'], 1):<{w}}"
        f"{_fmt(p['tokens_per_sample'], 1):<{w}}"
    )
    for what in ("encode", "decode"):
        lines.append(f"{what + ' samples/s':<16}{a[what]['samples_per_s']!s:<{w}}{b[what]['samples_per_s']!s:<{w}}")
    if r.get("index"):
        lines.append(f"page    {r['index']}")
    return "\n".join(lines)
