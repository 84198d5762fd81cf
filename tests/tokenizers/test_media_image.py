"""Image preparation (media.py): every Pillow mode ends up as upright RGB on white, resized and
center-cropped; broken, truncated and oversized inputs raise a SampleError naming the input."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from trimodal.errors import SampleError
from trimodal.tokenizers import media


def png_bytes(img, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, "PNG", **kw)
    return b.getvalue()


def jpeg_bytes(img, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, "JPEG", quality=95, **kw)
    return b.getvalue()


def two_halves(w=80, h=40) -> Image.Image:
    """Left half red, right half blue: any rotation or mirroring is visible."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(a)


def test_palette_with_transparency_composites_on_white():
    img = Image.new("P", (16, 16), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((0, 0), 0)
    data = png_bytes(img, transparency=0)  # index 0 is transparent
    rgb = media.open_image(data, "pal.png")
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)  # transparent → white, not black
    assert rgb.getpixel((5, 5)) == (10, 200, 30)


def test_la_and_rgba_alpha_blend_on_white():
    la = Image.new("LA", (10, 10), (0, 0))
    la.putpixel((1, 1), (40, 255))
    rgb = media.open_image(png_bytes(la), "la.png")
    assert rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 1)) == (40, 40, 40)
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 128))  # half-transparent black → mid grey
    px = media.open_image(png_bytes(rgba), "rgba.png").getpixel((0, 0))
    assert all(abs(c - 127) <= 1 for c in px)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (255, 0, 0, 0))  # pure cyan
    rgb = media.open_image(jpeg_bytes(cmyk), "cmyk.jpg")
    r, g, b = rgb.getpixel((8, 8))
    assert rgb.mode == "RGB" and r < 20 and g > 235 and b > 235


def test_16_bit_grayscale_scales_to_8_bit():
    a = np.linspace(0, 65535, 64 * 16).astype(np.uint16).reshape(16, 64)
    img16 = Image.fromarray(a)  # mode I;16
    assert img16.mode.startswith("I;16")
    rgb = np.asarray(media.open_image(png_bytes(img16), "deep.png"))
    np.testing.assert_array_equal(rgb[..., 0], np.round(a / 257).astype(np.uint8))
    assert (rgb[..., 0] == rgb[..., 2]).all()
    assert rgb[..., 0].max() == 255 and rgb[..., 0].min() == 0  # full range, not clipped to white


def test_grayscale_and_bilevel():
    assert media.open_image(png_bytes(Image.new("L", (9, 9), 77)), "l.png").getpixel((3, 3)) == (77, 77, 77)
    assert media.open_image(png_bytes(Image.new("1", (9, 9), 1)), "1.png").getpixel((3, 3)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = jpeg_bytes(two_halves(80, 40), exif=exif.tobytes())
    img = np.asarray(media.open_image(data, "rotated.jpg"))
    assert img.shape == (80, 40, 3)  # portrait now
    top, bottom = img[5, 20], img[-5, 20]
    assert top[0] > 200 and top[2] < 60  # the left (red) half is on top after a clockwise turn
    assert bottom[2] > 200 and bottom[0] < 60


def test_fit_square_resizes_shorter_side_and_center_crops():
    a = np.zeros((40, 120, 3), np.uint8)  # wide: three 40x40 tiles, green in the middle
    a[:, 40:80] = (0, 255, 0)
    out = media.fit_square(Image.fromarray(a), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[4:28, 4:28, 1].min() > 240 and out[4:28, 4:28, 0].max() < 15  # the center tile survives
    up = media.fit_square(Image.new("RGB", (10, 20), (1, 2, 3)), 64)  # small images are upscaled
    assert up.shape == (64, 64, 3) and tuple(up[30, 30]) == (1, 2, 3)


def test_corrupt_and_truncated_images_name_the_input():
    good = png_bytes(two_halves(64, 64))
    cases = {
        "garbage.png": b"this is not an image at all",
        "empty.png": b"",
        "truncated.png": good[: len(good) // 2],
        "truncated.jpg": jpeg_bytes(two_halves(256, 256))[:600],
    }
    for name, data in cases.items():
        with pytest.raises(SampleError) as e:
            media.prepare_image(data, 32, name)
        assert e.value.reason == "corrupt_image" and name in str(e.value)
    with pytest.raises(SampleError, match="expected image bytes"):
        media.prepare_image(12345, 32, "int")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(SampleError) as e:  # 10 gigapixels declared in a ~100-byte file
        media.prepare_image(_png_header_only(100_000, 100_000), 32, "bomb.png")
    assert e.value.reason == "image_too_large" and "bomb.png" in str(e.value)
    with pytest.raises(SampleError) as e:  # the configurable guard
        media.prepare_image(png_bytes(two_halves(64, 64)), 32, "big.png", max_pixels=1000)
    assert e.value.reason == "image_too_large" and "max_pixels=1000" in str(e.value)


def test_tiny_images_are_refused():
    with pytest.raises(SampleError) as e:
        media.prepare_image(png_bytes(Image.new("RGB", (4, 100))), 32, "sliver.png")
    assert e.value.reason == "image_too_small" and "sliver.png" in str(e.value)
