"""The domain's names, defined once: modalities, source kinds, tokenizer kinds, and the one way
to build a column of code arrays.

Every other module imports these instead of spelling the tuples again, so adding a modality is
one edit. The quarantine reasons are the vocabulary of `SampleError`, so they live beside it in
the bottom layer (`trimodal.errors.QUARANTINE_REASONS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

# The modalities, in vocabulary order (text ids come first after the specials).
MODALITIES: tuple[str, ...] = ("text", "image", "audio")

# Corpus source kinds and the modalities a sample of each kind carries (text is always there:
# the document, the caption or the transcript).
KIND_MODALITIES: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "image_text": ("text", "image"),
    "audio_text": ("text", "audio"),
}
SOURCE_KINDS: tuple[str, ...] = tuple(KIND_MODALITIES)

# Tokenizer registry kinds and the modality each one tokenizes.
TOKENIZER_KINDS: dict[str, str] = {"sentencepiece": "text", "vqmodel": "image", "dac": "audio"}
# The tokenizer kind each modality is encoded with (one kind per modality today).
MODALITY_TOKENIZER: dict[str, str] = {m: kind for kind, m in TOKENIZER_KINDS.items()}


def list_column(values: Sequence) -> pa.Array:
    """Per-row code arrays (or None) → list<int32>, with one concatenation and no per-token
    Python work."""
    lengths = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = [np.asarray(v, dtype=np.int32).reshape(-1) for v in values if v is not None]
    flat = np.concatenate(present) if present else np.zeros(0, dtype=np.int32)
    mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(flat, type=pa.int32()), mask=pa.array(mask) if mask.any() else None
    )
