"""Quarantine: rejected samples are kept, with where they came from and why.

Nothing is silently dropped. Each writer (one per input) appends a JSONL file under
``quarantine/``; the manifest carries the counts by reason, these files carry the details
(id, source, origin, reason, message) for audits and for fixing the inputs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

import pyarrow.fs as pafs

from trimodal.dataset.storage import resolve

FIELDS = ("id", "source", "origin", "reason", "message")


def write_quarantine(dataset_uri: str, name: str, records: Iterable[dict]) -> dict[str, int]:
    """Write `quarantine/<name>.jsonl` (atomically) and return counts by reason."""
    records = list(records)
    if not records:
        return {}
    lines = [json.dumps({k: r.get(k) for k in FIELDS}, ensure_ascii=False) for r in records]
    resolve(dataset_uri).join(f"quarantine/{name}.jsonl").write_bytes_atomic(("\n".join(lines) + "\n").encode())
    return dict(Counter(r["reason"] for r in records))


def read_quarantine(dataset_uri: str) -> list[dict]:
    """All quarantine records of a dataset, in file-name order."""
    loc = resolve(dataset_uri).join("quarantine")
    if not loc.exists():
        return []
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
    out = []
    for info in sorted(
        (i for i in infos if i.type == pafs.FileType.File and i.path.endswith(".jsonl")), key=lambda i: i.path
    ):
        with loc.fs.open_input_stream(info.path) as f:
            out.extend(json.loads(line) for line in f.read().decode().splitlines() if line.strip())
    return out
