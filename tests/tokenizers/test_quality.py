"""Reconstruction metrics against values known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trimodal.tokenizers import quality


def _image(seed=0, size=48):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1) % 256
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def test_psnr_and_ssim():
    a = _image()
    assert quality.psnr(a, a) == math.inf and quality.ssim(a, a) == pytest.approx(1.0)
    b = a.astype(np.int16) + 1
    b[b > 255] = 254  # every pixel off by exactly one: MSE 1
    assert quality.psnr(a, b.astype(np.uint8)) == pytest.approx(20 * math.log10(255), abs=1e-3)
    noisy = np.clip(a + np.random.default_rng(1).normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert 0.0 < quality.ssim(a, noisy) < quality.ssim(a, b.astype(np.uint8)) < 1.0
    # SSIM compares structure: an inverted image is anti-correlated.
    assert quality.ssim(a, 255 - a) < 0.1


def test_snr_and_mel_distance():
    rate = 16000
    t = np.arange(rate) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)
    assert quality.snr(x, x) == math.inf and quality.mel_distance(x, x, rate) == 0.0
    assert quality.snr(x, 0.9 * x) == pytest.approx(20.0, abs=1e-3)  # noise = 0.1 x
    noise = np.random.default_rng(0).normal(0, 0.3, len(x)).astype(np.float32)
    # 10x the amplitude is 100x the power: log10 mel power moves by exactly 2 where every band is
    # above the floor (white noise fills them all).
    assert quality.mel_distance(noise, 10 * noise, rate) == pytest.approx(2.0, abs=1e-3)
    assert quality.mel_distance(x, x + 0.01 * noise, rate) < quality.mel_distance(x, x + noise, rate)
    # A clip shorter than the largest window still scores.
    assert quality.mel_distance(x[:300], 0.5 * x[:300], rate) > 0


def test_mel_filterbank_covers_the_band():
    fb = quality.mel_filterbank(16000, 512, 40)
    assert fb.shape == (40, 257) and fb.min() >= 0 and fb.max() <= 1.0 + 1e-6
    assert (fb.sum(axis=1) > 0).all()  # no empty band
    assert np.argmax(fb[0]) < np.argmax(fb[-1])


def test_intervals_and_paired_ranking():
    ci = quality.mean_ci([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.303; sd 1; n 3 -> half width 2.484
    assert ci["mean"] == 2.0 and ci["hi"] - ci["mean"] == pytest.approx(4.3027 / math.sqrt(3), rel=1e-3)
    assert quality.mean_ci([5.0])["lo"] == 5.0 and quality.mean_ci([])["mean"] is None
    assert quality.paired([10, 11, 12], [30, 32, 31], "psnr")["better"] == "B"
    assert quality.paired([10, 11, 12], [30, 32, 31], "mel_distance")["better"] == "A"
    assert quality.paired([10, 12, 11], [11, 10, 12], "snr")["better"] == "tie"
