import io

import numpy as np

from trimodal.tokenizers.media import media_file_bytes


def test_media_file_bytes():
    import soundfile as sf
    from PIL import Image

    assert media_file_bytes("text", "héllo") == "héllo".encode()
    png = media_file_bytes("image", np.zeros((8, 8, 3), np.uint8))
    assert Image.open(io.BytesIO(png)).size == (8, 8)
    assert media_file_bytes("image", Image.new("RGB", (8, 8))) == png  # a PIL image (what generate holds) too
    wav = media_file_bytes("audio", (np.array([0.0, 2.0, -2.0], np.float32), 16000))
    w, r = sf.read(io.BytesIO(wav), dtype="float32")
    assert r == 16000 and w.max() <= 1.0 and w.min() >= -1.0  # clipped, not wrapped
