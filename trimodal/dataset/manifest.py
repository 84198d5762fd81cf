"""The dataset manifest: the only entry point a reader trusts.

Format 2 keeps `manifest.json` small (format version, fingerprints, totals, quarantine counts,
job settings and statistics) and puts what grows with the corpus in Arrow IPC tables that the
manifest names with their sha256:

    tables/shards-<sha16>.arrow   one row per shard: path, rows, bytes, sha256, tokens per
                                  modality, samples and tokens per source (JSON), and the
                                  bytes and sha256 of its length index (index/<shard file>)
    tables/inputs-<sha16>.arrow   one row per input consumed: key, uri, source, status, error,
                                  records, rows, quarantine counts (JSON), shard paths

The tables are written first and the manifest last, atomically (a rename locally, one PUT on
S3), so a reader sees no dataset or a complete one, and a table's name changes whenever its
content does (an old reader never sees a new table under an old name). Opening a dataset reads
the header only; the shard table is read (and its sha256 checked) on first use. Measured with
`bench/bench_manifest.py` at one million shards: the header loads in about 1 ms whatever the
size, the shard table (~190 MB) in about 0.5 s; the same content as format-1 JSON was ~300 MB
that every reader parsed whole (several seconds and ~2 GB of Python objects).

Format-1 datasets (everything inline in `manifest.json`, no length index) stay readable: the
same `Manifest` API serves them from the JSON, and readers that want the length index compute
it from the shard's list offsets. `trimodal migrate` rewrites one as format 2 in place.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from trimodal.dataset.digest import file_sha256
from trimodal.dataset.schema import MODALITIES
from trimodal.dataset.shards import INDEX_DIR
from trimodal.dataset.storage import resolve
from trimodal.errors import IntegrityError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
TABLES_DIR = "tables"

SHARD_TABLE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("sha256", pa.binary(32)),
        *[(f"tokens_{m}", pa.int64()) for m in MODALITIES],
        ("by_source", pa.string()),  # JSON {source: {rows, text, image, audio}}
        # The shard's length index, at index/<shard file name>; null: none (format-1 datasets)
        ("index_bytes", pa.int64()),
        ("index_sha256", pa.binary(32)),
    ]
)
INPUT_TABLE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("uri", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("records", pa.int64()),
        ("rows", pa.int64()),
        ("quarantine", pa.string()),  # JSON {reason: count}
        ("shards", pa.list_(pa.string())),
    ]
)


class ShardTable(Sequence):
    """The shards of a dataset as a read-only sequence of entry dicts (path, rows, bytes,
    sha256, tokens, by_source, index), backed by one Arrow table. Column arrays (`rows`,
    `bytes`) are numpy, so planning over a million shards never builds a million dicts."""

    def __init__(self, table: pa.Table):
        # one chunk per column (what the writer writes) is used as it is: combining would copy
        # a memory-mapped table into memory
        one = all(table.column(i).num_chunks <= 1 for i in range(table.num_columns))
        self.table = table.combine_chunks() if table.num_rows and not one else table
        self.rows = table.column("rows").to_numpy().astype(np.int64, copy=False)
        self.bytes = table.column("bytes").to_numpy().astype(np.int64, copy=False)
        self._cols: dict | None = None

    @classmethod
    def from_entries(cls, entries: Sequence[dict]) -> ShardTable:
        cols: dict[str, list] = {f.name: [] for f in SHARD_TABLE_SCHEMA}
        for e in entries:
            idx = e.get("index") or {}
            cols["path"].append(e["path"])
            cols["rows"].append(int(e["rows"]))
            cols["bytes"].append(int(e["bytes"]))
            cols["sha256"].append(bytes.fromhex(e["sha256"]))
            for m in MODALITIES:
                cols[f"tokens_{m}"].append(int((e.get("tokens") or {}).get(m, 0)))
            cols["by_source"].append(json.dumps(e.get("by_source") or {}, sort_keys=True, separators=(",", ":")))
            if idx and idx["path"] != index_path(e["path"]):
                raise ValueError(f"index of {e['path']} must be at {index_path(e['path'])}, got {idx['path']}")
            cols["index_bytes"].append(idx.get("bytes"))
            cols["index_sha256"].append(bytes.fromhex(idx["sha256"]) if idx else None)
        return cls(pa.table(cols, schema=SHARD_TABLE_SCHEMA))

    def __len__(self) -> int:
        return self.table.num_rows

    def _columns(self) -> dict:
        if self._cols is None:
            self._cols = {name: self.table.column(name).to_pylist() for name in self.table.column_names}
        return self._cols

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        c = self._cols if self._cols is not None else _RowView(self.table, i)
        entry = {
            "path": c["path"][i],
            "rows": c["rows"][i],
            "bytes": c["bytes"][i],
            "sha256": c["sha256"][i].hex(),
            "tokens": {m: c[f"tokens_{m}"][i] for m in MODALITIES},
            "by_source": json.loads(c["by_source"][i]) if c["by_source"][i] else {},
        }
        if c["index_sha256"][i] is not None:
            entry["index"] = {
                "path": index_path(entry["path"]),
                "bytes": c["index_bytes"][i],
                "sha256": c["index_sha256"][i].hex(),
            }
        return entry

    def __iter__(self) -> Iterator[dict]:
        self._columns()  # whole columns once: iterating stays O(1) per entry
        for i in range(len(self)):
            yield self[i]


class _RowView:
    """`columns[name][i]` for one row without converting whole columns (random access)."""

    def __init__(self, table: pa.Table, i: int):
        self.table, self.i = table, i

    def __getitem__(self, name: str):
        return _OneRow(self.table.column(name), self.i)


class _OneRow:
    def __init__(self, col, i: int):
        self.col, self.i = col, i

    def __getitem__(self, i: int):
        return self.col[i].as_py()


def index_path(shard_path: str) -> str:
    """Where a shard's length index lives: index/<the shard's file name>."""
    return f"{INDEX_DIR}/{shard_path.rsplit('/', 1)[-1]}"


def _inputs_table(inputs: Sequence[dict]) -> pa.Table:
    cols: dict[str, list] = {f.name: [] for f in INPUT_TABLE_SCHEMA}
    for e in inputs:
        for name in ("key", "uri", "source", "status", "error"):
            cols[name].append(e.get(name))
        cols["records"].append(e.get("records"))
        cols["rows"].append(e.get("rows"))
        cols["quarantine"].append(json.dumps(e.get("quarantine") or {}, sort_keys=True))
        cols["shards"].append(list(e.get("shards") or []))
    return pa.table(cols, schema=INPUT_TABLE_SCHEMA)


def _inputs_from_table(t: pa.Table) -> list[dict]:
    out = []
    for r in t.to_pylist():
        r["quarantine"] = json.loads(r["quarantine"]) if r["quarantine"] else {}
        out.append(r)
    return out


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


class Manifest:
    """A dataset's manifest. Build one with entries and save it (writes the tables, then the
    header); `Manifest.load` reads the header and leaves the tables for first use."""

    def __init__(
        self,
        fingerprints: dict | None = None,
        shards: Sequence[dict] | ShardTable = (),
        inputs: Sequence[dict] = (),
        quarantine: dict | None = None,
        stats: dict | None = None,
        job: dict | None = None,
        totals: dict | None = None,
        format_version: int = FORMAT_VERSION,
        created: str = "",
        tables: dict | None = None,
        uri: str | None = None,
    ):
        self.fingerprints = dict(fingerprints or {})
        self.quarantine = dict(quarantine or {})
        self.stats = dict(stats or {})
        self.job = dict(job or {})
        self.totals = dict(totals or {})
        self.format_version = format_version
        self.created = created
        self.tables = dict(tables or {})  # name -> {path, sha256, bytes, rows}
        self.uri = uri
        self._shards = shards if isinstance(shards, ShardTable) or tables else ShardTable.from_entries(shards)
        self._inputs = list(inputs) if not tables else None

    # tables, loaded on first use --------------------------------------------------------
    def _read_table(self, name: str, verify: str = "sha256") -> pa.Table:
        ref = self.tables[name]
        loc = resolve(self.uri).join(ref["path"])
        if isinstance(loc.fs, pafs.LocalFileSystem):
            try:  # zero-copy: the table is read straight from the page cache
                data = pa.memory_map(loc.path, "r").read_buffer()
                digest = None
                if verify == "sha256" and data.size == ref["bytes"]:
                    # hashed through reads, not the map: the map's resident pages stay those used
                    digest = file_sha256(loc.path)
            except OSError as e:
                raise IntegrityError(f"{loc.uri}: the {name} table cannot be read: {e}") from e
        else:
            data = pa.py_buffer(loc.read_bytes())
            digest = hashlib.sha256(memoryview(data)).hexdigest() if verify == "sha256" else None
        if (verify != "none" and data.size != ref["bytes"]) or (verify == "sha256" and digest != ref["sha256"]):
            raise IntegrityError(f"{loc.uri}: the {name} table does not match the manifest (size or sha256)")
        try:
            return pa.ipc.open_file(pa.BufferReader(data)).read_all()
        except pa.ArrowInvalid as e:
            raise IntegrityError(f"{loc.uri}: not a readable Arrow IPC file: {e}") from e

    @property
    def shards(self) -> ShardTable:
        if not isinstance(self._shards, ShardTable):
            self._shards = ShardTable(self._read_table("shards"))
        return self._shards

    def load_shards(self, verify: str = "sha256") -> ShardTable:
        """The shard table, checked as `verify` says: "sha256" (as `shards`), "size" or "none".
        Locally the table stays memory-mapped either way, so a reader that touches a few columns
        (a million-shard table is ~190 MB) keeps only those pages resident."""
        if not isinstance(self._shards, ShardTable):
            self._shards = ShardTable(self._read_table("shards", verify))
        return self._shards

    @property
    def inputs(self) -> list[dict]:
        if self._inputs is None:
            self._inputs = _inputs_from_table(self._read_table("inputs"))
        return self._inputs

    # totals -------------------------------------------------------------------------------
    def compute_totals(self) -> dict:
        sh = self.shards
        t = sh.table
        tokens = {m: int(np.asarray(t.column(f"tokens_{m}").to_numpy()).sum()) if len(sh) else 0 for m in MODALITIES}
        by_source: dict[str, dict] = {}
        for s in t.column("by_source").to_pylist() if len(sh) else []:
            for name, st in (json.loads(s) if s else {}).items():
                acc = by_source.setdefault(name, {"rows": 0, **{m: 0 for m in MODALITIES}})
                for k, v in st.items():
                    acc[k] = acc.get(k, 0) + v
        return {
            "rows": int(sh.rows.sum()),
            "tokens": tokens,
            "bytes": int(sh.bytes.sum()),
            "shards": len(sh),
            "by_source": by_source,
            "quarantined": sum(self.quarantine.values()),
        }

    def header(self) -> dict:
        return {
            "format_version": self.format_version,
            "created": self.created,
            "fingerprints": self.fingerprints,
            "totals": self.totals,
            "quarantine": self.quarantine,
            "stats": self.stats,
            "job": self.job,
            "tables": self.tables,
        }

    def to_dict(self) -> dict:
        """The whole manifest as plain data (shards and inputs inline), for `inspect --json`."""
        return {**self.header(), "shards": list(self.shards), "inputs": self.inputs}

    # writing ------------------------------------------------------------------------------
    def save(self, dataset_uri: str) -> None:
        """Commit the dataset: the tables first (content-addressed names), then the header,
        atomically and last. Totals are recomputed from the shard table, so they cannot drift."""
        root = resolve(dataset_uri)
        shards, inputs = self.shards, self.inputs
        self.totals = self.compute_totals()
        self.created = self.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.format_version = FORMAT_VERSION
        tables = {}
        for name, table in (("shards", shards.table), ("inputs", _inputs_table(inputs))):
            data = _table_bytes(table)
            digest = hashlib.sha256(data).hexdigest()
            path = f"{TABLES_DIR}/{name}-{digest[:16]}.arrow"
            loc = root.join(path)
            if not loc.exists():
                loc.write_bytes_atomic(data)
            tables[name] = {"path": path, "sha256": digest, "bytes": len(data), "rows": table.num_rows}
        self.tables = tables
        self.uri = dataset_uri
        blob = json.dumps(self.header(), indent=1, sort_keys=True).encode()
        root.join(MANIFEST_NAME).write_bytes_atomic(blob)

    @classmethod
    def load(cls, dataset_uri: str) -> Manifest:
        loc = resolve(dataset_uri).join(MANIFEST_NAME)
        if not loc.exists():
            raise IntegrityError(
                f"{dataset_uri} is not a trimodal dataset (no {MANIFEST_NAME}; an unfinished job never writes one)"
            )
        try:
            d = json.loads(loc.read_bytes())
        except json.JSONDecodeError as e:
            raise IntegrityError(f"{loc.uri}: manifest is not valid JSON: {e}") from e
        version = d.get("format_version")
        if version not in READABLE_VERSIONS:
            raise IntegrityError(f"{loc.uri}: format_version {version!r}, this trimodal reads {READABLE_VERSIONS}")
        common = {k: d.get(k) for k in ("fingerprints", "quarantine", "stats", "job", "totals")}
        if version == 1:
            return cls(
                **common,
                shards=d.get("shards") or [],
                inputs=d.get("inputs") or [],
                format_version=1,
                created=d.get("created", ""),
                uri=dataset_uri,
            )
        tables = d.get("tables") or {}
        for name in ("shards", "inputs"):
            if name not in tables:
                raise IntegrityError(f"{loc.uri}: format 2 manifest names no {name} table")
        return cls(**common, format_version=2, created=d.get("created", ""), tables=tables, uri=dataset_uri)


__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "Manifest", "ShardTable", "TABLES_DIR"]
