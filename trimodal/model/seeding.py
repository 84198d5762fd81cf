"""Seeds derived from names: every random draw of training is keyed by what it is for (the
parameter's name, the step, the row's global index), never by the order in which a process
happens to draw, so the world size, the sharding and the micro-batching cannot change it."""

from __future__ import annotations

import hashlib


def seed_for(*parts) -> int:
    """A 63-bit seed from any parts (sha256 of their '/'-joined text)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") & (2**63 - 1)
