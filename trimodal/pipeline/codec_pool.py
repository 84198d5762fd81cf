"""Codec actors: one pool per image / audio tokenizer, each actor holding the model once.

Input tasks (worker.py) decode media on CPUs and send prepared batches here; an actor only
runs the codec's batched call (on a GPU when the cluster has them). Each actor counts the
seconds it spends in the codec, so the driver's progress lines can show each pool's busy
fraction: a pool near 100% means the GPUs are the bottleneck, a pool far below means the CPU
decode tasks do not feed it and more (or larger) CPU nodes would help.

Fault tolerance: actors restart on another node when theirs dies (`max_restarts`), and calls
in flight are retried on the restarted actor (`max_task_retries=-1`): a call is a pure function
of its batch, so a retry can neither lose nor duplicate a row. An actor that keeps dying on the
same input (restarts exhausted) fails the input's task and so the job, with the codec named;
markers of finished inputs stay, and a rerun resumes.

Text needs no pool: SentencePiece runs inside the input tasks (worker.py), where the text
already is, which saves shipping every document to an actor and back.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from trimodal.errors import SampleError
from trimodal.tokenizers.placement import CodecLoad, gpu_placement

# Returned in place of codes for an item the tokenizer rejects (exceptions do not pickle
# with their `reason`).
REJECT = "__reject__"


class CodecActor:
    """Holds one tokenizer; `encode` runs a batch of prepared (or raw) items through it."""

    def __init__(self, codec: CodecLoad, prepared: dict | None, faults: dict | None = None):
        from trimodal.pipeline.encode import PREPARERS

        self.modality = codec.modality
        self.tok = codec.load()
        self.encode_prepared = PREPARERS[codec.kind][2] if prepared is not None else None
        self.params = prepared
        self.faults = faults or {}
        self.busy = 0.0
        self.since: float | None = None  # start of the encode call in progress
        self.calls = 0
        self.items = 0
        self.started = time.monotonic()

    def _maybe_die(self) -> None:
        # Test-only (TRIMODAL_FAULTS `kill_actor: {modality, flag, after_calls}`): SIGKILL this
        # actor's process once (a flag file makes it once across the restart Ray does).
        f = self.faults.get("kill_actor")
        if f and f.get("modality") == self.modality and self.calls > int(f.get("after_calls", 0)):
            try:
                fd = os.open(f["flag"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    def encode(self, items: list, names: list[str]) -> list:
        """Codes (storage layout, int32) per item, or (REJECT, reason, message)."""
        from trimodal.pipeline.encode import encode_items
        from trimodal.tokenizers.base import to_storage

        self.calls += 1
        self._maybe_die()
        t0 = self.since = time.monotonic()
        if self.encode_prepared is not None:
            # Items were validated and decoded by the CPU tasks: a failure here is the codec's,
            # not the data's, and must fail loudly.
            results = self.encode_prepared(self.tok, items, self.params)
        else:
            results = encode_items(self.tok, self.modality, items, names)
        out = [
            (REJECT, r.reason, str(r)) if isinstance(r, SampleError) else to_storage(self.modality, np.asarray(r))
            for r in results
        ]
        self.since = None
        self.busy += time.monotonic() - t0
        self.items += len(items)
        return out

    def stats(self) -> dict:
        """Seconds in the codec so far, counting the call in progress. Runs in its own
        concurrency group (a second thread), so it answers while `encode` calls are queued
        or running: busy time is seen continuously, not only between calls."""
        since = self.since
        return {
            "busy_s": self.busy + (time.monotonic() - since if since is not None else 0.0),
            "calls": self.calls,
            "items": self.items,
            "alive_s": time.monotonic() - self.started,
        }


class CodecPool:
    """Driver-side handle on one modality's actors: created once per job, passed to the input
    tasks (actor handles pickle), polled for busy time."""

    def __init__(self, stage, kinds: dict, ray_cfg, gpus: float, faults: dict | None):
        import ray

        self.modality = stage.modality
        num_gpus, options = gpu_placement(stage.modality, stage.options, ray_cfg.num_gpus_per_actor, gpus)
        n = max(1, stage.actors)
        if num_gpus > 0 and ray_cfg.actors.get(stage.modality) is None:
            n = max(1, int(gpus // num_gpus))  # one actor per GPU unless the config says
        # `stats` in a concurrency group of its own: the default group (encode) stays one call
        # at a time, and the driver's busy poll is answered while encodes queue or run.
        actor = ray.remote(concurrency_groups={"stats": 1})(CodecActor).options(
            num_cpus=ray_cfg.num_cpus_per_actor,
            num_gpus=num_gpus or None,
            memory=ray_cfg.actor_memory_mb * (1 << 20) if ray_cfg.actor_memory_mb else None,
            max_restarts=max(ray_cfg.max_retries, 1) * 4,
            max_task_retries=-1,
        )
        codec = CodecLoad(stage.modality, stage.kind, stage.path, options, stage.threads)
        self.actors = [actor.remote(codec, stage.prepared, faults) for _ in range(n)]
        self.num_gpus = num_gpus
        self._last: dict[int, tuple[float, float]] = {}

    def busy_fraction(self, timeout: float = 2.0) -> float | None:
        """Fraction of wall time the pool's actors spent in the codec since the last call (None
        if the actors did not answer in time, e.g. while one restarts)."""
        import ray

        try:
            stats = ray.get([a.stats.options(concurrency_group="stats").remote() for a in self.actors], timeout=timeout)
        except Exception:
            return None
        busy = wall = 0.0
        for i, s in enumerate(stats):
            b0, w0 = self._last.get(i, (0.0, 0.0))
            if s["alive_s"] < w0:  # restarted: counters began again
                b0, w0 = 0.0, 0.0
            busy += s["busy_s"] - b0
            wall += s["alive_s"] - w0
            self._last[i] = (s["busy_s"], s["alive_s"])
        return busy / wall if wall > 0 else None
