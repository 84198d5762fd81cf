"""Plain text corpora (``.txt``, ``.text``, ``.md``; optionally ``.gz`` / ``.zst``).

Two modes, chosen per source with `txt_mode`:

- ``file`` (default): the whole file is one document (books, articles, Gutenberg-style dumps).
  The file is read into memory at once; text files are documents, not corpora, so that is small.
  Key ``<file key>``, origin the bare URI.
- ``line``: every non-blank line is a document (sentence lists, one-doc-per-line dumps).
  Key ``<file key>/<line>``, origin ``<uri>#L<line>`` (1-based; blank lines are skipped but
  counted).

Decoding is strict UTF-8 (a leading BOM is dropped): a file that is not UTF-8 is an
``invalid_utf8`` record in file mode, and only its bad lines are in line mode.
"""

from __future__ import annotations

from collections.abc import Iterator

from trimodal.pipeline.readers.common import BOM, decode_utf8, error, open_stream, record, selected_lines
from trimodal.pipeline.sources import CorpusSource


def read(source: CorpusSource, uri: str, file_key: str, wanted: set[str] | None = None) -> Iterator[dict]:
    if source.txt_mode == "file":
        if wanted is not None and "" not in wanted:
            return
        with open_stream(uri) as f:
            data = f.read()
        if data.startswith(BOM):
            data = data[len(BOM) :]
        text = decode_utf8(data)
        if text is None:
            yield error(source, file_key, uri, "invalid_utf8", "file is not valid UTF-8")
        elif not text.strip():
            yield error(source, file_key, uri, "empty_text", "file is empty or only whitespace")
        else:
            yield record(source, file_key, uri, text=text)
        return
    for n, line in selected_lines(uri, wanted):
        key, origin = f"{file_key}/{n}", f"{uri}#L{n}"
        text = decode_utf8(line)
        if text is None:
            yield error(source, key, origin, "invalid_utf8", "line is not valid UTF-8")
        elif not text.strip():
            yield error(source, key, origin, "empty_text", "blank line")
        else:
            yield record(source, key, origin, text=text)
