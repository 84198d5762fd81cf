"""Shard files: one Arrow IPC file per shard, one row per sample, codec codes as list<int32>.

Arrow IPC (the "file" flavour) is memory-mappable, so readers touch only the pages they use,
and its footer indexes record batches, so ranged reads from S3 fetch only what is needed.
Rows are written in record batches of `BATCH_ROWS` to keep those ranged reads small. A shard
is serialized in memory, hashed, then written in one atomic step (rename locally, a single
PUT on S3): a crash never leaves a half-written shard under its final name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trimodal.dataset.schema import MODALITIES, list_column
from trimodal.dataset.storage import Location, resolve
from trimodal.errors import IntegrityError

MODALITY_COLUMNS = MODALITIES  # the code columns of a shard
_HASH_CHUNK = 16 << 20
BATCH_ROWS = 1024

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("text", pa.list_(pa.int32())),
        pa.field("image", pa.list_(pa.int32())),
        pa.field("audio", pa.list_(pa.int32())),
        pa.field("origin", pa.string()),
    ]
)


def rows_to_table(rows: Sequence[dict]) -> pa.Table:
    """Rows with id, source, text, image, audio (code arrays or None), origin → a SCHEMA table."""
    cols = {
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "source": pa.array([r["source"] for r in rows], pa.string()).dictionary_encode(),
        "text": list_column([r.get("text") for r in rows]),
        "image": list_column([r.get("image") for r in rows]),
        "audio": list_column([r.get("audio") for r in rows]),
        "origin": pa.array([r.get("origin") for r in rows], pa.string()),
    }
    cols["source"] = cols["source"].cast(SCHEMA.field("source").type)
    return pa.table(cols, schema=SCHEMA)


def table_tokens(table: pa.Table) -> dict[str, int]:
    """Token counts per modality column (sum of list lengths; nulls count 0)."""
    out = {}
    for m in MODALITY_COLUMNS:
        lens = pc.list_value_length(table[m])
        out[m] = int(pc.sum(lens).as_py() or 0)
    return out


def _by_source(table: pa.Table) -> dict[str, dict]:
    stats: dict[str, dict] = {}
    if table.num_rows == 0:
        return stats
    src = table["source"].combine_chunks()
    if isinstance(src, pa.DictionaryArray):
        names, idx = src.dictionary.to_pylist(), src.indices.to_numpy(zero_copy_only=False)
    else:
        names, idx = np.unique(src.to_numpy(zero_copy_only=False), return_inverse=True)
        names = list(names)
    lens = {m: pc.list_value_length(table[m]).fill_null(0).to_numpy() for m in MODALITY_COLUMNS}
    for k, name in enumerate(names):
        sel = idx == k
        if not sel.any():
            continue
        stats[name] = {"rows": int(sel.sum()), **{m: int(lens[m][sel].sum()) for m in MODALITY_COLUMNS}}
    return stats


def serialize(table: pa.Table) -> bytes:
    table = table.cast(SCHEMA) if table.schema != SCHEMA else table
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, SCHEMA) as writer:
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def write_shard(dataset_uri: str, name: str, table: pa.Table) -> dict:
    """Write `shards/<name>.arrow` atomically and return its manifest entry."""
    data = serialize(table)
    rel = f"shards/{name}.arrow"
    resolve(dataset_uri).join(rel).write_bytes_atomic(data)
    return {
        "path": rel,
        "rows": table.num_rows,
        "tokens": table_tokens(table),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "by_source": _by_source(table),
    }


def open_shard_file(loc: Location, entry: dict, verify: str = "sha256") -> pa.ipc.RecordBatchFileReader:
    """Open one shard for random access (memory-mapped locally, ranged reads through pyarrow's
    S3 client otherwise) after checking it against its manifest entry: size (`verify` "size"),
    size and sha256 ("sha256"), or nothing ("none"); the schema is always checked. Any mismatch
    raises IntegrityError naming the shard."""
    import pyarrow.fs as pafs

    uri = loc.uri
    try:
        if isinstance(loc.fs, pafs.LocalFileSystem):
            source = pa.memory_map(loc.path, "r")
        else:
            source = loc.fs.open_input_file(loc.path)
        size = source.size()
    except (OSError, FileNotFoundError) as e:
        raise IntegrityError(f"shard {uri} listed in the manifest cannot be opened: {e}") from e
    if verify != "none" and size != entry["bytes"]:
        raise IntegrityError(f"shard {uri}: size {size} bytes, manifest says {entry['bytes']}")
    if verify == "sha256":
        h = hashlib.sha256()
        source.seek(0)
        while True:  # in slices: zero-copy over a memory map, bounded buffers on S3
            chunk = source.read_buffer(_HASH_CHUNK)
            if not chunk.size:
                break
            h.update(memoryview(chunk))
        digest = h.hexdigest()
        if digest != entry["sha256"]:
            raise IntegrityError(
                f"shard {uri}: sha256 {digest[:12]}… does not match the manifest's {entry['sha256'][:12]}…"
            )
        source.seek(0)
    try:
        reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid as e:
        raise IntegrityError(f"shard {uri} is not a readable Arrow IPC file: {e}") from e
    if not reader.schema.equals(SCHEMA):
        raise IntegrityError(f"shard {uri}: schema differs from the dataset schema")
    return reader


def open_shard(loc: Location, entry: dict, verify: str = "sha256") -> pa.Table:
    """One whole shard as a table (zero-copy over a memory map locally), verified as in
    `open_shard_file`, with its row count checked against the manifest."""
    try:
        table = open_shard_file(loc, entry, verify).read_all()
    except pa.ArrowInvalid as e:
        raise IntegrityError(f"shard {loc.uri} is not a readable Arrow IPC file: {e}") from e
    if table.num_rows != entry["rows"]:
        raise IntegrityError(f"shard {loc.uri}: {table.num_rows} rows, manifest says {entry['rows']}")
    return table


def concat_tables(tables: Iterable[pa.Table]) -> pa.Table:
    tables = list(tables)
    return pa.concat_tables(tables, promote_options="none") if tables else SCHEMA.empty_table()
