"""Loading a codec is quiet (third-party notices are filtered around the load only) and its
fingerprint names the file, wherever it was given from."""

from __future__ import annotations

import os
import shutil
import warnings

from trimodal.tokenizers.base import TOKENIZERS, load_tokenizer


def test_load_warnings_are_filtered_inside_the_load_only(monkeypatch):
    def noisy(path, **options):
        # What torch.load says about older DAC checkpoints.
        warnings.warn("TypedStorage is deprecated. It will be removed in the future", UserWarning, stacklevel=1)
        warnings.warn("`torch.jit.script` is deprecated", DeprecationWarning, stacklevel=1)
        return "loaded"

    monkeypatch.setitem(TOKENIZERS, "noisy", noisy)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert load_tokenizer("noisy", "x") == "loaded"
        warnings.warn("the caller's own warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["the caller's own warning"]


def test_fingerprint_name_of_a_relative_path(tmp_path, monkeypatch, audio_codec_path, image_codec_dir):
    shutil.copy(audio_codec_path, tmp_path / "dac44.pth")
    shutil.copytree(image_codec_dir, tmp_path / "vq")
    monkeypatch.chdir(tmp_path)
    assert load_tokenizer("dac", "dac44.pth", device="cpu").fingerprint()["name"] == f"{tmp_path.name}/dac44.pth"
    os.chdir(tmp_path / "vq")
    assert load_tokenizer("vqmodel", ".", device="cpu").fingerprint()["name"] == "vq"
