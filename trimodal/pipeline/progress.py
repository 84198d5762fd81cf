"""Progress lines and the final summary of a tokenize / retokenize job.

A job on a cluster is watched through logs (`ray job logs`), so progress is a periodic plain
line on stderr rather than a redrawn bar: inputs done / total, samples kept (records the
readers gave, minus the quarantined ones, which are counted apart), quarantined, tokens and
throughput per modality, and an ETA from the rate of finished inputs (inputs are the unit of
resume, so that is the ETA that matters). The same counters feed the manifest's `stats`, and
`format_summary` renders the final summary the CLI prints.
"""

from __future__ import annotations

import sys
import threading
import time

from trimodal.dataset.schema import MODALITIES
from trimodal.units import format_bytes


def _rate(n: float, secs: float) -> str:
    r = n / secs if secs > 0 else 0.0
    return f"{r / 1e6:.2f}M" if r >= 1e6 else f"{r / 1e3:.1f}k" if r >= 1e3 else f"{r:.1f}"


class Progress:
    """Counters of one run; thread-safe (shard-writer threads report finished inputs)."""

    def __init__(
        self,
        total_inputs: int,
        skipped_inputs: int = 0,
        interval_s: float = 10.0,
        stream=None,
        enabled: bool = True,
        label: str = "tokenize",
    ):
        self.total = total_inputs
        self.skipped = skipped_inputs
        self.done = 0
        self.records = 0  # everything the readers gave: kept samples + quarantined records
        self.samples = 0  # kept: what lands in shards
        self.rejected = 0
        self.tokens = {m: 0 for m in MODALITIES}
        self.start = time.monotonic()
        self.last = self.start
        self.interval = interval_s
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.label = label
        self.lock = threading.Lock()
        self.extra = ""  # e.g. codec pools' busy fractions, set by the driver loop

    def add_records(self, records: int, rejected: int, tokens: dict) -> None:
        """`records` read, of which `rejected` were quarantined, and their tokens."""
        with self.lock:
            self.records += records
            self.samples += records - rejected
            self.rejected += rejected
            for m, v in tokens.items():
                self.tokens[m] += v
        self.maybe_print()

    def input_done(self) -> None:
        with self.lock:
            self.done += 1
        self.maybe_print()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def line(self) -> str:
        el = self.elapsed()
        todo = self.total - self.skipped
        eta = f"{(todo - self.done) * el / self.done:.0f}s" if self.done else "?"
        toks = " ".join(f"{m}={self.tokens[m]} ({_rate(self.tokens[m], el)}/s)" for m in MODALITIES if self.tokens[m])
        return (
            f"[{self.label}] inputs {self.done + self.skipped}/{self.total} "
            f"(resumed {self.skipped}) | samples {self.samples} ({_rate(self.samples, el)}/s), "
            f"quarantined {self.rejected} of {self.records} records | tokens {toks or '0'} | "
            f"{el:.0f}s elapsed, ETA {eta}" + (f" | {self.extra}" if self.extra else "")
        )

    def due(self) -> bool:
        return self.enabled and time.monotonic() - self.last >= self.interval

    def maybe_print(self, force: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            due = self.enabled and (force or now - self.last >= self.interval)
            if due:
                self.last = now
        if due:
            print(self.line(), file=self.stream, flush=True)


def format_summary(s: dict) -> str:
    """The final summary of a job result (`run_tokenize` / `run_retokenize`), for people."""
    lines = [
        f"dataset     {s['output']}",
        f"wall time   {s['wall_seconds']:.1f} s "
        f"({s['inputs']} inputs, {s['inputs_resumed']} already done by an earlier run)",
        f"samples     {s['samples']:,} kept in {s['shards']} shards, {format_bytes(s['bytes'])} written",
        "tokens      " + "  ".join(f"{m} {s['tokens'].get(m, 0):,}" for m in MODALITIES),
    ]
    run = s.get("run") or {}
    if run.get("tokens_per_s"):
        lines.append(
            "this run    "
            + "  ".join(f"{m} {_rate(v, 1)}/s" for m, v in run["tokens_per_s"].items() if v)
            + f"  ({run.get('samples_per_s')} samples/s)"
        )
    q = s.get("quarantined") or {}
    lines.append(f"quarantined {sum(q.values()):,}" + (": " + ", ".join(f"{r} {n}" for r, n in q.items()) if q else ""))
    for f in s.get("failed_inputs") or []:
        lines.append(f"FAILED INPUT {f['uri']}: {f.get('error')}")
    return "\n".join(lines)
