"""Import descript-audio-codec (`dac`) without needing torchaudio.

Why this module exists: ``import dac`` imports ``audiotools``, whose ``core/util.py``,
``core/effects.py`` and ``core/loudness.py`` do ``import torchaudio`` at module level. The codec
itself never touches torchaudio: `DAC.encode`, `DAC.decode`, `quantizer.from_codes`, `DAC.load`
and `DAC.save(package=False)` are plain torch. torchaudio, on the other hand, is a binary built
against one exact torch: PyPI's current torchaudio is a CUDA build that fails to load beside the
CPU torch this project installs (``libc10_cuda.so`` missing), and pinning a matching one per
platform is fragile. So:

- if a real, loadable ``torchaudio`` is installed, it is used untouched;
- otherwise a stand-in module is registered in ``sys.modules["torchaudio"]`` *before* importing
  ``dac``. The stand-in satisfies the import statements; touching any of its attributes (or
  importing a submodule such as ``torchaudio.functional``) raises an ImportError that says what
  happened and how to get the real thing. audiotools features that need torchaudio (sox effects,
  codec augmentation, loudness filters, MFCC) therefore fail loudly, never silently.

The trade-off: a process that imports `dac` through here and later wants real torchaudio must
install it before the first import. Call `import_dac()` instead of ``import dac``.
"""

from __future__ import annotations

import importlib.abc
import sys
import types

STANDIN_MESSAGE = (
    "torchaudio is not installed (or cannot load beside this torch build), so trimodal registered a "
    "stand-in module to let descript-audio-codec import; DAC encode/decode do not need torchaudio, "
    "but this feature does. Install a torchaudio build matching torch {torch} to use it."
)


class _TorchaudioStandIn(types.ModuleType):
    """Placeholder for torchaudio: importable, but every attribute access raises ImportError."""

    __trimodal_standin__ = True

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            # Keep Python's own probes (copy, pickle, inspect, hasattr(__file__)...) working.
            raise AttributeError(attr)
        raise ImportError(f"torchaudio.{attr}: " + _message())


class _SubmoduleBlocker(importlib.abc.MetaPathFinder):
    """`import torchaudio.functional` etc. raise the same explanation instead of a bare error."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("torchaudio.") and is_standin(sys.modules.get("torchaudio")):
            raise ImportError(f"{fullname}: " + _message(), name=fullname)
        return None


def _message() -> str:
    try:
        import torch

        version = torch.__version__
    except Exception:  # pragma: no cover - torch is a hard dependency
        version = "?"
    return STANDIN_MESSAGE.format(torch=version)


def is_standin(module) -> bool:
    return getattr(type(module), "__trimodal_standin__", False) if module is not None else False


def _torchaudio_loads() -> bool:
    if "torchaudio" in sys.modules:
        return True
    try:
        import torchaudio  # noqa: F401

        return True
    except Exception:  # ImportError, or OSError from a mismatched binary (libc10_cuda.so)
        sys.modules.pop("torchaudio", None)
        return False


def install_torchaudio_standin() -> bool:
    """Register the stand-in if torchaudio cannot be imported; True if the stand-in is in use."""
    if _torchaudio_loads():
        return is_standin(sys.modules.get("torchaudio"))
    mod = _TorchaudioStandIn("torchaudio", "stand-in registered by trimodal.tokenizers.dac_import")
    mod.__path__ = []  # a package, so `import torchaudio.x` consults the finders (and _SubmoduleBlocker)
    sys.modules["torchaudio"] = mod
    if not any(isinstance(f, _SubmoduleBlocker) for f in sys.meta_path):
        sys.meta_path.insert(0, _SubmoduleBlocker())
    return True


def import_dac():
    """Import and return the `dac` package (see the module docstring for the torchaudio handling)."""
    if "dac" in sys.modules:
        return sys.modules["dac"]
    from trimodal.tokenizers.base import quiet_load

    install_torchaudio_standin()
    with quiet_load():  # audiotools' import-time deprecation notices (torch.jit.script, ...)
        import dac

    return dac
