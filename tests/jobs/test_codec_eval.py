"""`trimodal codec eval` / `codec compare`: an identity-like codec scores perfect, a random one
low, `compare` ranks them so, and the page shows input | A | B for every sample."""

from __future__ import annotations

import io
import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest

from trimodal.tokenizers import media
from trimodal.tokenizers.base import TOKENIZERS, Tokenizer


class IdentityImage(Tokenizer):
    """Codes are the preprocessed pixels themselves: decode(encode(x)) == x."""

    modality, codebook_size, image_size = "image", 256, 64

    def prepare(self, item, name):
        return media.prepare_image(item, self.image_size, name)

    def encode_pixels(self, pixels):
        return np.asarray(pixels, np.int32)

    def encode(self, batch):
        return list(self.encode_pixels(np.stack([self.prepare(x, "x") for x in batch])))

    def decode(self, codes):
        from PIL import Image

        return [Image.fromarray(np.asarray(c, np.uint8), "RGB") for c in codes]

    def fingerprint(self):
        return {"kind": "identity_image", "name": "identity", "modality": "image"}


class IdentityAudio(Tokenizer):
    """Codes are 16-bit samples: decode(encode(x)) is x up to 16-bit rounding (SNR ~ 90 dB)."""

    modality, codebook_size, sample_rate = "audio", 65536, 16000

    def prepare(self, item, name):
        return media.prepare_audio(item, self.sample_rate, name, 30.0, 0.0)

    def encode_waveforms(self, waves):
        return [np.round(np.asarray(w) * 32767).astype(np.int32)[None] for w in waves]

    def encode(self, batch):
        return self.encode_waveforms([self.prepare(x, "x") for x in batch])

    def decode(self, codes):
        return [(np.asarray(c[0], np.float32) / 32767, self.sample_rate) for c in codes]

    def fingerprint(self):
        return {"kind": "identity_audio", "name": "identity", "modality": "audio"}


def _pictures(root, n=6):
    from PIL import Image

    paths = []
    for i in range(n):
        y, x = np.mgrid[0:80, 0:96]
        a = np.stack([(x * (i + 2)) % 256, (y * 3 + 40 * i) % 256, ((x - y) * 2) % 256], axis=-1).astype(np.uint8)
        p = root / f"pic{i}.png"
        Image.fromarray(a, "RGB").save(p)
        paths.append(str(p))
    return paths


def _clips(root, n=4):
    import soundfile as sf

    paths = []
    for i in range(n):
        t = np.arange(int(22050 * 0.8)) / 22050
        w = 0.4 * np.sin(2 * np.pi * (220 + 110 * i) * t) * np.exp(-t)
        p = root / f"clip{i}.wav"
        sf.write(p, w.astype(np.float32), 22050)  # resampled to 16 kHz by the codecs
        paths.append(str(p))
    return paths


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.imgs, self.audio, self.better = 0, [], [], []
        self._td_better = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and a.get("class") == "sample":
            self.rows += 1
        elif tag == "img":
            self.imgs.append(a["src"])
        elif tag == "audio":
            self.audio.append(a["src"])
        self._td_better = tag == "td" and a.get("class") in ("better", "tie")

    def handle_data(self, data):
        if self._td_better and data.strip():
            self.better.append(data.strip())
            self._td_better = False


def _read_page(path):
    p = _Page()
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    return p


def test_image_identity_is_perfect_random_is_low_and_compare_ranks_them(tmp_path, image_codec_dir):
    from PIL import Image

    from trimodal.jobs.codec_eval import compare, evaluate
    from trimodal.tokenizers.base import load_tokenizer

    files = _pictures(tmp_path)
    ident = evaluate(IdentityImage(), files, n=4)
    assert ident["samples"] == 4 and ident["metrics"]["psnr"]["mean"] == 100.0  # inf, capped
    assert all(s["codec"]["psnr"] == "inf" for s in ident["per_sample"])
    assert ident["metrics"]["ssim"]["mean"] == pytest.approx(1.0)
    assert ident["tokens_per_sample"]["mean"] == 64 * 64 * 3
    rnd = load_tokenizer("vqmodel", image_codec_dir, device="cpu")
    low = evaluate(rnd, files, n=4)
    assert low["metrics"]["psnr"]["mean"] < 20 and low["metrics"]["ssim"]["mean"] < 0.5
    assert low["tokens_per_sample"]["mean"] == 64 and low["encode"]["samples_per_s"] > 0

    r = compare(rnd, IdentityImage(), files, n=5, out=str(tmp_path / "page"), names=("random", "identity"))
    assert r["paired"]["psnr"]["better"] == "B" and r["paired"]["ssim"]["better"] == "B"
    assert r["paired"]["psnr"]["lo"] > 0
    page = _read_page(r["index"])
    assert page.rows == 5 and len(page.imgs) == 15  # input | A | B
    assert page.better == ["B", "B"]
    # The input cell is the preprocessed input, and B (identity) shows exactly it.
    first = [np.asarray(Image.open(io.BytesIO(_data(u)))) for u in page.imgs[:3]]
    assert first[0].shape == (64, 64, 3) and np.array_equal(first[0], first[2])
    assert not np.array_equal(first[0], first[1])


def _data(uri: str) -> bytes:
    import base64

    assert uri.startswith("data:image/png;base64,")
    return base64.b64decode(uri.split(",", 1)[1])


def test_audio_identity_and_random_dac(tmp_path, audio_codec_path):
    from trimodal.jobs.codec_eval import compare
    from trimodal.tokenizers.base import load_tokenizer

    files = _clips(tmp_path)
    rnd = load_tokenizer("dac", audio_codec_path, device="cpu")
    r = compare(IdentityAudio(), rnd, [str(tmp_path / "*.wav")], n=4, out=str(tmp_path / "page"))
    a, b = r["a"], r["b"]
    assert a["samples"] == b["samples"] == len(files)
    assert a["metrics"]["snr"]["mean"] > 80 and a["metrics"]["mel_distance"]["mean"] < 0.05
    assert b["metrics"]["snr"]["mean"] < 5 and b["metrics"]["mel_distance"]["mean"] > 0.3
    assert r["paired"]["snr"]["better"] == "A" and r["paired"]["mel_distance"]["better"] == "A"
    assert b["tokens_per_audio_second"] == pytest.approx(4 * 31.25, rel=0.05)  # 4 levels x 31.25 frames/s
    page = _read_page(r["index"])
    assert page.rows == 4 and len(page.audio) == 12
    import soundfile as sf

    wav, rate = sf.read(tmp_path / "page" / page.audio[0])
    assert rate == 16000 and len(wav) == int(0.8 * 16000)


def test_cli_compare_and_eval(tmp_path, capsys, monkeypatch, image_codec_dir):
    from trimodal.cli import main

    monkeypatch.setitem(TOKENIZERS, "identity_image", lambda path, **options: IdentityImage())
    (tmp_path / "ident").write_text("stand-in")
    (tmp_path / "pics").mkdir()
    _pictures(tmp_path / "pics", n=3)
    args = ["codec", "compare", image_codec_dir, str(tmp_path / "ident"), "--kind-b", "identity_image"]
    with pytest.raises(SystemExit) as e:
        main([*args, "--on", str(tmp_path / "pics"), "--out", str(tmp_path / "out"), "--json"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    r = json.loads(out)
    assert r["paired"]["psnr"]["better"] == "B" and r["index"] == str(tmp_path / "out" / "index.html")
    with pytest.raises(SystemExit) as e:
        main([*args, "--on", str(tmp_path / "pics")])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "PSNR dB" in text and "better" in text and "B = " in text
    with pytest.raises(SystemExit) as e:
        main(["codec", "eval", image_codec_dir, "--on", str(tmp_path / "pics"), "--n", "2"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "on 2 samples" in text and "SSIM" in text
    # An unknown kind is a usage error, samples that are not there an input error.
    with pytest.raises(SystemExit) as e:
        main(["codec", "eval", image_codec_dir, "--kind", "nope", "--on", str(tmp_path / "pics")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["codec", "eval", image_codec_dir, "--on", str(tmp_path / "ident")])
    assert e.value.code == 4
    assert not math.isnan(r["a"]["metrics"]["psnr"]["mean"])


@pytest.mark.slow  # tiny_dataset runs the tokenize job on Ray
def test_on_a_dataset_samples_come_through_their_origin(tiny_dataset, tokenizer_specs):
    from trimodal.jobs.codec_eval import compare, load_samples
    from trimodal.tokenizers.base import load_tokenizer

    samples = load_samples([tiny_dataset["uri"]], "audio", 2)
    assert len(samples) == 2 and all("#" in s.origin and isinstance(s.raw, bytes) for s in samples)
    codec = load_tokenizer("vqmodel", tokenizer_specs["image"]["path"], device="cpu")
    r = compare(codec, IdentityImage(), [tiny_dataset["uri"]], n=3)
    assert r["a"]["samples"] == r["b"]["samples"] == 3
    assert r["b"]["metrics"]["psnr"]["mean"] == 100.0 and r["paired"]["psnr"]["better"] == "B"
    assert [s["name"] for s in r["per_sample"]] == [s.name for s in load_samples([tiny_dataset["uri"]], "image", 3)]
