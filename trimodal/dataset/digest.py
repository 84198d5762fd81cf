"""sha256, the one way trimodal names content: of a local file (shards, length indexes, codec
weights) and of a JSON value in canonical form (fingerprint ids, job fingerprints).

One implementation, so that a digest written by one part (the manifest, a tokenizer's
fingerprint, a resume marker) is the digest every other part computes for the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable


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


def sha256_of(read_at: Callable[[int, int], object], size: int, chunk: int = 16 << 20) -> str:
    """sha256 (hex) of `size` bytes read in slices through `read_at(length, offset)` (zero-copy
    over a memory map, bounded buffers on S3)."""
    h = hashlib.sha256()
    for at in range(0, size, chunk):
        h.update(memoryview(read_at(min(chunk, size - at), at)))
    return h.hexdigest()


def canonical_hash(obj) -> str:
    """16 hex digits of the sha256 of `obj` as canonical JSON (sorted keys, no spaces; values JSON
    cannot hold are written as their str), so equal values hash equally whatever their order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
