"""Rewrite a format-1 dataset (everything inline in `manifest.json`, no length index) as
format 2, in place: one length index per shard (computed from the shard's list offsets, no code
is decoded), the shard and input tables, then the new header, atomically and last. Shards and
quarantine files are not touched, so readers of the old manifest keep working until the new one
lands, and a migration cut short leaves a valid format-1 dataset (rerun it). Each shard is read
once (sha256-verified against the old manifest) to build its index: the cost is one pass over
the data, the same as `inspect --verify`.
"""

from __future__ import annotations

import hashlib

from trimodal.dataset.manifest import FORMAT_VERSION, Manifest, index_path
from trimodal.dataset.shards import open_shard, serialize_index
from trimodal.dataset.storage import resolve


def migrate(uri: str, progress=None) -> dict:
    """Migrate the dataset at `uri`; returns {from, to, shards}. A format-2 dataset is left
    as it is."""
    m = Manifest.load(uri)
    if m.format_version == FORMAT_VERSION:
        return {"from": m.format_version, "to": FORMAT_VERSION, "shards": 0}
    root = resolve(uri)
    entries = []
    for i, e in enumerate(m.shards):
        table = open_shard(root.join(e["path"]), e, verify="sha256")
        data = serialize_index(table)
        rel = index_path(e["path"])
        root.join(rel).write_bytes_atomic(data)
        entries.append({**e, "index": {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}})
        if progress:
            progress(i + 1, len(m.shards))
    new = Manifest(
        fingerprints=m.fingerprints,
        shards=entries,
        inputs=m.inputs,
        quarantine=m.quarantine,
        stats=m.stats,
        job=m.job,
        created=m.created,
    )
    new.save(uri)
    return {"from": 1, "to": FORMAT_VERSION, "shards": len(entries)}
