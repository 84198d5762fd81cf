"""Audio preparation (media.py): formats, bit depths, channels and rates end up as float32 mono
at the codec rate; empty, truncated, corrupt and unsupported inputs raise a SampleError naming
the input."""

import io

import numpy as np
import pytest
import soundfile as sf

from trimodal.errors import SampleError
from trimodal.tokenizers import media


def tone(seconds=1.0, rate=16000, freq=440.0, amp=0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode_audio(wav: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    b = io.BytesIO()
    sf.write(b, wav, rate, format=fmt, subtype=subtype)
    return b.getvalue()


def test_stereo_is_mixed_down_to_the_channel_mean():
    x = tone()
    stereo = np.stack([x, 0.5 * x], axis=1)  # soundfile: (frames, channels)
    mono = media.prepare_audio(encode_audio(stereo, 16000, subtype="FLOAT"), 16000, "stereo.wav")
    np.testing.assert_allclose(mono, 0.75 * x, atol=1e-6)
    # (waveform, rate) tuples are (channels, samples), as in torch
    np.testing.assert_allclose(media.prepare_audio((stereo.T, 16000), 16000, "t"), 0.75 * x, atol=1e-6)


def test_8_bit_and_integer_pcm():
    x = tone()
    u8 = media.prepare_audio(encode_audio(x, 16000, subtype="PCM_U8"), 16000, "u8.wav")
    assert u8.dtype == np.float32 and np.abs(u8 - x).max() < 1.5 / 128
    i16 = (x * 32767).astype(np.int16)
    np.testing.assert_allclose(media.prepare_audio((i16, 16000), 16000, "i16"), x, atol=1e-4)
    u8_raw = np.round(x * 127 + 128).astype(np.uint8)  # unsigned 8-bit is centred on 128
    np.testing.assert_allclose(media.prepare_audio((u8_raw, 16000), 16000, "u8"), x, atol=1.5 / 128)


def test_48k_is_resampled_to_the_codec_rate():
    y = media.prepare_audio(encode_audio(tone(1.0, 48000), 48000, subtype="PCM_24"), 16000, "48k.wav")
    assert y.shape == (16000,)
    # the same 440 Hz tone, away from the filter's edges
    np.testing.assert_allclose(y[200:-200], tone(1.0, 16000)[200:-200], atol=2e-3)


def test_compressed_formats_decode():
    x = tone(1.0)
    for fmt, sub in [("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]:
        y = media.prepare_audio(encode_audio(x, 16000, fmt, sub), 16000, f"clip.{fmt.lower()}")
        assert abs(len(y) - 16000) < 2000 and np.abs(y).max() > 0.2, fmt


def test_max_seconds_cuts_and_min_seconds_rejects():
    y = media.prepare_audio((tone(5.0, 22050), 22050), 16000, "long", max_seconds=2.0)
    assert y.shape == (32000,)
    with pytest.raises(SampleError) as e:
        media.prepare_audio((tone(0.1), 16000), 16000, "blip", min_seconds=0.5)
    assert e.value.reason == "audio_too_short" and "blip" in str(e.value)


def test_silence_is_valid():
    y = media.prepare_audio(encode_audio(np.zeros(8000, np.float32), 16000), 16000, "quiet.wav")
    assert y.shape == (8000,) and not y.any()


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("empty.wav", b"", "empty_audio"),
        ("zero.wav", encode_audio(np.zeros(0, np.float32), 16000), "empty_audio"),
        ("garbage.wav", b"definitely not audio, just some text bytes", "corrupt_audio"),
        ("cut-header.flac", encode_audio(tone(), 16000, "FLAC")[:30], "corrupt_audio"),
        ("cut-middle.flac", encode_audio(tone(), 16000, "FLAC")[:3000], "corrupt_audio"),
        ("cut-middle.wav", encode_audio(tone(), 16000, subtype="PCM_16")[:16000], "truncated_audio"),
        ("song.m4a", b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A mp42isom" + bytes(100), "unsupported_audio"),
    ],
)
def test_bad_audio_names_the_input(name, data, reason):
    with pytest.raises(SampleError) as e:
        media.prepare_audio(data, 16000, name)
    assert e.value.reason == reason and name in str(e.value)
    assert "0x" not in str(e.value)  # no object addresses in quarantine messages


@pytest.mark.parametrize(
    "item, reason",
    [
        ((np.zeros((2, 0), np.float32), 16000), "empty_audio"),
        ((np.array([0.1, np.nan, 0.2], np.float32), 16000), "nonfinite_audio"),
        ((np.zeros(100, np.float32), 0), "corrupt_audio"),
        ((np.zeros((2, 2, 2), np.float32), 16000), "corrupt_audio"),
        ("a string", "corrupt_audio"),
    ],
)
def test_bad_waveforms(item, reason):
    with pytest.raises(SampleError) as e:
        media.prepare_audio(item, 16000, "clip-7")
    assert e.value.reason == reason and "clip-7" in str(e.value)


def test_sniffing():
    assert media.sniff_audio(encode_audio(tone(0.1), 16000)) == "WAV"
    assert media.sniff_audio(encode_audio(tone(0.1), 16000, "FLAC")) == "FLAC"
    assert media.sniff_audio(encode_audio(tone(0.1), 16000, "OGG")) == "OGG"
    assert media.sniff_audio(encode_audio(tone(0.1), 16000, "MP3")) == "MP3"
    assert media.sniff_audio(b"\xff\xf1\x50\x80") == "AAC"
    assert media.sniff_audio(b"hello") is None
