"""The domain's names, defined once: modalities, source kinds, tokenizer kinds, quarantine
reasons, and the one way to build a column of code arrays.

Every other module imports these instead of spelling the tuples again, so adding a modality or
renaming a reason is one edit. The registry of quarantine reasons is closed: `reason()` refuses
a name that is not listed, so a reader and a tokenizer can no longer call the same failure by
two names (as `invalid_utf8` / `non_utf8` once did), and the service answers with the very
names the tokenize job counts.
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

# Every reason a sample can be quarantined for, with what it means. Readers, decoders,
# tokenizers, the retokenize job and the service all use these names.
QUARANTINE_REASONS: dict[str, str] = {
    # reading
    "invalid_utf8": "text is not valid UTF-8 (decoded strictly; lone surrogates count too)",
    "empty_text": "a text document is empty or only whitespace",
    "missing_text": "a text record has no text field (absent or null)",
    "missing_caption": "an image-text pair has no caption, or only whitespace",
    "missing_transcript": "an audio-text pair has no transcript, or only whitespace",
    "missing_image": "an image-text pair has no image member / column value",
    "missing_audio": "an audio-text pair has no audio member / column value",
    "bad_json": "a JSON line (or a webdataset .json member) does not parse to an object",
    "bad_field": "a field has the wrong type (e.g. a number where text is expected)",
    "duplicate_key": "a webdataset key occurs twice in one tar (its members are not adjacent)",
    "duplicate_member": "a webdataset sample has two members with the same extension",
    # text
    "bad_text": "the value is not text",
    "text_too_long": "the text is longer than limits.max_text_chars",
    # images
    "corrupt_image": "the image bytes do not decode",
    "image_too_large": "the image has more pixels than limits.max_image_pixels",
    "image_too_small": "a side of the image is below limits.min_image_side",
    # audio
    "corrupt_audio": "the audio bytes do not decode",
    "unsupported_audio": "an audio container or codec soundfile cannot read",
    "truncated_audio": "the audio stream ends before its header says",
    "empty_audio": "the audio has no samples",
    "nonfinite_audio": "the audio holds NaN or infinite samples",
    "audio_too_short": "the audio is shorter than limits.min_audio_seconds",
    "audio_too_long": "the audio is longer than limits.max_audio_seconds",
    # encoding
    "text_encode_failed": "the tokenizer raised an unexpected error on this text (the message has it)",
    "image_encode_failed": "the image codec raised an unexpected error on this item",
    "audio_encode_failed": "the audio codec raised an unexpected error on this item",
    # jobs
    "input_error": "the input broke part way; records after the damage were not read",
    "origin_mismatch": "retokenize: the record at the stored origin has another id",
    "origin_not_found": "retokenize: the stored origin no longer exists in the input",
}


def reason(name: str) -> str:
    """`name` if it is a registered quarantine reason, else an AssertionError (a code bug)."""
    if name not in QUARANTINE_REASONS:
        raise AssertionError(f"unregistered quarantine reason {name!r}; add it to dataset.schema")
    return name


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
