"""The built-in demo corpus: deterministic bytes, the promised layout and counts, content that
matches its captions and transcripts, and sources the readers take without a single rejection."""

import hashlib
import io
import json
import os

import numpy as np

from trimodal.config import from_dict
from trimodal.jobs.demo_corpus import corpus_text_files, write_demo_corpus
from trimodal.pipeline.readers import list_inputs, read_input
from trimodal.pipeline.sources import CorpusSource


def _digests(corpus):
    return {
        os.path.relpath(p, corpus["root"]): hashlib.sha256(open(p, "rb").read()).hexdigest()
        for files in corpus["paths"].values()
        for p in files
    }


def _records(corpus):
    out = {}
    for spec in corpus["sources"]:
        src = from_dict(CorpusSource, spec)
        out[spec["kind"]] = [r for u in list_inputs(src) for r in read_input(src, u)]
    return out


def test_deterministic_given_the_seed(tmp_path):
    a = write_demo_corpus(str(tmp_path / "a"), n_text=30, n_images=40, n_audio=30, seed=3)
    b = write_demo_corpus(str(tmp_path / "b"), n_text=30, n_images=40, n_audio=30, seed=3)
    c = write_demo_corpus(str(tmp_path / "c"), n_text=30, n_images=40, n_audio=30, seed=4)
    assert _digests(a) == _digests(b)
    assert _digests(a).keys() == _digests(c).keys() and _digests(a) != _digests(c)
    ids = lambda corpus: {k: [r["id"] for r in v] for k, v in _records(corpus).items()}  # noqa: E731
    assert ids(a) == ids(b)


def test_layout_counts_and_sources(tmp_path):
    corpus = write_demo_corpus(str(tmp_path), n_text=50, n_images=40, n_audio=30, seed=0)
    assert corpus["root"] == str(tmp_path / "corpus")
    names = {k: [os.path.basename(p) for p in v] for k, v in corpus["paths"].items()}
    assert names["text"] == ["docs-00000.jsonl", "docs-00001.jsonl", "docs-00002.jsonl", "docs-00003.txt.gz"]
    assert names["image_text"] == ["shard-00000.tar", "shard-00001.tar"]
    assert names["audio_text"] == ["shard-00000.tar", "shard-00001.tar"]
    # The sources section is plain data a tokenize config can embed, and it validates.
    json.dumps(corpus["sources"])
    assert [s["kind"] for s in corpus["sources"]] == ["text", "image_text", "audio_text"]
    recs = _records(corpus)
    assert {k: len(v) for k, v in recs.items()} == {"text": 50, "image_text": 40, "audio_text": 30}
    assert all(r["error_reason"] is None for v in recs.values() for r in v)
    assert len({r["id"] for v in recs.values() for r in v}) == 120
    # Only some kinds: the others get neither files nor a source.
    only_text = write_demo_corpus(str(tmp_path / "t"), n_text=5, n_images=0, n_audio=0)
    assert [s["kind"] for s in only_text["sources"]] == ["text"] and only_text["paths"]["image_text"] == []


def test_images_show_what_their_captions_say(tmp_path):
    from PIL import Image

    from trimodal.jobs.demo_corpus import BACKGROUNDS, COLOURS

    corpus = write_demo_corpus(str(tmp_path), n_text=1, n_images=40, n_audio=0, seed=1)
    recs = _records(corpus)["image_text"]
    kinds = set()
    for r in recs:
        img = Image.open(io.BytesIO(r["image"]))
        kinds.add(img.format)
        px = np.asarray(img.convert("RGB"), dtype=np.int32)
        words = r["text"].split()
        colour = words[2]  # "a large purple triangle in the ..."
        bg = next(b for b in BACKGROUNDS if r["text"].endswith(f"on a {b} background"))
        assert words[1] in ("small", "large") and words[3] in ("circle", "square", "triangle")
        assert np.abs(px[0, 0] - BACKGROUNDS[bg]).max() < 12  # corners are background
        # The shape's colour is there, and on the side the caption names.
        hit = np.abs(px - np.array(COLOURS[colour])).max(axis=2) < 25
        ys, xs = np.nonzero(hit)
        assert len(xs) > 20, r["text"]
        cx, cy = xs.mean() / px.shape[1], ys.mean() / px.shape[0]
        if "left" in r["text"]:
            assert cx < 1 / 3
        if "right" in r["text"]:
            assert cx > 2 / 3
        if "top" in r["text"]:
            assert cy < 1 / 3
        if "bottom" in r["text"]:
            assert cy > 2 / 3
    assert kinds == {"PNG", "JPEG"}


def test_audio_matches_transcripts(tmp_path):
    import soundfile as sf

    corpus = write_demo_corpus(str(tmp_path), n_text=1, n_images=0, n_audio=30, seed=2)
    recs = _records(corpus)["audio_text"]
    seen = set()
    for r in recs:
        x, rate = sf.read(io.BytesIO(r["audio"]), dtype="float32")
        assert rate == 16000 and x.ndim == 1 and 0.5 <= len(x) / rate <= 2.5
        assert 0.05 < np.abs(x).max() <= 1.0
        t = r["text"]
        if t.startswith("a steady tone at"):
            hz = int(t.split()[4])
            spectrum = np.abs(np.fft.rfft(x))
            assert abs(np.argmax(spectrum) * rate / len(x) - hz) < 5, t
            seen.add("tone")
        elif " voice saying " in t:
            # Pitch of the first syllable by autocorrelation (lags for 70..400 Hz); the smallest
            # lag near the best one avoids octave errors.
            seg = x[int(0.12 * rate) : int(0.22 * rate)].astype(np.float64)
            ac = np.correlate(seg, seg, "full")[len(seg) - 1 :]
            lo, hi = rate // 400, rate // 70
            lag = lo + int(np.nonzero(ac[lo:hi] > 0.85 * ac[lo:hi].max())[0][0])
            assert (rate / lag < 155) == (" low voice" in t), (t, rate / lag)
            seen.add("voice")
    assert seen == {"voice", "tone"}


def test_corpus_text_files(tmp_path):
    corpus = write_demo_corpus(str(tmp_path), n_text=10, n_images=5, n_audio=5, seed=0)
    (path,) = corpus_text_files(corpus, str(tmp_path / "sp"))
    lines = open(path, encoding="utf-8").read().splitlines()
    assert len(lines) == 20 and all(line.strip() for line in lines)
