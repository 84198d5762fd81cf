"""Shard files: one Arrow IPC file per shard, one row per sample, codec codes as list<int32>.

Arrow IPC (the "file" flavour) is memory-mappable, so readers touch only the pages they use,
and its footer indexes record batches, so ranged reads from S3 fetch only what is needed.
Rows are written in record batches of `BATCH_ROWS` to keep those ranged reads small. A shard
is serialized in memory, hashed, then written in one atomic step (rename locally, a single
PUT on S3): a crash never leaves a half-written shard under its final name.

Beside each shard the writer puts its **length index**, `index/<name>.arrow`: per row the code
count of each modality (int32, -1 where the modality is absent) and the source (dictionary),
and the sample's `key` (uint64, the first 8 bytes of blake2b of its id: what a held-out split
hashes), about 24 bytes per sample (16 before the key) against ~4 KB of codes for a 1k-token sample. A reader plans
sequences from it without touching the codes (the mixer reads it; `trimodal inspect` does not
need it). Indexes written before the key column (`INDEX_SCHEMA_V1`) stay readable; their keys
are computed from the shard's `id` column when a split asks for them (`shard_keys`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trimodal.dataset.digest import file_sha256, sha256_of
from trimodal.dataset.schema import MODALITIES, list_column
from trimodal.dataset.storage import Location, resolve
from trimodal.errors import IntegrityError

MODALITY_COLUMNS = MODALITIES  # the code columns of a shard
BATCH_ROWS = 1024
SHARDS_DIR = "shards"
INDEX_DIR = "index"

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


INDEX_SCHEMA_V1 = pa.schema(
    [
        pa.field("text", pa.int32()),
        pa.field("image", pa.int32()),
        pa.field("audio", pa.int32()),
        pa.field("source", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    ]
)
INDEX_SCHEMA = INDEX_SCHEMA_V1.append(pa.field("key", pa.uint64(), nullable=False))


def sample_keys(ids) -> np.ndarray:
    """Per sample id a uint64 key: the first 8 bytes (little-endian) of its blake2b digest. It
    depends on the id alone, so anything decided from it (held-out membership) is the same
    whatever the shards, their order or the number of readers."""
    values = ids.to_pylist() if hasattr(ids, "to_pylist") else list(ids)
    blob = b"".join(hashlib.blake2b(v.encode(), digest_size=8).digest() for v in values)
    return np.frombuffer(blob, dtype="<u8").astype(np.uint64)


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


def canonical(table: pa.Table) -> pa.Table:
    """The one in-memory layout a table is written from: contiguous columns and one source
    dictionary in order of first appearance. A shard's bytes then depend on its rows only,
    not on how they were chunked on the way (what makes retried and resumed writes identical)."""
    table = table.cast(SCHEMA) if table.schema != SCHEMA else table
    src = table.column("source").cast(pa.string()).combine_chunks().dictionary_encode()
    src = src.cast(SCHEMA.field("source").type)
    table = table.set_column(table.schema.get_field_index("source"), SCHEMA.field("source"), src)
    # Slices and concatenations keep their parents' buffers (oversized validity bitmaps, offsets
    # not at 0), which the IPC writer copies as they are: one `take` into fresh, exact buffers
    # makes the file the same as one written from freshly built rows (one copy of the shard).
    return table.take(pa.array(np.arange(table.num_rows, dtype=np.int64))).combine_chunks()


def serialize(table: pa.Table) -> bytes:
    table = canonical(table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, SCHEMA) as writer:
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def index_table(table: pa.Table) -> pa.Table:
    """A shard's length index: per row the code count of each modality (-1: absent), the
    source and the sample key, computed from the list offsets and ids (no code is read)."""
    table = canonical(table)
    cols = {m: pc.list_value_length(table[m]).fill_null(-1).cast(pa.int32()) for m in MODALITIES}
    key = pa.array(sample_keys(table["id"]), pa.uint64())
    return pa.table({**cols, "source": table["source"], "key": key}, schema=INDEX_SCHEMA)


def serialize_index(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, INDEX_SCHEMA) as writer:
        writer.write_table(index_table(table))
    return sink.getvalue().to_pybytes()


def write_shard(dataset_uri: str, name: str, table: pa.Table) -> dict:
    """Write `shards/<name>.arrow` and its length index `index/<name>.arrow`, each atomically
    (index first: a shard on disk always has its index), and return the shard's manifest entry."""
    root = resolve(dataset_uri)
    index = serialize_index(table)
    index_rel = f"{INDEX_DIR}/{name}.arrow"
    root.join(index_rel).write_bytes_atomic(index)
    data = serialize(table)
    rel = f"{SHARDS_DIR}/{name}.arrow"
    root.join(rel).write_bytes_atomic(data)
    return {
        "path": rel,
        "rows": table.num_rows,
        "tokens": table_tokens(table),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "by_source": _by_source(table),
        "index": {"path": index_rel, "bytes": len(index), "sha256": hashlib.sha256(index).hexdigest()},
    }


def read_index(root: Location, entry: dict, verify: bool = True) -> pa.Table:
    """The length index of one shard (see `index_table`), checked against its size and sha256
    (`open_index` with "sha256", or "none" when `verify` is false)."""
    return open_index(root, entry, verify="sha256" if verify else "none")


def check_shard(uri: str, entry: dict, verify: str, size: int, sha256: Callable[[], str]) -> None:
    """The checks of a shard against its manifest entry, for every reader: its size (unless
    `verify` is "none") and, with "sha256", its content (`sha256()` is only called then)."""
    if verify != "none" and size != entry["bytes"]:
        raise IntegrityError(f"shard {uri}: size {size} bytes, manifest says {entry['bytes']}")
    if verify == "sha256":
        digest = sha256()
        if digest != entry["sha256"]:
            raise IntegrityError(
                f"shard {uri}: sha256 {digest[:12]}… does not match the manifest's {entry['sha256'][:12]}…"
            )


def check_schema(uri: str, schema: pa.Schema) -> None:
    if not schema.equals(SCHEMA):
        raise IntegrityError(f"shard {uri}: schema differs from the dataset schema")


def open_index(root: Location, entry: dict, verify: str = "sha256") -> pa.Table:
    """A shard's length index like `read_index`, checked as `verify` says ("sha256", "size",
    "none"), and memory-mapped locally (zero-copy: only the rows used become resident). Without
    a sidecar (format-1 datasets) it is computed from the shard's list offsets."""
    import pyarrow.fs as pafs

    ref = entry.get("index")
    if not ref:
        return index_table(open_shard(root.join(entry["path"]), entry, verify=verify))
    loc = root.join(ref["path"])
    try:
        if isinstance(loc.fs, pafs.LocalFileSystem):
            data = pa.memory_map(loc.path, "r").read_buffer()
            digest = None
            if verify == "sha256":
                digest = file_sha256(loc.path)
        else:
            data = pa.py_buffer(loc.read_bytes())
            digest = hashlib.sha256(memoryview(data)).hexdigest() if verify == "sha256" else None
    except OSError as e:
        raise IntegrityError(f"length index {loc.uri} listed in the manifest cannot be read: {e}") from e
    if (verify != "none" and data.size != ref["bytes"]) or (verify == "sha256" and digest != ref["sha256"]):
        raise IntegrityError(f"length index {loc.uri} does not match the manifest (size or sha256)")
    try:
        t = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    except pa.ArrowInvalid as e:
        raise IntegrityError(f"length index {loc.uri} is not a readable Arrow IPC file: {e}") from e
    if t.num_rows != entry["rows"] or not (t.schema.equals(INDEX_SCHEMA) or t.schema.equals(INDEX_SCHEMA_V1)):
        raise IntegrityError(f"length index {loc.uri}: {t.num_rows} rows or schema differ from the manifest's shard")
    return t


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
    check_shard(uri, entry, verify, size, lambda: sha256_of(source.read_at, size))
    try:
        reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid as e:
        raise IntegrityError(f"shard {uri} is not a readable Arrow IPC file: {e}") from e
    check_schema(uri, reader.schema)
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


def shard_keys(root: Location, entry: dict, verify: str = "size") -> np.ndarray:
    """The sample keys of one shard from its `id` column, for length indexes written before
    the key column (a memory-mapped column locally; the whole shard over S3)."""
    return sample_keys(open_shard(root.join(entry["path"]), entry, verify=verify).column("id"))


def concat_tables(tables: Iterable[pa.Table]) -> pa.Table:
    tables = list(tables)
    return pa.concat_tables(tables, promote_options="none") if tables else SCHEMA.empty_table()
