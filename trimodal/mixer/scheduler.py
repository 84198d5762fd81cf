"""Which source fills the next row: an earliest-deadline rule that keeps every prefix exact.

Each source i has a target T_i (the sum, over every row emitted so far, of its normalized
share times what that row counted: `seq_len` positions, or its real tokens) and what it got,
G_i. The plain "largest deficit first" greedy lets a source drift more than one row from its
target once there are four or more sources. This uses Tijdeman's chairman-assignment rule
instead: among the sources that are due (T_i + w_i·U − G_i ≥ δ·U, with U = seq_len and
δ = 1/(2n−2) for n sources), pick the one whose deadline — when it would fall 1−δ rows behind,
(G_i + (1−δ)·U − T_i) / w_i — comes first. With fixed shares and whole rows this keeps
|G_i − T_i| ≤ (1−δ)·U at every prefix; with rows of varying real tokens it stays within one
row in practice (the tests check one `seq_len` on random mixes).

Shares may change between rows (schedules, an exhausted source's share passing to the others,
a source added on resume): targets accumulate the new shares from then on, so the mix moves to
the new ratios at once and nothing already emitted is revisited.

State: two numbers per source, JSON-safe. Floats round-trip exactly through JSON and every rank
does the same operations in the same order, so all ranks agree bit for bit.
"""

from __future__ import annotations


class Scheduler:
    def __init__(self, names: list[str], unit: int):
        self.names = list(names)
        self.unit = float(unit)
        self.target = {n: 0.0 for n in names}
        self.got = {n: 0 for n in names}

    def choose(self, weights: dict[str, float], exclude: frozenset = frozenset()) -> str | None:
        """The source for the next row given normalized weights (0 or excluded = not eligible)."""
        live = [n for n in self.names if weights.get(n, 0.0) > 0.0 and n not in exclude]
        if not live:
            return None
        if len(live) == 1:
            return live[0]
        U = self.unit
        delta = 1.0 / (2 * len(live) - 2)
        best, best_key = None, None
        fallback, fallback_d = None, None
        for n in live:
            w = weights[n]
            d = self.target[n] + w * U - self.got[n]
            if d >= delta * U:
                key = (self.got[n] + (1.0 - delta) * U - self.target[n]) / w
                if best_key is None or key < best_key:  # strict: ties go to the earlier source
                    best, best_key = n, key
            if fallback_d is None or d > fallback_d:
                fallback, fallback_d = n, d
        return best if best is not None else fallback

    def commit(self, chosen: str, weights: dict[str, float], amount: int) -> None:
        """Record that `chosen` emitted a row counting `amount` (positions or real tokens)."""
        for n in self.names:
            w = weights.get(n, 0.0)
            if w > 0.0:
                self.target[n] += w * amount
        self.got[chosen] += int(amount)

    def state(self) -> dict:
        return {n: [self.target[n], self.got[n]] for n in self.names}

    def load(self, d: dict) -> None:
        for n, (t, g) in d.items():
            if n in self.target:
                self.target[n], self.got[n] = float(t), int(g)


def normalize(shares: dict[str, float], active) -> dict[str, float]:
    """Shares of the active sources scaled to sum to 1 (empty if none has a positive share)."""
    live = {n: s for n, s in shares.items() if n in active and s > 0}
    total = sum(live.values())
    return {n: s / total for n, s in live.items()} if total > 0 else {}
