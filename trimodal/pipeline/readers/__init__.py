"""Corpus readers: raw files (local or ``s3://``) → one plain dict per sample.

Three calls, used by the tokenize job inside Ray Data tasks and by retokenize:

- `list_inputs(source)` expands `source.paths` into the sorted list of input URIs (the unit of
  work a task takes);
- `read_input(source, uri)` streams one input's records, deterministically, each a dict with
  ``id`` (``f"{source.name}/{key}"``, key stable: ``<file key>/<line>``, ``<file key>/<row>``,
  ``<tar key>/<webdataset key>``), ``source``, ``origin`` (the URI plus ``#L<line>``,
  ``#row=<row>`` or ``#<webdataset key>``; the bare URI for a whole-file text document),
  ``text`` (str), ``image`` / ``audio`` (undecoded bytes), ``error_reason`` and
  ``error_message``;
- `read_origin(origin, source=None)` / `read_origins(source, origins)` fetch records again by
  origin (without a source, one with default field names is guessed from the file).

Unusable samples are *yielded* with ``error_reason`` set (codes in `trimodal.errors.QUARANTINE_REASONS`; the message
names the input and the key) so that the job can quarantine them; their other fields are best
effort and must not be tokenized. An input that cannot be read at all raises InputError naming
it; so does a missing input (a dangling symlink found in a listed directory included) and a
zero-byte one, in every format. A compressed input (``.gz``, ``.zst``) is verified whole
before its first record (`common.verify_compressed`): if it is damaged or truncated anywhere,
it yields nothing, because gzip and zstd only reveal damage at the end of a member or frame,
after the damaged records were decoded. An uncompressed input that breaks part way (a truncated
tar, an unreadable Parquet row group) yields every complete record before the damage, which
the damage did not alter, then raises InputError (attribute ``records_read`` = how many were
yielded): the job keeps or drops those as it likes, but the file is always reported.

The format of each input is `source.format`, or detected from the extension (``.gz`` / ``.zst``
stripped first) through the `READERS` registry. Files found through a directory or glob whose
extension no reader of the source's kind handles are skipped with a warning (corpora ship
READMEs and index files beside their shards); a file named explicitly must be readable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from trimodal.dataset import storage
from trimodal.errors import InputError
from trimodal.pipeline.readers import jsonl, parquet, txt, webdataset
from trimodal.pipeline.readers.common import (
    REASONS,
    STREAM_ERRORS,
    check_input,
    input_name,
    normalize_uri,
    verify_compressed,
)
from trimodal.pipeline.sources import FORMATS_BY_KIND, CorpusSource, detect_format, split_compression

log = logging.getLogger(__name__)

Reader = Callable[[CorpusSource, str, str, "set[str] | None"], Iterator[dict]]

# format -> reader(source, uri, file_key, wanted_fragments_or_None)
READERS: dict[str, Reader] = {
    "jsonl": jsonl.read,
    "txt": txt.read,
    "parquet": parquet.read,
    "webdataset": webdataset.read,
}


def list_inputs(source: CorpusSource) -> list[str]:
    """Every input file of `source`, sorted and de-duplicated. InputError if a path matches
    nothing, or if nothing readable is left."""
    allowed = FORMATS_BY_KIND[source.kind]
    found: set[str] = set()
    skipped: list[str] = []
    for p in source.paths:
        explicit = not any(c in p for c in "*?[")
        uris = storage.expand(p)
        explicit = explicit and len(uris) == 1 and uris[0] == storage.resolve(p).uri
        for u in uris:
            fmt = detect_format(source, u)
            if fmt in allowed:
                found.add(u)
            elif explicit:
                raise InputError(
                    f"{u}: cannot read as {source.kind} (format "
                    f"{'unknown' if fmt is None else fmt!r}); set format to one of {list(allowed)}"
                )
            else:
                skipped.append(u)
    if skipped:
        log.warning(
            "source %s: skipped %d file(s) with no %s reader, e.g. %s",
            source.name,
            len(skipped),
            source.kind,
            ", ".join(skipped[:3]),
        )
    if not found:
        raise InputError(
            f"source {source.name}: no readable {source.kind} inputs in {source.paths}"
            + (f" (skipped {len(skipped)}: {', '.join(skipped[:3])})" if skipped else "")
        )
    uris = sorted(found)
    # Sample ids are "<source name>/<input name>/<record key>": two inputs with one name would collide.
    keys: dict[str, str] = {}
    for u in uris:
        k = input_name(source, u)
        if k in keys:
            raise InputError(
                f"source {source.name}: inputs {keys[k]} and {u} both have the key {k!r}, so their "
                "sample ids would collide; rename one, or list their common directory (or a glob) "
                "instead of the files, which keys them by relative path"
            )
        keys[k] = u
    return uris


def _reader_for(source: CorpusSource, uri: str) -> Reader:
    fmt = detect_format(source, uri)
    if fmt is None or fmt not in FORMATS_BY_KIND[source.kind]:
        raise InputError(
            f"{uri}: cannot read as {source.kind} (format {'unknown' if fmt is None else repr(fmt)}); "
            f"set format to one of {list(FORMATS_BY_KIND[source.kind])}"
        )
    return READERS[fmt]


def _guarded(records: Iterator[dict], uri: str) -> Iterator[dict]:
    """Map errors raised while streaming into an InputError naming the input."""
    n = 0
    try:
        for rec in records:
            n += 1
            yield rec
    except InputError as e:
        e.records_read = n
        if n and e.args:
            e.args = (f"{e.args[0]} (after {n} record(s))", *e.args[1:])
        raise
    except STREAM_ERRORS as e:
        detail = e.args[0] if e.args else type(e).__name__
        where = f"after {n} record(s)" if n else "at the start"
        err = InputError(f"cannot read {uri}: unreadable {where} ({type(e).__name__}: {detail})")
        err.records_read = n
        raise err from e


def _checked(source: CorpusSource, uri: str, reader: Reader, wanted: set[str] | None) -> Iterator[dict]:
    """`reader`'s records, once the input is known to exist, to be non-empty and, if
    compressed, to be intact from end to end (see `common.verify_compressed`)."""
    check_input(uri)
    if split_compression(uri)[1] and detect_format(source, uri) != "parquet":
        verify_compressed(uri)
    yield from reader(source, uri, input_name(source, uri), wanted)


def read_input(source: CorpusSource, uri: str) -> Iterator[dict]:
    """Stream the records of one input (see the module docstring for the record shape)."""
    uri = normalize_uri(uri)
    reader = _reader_for(source, uri)
    return _guarded(_checked(source, uri, reader, None), uri)


def split_origin(origin: str, _exists: dict[str, bool] | None = None) -> tuple[str, str]:
    """``"<uri>#<fragment>"`` → ``(uri, fragment)``; a bare URI → ``(uri, "")``.

    The URI may itself contain ``#``: each split point is tried from the right (fragments never
    contain ``#``) and the first that names an existing file wins. `_exists` caches lookups
    across calls (one HEAD per input on S3, not one per origin).
    """
    cache = {} if _exists is None else _exists

    def exists(uri: str) -> bool:
        if uri not in cache:
            cache[uri] = storage.resolve(uri).exists()
        return cache[uri]

    cuts = [i for i, c in enumerate(origin) if c == "#"]
    for i in reversed(cuts):
        if exists(origin[:i]):
            return normalize_uri(origin[:i]), origin[i + 1 :]
    if exists(origin):
        return normalize_uri(origin), ""
    raise InputError(f"origin {origin}: its input no longer exists")


def guess_source(uri: str, fragment: str = "") -> CorpusSource:
    """A CorpusSource with default field names for one input, the kind inferred from the file:
    JSONL/.txt are text (``.txt`` per line when the fragment is ``L<n>``), Parquet by its columns,
    WebDataset by the media members of the sample `fragment` (or of the first sample).

    For audits of a bare origin; the job's own CorpusSource gives the real ids and field names.
    """
    probe = CorpusSource(name="origin", kind="text", paths=[uri])
    fmt = detect_format(probe, uri)
    kind = "text"
    if fmt == "parquet":
        names = parquet.column_names(uri)
        kind = "image_text" if probe.image_field in names else "audio_text" if probe.audio_field in names else "text"
    elif fmt == "webdataset":
        exts = webdataset.member_extensions(uri, fragment or None)
        kind = "audio_text" if any(e in exts for e in probe.audio_keys) else "image_text"
    elif fmt is None:
        raise InputError(f"{uri}: cannot tell its format from the name; pass the source config")
    mode = "line" if fmt == "txt" and fragment.startswith("L") else "file"
    return CorpusSource(name="origin", kind=kind, paths=[uri], txt_mode=mode)


def read_origins(source: CorpusSource | None, origins: Iterable[str]) -> dict[str, dict]:
    """Fetch many records by origin, reading each input once (in one pass, stopping as soon as
    all its wanted records are found). Returns ``{origin: record}``; InputError names an origin
    that is not found. For retokenizing, batch origins by input: cost is per input read.

    `source` should be the config the records were read with (ids and field names come from
    it); None guesses one per input (`guess_source`).
    """
    by_uri: dict[str, dict[str, str]] = {}
    cache: dict[str, bool] = {}
    for o in origins:
        uri, frag = split_origin(o, cache)
        by_uri.setdefault(uri, {})[frag] = o
    out: dict[str, dict] = {}
    for uri, frags in by_uri.items():
        src = source if source is not None else guess_source(uri, next(iter(frags)))
        reader = _reader_for(src, uri)
        for rec in _guarded(_checked(src, uri, reader, set(frags)), uri):
            frag = rec["origin"][len(uri) + 1 :]
            if frag in frags:
                out[frags[frag]] = rec
        missing = [o for o in frags.values() if o not in out]
        if missing:
            raise InputError(
                f"origin {missing[0]}: no such record in {uri}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
    return out


def read_origin(origin: str, source: CorpusSource | None = None) -> dict:
    """Re-fetch ONE raw record by its origin (the same dict `read_input` yielded for it, given
    the same `source`)."""
    return read_origins(source, [origin])[origin]


__all__ = [
    "READERS",
    "REASONS",
    "guess_source",
    "list_inputs",
    "read_input",
    "read_origin",
    "read_origins",
    "split_origin",
]
