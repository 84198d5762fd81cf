"""Turning raw media (bytes, PIL images, waveforms) into the exact arrays a codec expects.

Images: decode → EXIF orientation → RGB on a white background (palette transparency, LA, RGBA,
16-bit and CMYK handled) → resize the shorter side + center crop to the codec's square
resolution → ``uint8 (size, size, 3)``. Audio: decode (soundfile: wav/flac/ogg/mp3, any bit
depth) or take ``(waveform, rate)`` → float32 mono (channel mean) → resample to the codec rate
(`scipy.signal.resample_poly`, exact rational ratio) → cut to ``max_seconds``.

Every rejection is a `SampleError` with a stable reason code and a message that names the input,
so the pipeline can quarantine one sample and go on. The trade-off: preparation is per item
(Pillow/soundfile are per-file APIs) and runs on CPU before the batched codec call; choices that
change codes (resize filter, crop, JPEG draft decoding, resampler, max_seconds) are recorded in
the tokenizers' fingerprints.

The way back, decoded media → the bytes of a file (`media_file_bytes`), is here too, so that
`trimodal generate`, the service and `inspect --render` write the same PNG and WAV files.
"""

from __future__ import annotations

import functools
import io
import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from trimodal.errors import SampleError

# ----------------------------------------------------------------------------- naming


def prepare_each(prepare, batch: Sequence[Any], names: Sequence[str] | None) -> tuple[list, list[int], list]:
    """Run `prepare(item, name)` over a batch: returns (`out` with each SampleError in place and
    None elsewhere, indices of the prepared items, the prepared items), so that the valid ones
    can be encoded in one batch."""
    out: list = [None] * len(batch)
    ok, prepared = [], []
    for i, item in enumerate(batch):
        try:
            prepared.append(prepare(item, item_name(i, names, item)))
            ok.append(i)
        except SampleError as e:
            out[i] = e
    return out, ok, prepared


def item_name(i: int, names: Sequence[str] | None, item: Any = None) -> str:
    """How an item is named in error messages: its sample name if given, else its batch index."""
    if names is not None and i < len(names) and names[i] is not None:
        return repr(str(names[i]))
    what = ""
    if isinstance(item, (bytes, bytearray, memoryview)):
        what = f", {len(item)} bytes"
    return f"input #{i}{what}"


def _as_bytes(item: Any) -> bytes | None:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    return None


# ----------------------------------------------------------------------------- images

DEFAULT_MAX_PIXELS = 80_000_000  # below Pillow's own bomb limit (2 × 89.5 MP raises), ~ a 9k × 9k photo
DEFAULT_MIN_SIDE = 8
_RESAMPLE = {"bicubic": 3, "bilinear": 2, "lanczos": 1, "nearest": 0}  # PIL.Image.Resampling values


def open_image(
    item: Any,
    name: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    draft_size: int | None = None,
):
    """bytes / PIL.Image → an upright RGB PIL image (not resized). Raises SampleError."""
    from PIL import Image, ImageOps

    if isinstance(item, Image.Image):
        img = item
    else:
        data = _as_bytes(item)
        if data is None:
            raise SampleError(
                "corrupt_image", f"{name}: expected image bytes or a PIL image, got {type(item).__name__}"
            )
        if not data:
            raise SampleError("corrupt_image", f"{name}: empty image bytes")
        try:
            with warnings.catch_warnings():
                # Our own max_pixels check below replaces Pillow's warning; its hard limit (2×) still raises.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise SampleError("image_too_large", f"{name}: {e}") from None
        except Image.UnidentifiedImageError:
            raise SampleError("corrupt_image", f"{name}: not an image in a format Pillow recognizes") from None
        except Exception as e:  # SyntaxError, struct errors from broken headers...
            raise SampleError("corrupt_image", f"{name}: not a readable image ({type(e).__name__}: {e})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise SampleError("image_too_large", f"{name}: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}")
    if min(w, h) < min_side:
        raise SampleError("image_too_small", f"{name}: {w}x{h} is smaller than {min_side} px on a side")
    try:
        if draft_size and img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
            # Let the JPEG decoder downscale by 1/2..1/8 in the DCT domain: several times faster on
            # large photos. It keeps the shorter side >= draft_size, so the final resize still
            # downsamples (recorded in the fingerprint as jpeg_draft).
            img.draft(img.mode, (draft_size, draft_size))
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except SampleError:
        raise
    except Exception as e:  # truncated files fail here, at decode time
        raise SampleError("corrupt_image", f"{name}: cannot decode image ({type(e).__name__}: {e})") from None


def to_rgb(img):
    """Any Pillow mode → RGB, compositing transparency on white and scaling deep images to 8 bit."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA") if (mode == "PA" or "transparency" in img.info) else img.convert("RGB")
        mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(img)
        if mode.startswith("I;16") or (mode == "I" and a.size and a.max() > 255):
            # 16-bit samples: 0..65535 → 0..255 (65535 / 257 = 255 exactly).
            a = np.clip(a.astype(np.float64), 0, 65535) / 257.0
        elif mode == "F" and a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        a = np.clip(np.nan_to_num(a.astype(np.float64)), 0, 255).round().astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX


def fit_square(img, size: int, resample: str = "bicubic") -> np.ndarray:
    """Resize the shorter side to `size` and center-crop → uint8 array (size, size, 3)."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), resample=Image.Resampling(_RESAMPLE[resample]), reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def prepare_image(
    item: Any,
    size: int,
    name: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    resample: str = "bicubic",
    jpeg_draft: bool = True,
) -> np.ndarray:
    img = open_image(item, name, max_pixels=max_pixels, min_side=min_side, draft_size=size if jpeg_draft else None)
    return fit_square(img, size, resample)


# ----------------------------------------------------------------------------- audio


def sniff_audio(data: bytes) -> str | None:
    """The container a byte string claims to be, from its magic bytes (None if unknown)."""
    head = data[:12]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[4:8] == b"ftyp":
        return "MP4"  # m4a / AAC: libsndfile has no reader for it
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "AAC"  # ADTS
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    return None


@functools.lru_cache(maxsize=1)
def _readable_formats() -> frozenset[str]:
    import soundfile as sf

    return frozenset(f.upper() for f in sf.available_formats())


def wav_truncation(data: bytes) -> tuple[int, int] | None:
    """(declared, present) data bytes if a RIFF/WAVE file's data chunk is cut short, else None.

    libsndfile reads a truncated WAV without complaint (it returns the frames that are there), so a
    half-downloaded file would be encoded as a shorter clip; this check makes that visible.
    Streaming writers' "unknown length" markers (0 and 0xFFFFFFFF) are not truncation."""
    import struct

    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"data":
            present = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and size > present:
                return size, present
            return None
        pos += 8 + size + (size & 1)  # chunks are word-aligned
    return None


def load_audio(item: Any, name: str) -> tuple[np.ndarray, int]:
    """bytes (any format libsndfile reads: wav/flac/ogg/mp3) or (waveform, rate) →
    (float32 array (channels, samples), rate). Raises SampleError: `empty_audio`,
    `unsupported_audio` (a known container libsndfile cannot read, e.g. m4a), `truncated_audio`
    (a WAV shorter than its header says), `corrupt_audio`."""
    data = _as_bytes(item)
    if data is not None:
        import soundfile as sf

        if not data:
            raise SampleError("empty_audio", f"{name}: empty audio bytes")
        fmt = sniff_audio(data)
        if fmt is not None and fmt not in ("AAC", "MP4") and fmt not in _readable_formats():
            raise SampleError(
                "unsupported_audio",
                f"{name}: {fmt} audio, which this libsndfile ({sf.__libsndfile_version__}) cannot read",
            )
        if fmt in ("AAC", "MP4"):
            raise SampleError(
                "unsupported_audio",
                f"{name}: {fmt} audio is not supported (libsndfile reads "
                f"wav, flac, ogg/vorbis/opus, mp3, aiff); convert it first",
            )
        if fmt == "WAV":
            cut = wav_truncation(data)
            if cut is not None:
                raise SampleError(
                    "truncated_audio",
                    f"{name}: WAV data chunk declares {cut[0]} bytes but only {cut[1]} are present (truncated file)",
                )
        try:
            wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile.LibsndfileError, RuntimeError on broken mp3 frames
            detail = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the bytes", str(e))
            what = f"{fmt} data" if fmt else "audio"
            raise SampleError("corrupt_audio", f"{name}: not readable {what} ({type(e).__name__}: {detail})") from None
        return np.ascontiguousarray(wav.T), int(rate)
    if isinstance(item, (tuple, list)) and len(item) == 2:
        wav, rate = item
        if hasattr(wav, "detach"):  # torch tensor
            wav = wav.detach().cpu().numpy()
        wav = np.asarray(wav)
        try:
            rate = int(rate)
        except (TypeError, ValueError):
            raise SampleError("corrupt_audio", f"{name}: sample rate {rate!r} is not an integer") from None
        if rate <= 0:
            raise SampleError("corrupt_audio", f"{name}: sample rate {rate} must be positive")
        if wav.dtype.kind not in "iuf" or wav.ndim not in (1, 2):
            raise SampleError(
                "corrupt_audio",
                f"{name}: waveform must be a 1-D or (channels, samples) numeric array, got {wav.dtype} {wav.shape}",
            )
        wav = _int_to_float(wav)  # 2-D is (channels, samples), as in torch / DAC
        return (wav[None, :] if wav.ndim == 1 else wav), rate
    raise SampleError("corrupt_audio", f"{name}: expected audio bytes or (waveform, rate), got {type(item).__name__}")


def _int_to_float(wav: np.ndarray) -> np.ndarray:
    if wav.dtype.kind == "f":
        return wav.astype(np.float32, copy=False)
    if wav.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        return (wav.astype(np.float32) - 128.0) / 128.0
    if wav.dtype.kind == "u":
        half = float(2 ** (8 * wav.dtype.itemsize - 1))
        return (wav.astype(np.float64) - half).astype(np.float32) / half
    return wav.astype(np.float32) / float(2 ** (8 * wav.dtype.itemsize - 1))


def resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling by the exact ratio target/rate (last axis)."""
    if rate == target:
        return wav
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(wav, target // g, rate // g, axis=-1).astype(np.float32, copy=False)


def prepare_audio(
    item: Any, rate: int, name: str, max_seconds: float | None = None, min_seconds: float = 0.0
) -> np.ndarray:
    """→ float32 mono waveform at `rate`, at most `max_seconds` long (a documented cut, not an
    error). Clips shorter than `min_seconds` are rejected as `audio_too_short`; silence is fine."""
    wav, src_rate = load_audio(item, name)
    if wav.shape[-1] == 0 or wav.shape[0] == 0:
        raise SampleError("empty_audio", f"{name}: audio has no samples")
    if min_seconds and wav.shape[-1] < min_seconds * src_rate:
        raise SampleError(
            "audio_too_short", f"{name}: {wav.shape[-1] / src_rate:.3f} s is shorter than min_seconds={min_seconds}"
        )
    if max_seconds is not None:
        # Cut before resampling (cheaper), with a little slack for the filter's edge, then exactly.
        wav = wav[:, : int(math.ceil(max_seconds * src_rate)) + 64]
    if not np.isfinite(wav).all():
        raise SampleError("nonfinite_audio", f"{name}: waveform contains NaN or infinite samples")
    mono = wav.mean(axis=0, dtype=np.float32) if wav.shape[0] > 1 else wav[0]
    mono = resample(np.ascontiguousarray(mono, dtype=np.float32), src_rate, rate)
    if max_seconds is not None:
        mono = mono[: int(round(max_seconds * rate))]
    if mono.size == 0:
        raise SampleError("empty_audio", f"{name}: audio is shorter than one sample at {rate} Hz")
    return mono


# ----------------------------------------------------------------------------- writing


# The file each modality's decoded media is written as, and its media type.
FILE_SUFFIX = {"text": ".txt", "image": ".png", "audio": ".wav"}
MEDIA_TYPES = {"text": "text/plain; charset=utf-8", "image": "image/png", "audio": "audio/wav"}


def media_file_bytes(modality: str, media: Any) -> bytes:
    """Decoded media (what `Tokenizer.decode` returns) → the bytes of a file: UTF-8 text, PNG, or
    16-bit PCM WAV with the waveform clipped to [-1, 1] (a codec may overshoot; unclipped
    samples would wrap around in 16 bits)."""
    if modality == "text":
        return str(media).encode("utf-8")
    if modality == "image":
        from PIL import Image

        buf = io.BytesIO()
        img = media if isinstance(media, Image.Image) else Image.fromarray(np.asarray(media, np.uint8), "RGB")
        img.save(buf, format="PNG")
        return buf.getvalue()
    import soundfile as sf

    wave, rate = media
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, np.float32).reshape(-1), -1.0, 1.0), int(rate), format="WAV")
    return buf.getvalue()
