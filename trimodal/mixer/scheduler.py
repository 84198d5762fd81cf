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

O(log n) per row. Between share changes every target grows by w_i times the same total A
(what all rows since the change counted), so T_i = T0_i + w_i·A with T0_i fixed. A source's
deadline, less the common A, and the value of A from which it is due then only change when that
source is chosen: the due sources sit in a heap by deadline, the others in a heap by the A at
which they become due, and a row costs a few heap operations (docs/mixer.md, "Planning", has
the rates). When no source is due (possible only after a source left with a deficit), the
largest deficit is taken by a scan.

Shares may change between rows (schedules, an exhausted source's share passing to the others,
a source added on resume): the targets are rebased (T0_i += w_i·A, A = 0) and accumulate the
new shares from then on, so the mix moves to the new ratios at once and nothing already emitted
is revisited.

State: three numbers per source (T0, G, w) and A, JSON-safe. A is an integer and floats
round-trip exactly through JSON; every rank does the same operations in the same order, so all
ranks agree bit for bit, and a resumed run makes the same choices as an uninterrupted one.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush


class Scheduler:
    def __init__(self, names: list[str], unit: int):
        self.names = list(names)
        self._idx = {n: i for i, n in enumerate(self.names)}
        self.unit = float(unit)
        k = len(self.names)
        self.T0 = [0.0] * k
        self.G = [0] * k
        self.w = [0.0] * k
        self.amount = 0  # A: what every row since the last rebase counted, summed (an integer)
        self.single = -1  # the index of the one source with a share when only one has, else -1
        self._live: list[int] = []
        self._ready: list = []  # (deadline − A, i) of due sources
        self._pending: list = []  # (A from which due, deadline − A, i)
        self._delta = 0.0

    # reporting (dicts by name) --------------------------------------------------------------
    @property
    def target(self) -> dict[str, float]:
        A = self.amount
        return {n: self.T0[i] + self.w[i] * A for i, n in enumerate(self.names)}

    @property
    def got(self) -> dict[str, int]:
        return {n: self.G[i] for i, n in enumerate(self.names)}

    @property
    def live(self) -> bool:
        """Whether any source has a share."""
        return bool(self._live)

    # weights ------------------------------------------------------------------------------
    def set_weights(self, weights: dict[str, float]) -> bool:
        """Normalized weights in force for the next rows; rebases the targets when they differ
        from the current ones. Returns True when they did."""
        new = [float(weights.get(n, 0.0)) for n in self.names]
        if new == self.w:
            return False
        A = self.amount
        if A:
            for i, w in enumerate(self.w):
                if w > 0.0:
                    self.T0[i] += w * A
        self.amount = 0
        self.w = new
        self._rebuild()
        return True

    def _rebuild(self) -> None:
        live = [i for i, w in enumerate(self.w) if w > 0.0]
        self._live = live
        self.single = live[0] if len(live) == 1 else -1
        self._ready, self._pending = [], []
        if len(live) < 2:
            return
        self._delta = 1.0 / (2 * len(live) - 2)
        for i in live:
            self._place(i, push=False)
        heapify(self._ready)
        heapify(self._pending)

    def _place(self, i: int, push: bool = True) -> None:
        U, d, w = self.unit, self._delta, self.w[i]
        x = self.G[i] - self.T0[i]
        key = (x + (1.0 - d) * U) / w  # deadline, less the common A
        due = (d * U + x) / w - U  # due once A >= this
        if due <= self.amount:
            item, heap = (key, i), self._ready
        else:
            item, heap = (due, key, i), self._pending
        if push:
            heappush(heap, item)
        else:
            heap.append(item)

    # choosing -----------------------------------------------------------------------------
    def pick(self) -> int:
        """Index of the source for the next row (-1 if none has a share)."""
        if self.single >= 0:
            return self.single
        if not self._live:
            return -1
        A, pend, ready = self.amount, self._pending, self._ready
        while pend and pend[0][0] <= A:
            _, key, i = heappop(pend)
            heappush(ready, (key, i))
        if ready:
            return ready[0][1]
        # nobody is due (a source left with a deficit): the largest deficit, first on ties
        U, best, best_d = self.unit, -1, None
        for i in self._live:
            d = self.T0[i] + self.w[i] * (A + U) - self.G[i]
            if best_d is None or d > best_d:
                best, best_d = i, d
        return best

    def commit_index(self, i: int, amount: int) -> None:
        """Record that source i (the one `pick` returned) emitted a row counting `amount`."""
        amount = int(amount)
        if self.single < 0 and self._live:
            if self._ready and self._ready[0][1] == i:
                heappop(self._ready)
            else:  # a fallback pick: i waits in the pending heap
                self._pending = [e for e in self._pending if e[2] != i]
                heapify(self._pending)
            self.amount += amount
            self.G[i] += amount
            self._place(i)
        else:
            self.amount += amount
            self.G[i] += amount

    def choose(self, weights: dict[str, float], exclude: frozenset = frozenset()) -> str | None:
        """The source for the next row given normalized weights (0 or excluded = not eligible)."""
        if exclude:
            weights = {n: w for n, w in weights.items() if n not in exclude}
            total = sum(weights.values())
            weights = {n: w / total for n, w in weights.items()} if total > 0 else {}
        self.set_weights(weights)
        i = self.pick()
        return None if i < 0 else self.names[i]

    def commit(self, chosen: str, weights: dict[str, float], amount: int) -> None:
        """Record that `chosen` emitted a row counting `amount` (positions or real tokens)."""
        self.set_weights(weights)
        self.commit_index(self._idx[chosen], amount)

    def state(self) -> dict:
        return {
            "amount": self.amount,
            "sources": {n: [self.T0[i], self.G[i], self.w[i]] for i, n in enumerate(self.names)},
        }

    def load(self, d: dict) -> None:
        """A state from `state()` (sources not in this scheduler are ignored), or a format-1
        {name: [target, got]} dict."""
        if "sources" not in d:  # format 1: targets themselves, no weights
            d = {"amount": 0, "sources": {n: [t, g, self.w[self._idx[n]]] for n, (t, g) in d.items() if n in self._idx}}
        self.amount = int(d["amount"])
        for n, (t0, g, w) in d["sources"].items():
            i = self._idx.get(n)
            if i is not None:
                self.T0[i], self.G[i], self.w[i] = float(t0), int(g), float(w)
        for n, i in self._idx.items():
            if n not in d["sources"]:  # new in the mix: its target starts now
                self.T0[i], self.G[i], self.w[i] = 0.0, 0, 0.0
        self._rebuild()


def normalize(shares: dict[str, float], active) -> dict[str, float]:
    """Shares of the active sources scaled to sum to 1 (empty if none has a positive share)."""
    live = {n: s for n, s in shares.items() if n in active and s > 0}
    total = sum(live.values())
    return {n: s / total for n, s in live.items()} if total > 0 else {}
