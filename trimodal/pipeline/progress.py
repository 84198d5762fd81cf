"""Progress of a tokenize / retokenize job while it runs, and the final summary.

Live counts: every input task sends its running counts (records read, kept, quarantined, bytes
of the file read, tokens) to a small `ProgressBoard` actor every couple of seconds (worker.py,
one message per interval, never per sample), and the driver reads the board once per progress
tick, so the line moves inside inputs, not only when an input finishes. The ETA sets the bytes
of input consumed (finished inputs' sizes plus what running tasks have read) against the bytes
the job listed; without sizes it falls back to finished inputs. Codec pools' busy fractions come
from the actors themselves (codec_pool.py), answered even while they encode.

Output: on a terminal, a progress bar over the input bytes (tqdm) with the counts beside it;
elsewhere (`ray job logs`, CI, a file) a plain line on stderr every `progress.interval_s`:
inputs done / total, samples kept (records the readers gave, minus the quarantined ones, which
are counted apart), quarantined, tokens and throughput per modality, bytes read and the ETA.
`--json` and `--quiet` print none of it. The same counters feed the manifest's `stats`, and
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


def _terminal(stream) -> bool:
    """A terminal wide enough for a bar (a pty without a size, as under `script`, has 0 columns
    and gets lines instead)."""
    import os

    try:
        return bool(stream.isatty()) and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def _consumed(c: dict) -> float:
    """Bytes of a running input that count as done: what was read, scaled by the share of the
    records read that are finished (encoded and written). Reading runs ahead of the codecs by
    up to `inflight_chunks` chunks and a read buffer; unscaled, the ETA would say 0 s while the
    codecs still work through a small input's last chunks."""
    read = c.get("read", 0)
    return c.get("bytes_read", 0) * min(1.0, c.get("records", 0) / read) if read else 0.0


class ProgressBoard:
    """The job's live counts: input key -> that input's latest running counts (a Ray actor with
    no CPU of its own, so it never takes a slot from the input tasks, and lands on a head node
    that has no CPUs for work). Reports are cumulative: the newest one per input replaces the
    last, and the driver drops an input's entry once its marker is written."""

    def __init__(self):
        self.counts: dict[str, dict] = {}

    def report(self, key: str, counts: dict) -> None:
        self.counts[key] = counts

    def forget(self, keys: list[str]) -> None:
        for k in keys:
            self.counts.pop(k, None)

    def snapshot(self) -> dict[str, dict]:
        return dict(self.counts)


def start_board():
    """The job's ProgressBoard actor (killed with the job's other actors)."""
    import ray

    return ray.remote(ProgressBoard).options(num_cpus=0).remote()


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
        bytes_total: int = 0,
        bar: bool | None = None,
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
        self.bytes_total = bytes_total  # listed sizes of the inputs this run processes
        self.bytes_done = 0  # listed sizes of the inputs finished
        self.live: dict[str, dict] = {}  # running inputs' counts (ProgressBoard.snapshot)
        if bar is None:
            bar = enabled and _terminal(self.stream)
        self.bar = None
        if bar and enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=bytes_total or None,
                unit="B",
                unit_scale=True,
                file=self.stream,
                desc=label,
                dynamic_ncols=True,
                mininterval=0.5,
            )

    def add_records(self, records: int, rejected: int, tokens: dict) -> None:
        """`records` read, of which `rejected` were quarantined, and their tokens. No line
        here: until `input_done` drops the input's live counts, they would count twice."""
        with self.lock:
            self.records += records
            self.samples += records - rejected
            self.rejected += rejected
            for m, v in tokens.items():
                self.tokens[m] += v

    def input_done(self, size: int = 0, key: str | None = None) -> None:
        """One input finished; `size` is its listed size in bytes. Its live counts (`key`) go:
        its marker's counts replace them."""
        with self.lock:
            self.done += 1
            self.bytes_done += size
            if key is not None and key in self.live:
                self.live = {k: v for k, v in self.live.items() if k != key}
        self.maybe_print()

    def set_live(self, live: dict[str, dict]) -> None:
        """The running inputs' counts, from the progress board (finished inputs left out)."""
        with self.lock:
            self.live = live

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def totals(self) -> dict:
        """Counts of finished inputs plus the running ones' so far."""
        live = list(self.live.values())
        tokens = dict(self.tokens)
        for c in live:
            for m, v in (c.get("tokens") or {}).items():
                tokens[m] = tokens.get(m, 0) + v
        return {
            "samples": self.samples + sum(c.get("kept", 0) for c in live),
            "rejected": self.rejected + sum(c.get("quarantined", 0) for c in live),
            "records": self.records + sum(c.get("records", 0) for c in live),
            "read": sum(c.get("read", 0) for c in live),
            "tokens": tokens,
            "bytes": self.bytes_done + sum(_consumed(c) for c in live),
        }

    def eta(self, consumed: int) -> str:
        el = self.elapsed()
        if self.bytes_total and consumed > 0:
            left = max(0, self.bytes_total - consumed)
            return f"{left * el / consumed:.0f}s"
        todo = self.total - self.skipped
        return f"{(todo - self.done) * el / self.done:.0f}s" if self.done else "?"

    def line(self) -> str:
        el = self.elapsed()
        t = self.totals()
        consumed = min(t["bytes"], self.bytes_total) if self.bytes_total else t["bytes"]
        toks = " ".join(f"{m}={t['tokens'][m]} ({_rate(t['tokens'][m], el)}/s)" for m in MODALITIES if t["tokens"][m])
        running = f", {len(self.live)} running" if self.live else ""
        read = (
            f" | read {format_bytes(consumed)}" + (f" of {format_bytes(self.bytes_total)}" if self.bytes_total else "")
            if consumed or self.bytes_total
            else ""
        )
        return (
            f"[{self.label}] inputs {self.done + self.skipped}/{self.total} "
            f"(resumed {self.skipped}{running}) | samples {t['samples']} ({_rate(t['samples'], el)}/s), "
            f"quarantined {t['rejected']} of {t['records']} records | tokens {toks or '0'}{read} | "
            f"{el:.0f}s elapsed, ETA {self.eta(consumed)}" + (f" | {self.extra}" if self.extra else "")
        )

    def _every(self) -> float:
        # A bar redraws every second; lines come every `interval`.
        return min(self.interval, 1.0) if self.bar is not None else self.interval

    def due(self) -> bool:
        return self.enabled and time.monotonic() - self.last >= self._every()

    def maybe_print(self, force: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            due = self.enabled and (force or now - self.last >= self._every())
            if due:
                self.last = now
        if not due:
            return
        if self.bar is None:
            print(self.line(), file=self.stream, flush=True)
            return
        t = self.totals()
        self.bar.n = int(min(t["bytes"], self.bytes_total) if self.bytes_total else t["bytes"])
        self.bar.set_postfix_str(
            f"inputs {self.done + self.skipped}/{self.total}, samples {t['samples']}, "
            f"quarantined {t['rejected']}" + (f", {self.extra}" if self.extra else ""),
            refresh=True,
        )

    def close(self) -> None:
        """Final state (a last line, or the bar completed and closed)."""
        self.maybe_print(force=True)
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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
