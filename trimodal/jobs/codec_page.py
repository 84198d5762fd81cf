"""The page of `codec eval` / `codec compare --out DIR`: `DIR/index.html`, one row per sample
with the codec's input beside each codec's reconstruction and their scores, under a table of
the metrics with their intervals.

Images are inline PNGs (data URIs: the page is one file, and a few dozen small images keep it
small); audio is WAV files beside the page (`DIR/audio/NNN-input.wav`, `-A.wav`, `-B.wav`)
played by `<audio>` elements. Paths are relative, so DIR can be copied or served as is. The
input shown is the first codec's prepared input (what it encodes: resized and cropped pixels,
or mono audio at its rate).
"""

from __future__ import annotations

import base64
import html
import os

from trimodal.tokenizers.media import media_file_bytes


def _png_uri(pixels) -> str:
    from PIL import Image

    return "data:image/png;base64," + base64.b64encode(
        media_file_bytes("image", Image.fromarray(pixels, "RGB"))
    ).decode("ascii")


def _ci(ci: dict | None, digits: int) -> str:
    if not ci or ci.get("mean") is None:
        return "&ndash;"
    if ci["lo"] == ci["hi"]:
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} <small>[{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]</small>"


def _score(v: float, metric: str) -> str:
    if v == float("inf"):
        return f"{metric} &infin;"
    return f"{metric} {v:.4f}" if metric in ("ssim", "mel_distance") else f"{metric} {v:.2f} dB"


def write_page(out: str, samples: list, runs: list, paired: dict | None, on: list[str]) -> str:
    """Write `out/index.html` (and audio files) for `runs` (one or two CodecRuns) over `samples`;
    returns the page's absolute path."""
    from trimodal.jobs.codec_eval import UNITS

    e = html.escape
    os.makedirs(out, exist_ok=True)
    modality = runs[0].modality
    if modality == "audio":
        os.makedirs(os.path.join(out, "audio"), exist_ok=True)
    title = " vs ".join(r.name for r in runs)
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8">',
        f"<title>trimodal codec {'comparison' if len(runs) > 1 else 'evaluation'}: {e(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:80em}"
        "table{border-collapse:collapse}td,th{border-top:1px solid #ccc;padding:.4em .8em;text-align:left;"
        "vertical-align:top}img{width:14em;height:auto;image-rendering:pixelated}"
        "small{color:#666}.better{font-weight:bold;color:#060}</style>",
        "</head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>{e(modality)} samples from {e(', '.join(on))}. Means with 95% t-intervals"
        + ("; B &minus; A is paired over the same samples" if paired else "")
        + "; dB figures capped at 100 (= perfect).</p>",
        '<table id="metrics"><tr><th>metric</th>'
        + "".join(f"<th>{e(_head(r, runs))}</th>" for r in runs)
        + ("<th>B &minus; A</th><th>better</th>" if paired else "")
        + "</tr>",
    ]
    sums = [r.summary() for r in runs]
    for metric in sums[0]["metrics"]:
        d = 4 if metric in ("ssim", "mel_distance") else 2
        row = f"<tr><td>{e(UNITS[metric])}</td>" + "".join(f"<td>{_ci(s['metrics'][metric], d)}</td>" for s in sums)
        if paired:
            better = paired[metric]["better"]
            row += f'<td>{_ci(paired[metric], d)}</td><td class="{"tie" if better == "tie" else "better"}">{e(better)}</td>'
        parts.append(row + "</tr>")
    parts.append(
        "<tr><td>tokens / sample</td>"
        + "".join(f"<td>{_ci(s['tokens_per_sample'], 1)}</td>" for s in sums)
        + (f"<td>{_ci(paired['tokens_per_sample'], 1)}</td><td></td>" if paired else "")
        + "</tr>"
    )
    for what in ("encode", "decode"):
        parts.append(
            f"<tr><td>{what} samples/s</td>"
            + "".join(f"<td>{s[what]['samples_per_s']}</td>" for s in sums)
            + ("<td></td><td></td>" if paired else "")
            + "</tr>"
        )
    parts.append("</table>")
    parts.append(
        '<h2>Samples</h2><table id="samples"><tr><th>sample</th><th>input</th>'
        + "".join(f"<th>{e(_head(r, runs))}</th>" for r in runs)
        + "</tr>"
    )
    first = runs[0]
    for i, s in enumerate(samples):
        cells = []
        for r in runs:
            if i not in r.kept:
                cells.append("<td><small>skipped by this codec</small></td>")
                continue
            j = r.kept.index(i)
            tag = r.label
            scores = "<br>".join(_score(v[j], m) for m, v in r.scores.items()) + f"<br>{r.tokens[j]} tokens"
            cells.append(f"<td>{_media(out, modality, r, j, f'{i:03d}-{tag}', s.name)}<br><small>{scores}</small></td>")
        if i in first.kept:
            inp = _media(out, modality, first, first.kept.index(i), f"{i:03d}-input", s.name, source=True)
        else:
            inp = "<small>not accepted</small>"
        parts.append(
            f'<tr class="sample"><td><small>{e(s.name)}<br>{e(str(s.origin))}</small></td><td>{inp}</td>'
            + "".join(cells)
            + "</tr>"
        )
    parts.append("</table></body></html>")
    index = os.path.join(out, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return os.path.abspath(index)


def _head(run, runs: list) -> str:
    return f"{run.label}: {run.name}" if len(runs) > 1 else run.name


def _media(out: str, modality: str, run, j: int, stem: str, name: str, source: bool = False) -> str:
    x = (run.inputs if source else run.outputs)[j]
    if modality == "image":
        return f'<img src="{_png_uri(x)}" alt="{html.escape(name)}">'
    rel = f"audio/{stem}.wav"
    with open(os.path.join(out, rel), "wb") as f:
        f.write(media_file_bytes("audio", (x, run.rate)))
    return f'<audio controls preload="none" src="{html.escape(rel)}"></audio>'
