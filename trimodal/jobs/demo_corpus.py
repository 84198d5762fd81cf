"""The built-in demo corpus: small, deterministic, offline text, image-text and audio-text data.

`write_demo_corpus(workdir)` writes, under ``<workdir>/corpus/``:

- ``text/docs-0000N.jsonl`` and, for the last part, ``docs-0000N.txt.gz`` (one document per
  line, gzipped, so the demo exercises both text readers and compressed input): English-ish
  paragraphs from templates about shapes, colours and sounds;
- ``image_text/shard-0000N.tar``: WebDataset shards of 64x64 PNG/JPEG pictures of one coloured
  shape (circle, square, triangle) at one of nine positions, with a ``.txt`` caption that says so
  ("a small red circle in the top left on a white background") and a ``.json`` with the fields
  (the last shard has the ``.json`` only, so both caption paths are used);
- ``audio_text/shard-0000N.tar``: about 1-2 s, 16 kHz FLAC/WAV clips with a ``.txt`` transcript:
  speech-like vowel sequences ("a low voice saying ah ee oh with a rising pitch"), steady tones,
  rising and falling sweeps, beeps, chords and noise bursts ("two short beeps at 440 hertz").

Captions, transcripts and documents share one vocabulary, so a SentencePiece model trained on
`corpus_text_files` has pieces that mean something in every modality, and a tiny model can learn
real text-image and text-audio correspondences. Everything comes from one seeded
`random.Random`: tar members have fixed mtimes/owners and the gzip header no timestamp, so the
same arguments give byte-identical files. The trade-off is toy content: it checks the plumbing
and gives recognisable samples, not a benchmark.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import random
import tarfile

import numpy as np

from trimodal.dataset.storage import atomic_local_path, write_local_atomic

SAMPLE_RATE = 16000
IMAGES_PER_SHARD = 32
CLIPS_PER_SHARD = 24
TEXT_FILES = 4

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "orange": (245, 140, 20),
    "purple": (140, 50, 170),
    "black": (15, 15, 15),
    "pink": (240, 120, 180),
}
BACKGROUNDS = {"white": (250, 250, 250), "grey": (128, 128, 128), "light blue": (190, 220, 250)}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {  # name -> (column, row) on a 3x3 grid
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "center": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
TONES = (220, 330, 440, 550, 660, 880)
VOWELS = {  # first three formants (Hz) of adult vowels
    "ah": (730, 1090, 2440),
    "ee": (270, 2290, 3010),
    "oo": (300, 870, 2240),
    "eh": (530, 1840, 2480),
    "oh": (570, 840, 2410),
}
CHORDS = {
    "a major chord": (261.6, 329.6, 392.0),
    "a minor chord": (261.6, 311.1, 392.0),
    "a low chord": (130.8, 164.8, 196.0),
}


# ---------------------------------------------------------------- text


def _sentence(rng: random.Random) -> str:
    colour, other = rng.sample(sorted(COLOURS), 2)
    shape, shape2 = rng.choice(SHAPES), rng.choice(SHAPES)
    pos = rng.choice(sorted(POSITIONS))
    hz = rng.choice(TONES)
    n = rng.randint(1, 4)
    size = rng.choice(["small", "large", "tiny", "big"])
    templates = [
        f"The {colour} {shape} sits in the {pos} of the picture.",
        f"A {size} {colour} {shape} is drawn next to a {other} {shape2}.",
        f"{colour.capitalize()} is a warm colour, and the {shape} looks bright against the background.",
        f"If you turn the {shape} around, it still looks like a {shape}.",
        "A square has four equal sides, while a triangle has three corners.",
        "A circle is round and has no corners at all.",
        f"The tone at {hz} hertz rises slowly and then fades away.",
        f"We heard {NUMBER_WORDS[n]} short beep{'s' if n > 1 else ''} at {hz} hertz.",
        "A burst of white noise sounds like wind or rain.",
        f"The chord had three notes, and the lowest note was {rng.choice(TONES[:3])} hertz.",
        "Higher tones sound thin and sharp, and lower tones sound deep and soft.",
        f"She painted a {colour} {shape} in the {pos} and a {other} one below it.",
        f"The sound started low and rose to {hz} hertz in about one second.",
        f"In this picture the background is {rng.choice(sorted(BACKGROUNDS))} and the shape is {colour}.",
        f"He counted {NUMBER_WORDS[n]} {shape}{'s' if n > 1 else ''} on the page.",
    ]
    return rng.choice(templates)


def demo_documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(f"text-{seed}")
    return [" ".join(_sentence(rng) for _ in range(rng.randint(2, 6))) for _ in range(n)]


# ---------------------------------------------------------------- images


def _draw(shape: str, colour: tuple, background: tuple, cell: tuple[int, int], big: bool, size: int) -> PIL.Image.Image:  # noqa: F821
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    third = size / 3
    cx, cy = (cell[0] + 0.5) * third, (cell[1] + 0.5) * third
    r = third * (0.45 if big else 0.28)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


def demo_images(n: int, seed: int = 0, size: int = 64) -> list[tuple[str, bytes, str, dict]]:
    """[(extension, encoded image, caption, fields)]; every fourth picture is a JPEG."""
    rng = random.Random(f"image-{seed}")
    out = []
    for i in range(n):
        shape = rng.choice(SHAPES)
        colour = rng.choice(sorted(COLOURS))
        bg = rng.choice([b for b in sorted(BACKGROUNDS)])
        if colour == "black" and bg == "grey":
            bg = "white"
        pos = rng.choice(sorted(POSITIONS))
        big = rng.random() < 0.5
        img = _draw(shape, COLOURS[colour], BACKGROUNDS[bg], POSITIONS[pos], big, size)
        buf = io.BytesIO()
        ext = "jpg" if i % 4 == 3 else "png"
        img.save(buf, format="JPEG" if ext == "jpg" else "PNG", **({"quality": 95} if ext == "jpg" else {}))
        where = "in the center" if pos == "center" else f"in the {pos}" if " " in pos else f"at the {pos}"
        caption = f"a {'large' if big else 'small'} {colour} {shape} {where} on a {bg} background"
        out.append(
            (
                ext,
                buf.getvalue(),
                caption,
                {"shape": shape, "colour": colour, "background": bg, "position": pos, "large": big},
            )
        )
    return out


# ---------------------------------------------------------------- audio


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE


def _fade(x: np.ndarray, ms: float = 10) -> np.ndarray:
    k = min(len(x) // 2, int(SAMPLE_RATE * ms / 1000))
    if k:
        ramp = np.linspace(0, 1, k)
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def _voice(rng: random.Random) -> tuple[np.ndarray, str]:
    """Speech-like audio: voiced vowels by additive source-filter synthesis (harmonics of a
    gliding pitch, weighted by the vowel's formant resonances), one syllable per vowel."""
    low = rng.random() < 0.5
    f0 = (105.0 if low else 200.0) * rng.uniform(0.93, 1.07)
    contour = rng.choice(["rising", "falling", "level"])
    vowels = [rng.choice(sorted(VOWELS)) for _ in range(rng.randint(2, 4))]
    gap = np.zeros(int(0.08 * SAMPLE_RATE))
    parts = [gap]
    for j, v in enumerate(vowels):
        t = _t(rng.uniform(0.26, 0.34))
        # Pitch moves across the utterance, as intonation does, not within each syllable only.
        start = {"rising": 1 + 0.08 * j, "falling": 1.24 - 0.08 * j, "level": 1.0}[contour]
        pitch = f0 * start * (1 + {"rising": 0.08, "falling": -0.08, "level": 0.0}[contour] * t / t[-1])
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        k = np.arange(1, int(5000 // pitch.max()) + 1)[:, None]
        formants = np.array(VOWELS[v], dtype=np.float64)[None, :]
        bw = np.array([80.0, 110.0, 160.0])[None, :]
        amp = (1.0 / (1.0 + ((k * f0 * start - formants) / bw) ** 2)).sum(axis=1, keepdims=True) / np.sqrt(k)
        syl = (amp * np.sin(k * phase[None, :])).sum(axis=0)
        env = np.sin(np.pi * np.minimum(1.0, np.arange(len(t)) / (0.5 * len(t))) / 2) ** 2
        syl = syl * np.minimum(env, env[::-1]) / (np.abs(syl).max() or 1.0)
        parts += [syl, gap]
    pitch_word = "" if contour == "level" else f" with a {contour} pitch"
    return np.concatenate(parts), f"a {'low' if low else 'high'} voice saying {' '.join(vowels)}{pitch_word}"


def _clip(rng: random.Random, nrng: np.random.Generator) -> tuple[np.ndarray, str]:
    kind = rng.choice(["voice", "voice", "voice", "tone", "rise", "fall", "beeps", "chord", "noise"])
    dur = rng.choice([1.0, 1.5, 2.0])
    if kind == "voice":
        x, text = _voice(rng)
        return _fade(0.5 * x).astype(np.float32), text
    t = _t(dur)
    if kind == "tone":
        hz = rng.choice(TONES)
        x, text = np.sin(2 * math.pi * hz * t), f"a steady tone at {hz} hertz"
    elif kind in ("rise", "fall"):
        lo, hi = rng.choice([(220, 880), (330, 660), (220, 440)])
        f0, f1 = (lo, hi) if kind == "rise" else (hi, lo)
        phase = 2 * math.pi * (f0 * t + (f1 - f0) * t**2 / (2 * dur))
        x = np.sin(phase)
        text = f"a {'rising' if kind == 'rise' else 'falling'} tone from {f0} to {f1} hertz"
    elif kind == "beeps":
        n, hz = rng.randint(1, 4), rng.choice(TONES)
        x = np.zeros_like(t)
        for b in range(n):
            s = int((0.1 + b * 0.3) * SAMPLE_RATE)
            seg = _fade(np.sin(2 * math.pi * hz * _t(0.15)))
            x[s : s + len(seg)] = seg[: max(0, len(x) - s)]
        text = f"{NUMBER_WORDS[n]} short beep{'s' if n > 1 else ''} at {hz} hertz"
    elif kind == "chord":
        name = rng.choice(sorted(CHORDS))
        x = sum(np.sin(2 * math.pi * f * t) for f in CHORDS[name]) / 3
        text = name
    else:
        x = nrng.standard_normal(len(t)) * 0.3
        x[int(0.6 * len(t)) :] = 0
        text = "a short burst of white noise"
    x = _fade(0.5 * np.asarray(x, dtype=np.float64))
    return x.astype(np.float32), text


def demo_clips(n: int, seed: int = 0) -> list[tuple[str, bytes, str]]:
    """[(extension, encoded audio, transcript)]; every third clip is WAV, the rest FLAC."""
    import soundfile as sf

    rng = random.Random(f"audio-{seed}")
    nrng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x, text = _clip(rng, nrng)
        buf = io.BytesIO()
        ext = "wav" if i % 3 == 2 else "flac"
        sf.write(buf, x, SAMPLE_RATE, format=ext.upper(), subtype="PCM_16")
        out.append((ext, buf.getvalue(), text))
    return out


# ---------------------------------------------------------------- writing


def _tar(path: str, members: list[tuple[str, bytes]]) -> None:
    """A tar whose bytes depend only on `members` (fixed mtime, owner, mode)."""
    with atomic_local_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))


def write_demo_corpus(
    workdir: str, n_text: int = 400, n_images: int = 96, n_audio: int = 48, seed: int = 0, image_size: int = 64
) -> dict:
    """Write the corpus under ``<workdir>/corpus`` (existing files are overwritten) and return::

        {"root": ".../corpus",
         "paths": {"text": [...], "image_text": [...], "audio_text": [...]},   # files, sorted
         "counts": {"text": n_text, "image_text": n_images, "audio_text": n_audio},
         "sources": [...]}   # the tokenize config's `sources:` section for these files

    Kinds with a count of 0 get no files and no source.
    """
    if min(n_text, n_images, n_audio) < 0:
        raise ValueError("sample counts must be >= 0")
    root = os.path.join(os.path.abspath(workdir), "corpus")
    paths: dict[str, list[str]] = {"text": [], "image_text": [], "audio_text": []}

    if n_text:
        d = os.path.join(root, "text")
        os.makedirs(d, exist_ok=True)
        docs = demo_documents(n_text, seed)
        nfiles = max(1, min(TEXT_FILES, n_text))
        per = math.ceil(n_text / nfiles)
        for f in range(nfiles):
            chunk = docs[f * per : (f + 1) * per]
            if not chunk:
                break
            if f == nfiles - 1 and nfiles > 1:
                # The last part as gzipped plain text, one document per line, so the demo
                # exercises the .txt reader and streamed decompression too.
                path = os.path.join(d, f"docs-{f:05d}.txt.gz")
                data = gzip.compress("".join(t + "\n" for t in chunk).encode("utf-8"), mtime=0)
            else:
                path = os.path.join(d, f"docs-{f:05d}.jsonl")
                data = "".join(
                    json.dumps({"id": f"doc-{f * per + i:06d}", "text": t}) + "\n" for i, t in enumerate(chunk)
                ).encode("utf-8")
            write_local_atomic(path, data)
            paths["text"].append(path)

    if n_images:
        d = os.path.join(root, "image_text")
        os.makedirs(d, exist_ok=True)
        images = demo_images(n_images, seed, image_size)
        nshards = math.ceil(n_images / IMAGES_PER_SHARD)
        for s in range(0, n_images, IMAGES_PER_SHARD):
            shard = s // IMAGES_PER_SHARD
            # The last of several shards carries its captions only in .json members.
            json_only = nshards > 1 and shard == nshards - 1
            members = []
            for i, (ext, data, caption, fields) in enumerate(images[s : s + IMAGES_PER_SHARD], start=s):
                key = f"{i:06d}"
                members.append((f"{key}.{ext}", data))
                if not json_only:
                    members.append((f"{key}.txt", caption.encode()))
                members.append((f"{key}.json", json.dumps({"caption": caption, **fields}, sort_keys=True).encode()))
            path = os.path.join(d, f"shard-{shard:05d}.tar")
            _tar(path, members)
            paths["image_text"].append(path)

    if n_audio:
        d = os.path.join(root, "audio_text")
        os.makedirs(d, exist_ok=True)
        clips = demo_clips(n_audio, seed)
        for s in range(0, n_audio, CLIPS_PER_SHARD):
            members = []
            for i, (ext, data, text) in enumerate(clips[s : s + CLIPS_PER_SHARD], start=s):
                key = f"{i:06d}"
                members += [(f"{key}.{ext}", data), (f"{key}.txt", text.encode())]
            path = os.path.join(d, f"shard-{s // CLIPS_PER_SHARD:05d}.tar")
            _tar(path, members)
            paths["audio_text"].append(path)
    counts = {"text": n_text, "image_text": n_images, "audio_text": n_audio}
    return {"root": root, "paths": paths, "counts": counts, "sources": demo_sources(paths)}


def demo_sources(paths: dict) -> list[dict]:
    """Tokenize-config source mappings (`CorpusSource` fields) for a corpus written by
    `write_demo_corpus`: pass what it returned, or its ``"paths"``."""
    paths = paths.get("paths", paths)
    names = {"text": "demo_text", "image_text": "demo_images", "audio_text": "demo_audio"}
    out = []
    for kind, files in paths.items():
        if not files:
            continue
        spec = {"name": names[kind], "kind": kind, "paths": sorted(files)}
        if kind == "text":
            spec["txt_mode"] = "line"
        out.append(spec)
    return out


def corpus_text_files(corpus: dict, out_dir: str) -> list[str]:
    """Write every document, caption and transcript of the corpus, one per line, to
    ``<out_dir>/demo_text.txt`` (SentencePiece's input format) and return ``[that path]``.

    `corpus` is what `write_demo_corpus` returned (or its ``"paths"``). Read back through the corpus readers, so it
    holds exactly what tokenization will see.
    """
    from trimodal.config import from_dict
    from trimodal.pipeline.readers import list_inputs, read_input
    from trimodal.pipeline.sources import CorpusSource

    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "demo_text.txt")
    with open(out, "w", encoding="utf-8") as fh:
        for spec in demo_sources(corpus):
            src = from_dict(CorpusSource, spec)
            for uri in list_inputs(src):
                for rec in read_input(src, uri):
                    if rec["error_reason"] is None:
                        fh.write(" ".join(rec["text"].split()) + "\n")
    return [out]


if __name__ == "__main__":  # python -m trimodal.jobs.demo_corpus WORKDIR
    import sys

    print(json.dumps(write_demo_corpus(sys.argv[1] if len(sys.argv) > 1 else "."), indent=1))
