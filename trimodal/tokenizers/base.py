"""The one contract every modality's tokenizer implements, and the registry that builds them.

A tokenizer turns media into the codec's own integer codes and back. Codes have a fixed shape
per modality: text ``(n,)``, image ``(h, w)`` (the code grid), audio ``(levels, frames)``.
Shards store them flattened (`to_storage` / `from_storage`) so that Arrow holds one
``list<int32>`` per sample; the unified vocabulary (vocab.py) maps codes to model ids later,
so a change of vocabulary layout never rewrites data.

The `fingerprint()` names everything that changes the codes; two tokenizers with equal
fingerprints produce the same codes, and datasets with different fingerprints are never mixed.
Its `name` is only a label for people (the file's name): moving or renaming a codec file
changes it but not the codes, so every comparison goes through `code_identity`, which leaves
the labels out (resume checks, `fingerprint_id`; the vocabulary check looks at fewer fields
still, see vocab.IDENTITY_FIELDS).
"The same" is bit-exact for text. For media it is bit-exact on one kind of device with one
pass-size setting: each item's input is independent of its batch neighbours (no shared padding)
and image passes have a fixed shape. Across devices or pass sizes, float rounding inside the
codec's kernels (GroupNorm and convolution reductions) can flip the rare code whose two nearest
codebook entries are near-tied (well under 1% of codes in the tests).
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from trimodal.dataset.digest import canonical_hash
from trimodal.dataset.schema import TOKENIZER_KINDS
from trimodal.errors import SampleError


class Tokenizer(ABC):
    """Media ↔ codes for one modality.

    Subclasses set `modality`, `codebook_size` (vocabulary size per level), `levels`
    (1 for text and image), and the hints `batch_size` (samples per encode call that keep the
    device busy) and `device` ("cpu" or "cuda").
    """

    modality: str
    codebook_size: int
    levels: int = 1
    batch_size: int = 8
    device: str = "cpu"

    @abstractmethod
    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        """Encode a batch of media (str / image bytes or PIL image / audio bytes or
        (waveform, rate)) into one int32 code array per item. Invalid media raise
        `trimodal.errors.SampleError` naming the item; use `encode_each` to isolate them."""

    @abstractmethod
    def decode(self, codes: Sequence[np.ndarray]) -> list[Any]:
        """Codes (as returned by `encode`) → media: str, PIL.Image, or (waveform, rate)."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """Everything that changes the codes: kind, name, modality, codebook_size, levels,
        rates / resolution / grid, weights_sha256, library and library_version."""

    def fingerprint_id(self) -> str:
        return fingerprint_id(self.fingerprint())

    def encode_each(self, batch: Sequence[Any], names: Sequence[str] | None = None) -> list[np.ndarray | SampleError]:
        """Like `encode`, but a bad item yields its `SampleError` in place instead of failing the
        batch. `names` (one per item, e.g. sample ids) go into the error messages.

        This default retries item by item after a failed batch; the built-in tokenizers override
        it to validate each item first and encode the valid ones in one batch."""

        try:
            return list(self.encode(batch))
        except SampleError:
            pass
        out: list = []
        for i, item in enumerate(batch):
            try:
                out.append(self.encode([item])[0])
            except SampleError as e:
                name = names[i] if names is not None and i < len(names) else None
                out.append(SampleError(e.reason, f"{name!r}: {e}") if name is not None else e)
        return out


def raise_first(results: list) -> list[np.ndarray]:
    """`encode_each`'s results as `encode` returns them: the first SampleError is raised."""

    for r in results:
        if isinstance(r, SampleError):
            raise r
    return results


# Fingerprint fields that label a tokenizer for people and never change its codes.
LABEL_FIELDS = ("name",)


def code_identity(fp: dict) -> dict:
    """`fp` without its label fields: what decides whether two tokenizers give the same codes
    (the weights' sha256 and the settings), not where the file lies or what it is called."""
    return {k: v for k, v in fp.items() if k not in LABEL_FIELDS}


def fingerprint_id(fp: dict) -> str:
    """Short stable hash of a fingerprint's `code_identity` (canonical JSON)."""
    return canonical_hash(code_identity(fp))


def to_storage(modality: str, codes: np.ndarray) -> np.ndarray:
    """Per-sample codes → the flat int32 column value stored in shards.

    Audio is stored frame-major (frame 0 levels 0..L-1, frame 1 ...) so a prefix of the list is
    a prefix in time; images row-major over the grid."""
    codes = np.asarray(codes)
    if modality == "audio":
        return np.ascontiguousarray(codes.T).reshape(-1).astype(np.int32, copy=False)
    return codes.reshape(-1).astype(np.int32, copy=False)


def from_storage(modality: str, flat: np.ndarray, fingerprint: dict) -> np.ndarray:
    """Inverse of `to_storage`, using the fingerprint's grid / levels."""
    flat = np.asarray(flat, dtype=np.int32)
    if modality == "audio":
        levels = int(fingerprint["levels"])
        return flat.reshape(-1, levels).T.copy()
    if modality == "image":
        h, w = fingerprint["code_grid"]
        return flat.reshape(h, w)
    return flat


# kind -> loader(path, **options) -> Tokenizer. Filled by the modality modules on import
# (trimodal/tokenizers/<modality>.py registers the kinds of `schema.TOKENIZER_KINDS`);
# `load_tokenizer` imports them lazily so that a text-only job never imports torch.
TOKENIZERS: dict[str, Callable[..., Tokenizer]] = {}


def register(kind: str):
    def deco(fn):
        TOKENIZERS[kind] = fn
        return fn

    return deco


# What third-party libraries warn about while a codec loads (torch's "TypedStorage is
# deprecated" from `torch.load` of older DAC checkpoints, `torch.jit.script` deprecation on
# importing audiotools, diffusers' config notices, weight_norm): notices for their developers,
# printed once per actor, that a user of trimodal can do nothing about.
LOAD_WARNINGS = (DeprecationWarning, FutureWarning, UserWarning)


@contextlib.contextmanager
def quiet_load() -> Iterator[None]:
    """Silence `LOAD_WARNINGS` raised inside the block only (the caller's filters are restored
    after it): around importing and loading codecs, never process-wide."""
    with warnings.catch_warnings():
        for category in LOAD_WARNINGS:
            warnings.simplefilter("ignore", category)
        yield


def load_tokenizer(kind: str, path: str, **options: Any) -> Tokenizer:
    """Build a tokenizer of registry `kind` from a local path (no network)."""
    if kind not in TOKENIZERS and kind in TOKENIZER_KINDS:
        import importlib

        with quiet_load():
            importlib.import_module(f"trimodal.tokenizers.{TOKENIZER_KINDS[kind]}")
    if kind not in TOKENIZERS:
        from trimodal.errors import ConfigError

        raise ConfigError(f"unknown tokenizer kind {kind!r}; known: {sorted(TOKENIZER_KINDS)}")
    with quiet_load():
        return TOKENIZERS[kind](path, **options)
