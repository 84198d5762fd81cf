"""Seeded, epoch-dependent global shuffle in O(1) memory: a keyed Feistel permutation.

Each source's epoch `e` visits its samples in the order `perm(0), perm(1), ... perm(N-1)`, where
`perm` is a bijection of [0, N) keyed by (seed, source name, epoch). It is computed on demand
for any index range (vectorized with numpy), so shuffling a billion samples costs no memory and
resuming at position p needs nothing but p. Trade-off: a Feistel network over a power-of-two
domain with cycle walking is a good pseudo-random permutation for data order, not a
cryptographic one, and neighbouring samples land in unrelated shards (random access; the shard
reader's caches absorb it on local disks).
"""

from __future__ import annotations

import hashlib

import numpy as np

_ROUNDS = 4
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def derive_key(*parts) -> int:
    """A stable 64-bit key from any printable parts (seed, source name, epoch, purpose)."""
    blob = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")


_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on uint64 arrays (wrapping arithmetic), in place: x is overwritten
    and returned."""
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def uniform(key: int, idx: np.ndarray) -> np.ndarray:
    """Deterministic uniforms in [0, 1) for integer indices under `key` (one per index)."""
    x = np.asarray(idx, dtype=np.uint64) * _GOLD + np.uint64(key)
    return (_mix(x) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class Permutation:
    """A bijection of [0, n) keyed by `key`; `perm(indices)` maps an index array at once."""

    def __init__(self, n: int, key: int):
        if n < 0:
            raise ValueError("n must be >= 0")
        self.n = n
        bits = max(2, int(n - 1).bit_length()) if n > 1 else 2
        bits += bits % 2  # balanced Feistel: two halves of equal width
        self._half = np.uint64(bits // 2)
        self._mask = np.uint64((1 << (bits // 2)) - 1)
        self._keys = [np.uint64(derive_key(key, r)) for r in range(_ROUNDS)]

    def _round_trip(self, x: np.ndarray) -> np.ndarray:
        mask = self._mask
        left, right = x >> self._half, x & mask
        for k in self._keys:
            f = right ^ k
            _mix(f)
            f &= mask
            f ^= left
            left, right = right, f
        left <<= self._half
        left |= right
        return left

    def __call__(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.uint64)
        if self.n <= 1:
            return np.zeros(idx.shape, dtype=np.int64)
        y = self._round_trip(idx)
        # Cycle walking: the domain is < 4n, so on average < 4 passes keep values in [0, n).
        out = y >= np.uint64(self.n)
        while out.any():
            y[out] = self._round_trip(y[out])
            out = y >= np.uint64(self.n)
        return y.astype(np.int64)


class GlobalOrder:
    """An epoch's visiting order: position p in [0, domain) → sample perm(p). Every sample once."""

    def __init__(self, n: int, key: int):
        self.n = self.domain = n
        self._perm = Permutation(n, key)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        return self._perm(positions)


class BlockOrder:
    """A shuffle with locality, still a bijection: blocks of `block` consecutive samples are
    permuted globally, then taken `window` blocks at a time and their samples interleaved by a
    second keyed permutation over the window's slots. So consecutive positions come from up to
    `window` different blocks (a record batch each, with the writer's batch size), and every block
    fetched is used whole before the order moves on: the mode for object storage and datasets far
    beyond the page cache, where a per-sample global shuffle reads a record batch per sample.
    Trade-off: samples only meet others from the same window of blocks within an epoch.

    The domain is padded to whole windows of whole blocks; positions that map past the last
    sample are holes (returned as -1) and are skipped by the reader of the order, so a position
    is still all a resumed run needs.
    """

    def __init__(self, n: int, key: int, block: int, window: int):
        self.n, self.block, self.window = n, block, window
        self.blocks = -(-n // block)
        self.windows = -(-self.blocks // window)
        self.domain = self.windows * window * block
        self._key = key
        self._block_perm = Permutation(self.blocks, derive_key(key, "blocks"))
        self._slot_perms: dict[int, Permutation] = {}

    def _slots(self, w: int) -> Permutation:
        p = self._slot_perms.get(w)
        if p is None:
            if len(self._slot_perms) > 8:
                self._slot_perms.clear()
            p = self._slot_perms[w] = Permutation(self.window * self.block, derive_key(self._key, "window", w))
        return p

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        span = self.window * self.block
        w = positions // span
        out = np.empty(len(positions), dtype=np.int64)
        for wi in np.unique(w).tolist():
            sel = w == wi
            q = self._slots(wi)(positions[sel] - wi * span)
            slot = wi * self.window + q // self.block
            ok = slot < self.blocks
            sample = np.full(len(q), -1, dtype=np.int64)
            sample[ok] = self._block_perm(slot[ok]) * self.block + q[ok] % self.block
            sample[sample >= self.n] = -1
            out[sel] = sample
        return out
