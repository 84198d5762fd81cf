"""Look at a dataset: decode N samples per source with the dataset's own codecs into files and
one `index.html` (`trimodal inspect DATASET --render N --out DIR`).

The codecs are the ones the manifest names (`job.tokenizers`, loaded exactly as the service
loads them) and must still match the manifest's fingerprints, else IntegrityError (exit 3): a
rendering through other weights would show something the dataset does not hold. Samples are
the first N rows of each source in shard order (deterministic, and reading stops as soon as
every source has N), decoded in one batch per modality.

Layout: ``DIR/<source>/<n>-<id>.txt|.png|.wav`` and ``DIR/index.html``, where each sample is a
row: an image or an audio player on the left, its caption or transcript on the right (text
documents alone), with the id and origin underneath. Paths in the page are relative, so DIR can
be copied or served as is.
"""

from __future__ import annotations

import html
import json
import os
import re

import numpy as np

from trimodal.tokenizers.base import from_storage

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def pick_rows(ds, n: int) -> dict[str, list[dict]]:
    """The first `n` rows of every source, in shard order."""
    wanted = set(ds.manifest.compute_totals()["by_source"]) or None
    picked: dict[str, list[dict]] = {}
    for i in range(len(ds.shards)):
        table = ds.read_shard(i)
        for row in table.to_pylist():
            rows = picked.setdefault(row["source"], [])
            if len(rows) < n:
                rows.append(row)
        if wanted is not None and all(len(picked.get(s, [])) >= n for s in wanted):
            break
    return picked


def render_dataset(uri: str, n: int, out: str, device: str | None = None) -> dict:
    """Decode `n` samples per source of dataset `uri` into `out`; returns a summary."""
    from trimodal.dataset.dataset import Dataset
    from trimodal.service.config import load_serve_config, load_tokenizers
    from trimodal.tokenizers.media import FILE_SUFFIX, media_file_bytes

    if n < 1:
        raise ValueError("n must be >= 1")
    ds = Dataset.open(uri)
    cfg = load_serve_config(dataset=uri)
    toks = load_tokenizers(cfg, device=device)
    picked = pick_rows(ds, n)
    fps = ds.fingerprints

    # One decode call per modality over every picked row that has it.
    todo = {m: [] for m in toks}
    for rows in picked.values():
        for row in rows:
            for m in toks:
                if row.get(m) is not None:
                    todo[m].append(row)
    media: dict[tuple[str, str], object] = {}
    for m, rows in todo.items():
        if not rows:
            continue
        decoded = toks[m].decode([from_storage(m, row[m], fps[m]) for row in rows])
        for row, x in zip(rows, decoded):
            media[(row["id"], m)] = x
    originals = fetch_originals(ds, toks, todo, media)

    os.makedirs(out, exist_ok=True)
    sections, files, counts = [], 0, {}
    for source in sorted(picked):
        sdir = os.path.join(out, _SAFE.sub("_", source))
        os.makedirs(sdir, exist_ok=True)
        cells = []
        for k, row in enumerate(picked[source]):
            stem = f"{k:03d}-{_SAFE.sub('_', row['id'])[-80:]}"
            entry = {"id": row["id"], "origin": row.get("origin")}
            for m, ext in FILE_SUFFIX.items():
                if (row["id"], m) not in media:
                    continue
                path = os.path.join(sdir, stem + ext)
                with open(path, "wb") as f:
                    f.write(media_file_bytes(m, media[(row["id"], m)]))
                files += 1
                entry[m] = os.path.relpath(path, out)
                if m == "text":
                    entry["text_value"] = str(media[(row["id"], m)])
                orig = originals.get((row["id"], m))
                if orig is not None:
                    opath = os.path.join(sdir, stem + "-original" + ext)
                    with open(opath, "wb") as f:
                        f.write(media_file_bytes(m, orig["media"]))
                    files += 1
                    entry["original"] = os.path.relpath(opath, out)
                    entry["metrics"] = orig["metrics"]
                elif (row["id"], m) in originals:
                    entry["original_error"] = originals[(row["id"], m)] is None
            cells.append(entry)
        counts[source] = len(cells)
        sections.append((source, cells))
    index = os.path.join(out, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(_page(uri, fps, sections))
    summary = {
        "dataset": uri,
        "out": os.path.abspath(out),
        "index": os.path.abspath(index),
        "samples": counts,
        "files": files,
        "metrics": _metric_summary(originals),
    }
    with open(os.path.join(out, "render.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def fetch_originals(ds, toks: dict, todo: dict[str, list[dict]], media: dict) -> dict:
    """(id, modality) -> {"media": the codec's prepared input, "metrics": {...}} for each decoded
    image / audio row, its raw sample fetched again through the row's `origin` with the sources
    the manifest records (one pass per input file), and scored like `trimodal codec eval`.
    A sample whose input is gone or no longer holds it maps to None (the page says so)."""
    from trimodal.config import from_dict
    from trimodal.errors import InputError, SampleError
    from trimodal.pipeline.readers import read_origins
    from trimodal.pipeline.sources import CorpusSource
    from trimodal.tokenizers import quality

    specs = {s["name"]: s for s in (ds.manifest.job or {}).get("sources") or []}
    out: dict = {}
    for m, rows in todo.items():
        if m not in quality.METRICS or not rows:
            continue
        by_source: dict[str, list[dict]] = {}
        for row in rows:
            by_source.setdefault(row["source"], []).append(row)
        for name, srows in by_source.items():
            src = from_dict(CorpusSource, specs[name]) if name in specs else None
            try:
                found = read_origins(src, [r["origin"] for r in srows])
            except (InputError, OSError):
                found = {}
            for row in srows:
                rec = found.get(row["origin"])
                key = (row["id"], m)
                try:
                    x = toks[m].prepare(rec[m], row["id"]) if rec is not None and rec.get(m) is not None else None
                except SampleError:
                    x = None
                if x is None:
                    out[key] = None
                    continue
                y = media[key]
                if m == "image":
                    y = np.asarray(y.convert("RGB"), np.uint8)
                    metrics = {"psnr": quality.psnr(x, y), "ssim": quality.ssim(x, y)}
                    out[key] = {"media": x, "metrics": metrics}
                else:
                    wave, rate = y
                    wave = np.asarray(wave, np.float32)[: len(x)]
                    wave = np.concatenate([wave, np.zeros(len(x) - len(wave), np.float32)])
                    metrics = {"snr": quality.snr(x, wave), "mel_distance": quality.mel_distance(x, wave, rate)}
                    out[key] = {"media": (x, rate), "metrics": metrics}
    return out


def _metric_summary(originals: dict) -> dict:
    """modality -> metric -> mean with its 95% interval over the rendered samples."""
    from trimodal.tokenizers import quality

    per: dict[str, dict[str, list]] = {}
    for (_, m), o in originals.items():
        if o is not None:
            for k, v in o["metrics"].items():
                per.setdefault(m, {}).setdefault(k, []).append(quality.capped(v))
    return {m: {k: quality.mean_ci(v) for k, v in ms.items()} for m, ms in per.items()}


def _metrics_text(metrics: dict) -> str:
    parts = []
    for k, v in metrics.items():
        if v == float("inf"):
            parts.append(f"{k} inf")
        else:
            parts.append(f"{k} {v:.4f}" if k in ("ssim", "mel_distance") else f"{k} {v:.2f} dB")
    return ", ".join(parts)


def _page(uri: str, fps: dict, sections: list) -> str:
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8">',
        f"<title>trimodal samples: {e(uri)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse;width:100%}td{border-top:1px solid #ccc;padding:.6em;vertical-align:top}"
        "td.media{width:34em}img{image-rendering:pixelated;width:16em;height:auto}"
        "pre{white-space:pre-wrap;margin:0;font-size:1.05em}small{color:#666}</style>",
        "</head><body>",
        f"<h1>{e(uri)}</h1>",
        "<p>"
        + "; ".join(f"{e(m)}: {e(str(fp.get('kind')))} {e(str(fp.get('name', '')))}" for m, fp in sorted(fps.items()))
        + "</p>",
    ]
    for source, cells in sections:
        parts.append(f"<h2>{e(source)} <small>({len(cells)} samples)</small></h2><table>")
        for c in cells:
            if "image" in c:
                left = f'<img src="{e(c["image"])}" alt="{e(c["id"])}">'
                if c.get("original"):
                    left = f'<img src="{e(c["original"])}" alt="original {e(c["id"])}"> {left}'
            elif "audio" in c:
                left = f'<audio controls preload="none" src="{e(c["audio"])}"></audio>'
                if c.get("original"):
                    left = (
                        f'original <audio controls preload="none" src="{e(c["original"])}"></audio><br>decoded {left}'
                    )
            else:
                left = ""
            if c.get("metrics"):
                left += f"<br><small>original | decoded: {e(_metrics_text(c['metrics']))}</small>"
            elif c.get("original_error"):
                left += "<br><small>original not found through its origin</small>"
            text = f"<pre>{e(c.get('text_value', ''))}</pre>"
            meta = f"<small>{e(c['id'])} &middot; {e(str(c.get('origin') or ''))}</small>"
            if left:
                parts.append(f'<tr><td class="media">{left}</td><td>{text}{meta}</td></tr>')
            else:
                parts.append(f'<tr><td colspan="2">{text}{meta}</td></tr>')
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
