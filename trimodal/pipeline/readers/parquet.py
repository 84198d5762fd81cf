"""Parquet corpora: text documents, or image/audio bytes beside a caption/transcript column.

Read in record batches of at most `BATCH_ROWS` rows, row group by row group, with only the
needed columns, so memory stays flat whatever the file size (images in Hugging Face datasets
make row groups of hundreds of MB; batching inside them keeps the peak at one batch). Media
columns may be plain binary or the ``struct<bytes: binary, path: string>`` that Hugging Face
`datasets` writes for Image/Audio features; a struct with only a ``path`` (bytes null) is a
``missing_image`` / ``missing_audio`` record, since the bytes are not in the file (empty bytes
pass through: the tokenizers judge media).
Text columns are read as raw bytes and decoded per row, so one invalid row is one
``invalid_utf8`` record instead of an unreadable batch. Keys ``<file key>/<row>``, origins
``<uri>#row=<row>`` (0-based row index in the file); a missing column makes the whole file an
InputError naming the column and the columns that exist.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trimodal.dataset import storage
from trimodal.errors import InputError
from trimodal.pipeline.readers.common import ReadCounter, decode_utf8, error, record
from trimodal.pipeline.sources import CorpusSource, split_compression

BATCH_ROWS = 256


def _columns(source: CorpusSource) -> list[tuple[str, str]]:
    """(role, column) pairs this source needs."""
    cols = [("text", source.text_field)]
    if source.kind == "image_text":
        cols.append(("image", source.image_field))
    elif source.kind == "audio_text":
        cols.append(("audio", source.audio_field))
    return cols


def _file_bytes(pf: pq.ParquetFile) -> int:
    md = pf.metadata
    return sum(
        md.row_group(g).column(c).total_compressed_size for g in range(md.num_row_groups) for c in range(md.num_columns)
    )


def _open(uri: str) -> pq.ParquetFile:
    if split_compression(uri)[1]:
        raise InputError(f"cannot read {uri}: Parquet compresses internally; an outer .gz/.zst is not supported")
    loc = storage.resolve(uri)
    try:
        return pq.ParquetFile(loc.fs.open_input_file(loc.path))
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"cannot read {uri}: not a readable Parquet file ({e})") from e


def _check_schema(pf: pq.ParquetFile, source: CorpusSource, uri: str) -> None:
    names = pf.schema_arrow.names
    for role, col in _columns(source):
        if col not in names:
            field = {"text": "text_field", "image": "image_field", "audio": "audio_field"}[role]
            raise InputError(f"cannot read {uri}: no column {col!r} (set {field}); columns: {', '.join(names)}")


def _text_values(arr: pa.ChunkedArray | pa.Array) -> list:
    t = arr.type
    if pa.types.is_string(t):
        arr = arr.cast(pa.binary())
    elif pa.types.is_large_string(t):
        arr = arr.cast(pa.large_binary())
    elif not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        return [None if v is None else TypeError(type(v).__name__) for v in arr.to_pylist()]
    return arr.to_pylist()


def _media_values(arr, col: str, uri: str) -> list:
    t = arr.type
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        if "bytes" not in names:
            raise InputError(f"cannot read {uri}: struct column {col!r} has no 'bytes' field (fields: {names})")
        data = pc.struct_field(arr, "bytes").to_pylist()
        paths = pc.struct_field(arr, "path").to_pylist() if "path" in names else [None] * len(data)
        return [d if d is not None else ("path", p) for d, p in zip(data, paths)]
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return arr.to_pylist()
    raise InputError(
        f"cannot read {uri}: column {col!r} has type {t}; expected encoded bytes "
        "(binary, or struct<bytes, path> as Hugging Face datasets write it)"
    )


def _records(
    source: CorpusSource, uri: str, file_key: str, batch: pa.RecordBatch, first_row: int, rows: list[int] | None = None
) -> Iterator[dict]:
    cols = dict(_columns(source))
    texts = _text_values(batch.column(cols["text"]))
    media_role = "image" if "image" in cols else "audio" if "audio" in cols else None
    media = _media_values(batch.column(cols[media_role]), cols[media_role], uri) if media_role else None
    pair = source.kind != "text"
    for i in range(batch.num_rows) if rows is None else rows:
        row = first_row + i
        key, origin = f"{file_key}/{row}", f"{uri}#row={row}"
        m = None
        if media is not None:
            m = media[i]
            if m is None or isinstance(m, tuple):
                what = f"only a path ({m[1]!r}) is stored" if isinstance(m, tuple) else "null"
                yield error(source, key, origin, f"missing_{media_role}", f"column {cols[media_role]!r} is {what}")
                continue
        raw = texts[i]
        if isinstance(raw, TypeError):
            yield error(source, key, origin, "bad_field", f"column {cols['text']!r} is {raw}, expected a string")
            continue
        if raw is None:
            reason = source.missing_caption_reason if pair else "missing_text"
            yield error(
                source, key, origin, reason, f"column {cols['text']!r} is null", **({media_role: m} if pair else {})
            )
            continue
        text = decode_utf8(raw)
        if text is None:
            yield error(source, key, origin, "invalid_utf8", f"column {cols['text']!r} is not valid UTF-8")
        elif not text.strip():
            reason = source.missing_caption_reason if pair else "empty_text"
            yield error(
                source, key, origin, reason, f"column {cols['text']!r} is empty", **({media_role: m} if pair else {})
            )
        else:
            yield record(source, key, origin, text=text, **({media_role: m} if pair else {}))


def read(source: CorpusSource, uri: str, file_key: str, wanted: set[str] | None = None) -> Iterator[dict]:
    pf = _open(uri)
    _check_schema(pf, source, uri)
    columns = [c for _, c in _columns(source)]
    if wanted is None:
        row = 0
        # Parquet is read by random access, not through a stream: progress counts the file's
        # bytes in proportion to the rows read (row groups are of similar size).
        per_row = _file_bytes(pf) / max(1, pf.metadata.num_rows)
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            ReadCounter.add(int(batch.num_rows * per_row))
            yield from _records(source, uri, file_key, batch, row)
            row += batch.num_rows
        return
    # Re-fetch: read only the row groups that hold the wanted rows.
    want = sorted({int(f[len("row=") :]) for f in wanted if f.startswith("row=") and f[len("row=") :].isdigit()})
    starts = [0]
    for g in range(pf.metadata.num_row_groups):
        starts.append(starts[-1] + pf.metadata.row_group(g).num_rows)
    by_group: dict[int, list[int]] = {}
    for r in want:
        if r < starts[-1]:
            by_group.setdefault(bisect.bisect_right(starts, r) - 1, []).append(r)
    for g, rows in sorted(by_group.items()):
        table = pf.read_row_group(g, columns=columns)
        batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
        if batch is None:
            continue
        yield from _records(source, uri, file_key, batch, starts[g], [r - starts[g] for r in rows])


def column_names(uri: str) -> list[str]:
    """The columns of a Parquet input (its footer only)."""
    return list(_open(uri).schema_arrow.names)
