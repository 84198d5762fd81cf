"""descript-audio-codec imports and runs without torchaudio, through the stand-in module, and
the stand-in fails loudly if anything actually needs torchaudio."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # spawns a subprocess


def test_audio_tokenizer_works_without_torchaudio(audio_codec_path):
    code = textwrap.dedent(f"""
        import importlib.util, sys
        assert importlib.util.find_spec("torchaudio") is None, "this test needs torchaudio absent"
        import numpy as np
        import trimodal.tokenizers.audio
        from trimodal.tokenizers.base import load_tokenizer
        from trimodal.tokenizers.dac_import import is_standin
        tok = load_tokenizer("dac", {audio_codec_path!r})
        codes = tok.encode([(np.zeros(4000, np.float32), 16000)])
        assert codes[0].shape == (4, 8), codes[0].shape
        assert tok.decode(codes)[0][0].shape == (4096,)
        assert is_standin(sys.modules["torchaudio"])
        import torchaudio
        try:
            torchaudio.load
        except ImportError as e:
            assert "stand-in" in str(e) and "torchaudio" in str(e)
        else:
            raise AssertionError("stand-in attribute access should raise")
        try:
            import torchaudio.functional
        except ImportError as e:
            assert "torchaudio.functional" in str(e)
        else:
            raise AssertionError("stand-in submodule import should raise")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
