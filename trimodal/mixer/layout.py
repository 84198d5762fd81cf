"""How a document becomes positions: the one sequence layout (docs/design.md, "sequence layout").

    text          <bos> t t t ... <eos>
    image-text    <bos> <t2i> caption <boi> i i i <eoi> <eos>     reverse: <bos> <i2t> <boi> i i i <eoi> caption <eos>
    audio-text    <bos> <t2s> transcript <boa> a a a <eoa> <eos>  reverse: <bos> <s2t> <boa> a a a <eoa> transcript <eos>

Audio codes are stored frame-major (frame 0 levels 0..L-1, frame 1 ...), so audio code j is of
level j % levels. Lengths and places are closed-form in the code counts, which is what lets
every rank plan the whole global stream from the length index alone. Planning (packer.py),
rendering (render.py) and the model's synthetic stream all read the layout from here, so a
change of layout is one edit.
"""

from __future__ import annotations

import numpy as np

TEXT, IMAGE, AUDIO, BOTH = 0, 1, 2, 3  # document kinds; BOTH (image and audio) is not renderable
KIND_NAMES = {TEXT: "text", IMAGE: "image-text", AUDIO: "audio-text", BOTH: "image-audio"}
MEDIA = {IMAGE: "image", AUDIO: "audio"}  # a pair kind's media modality

# A document's parts in order: structure tokens by role, "text" and "media" for code runs.
TEXT_PARTS = ("bos", "text", "eos")
PAIR_PARTS = {
    False: ("bos", "task", "text", "begin", "media", "end", "eos"),
    True: ("bos", "task", "begin", "media", "end", "text", "eos"),  # reverse: media first
}
# Structure tokens by role: the same for every kind, or per pair kind (task: forward, reverse).
SPECIALS = {"bos": "<bos>", "eos": "<eos>"}
PAIR_SPECIALS = {
    IMAGE: {"task": ("<t2i>", "<i2t>"), "begin": "<boi>", "end": "<eoi>"},
    AUDIO: {"task": ("<t2s>", "<s2t>"), "begin": "<boa>", "end": "<eoa>"},
}
TEXT_OVERHEAD = sum(p not in ("text", "media") for p in TEXT_PARTS)  # <bos> <eos>
PAIR_OVERHEAD = sum(p not in ("text", "media") for p in PAIR_PARTS[False])  # <bos> <task> <boX> <eoX> <eos>


def parts(kind: int, reverse: bool) -> tuple[str, ...]:
    """The parts of a document of `kind`, in order."""
    return TEXT_PARTS if kind == TEXT else PAIR_PARTS[bool(reverse)]


def special_token(kind: int, role: str, reverse: bool = False) -> str:
    """The structure token that plays `role` in a document of `kind`."""
    if role in SPECIALS:
        return SPECIALS[role]
    token = PAIR_SPECIALS[kind][role]
    return token[int(reverse)] if role == "task" else token


def doc_kinds(lengths: dict[str, np.ndarray]) -> np.ndarray:
    """Each document's kind from its code counts per modality (-1: absent)."""
    has_image, has_audio = lengths["image"] >= 0, lengths["audio"] >= 0
    return (has_image + 2 * has_audio).astype(np.int8)  # TEXT 0, IMAGE 1, AUDIO 2, BOTH 3


def doc_lengths(kinds: np.ndarray, lengths: dict[str, np.ndarray]) -> np.ndarray:
    """Rendered length of each document (reverse tasks have the same length)."""
    media = np.maximum(lengths["image"], 0) + np.maximum(lengths["audio"], 0)
    return np.where(kinds == TEXT, lengths["text"] + TEXT_OVERHEAD, lengths["text"] + media + PAIR_OVERHEAD)


def _part_starts(sequence: tuple[str, ...]) -> dict[str, tuple[int, int, int]]:
    """Each part's start as (structure tokens, text runs, media runs) before it."""
    out, specials, texts, medias = {}, 0, 0, 0
    for part in sequence:
        out[part] = (specials, texts, medias)
        texts += part == "text"
        medias += part == "media"
        specials += part not in ("text", "media")
    return out


TEXT_START = _part_starts(TEXT_PARTS)["text"][0]  # a text document's codes follow its <bos>
_PAIR_ROLES = PAIR_PARTS[False]
# per direction, each part's start as coefficients of (1, text codes, media codes)
_PAIR_COEFFICIENTS = {
    rev: np.array([_part_starts(seq)[part] for part in _PAIR_ROLES], dtype=np.int64) for rev, seq in PAIR_PARTS.items()
}


def pair_places(reverse: np.ndarray, text: np.ndarray, media: np.ndarray) -> dict[str, np.ndarray]:
    """Where each part of each pair starts in its document ({part: array}), given the pairs'
    direction and text and media code counts (arrays)."""
    terms = np.stack((np.ones_like(text), text, media))
    places = np.where(reverse, _PAIR_COEFFICIENTS[True] @ terms, _PAIR_COEFFICIENTS[False] @ terms)
    return dict(zip(_PAIR_ROLES, places))


def text_windows(kinds: np.ndarray, start: np.ndarray, stop: np.ndarray, text: np.ndarray):
    """The text codes [lo, hi) that each piece [start, stop) of a document shows: a text
    document's window between its <bos> and <eos>, a pair's whole text (pairs are never cut)."""
    is_text = kinds == TEXT
    lo = np.where(is_text, np.maximum(start, TEXT_START) - TEXT_START, 0)
    hi = np.where(is_text, np.maximum(np.minimum(stop, text + TEXT_START) - TEXT_START, lo), text)
    return lo, hi
