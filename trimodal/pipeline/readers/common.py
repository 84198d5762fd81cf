"""Pieces every reader shares: opening a (compressed) input as a byte stream through the
storage layer, stable sample keys, the record dict, and strict text decoding.

Readers stream: an input is opened once, read front to back through a buffered pyarrow stream
(so S3 objects are fetched in large ranged reads, not one request per tar block) and
decompressed on the fly (gzip module, zstandard's stream reader). Nothing here decodes images or
audio: the tokenizers own that, the readers only hand over bytes.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator

from trimodal.dataset import storage
from trimodal.dataset.schema import QUARANTINE_REASONS as REASONS
from trimodal.dataset.schema import reason as check_reason
from trimodal.errors import InputError
from trimodal.pipeline.sources import COMPRESSIONS, EXTENSIONS, SourceConfig, split_compression

# S3 GETs are expensive per request; tar and gzip readers ask for small blocks.
STREAM_BUFFER = 4 << 20

BOM = b"\xef\xbb\xbf"


def record(
    source: SourceConfig,
    key: str,
    origin: str,
    *,
    text: str | None = None,
    image: bytes | None = None,
    audio: bytes | None = None,
    reason: str | None = None,
    message: str | None = None,
) -> dict:
    """The one shape every reader yields (see `trimodal.pipeline.readers`)."""
    return {
        "id": f"{source.name}/{key}",
        "source": source.name,
        "origin": origin,
        "text": text,
        "image": image,
        "audio": audio,
        "error_reason": reason,
        "error_message": message,
    }


def error(source: SourceConfig, key: str, origin: str, reason: str, message: str, **fields) -> dict:
    check_reason(reason)
    return record(source, key, origin, reason=reason, message=f"{origin}: {message}", **fields)


def decode_utf8(data: bytes) -> str | None:
    """Strict UTF-8 → str, or None if the bytes are not UTF-8 (the caller reports invalid_utf8)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def encodable(text: str) -> bool:
    """False for strings JSON can smuggle in but UTF-8 cannot carry (lone surrogates)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def open_stream(uri: str) -> io.BufferedIOBase:
    """Open `uri` for sequential reading, decompressing .gz / .zst by extension.

    Errors opening it are an InputError naming the URI; errors while reading surface from the
    stream and are mapped to InputError by `read_input`.
    """
    loc = storage.resolve(uri)
    try:
        raw = loc.fs.open_input_stream(loc.path, compression=None, buffer_size=STREAM_BUFFER)
    except (OSError, FileNotFoundError) as e:
        raise InputError(f"cannot open {uri}: {e}") from e
    _, comp = split_compression(uri)
    if comp == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if comp == "zstd":
        import zstandard

        # read_across_frames: pzstd and many writers emit multi-frame files.
        return io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), buffer_size=1 << 20
        )
    return io.BufferedReader(raw, buffer_size=1 << 20)


def iter_lines(uri: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line bytes without the newline), BOM stripped from line 1."""
    with open_stream(uri) as f:
        for n, line in enumerate(f, start=1):
            if n == 1 and line.startswith(BOM):
                line = line[len(BOM) :]
            yield n, line.rstrip(b"\r\n")


def selected_lines(uri: str, wanted: set[str] | None) -> Iterator[tuple[int, bytes]]:
    """Lines to turn into records: every non-blank line, or, when re-reading origins, exactly the
    lines named in `wanted` (fragments ``L<n>``; blank ones too, so they come back as errors),
    stopping once all are found."""
    remaining = set(wanted) if wanted is not None else None
    for n, line in iter_lines(uri):
        if remaining is None:
            if line.strip():
                yield n, line
            continue
        frag = f"L{n}"
        if frag in remaining:
            remaining.discard(frag)
            yield n, line
            if not remaining:
                return


def _strip_known_ext(path: str) -> str:
    path, _ = split_compression(path)
    root, ext = os.path.splitext(path)
    return root if ext.lower() in EXTENSIONS else path


def input_key(source: SourceConfig, uri: str) -> str:
    """A stable key for an input file: its path relative to the directory (or the static part of
    the glob) of the first `source.paths` entry that matches it, known extensions stripped.

    ``corpus/a/part-0.jsonl.gz`` listed through ``corpus/`` → ``a/part-0``; a file named
    directly → its stem. Relative to the pattern, not just the stem, so that ``a/part-0`` and
    ``b/part-0`` stay distinct; independent of where the corpus is mounted (local or S3).
    """
    for p in source.paths:
        if any(c in p for c in "*?["):
            full = storage.resolve(p)
            if storage.glob_match(_path(uri), full.path):
                static = full.uri
                while any(c in static for c in "*?["):
                    static = static.rsplit("/", 1)[0]
                return _strip_known_ext(uri[len(static) :].lstrip("/"))
        else:
            base = storage.resolve(p).uri.rstrip("/")
            if uri == base:
                break
            if uri.startswith(base + "/"):
                return _strip_known_ext(uri[len(base) + 1 :])
    return _strip_known_ext(uri.rsplit("/", 1)[-1])


def _path(uri: str) -> str:
    return uri[len("s3://") :] if storage.is_s3(uri) else uri


def normalize_uri(uri: str) -> str:
    """Local paths absolute, s3:// as given: the form `list_inputs` returns and origins carry."""
    return storage.resolve(uri).uri


__all__ = [
    "REASONS",
    "COMPRESSIONS",
    "record",
    "error",
    "decode_utf8",
    "encodable",
    "open_stream",
    "iter_lines",
    "input_key",
    "normalize_uri",
]
