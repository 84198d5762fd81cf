"""JSON Lines text corpora (``.jsonl``, ``.json``, ``.ndjson``; optionally ``.gz`` / ``.zst``).

One record per non-blank line; the document is `source.text_field`. A line that does not parse
is a ``bad_json`` record, not a crash, because one corrupt line in a multi-gigabyte shard should
cost one sample. Keys and origins use 1-based line numbers (``#L<n>``), which survive
recompression and are what ``sed -n <n>p`` / editors show; blank lines are skipped but counted,
so numbering matches the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from trimodal.pipeline.readers.common import decode_utf8, encodable, error, record, selected_lines
from trimodal.pipeline.sources import CorpusSource


def read(source: CorpusSource, uri: str, file_key: str, wanted: set[str] | None = None) -> Iterator[dict]:
    for n, line in selected_lines(uri, wanted):
        yield parse_line(source, uri, file_key, n, line)


def parse_line(source: CorpusSource, uri: str, file_key: str, n: int, line: bytes) -> dict:
    key, origin = f"{file_key}/{n}", f"{uri}#L{n}"
    text = decode_utf8(line)
    if text is None:
        return error(source, key, origin, "invalid_utf8", "line is not valid UTF-8")
    if not text.strip():
        return error(source, key, origin, "empty_text", "blank line")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return error(source, key, origin, "bad_json", f"invalid JSON: {e.msg} at column {e.colno}")
    if not isinstance(obj, dict):
        return error(source, key, origin, "bad_json", f"expected a JSON object, got {type(obj).__name__}")
    value = obj.get(source.text_field)
    if value is None:
        return error(
            source, key, origin, "missing_text", f"no {source.text_field!r} field (keys: {', '.join(sorted(obj)[:10])})"
        )
    if not isinstance(value, str):
        return error(
            source,
            key,
            origin,
            "bad_field",
            f"field {source.text_field!r} is {type(value).__name__}, expected a string",
        )
    if not encodable(value):
        return error(source, key, origin, "invalid_utf8", f"field {source.text_field!r} holds a lone surrogate")
    if not value.strip():
        return error(source, key, origin, "empty_text", f"field {source.text_field!r} is empty")
    return record(source, key, origin, text=value)
