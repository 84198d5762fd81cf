"""Reconstruction quality of a codec: how far decode(encode(x)) is from x, per sample.

Images are compared with the codec's own preprocessed input (the resized, cropped uint8 pixels
it encodes), audio with its resampled mono input, so the figures measure the codec and not the
resize or resampling that any codec at that resolution or rate would share.

- PSNR (dB, data range 255) and SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01,
  K2 0.03, over RGB channels) from torchmetrics, a well-kept reference implementation.
- SNR (dB) from torchmetrics: 10 log10(|x|^2 / |x - y|^2).
- Multi-scale mel distance: the L1 distance between log10 mel power spectrograms at three STFT
  scales (window 2048 / 512 / 128 samples with 80 / 40 / 10 mel bands, hop a quarter window,
  Hann window, power floored at 1e-5), averaged over scales: the reconstruction loss DAC trains
  with, without its linear-magnitude term. 0 is identical; a 10x amplitude error is ~2.

A perfect reconstruction has infinite PSNR; `CAP_DB` bounds PSNR and SNR when they are averaged
(a single perfect sample must not make a mean infinite), and reports call 100 dB "perfect".
"""

from __future__ import annotations

import math

import numpy as np

CAP_DB = 100.0
MEL_SCALES: tuple[tuple[int, int], ...] = ((2048, 80), (512, 40), (128, 10))

# Direction of each metric: +1 higher is better, -1 lower is better.
BETTER = {"psnr": 1, "ssim": 1, "snr": 1, "mel_distance": -1}
METRICS = {"image": ("psnr", "ssim"), "audio": ("snr", "mel_distance")}


def _images(x: np.ndarray):
    import torch

    a = np.asarray(x)
    if a.ndim == 3:
        a = a[None]
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(0, 3, 1, 2)


def psnr(ref: np.ndarray, rec: np.ndarray) -> float:
    """PSNR in dB of uint8 RGB (H, W, 3) `rec` against `ref`; inf when identical."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    if np.array_equal(ref, rec):
        return math.inf
    return float(peak_signal_noise_ratio(_images(rec), _images(ref), data_range=255.0))


def ssim(ref: np.ndarray, rec: np.ndarray) -> float:
    """SSIM of uint8 RGB (H, W, 3) images (1.0 when identical)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    v = structural_similarity_index_measure(
        _images(rec), _images(ref), gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=255.0
    )
    return float(v)


def snr(ref: np.ndarray, rec: np.ndarray) -> float:
    """SNR in dB of waveform `rec` against `ref` (same length); inf when identical."""
    import torch
    from torchmetrics.functional.audio import signal_noise_ratio

    ref = np.asarray(ref, np.float64)
    rec = np.asarray(rec, np.float64)
    if np.array_equal(ref, rec):
        return math.inf
    return float(signal_noise_ratio(torch.from_numpy(rec), torch.from_numpy(ref)))


def mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on the HTK mel scale from 0
    to rate / 2 (the construction of librosa's `htk=True, norm=None`)."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)

    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = hz(np.linspace(mel(0), mel(rate / 2), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / np.maximum(edges[1:-1, None] - edges[:-2, None], 1e-12)
    upper = (edges[2:, None] - freqs[None, :]) / np.maximum(edges[2:, None] - edges[1:-1, None], 1e-12)
    return np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)


def log_mel(wave: np.ndarray, rate: int, n_fft: int, n_mels: int):
    """log10 mel power spectrogram (n_mels, frames) of a mono waveform."""
    import torch

    x = torch.from_numpy(np.asarray(wave, np.float32))
    if x.numel() < n_fft:  # a clip shorter than the window: zero-pad it to one frame
        x = torch.nn.functional.pad(x, (0, n_fft - x.numel()))
    spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
    power = spec.abs() ** 2
    mel = torch.from_numpy(mel_filterbank(rate, n_fft, n_mels)) @ power
    return torch.log10(mel.clamp(min=1e-5))


def mel_distance(ref: np.ndarray, rec: np.ndarray, rate: int, scales=MEL_SCALES) -> float:
    """Multi-scale log-mel L1 distance (see the module docstring); 0.0 when identical."""
    return float(
        np.mean([float((log_mel(ref, rate, n, m) - log_mel(rec, rate, n, m)).abs().mean()) for n, m in scales])
    )


def capped(v: float) -> float:
    return min(v, CAP_DB) if not math.isnan(v) else v


# ----------------------------------------------------------------------------- statistics


def mean_ci(values, level: float = 0.95) -> dict:
    """Mean of per-sample values with a Student-t confidence interval (dB metrics capped at
    `CAP_DB` by the caller). With one sample, or all equal, the interval is the mean itself."""
    from scipy import stats

    v = np.asarray(values, np.float64)
    n = len(v)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = float(v.mean())
    if n < 2 or float(v.std()) == 0.0:
        return {"mean": mean, "lo": mean, "hi": mean, "n": n}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def paired(a, b, metric: str, level: float = 0.95) -> dict:
    """B minus A over the same samples, with its interval, and which is better: "A" or "B" when
    the interval excludes 0, else "tie" (the samples do not tell them apart)."""
    d = mean_ci(np.asarray(b, np.float64) - np.asarray(a, np.float64), level)
    better = "tie"
    if d["n"] and d["lo"] is not None:
        sign = BETTER[metric]
        if d["lo"] > 0 or (d["lo"] == d["hi"] and d["mean"] > 0):
            better = "B" if sign > 0 else "A"
        elif d["hi"] < 0 or (d["lo"] == d["hi"] and d["mean"] < 0):
            better = "A" if sign > 0 else "B"
    return {**d, "better": better}
