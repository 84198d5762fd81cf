"""Error types shared by every part, so callers can tell bad input from bad code.

`SampleError` is a per-sample rejection: the pipeline quarantines the sample under `reason`
and goes on. `InputError` means a whole input file could not be read. `ConfigError` is raised
before any work starts and names the offending key.

The quarantine reasons are listed here, beside `SampleError`, because they are its vocabulary
and this bottom layer is the one every part can see. The registry is closed: a reason it does
not list is refused where it is made, so a reader and a tokenizer can no longer call the same
failure by two names (as `invalid_utf8` / `non_utf8` once did), and the service answers with
the very names the tokenize job counts.
"""

from __future__ import annotations

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


def check_reason(name: str) -> str:
    """`name` if it is a registered quarantine reason, else an AssertionError (a code bug)."""
    if name not in QUARANTINE_REASONS:
        raise AssertionError(f"unregistered quarantine reason {name!r}; add it to trimodal.errors.QUARANTINE_REASONS")
    return name


class TrimodalError(Exception):
    """Base class for the errors trimodal raises on purpose."""


class ConfigError(TrimodalError, ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


class SampleError(TrimodalError, ValueError):
    """One sample cannot be used. `reason` is a short stable code used for quarantine counts
    (e.g. ``corrupt_image``, ``empty_text``), one of `QUARANTINE_REASONS`; the message names
    the input."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = check_reason(reason)


class InputError(TrimodalError, OSError):
    """A whole input (file, object, shard) cannot be read; the message names its path."""


class IntegrityError(TrimodalError, ValueError):
    """Stored data does not match its manifest or vocabulary; the message names the shard."""
