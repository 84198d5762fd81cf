"""What a raw corpus is: the `CorpusSource` a tokenize job lists, one per corpus.

A source names its corpus (sample ids are ``f"{name}/{key}"``), says which kind of samples it
holds (text documents, image-caption pairs, audio-transcript pairs), where the files are (local
paths, directories, globs, ``s3://``) and how to find the fields inside them. The readers in
`trimodal.pipeline.readers` interpret it. Defaults follow what public corpora ship: JSONL or
Parquet with a ``text`` column, WebDataset tars with ``.jpg``/``.flac`` + ``.txt``/``.json``
members, Hugging Face Parquet with ``{bytes, path}`` image/audio structs. The trade-off is one
flat dataclass with fields that only some formats use, rather than one class per format, so a
YAML source stays a flat mapping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from trimodal.dataset.schema import SOURCE_KINDS
from trimodal.errors import ConfigError

KINDS = SOURCE_KINDS

# Formats each kind can be read from ("auto" picks by file extension).
FORMATS_BY_KIND = {
    "text": ("jsonl", "parquet", "txt"),
    "image_text": ("webdataset", "parquet"),
    "audio_text": ("webdataset", "parquet"),
}

# Compression suffixes stripped before the format is detected; the readers stream them.
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}

# Extension (after compression is stripped) → format. ".json" is read as JSON Lines because
# corpora such as C4 ship JSONL under that name.
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
    ".text": "txt",
    ".md": "txt",
    ".tar": "webdataset",
}

DEFAULT_IMAGE_KEYS = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm"]
DEFAULT_AUDIO_KEYS = ["flac", "wav", "mp3", "ogg", "opus", "m4a"]
DEFAULT_CAPTION_KEYS = ["txt", "caption", "transcript", "json"]
DEFAULT_JSON_CAPTION_FIELDS = ["caption", "text", "transcript"]


@dataclass
class CorpusSource:
    """One raw corpus. Field-by-field meaning is in the comments; `validate` names bad keys."""

    name: str  # corpus name; sample ids are f"{name}/{key}"
    kind: Literal["text", "image_text", "audio_text"]
    paths: list[str]  # files, dirs, globs; local or s3://
    format: Literal["auto", "jsonl", "parquet", "txt", "webdataset"] = "auto"
    # JSONL field / Parquet column holding the text: the document for text sources, the
    # caption or transcript for pairs.
    text_field: str = "text"
    image_field: str = "image"  # Parquet bytes column (binary or struct {bytes, path})
    audio_field: str = "audio"
    # WebDataset member extensions, first present wins (webdataset lower-cases them).
    caption_keys: list[str] = field(default_factory=lambda: list(DEFAULT_CAPTION_KEYS))
    image_keys: list[str] = field(default_factory=lambda: list(DEFAULT_IMAGE_KEYS))
    audio_keys: list[str] = field(default_factory=lambda: list(DEFAULT_AUDIO_KEYS))
    # Fields tried, in order, inside a WebDataset .json member used as the caption.
    json_caption_fields: list[str] = field(default_factory=lambda: list(DEFAULT_JSON_CAPTION_FIELDS))
    txt_mode: Literal["file", "line"] = "file"  # .txt: one document per file, or per non-blank line

    def validate(self) -> None:
        if not self.name or "/" in self.name or self.name != self.name.strip() or "#" in self.name:
            raise ConfigError(
                f"name: {self.name!r} must be non-empty, without '/', '#' or surrounding spaces "
                "(sample ids are '<name>/<key>')"
            )
        if self.kind not in KINDS:
            raise ConfigError(f"kind: {self.kind!r} is not one of {list(KINDS)}")
        if not self.paths:
            raise ConfigError("paths: at least one file, directory or glob is required")
        for i, p in enumerate(self.paths):
            if not isinstance(p, str) or not p.strip():
                raise ConfigError(f"paths[{i}]: expected a non-empty path, got {p!r}")
        if self.format != "auto" and self.format not in FORMATS_BY_KIND[self.kind]:
            raise ConfigError(
                f"format: {self.format!r} cannot hold {self.kind} samples; "
                f"use one of {['auto', *FORMATS_BY_KIND[self.kind]]}"
            )
        for key in ("text_field", "image_field", "audio_field"):
            if not getattr(self, key):
                raise ConfigError(f"{key}: must not be empty")
        if "json" in self.caption_keys and not self.json_caption_fields:
            raise ConfigError("json_caption_fields: at least one field is required when caption_keys has 'json'")
        for key in ("caption_keys", "image_keys", "audio_keys"):
            vals = getattr(self, key)
            if self.kind != "text" and key == "caption_keys" and not vals:
                raise ConfigError(f"{key}: at least one member extension is required")
            for j, v in enumerate(vals):
                if not v or v.startswith(".") or v != v.lower():
                    raise ConfigError(
                        f"{key}[{j}]: {v!r} must be a lower-case extension without the leading dot "
                        "(webdataset lower-cases member suffixes)"
                    )
        if self.kind == "image_text" and not self.image_keys:
            raise ConfigError("image_keys: at least one member extension is required")
        if self.kind == "audio_text" and not self.audio_keys:
            raise ConfigError("audio_keys: at least one member extension is required")

    @property
    def missing_caption_reason(self) -> str:
        """Quarantine reason for a pair without usable text: captions for images, transcripts
        for audio (the names the tokenize job counts under)."""
        return "missing_transcript" if self.kind == "audio_text" else "missing_caption"


def split_compression(path: str) -> tuple[str, str | None]:
    """``"a/b.jsonl.gz"`` → ``("a/b.jsonl", "gzip")``, ``"a/b.tgz"`` → ``("a/b.tar", "gzip")``; no
    known suffix → ``(path, None)``."""
    root, ext = os.path.splitext(path)
    if ext.lower() == ".tgz":  # a gzipped tar under one suffix: same as .tar.gz
        return root + ".tar", "gzip"
    comp = COMPRESSIONS.get(ext.lower())
    return (root, comp) if comp else (path, None)


def detect_format(source: CorpusSource, uri: str) -> str | None:
    """The format a file is read as: the configured one, else by extension (None: unknown)."""
    if source.format != "auto":
        return source.format
    base, _ = split_compression(uri)
    return EXTENSIONS.get(os.path.splitext(base)[1].lower())
