"""Reading (and, for small cases, writing) a tokenized dataset as a whole.

`Dataset.open` trusts only the manifest: it lists the shards, and each shard is verified
(size, and sha256 by default) the first time it is read, with the shard named on any
mismatch. Verification is lazy so that opening a multi-terabyte dataset costs one small read;
the price is that a corrupt shard is found when it is reached, not up front (`verify_all`
does the eager pass, and `trimodal inspect --verify` exposes it).

`build_dataset` writes rows → shards + manifest in one process; it is what tests and small
tools use. The distributed tokenize job writes the same format through `write_shard` and
`Manifest` directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from trimodal.dataset.manifest import MANIFEST_NAME, TABLES_DIR, Manifest
from trimodal.dataset.quarantine import write_quarantine
from trimodal.dataset.shards import (
    INDEX_DIR,
    SHARDS_DIR,
    open_shard,
    open_shard_file,
    read_index,
    rows_to_table,
    write_shard,
)
from trimodal.dataset.storage import TMP_MARK, Location, list_files, resolve
from trimodal.errors import IntegrityError

VERIFY_MODES = ("sha256", "size", "none")


@dataclass
class Dataset:
    uri: str
    manifest: Manifest
    verify: str = "sha256"
    _root: Location = field(init=False, repr=False)
    _verified: set = field(default_factory=set, init=False, repr=False)

    def __post_init__(self):
        if self.verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {self.verify!r}")
        self._root = resolve(self.uri)

    @classmethod
    def open(cls, uri: str, verify: str = "sha256") -> Dataset:
        return cls(str(uri), Manifest.load(str(uri)), verify)

    @property
    def fingerprints(self) -> dict[str, dict]:
        return self.manifest.fingerprints

    @property
    def shards(self) -> list[dict]:
        return self.manifest.shards

    @property
    def num_rows(self) -> int:
        return sum(s["rows"] for s in self.manifest.shards)

    @property
    def root(self) -> Location:
        """Where the dataset lives; manifest paths are relative to it."""
        return self._root

    def shard_location(self, i: int) -> Location:
        return self._root.join(self.manifest.shards[i]["path"])

    def verify_mode(self, i: int) -> str:
        """How shard i is checked when opened: one full hash per shard per process (`verified`
        records it), then size checks only."""
        return "size" if (self.verify == "sha256" and i in self._verified) else self.verify

    def verified(self, i: int) -> None:
        """Shard i passed the checks of `verify_mode(i)`."""
        self._verified.add(i)

    def read_shard(self, i: int) -> pa.Table:
        """Shard i as a table: zero-copy over a memory map locally; verified on first read."""
        table = open_shard(self.shard_location(i), self.manifest.shards[i], verify=self.verify_mode(i))
        self.verified(i)
        return table

    def open_shard_file(self, i: int) -> pa.ipc.RecordBatchFileReader:
        """Shard i for random access by record batch (memory map locally, ranged reads on S3),
        verified like `read_shard`: sha256 the first time this process opens it, size after."""
        reader = open_shard_file(self.shard_location(i), self.manifest.shards[i], verify=self.verify_mode(i))
        self.verified(i)
        return reader

    def iter_tables(self) -> Iterator[pa.Table]:
        for i in range(len(self.manifest.shards)):
            yield self.read_shard(i)

    def read_index(self, i: int) -> pa.Table:
        """Shard i's length index (per row: code count per modality, -1 if absent; source)."""
        return read_index(self._root, self.manifest.shards[i], verify=self.verify != "none")

    def verify_all(self) -> list[str]:
        """Check every shard and length index (sha256); return the problems found, one line
        per file."""
        problems = []
        for i in range(len(self.manifest.shards)):
            entry = self.manifest.shards[i]
            try:
                open_shard(self.shard_location(i), entry, verify="sha256")
                if entry.get("index"):
                    read_index(self._root, entry, verify=True)
            except IntegrityError as e:
                problems.append(str(e))
        return problems

    def unreferenced_files(self) -> list[str]:
        """Files under the dataset's own folders that the manifest does not reference: shards,
        indexes and tables of dead or superseded attempts, and temp files of interrupted
        atomic writes (anywhere). Relative paths, sorted."""
        return unreferenced_files(self.uri, self.manifest)


def unreferenced_files(uri: str, manifest: Manifest) -> list[str]:
    """See `Dataset.unreferenced_files`. Quarantine files count as referenced when their stem
    is the key of an input in the manifest (or the manifest lists no inputs)."""
    root = resolve(uri)
    keep = {MANIFEST_NAME}
    for e in manifest.shards:
        keep.add(e["path"])
        if e.get("index"):
            keep.add(e["index"]["path"])
    keep.update(ref["path"] for ref in manifest.tables.values())
    keys = {e["key"] for e in manifest.inputs if e.get("key")}
    out = []
    for rel in list_files(root):
        name = rel.rsplit("/", 1)[-1]
        if TMP_MARK in name:
            out.append(rel)
        elif rel.startswith((f"{SHARDS_DIR}/", f"{INDEX_DIR}/", f"{TABLES_DIR}/")) and rel not in keep:
            out.append(rel)
        elif rel.startswith("quarantine/") and keys and name.removesuffix(".jsonl") not in keys:
            out.append(rel)
    return sorted(out)


def remove_unreferenced(uri: str, manifest: Manifest) -> list[str]:
    """Delete what `unreferenced_files` lists (call only after `manifest` is committed)."""
    root = resolve(uri)
    gone = unreferenced_files(uri, manifest)
    for rel in gone:
        loc = root.join(rel)
        try:
            loc.fs.delete_file(loc.path)
        except FileNotFoundError:
            pass
    return gone


def build_dataset(
    uri: str,
    rows: Sequence[dict],
    fingerprints: dict[str, dict],
    shard_rows: int = 1000,
    quarantine: Sequence[dict] = (),
    inputs: Sequence[dict] = (),
    stats: dict | None = None,
    shard_prefix: str = "part",
) -> Manifest:
    """Write `rows` as shards of `shard_rows` rows plus a manifest; return the manifest."""
    if shard_rows < 1:
        raise ValueError("shard_rows must be >= 1")
    entries = []
    for k, start in enumerate(range(0, len(rows), shard_rows)):
        table = rows_to_table(rows[start : start + shard_rows])
        entries.append(write_shard(uri, f"{shard_prefix}-{k:05d}", table))
    counts = write_quarantine(uri, f"{shard_prefix}-00000", quarantine) if quarantine else {}
    manifest = Manifest(
        fingerprints=dict(fingerprints), shards=entries, inputs=list(inputs), quarantine=counts, stats=dict(stats or {})
    )
    manifest.save(uri)
    return manifest


def summarize(ds: Dataset) -> dict:
    """The `inspect` summary: samples and tokens per modality and source, shards, bytes,
    fingerprints, quarantine counts by reason, the inputs that failed, job stats."""
    m = ds.manifest
    totals = m.compute_totals()
    failed = [
        {"uri": i.get("uri"), "key": i.get("key"), "error": i.get("error")}
        for i in m.inputs
        if i.get("status") == "failed"
    ]
    return {
        "uri": ds.uri,
        "format_version": m.format_version,
        "created": m.created,
        "samples": totals["rows"],
        "tokens": totals["tokens"],
        "by_source": totals["by_source"],
        "shards": totals["shards"],
        "bytes": totals["bytes"],
        "fingerprints": m.fingerprints,
        "quarantine": dict(sorted(m.quarantine.items())),
        "quarantined": totals["quarantined"],
        "inputs": len(m.inputs),
        "failed_inputs": failed,
        "stats": m.stats,
    }
