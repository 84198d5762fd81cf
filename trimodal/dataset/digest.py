"""sha256, the one way trimodal names content: of a local file (shards, length indexes, codec
weights) and of a JSON value in canonical form (fingerprint ids, job fingerprints).

One implementation, so that a digest written by one part (the manifest, a tokenizer's
fingerprint, a resume marker) is the digest every other part computes for the same bytes.
"""

from __future__ import annotations

import hashlib
import json


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a local file, read in slices through plain reads (a memory map of the
    same file keeps only the pages its users touch resident)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


def canonical_hash(obj) -> str:
    """16 hex digits of the sha256 of `obj` as canonical JSON (sorted keys, no spaces; values JSON
    cannot hold are written as their str), so equal values hash equally whatever their order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
