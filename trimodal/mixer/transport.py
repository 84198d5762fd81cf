"""Batches from DataLoader workers to the training process through shared memory.

A torch DataLoader worker normally hands a batch over by pickling it: each tensor is moved to a
fresh shared-memory segment (allocated, zero-filled, copied into, its file descriptor passed
over a socket, mapped by the receiver, later unmapped and freed). For a 64 × 2048 batch
(1.7 MB in four arrays) that costs more CPU than making it: 2.7-3.7× the in-process CPU per
token was measured for every loader.

Here each worker owns a ring of `SLOTS` batch slots in one file under /dev/shm, created once.
It writes a batch into a free slot and sends only a small handle (`ShmBatch`: the file, the
slot and the layout, ~200 bytes pickled). Unpickling the handle in the training process gives
the batch as tensors, two ways:
- Without CUDA, up to `HOLD` (half) of a ring's slots are lent: the tensors are views of the
  slot, which goes back to the worker when the last tensor or view of that batch dies (a
  finalizer on the array every view keeps alive). Beyond that (a loop that keeps batches) the
  batch is copied out into arrays of earlier batches that nothing holds any more (reference
  counts; fresh tensors cost ~400 page faults per 1.7 MB batch) and the slot is freed at once.
  So the worker always finds a free slot and never waits on a loop that keeps batches.
- With CUDA, copied into fresh pinned tensors, so that `.to(device, non_blocking=True)` is
  asynchronous, and the slot freed at once (~0.1 ms per 1.7 MB).
Measured with `bench/bench_mixer.py --only workers` (64 × 2048, one core): through one worker
the CPU per token is 1.2× the in-process cost for a tri-modal mix and 1.38-1.50× for text
(whose in-process batch is only 0.65-0.75 ms: the handles and DataLoader queues cost 0.16 ms
per batch, and a worker sharing the trainer's core renders more slowly), against 2.7-3.7× with
pickled tensors.

The training process removes the file's name when it first maps it (both keep their maps), and
the worker removes it at exit if nobody did, so no file outlives the loader. A worker whose
ring is full (the consumer holds every slot: it cannot, see above) waits, then fails with a
clear message after `WAIT_S`.
"""

from __future__ import annotations

import math
import mmap
import os
import secrets
import sys
import time
import weakref
from collections import deque

import numpy as np

SLOTS = 8  # per worker; the DataLoader keeps prefetch_factor (default 2) batches in flight
HOLD = SLOTS // 2  # slots of a ring the training process may hold as tensors (no CUDA)
POOL = 8  # received batches' arrays kept for reuse, per key and layout (training process, no CUDA)
WAIT_S = 600.0
_ALIGN = 64
_HEADER = _ALIGN  # one flag byte per slot (SLOTS ≤ 64)
SHM_DIR = "/dev/shm"


def _layout(batch: dict) -> tuple[list, int]:
    """[(key, offset in slot, shape, dtype str)], slot bytes."""
    out, at = [], 0
    for k, v in batch.items():
        out.append((k, at, tuple(v.shape), v.dtype.str))
        at += -(-v.nbytes // _ALIGN) * _ALIGN
    return out, at


class SlotRing:
    """The worker's side: a ring of slots in one shared-memory file."""

    def __init__(self, layout: list, slot_bytes: int, slots: int = SLOTS):
        self.layout, self.slot_bytes, self.slots = layout, slot_bytes, slots
        self.size = _HEADER + slots * slot_bytes
        base = SHM_DIR if os.path.isdir(SHM_DIR) else None
        name = f"trimodal-batches-{os.getpid()}-{secrets.token_hex(6)}"
        self.path = os.path.join(base or "/tmp", name)
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, self.size)
            self.mm = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self.flags = np.frombuffer(self.mm, dtype=np.uint8, count=slots)
        self.next = 0  # the slot of the last acquire
        self._views: list[dict | None] = [None] * slots  # per slot, its arrays (made once)
        from multiprocessing import util

        util.Finalize(self, _unlink, args=(self.path,), exitpriority=10)

    def fits(self, batch: dict) -> bool:
        return _layout(batch) == (self.layout, self.slot_bytes)

    def put(self, batch: dict) -> ShmBatch:
        views = self.acquire()
        for key, v in views.items():
            v[...] = batch[key]
        return self.publish()

    def acquire(self) -> dict:
        """The arrays of a free slot (the lowest free: the training process may still hold some
        as tensors), once there is one; write the batch into them, then `publish`."""
        waited, pause = 0.0, 0.0002
        while True:
            free = np.flatnonzero(self.flags == 0)
            if len(free):  # the lowest: a few slots in turn stay in the CPU's caches
                k = self.next = int(free[0])
                break
            if waited > WAIT_S:
                raise RuntimeError(
                    f"trimodal loader worker: every one of its {self.slots} shared-memory batch slots has been "
                    f"waiting for the training process for {WAIT_S:.0f} s"
                )
            time.sleep(pause)
            waited += pause
            pause = min(2 * pause, 0.05)
        views = self._views[k]
        if views is None:
            at = _HEADER + k * self.slot_bytes
            views = self._views[k] = {
                key: np.frombuffer(self.mm, dtype=dtype, count=int(np.prod(shape)), offset=at + off).reshape(shape)
                for key, off, shape, dtype in self.layout
            }
        return views

    def publish(self) -> ShmBatch:
        """Hand the slot taken by the last `acquire` to the training process."""
        k = self.next
        self.flags[k] = 1
        return ShmBatch(self.path, self.size, k, self.slot_bytes, self.layout)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ShmBatch:
    """A handle to one batch in a worker's slot; unpickled in the training process as a dict
    of tensors (the slot is then free again)."""

    __slots__ = ("path", "size", "slot", "slot_bytes", "layout")

    def __init__(self, path: str, size: int, slot: int, slot_bytes: int, layout: list):
        self.path, self.size, self.slot, self.slot_bytes, self.layout = path, size, slot, slot_bytes, layout

    def __reduce__(self):
        return (receive, (self.path, self.size, self.slot, self.slot_bytes, self.layout))


_maps: dict[str, tuple] = {}  # per ring: (its map, its layout as (key, start, end, dtype, shape))
_pin: bool | None = None
PIN_ENV = "TRIMODAL_PIN_MEMORY"  # "1": copy into pinned tensors, "0": never; unset: with CUDA


def pin_setting() -> bool:
    """Whether received batches are copied into pinned memory: TRIMODAL_PIN_MEMORY when set (tests
    force the pinned branch on CPU with it), else whether CUDA is available."""
    import torch

    v = os.environ.get(PIN_ENV, "").strip()
    return v not in ("0", "false") if v else torch.cuda.is_available()


def _pinned_empty(shape, dtype):
    """An empty pinned tensor; where torch has no pinned allocator (a CPU-only build) a plain one,
    counted in `counts["pin_fallback"]`: the batch still arrives, as a copy, and the slot is freed."""
    import torch

    try:
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    except RuntimeError:
        counts["pin_fallback"] += 1
        return torch.empty(shape, dtype=dtype)


def _open(path: str, size: int, layout: list) -> tuple:
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    _unlink(path)  # both sides keep their maps; the name is no longer needed
    plan = []
    for key, off, shape, dtype in layout:
        dt, shape = np.dtype(dtype), tuple(shape)
        plan.append((key, off, off + math.prod(shape) * dt.itemsize, dt, shape))
    _maps[path] = (mm, plan)
    if len(_maps) > 64:  # rings of loaders long gone
        for old in list(_maps)[:-64]:
            _maps.pop(old, None)
    return mm, plan


def receive(path: str, size: int, slot: int, slot_bytes: int, layout: list) -> dict:
    """A batch from a worker's slot as tensors: the slot itself, lent until its last tensor
    dies, or a copy (pinned when CUDA is available) and the slot freed at once. ~30 µs for a
    four-array batch lent (the layout is parsed once per ring)."""
    global _pin
    import torch

    mm, plan = _maps.get(path) or _open(path, size, layout)
    if _pin is None:
        _pin = pin_setting()
    at = _HEADER + slot * slot_bytes
    if not _pin and _held.get(path, 0) < HOLD:  # the slot itself, until its last tensor dies
        owner = np.frombuffer(mm, dtype=np.uint8, count=slot_bytes, offset=at)
        out = {key: torch.from_numpy(owner[a:b].view(dt).reshape(shape)) for key, a, b, dt, shape in plan}
        _held[path] = _held.get(path, 0) + 1
        counts["lent"] += 1
        weakref.finalize(owner, _release, mm, slot, path)  # every view and tensor keeps `owner`
        return out
    out = {}
    for key, a, b, dt, shape in plan:
        src = np.frombuffer(mm, dtype=dt, count=(b - a) // dt.itemsize, offset=at + a).reshape(shape)
        if _pin:
            t = _pinned_empty(shape, torch.from_numpy(src[:0]).dtype)
            t.numpy()[...] = src
        else:
            dst = _free_array(key, shape, dt.str)
            dst[...] = src
            t = torch.from_numpy(dst)
        out[key] = t
    mm[slot] = 0  # the flag byte: the worker may reuse the slot
    counts["copied"] += 1
    return out


_held: dict[str, int] = {}  # per ring: slots lent as tensors, not yet released


def _release(mm: mmap.mmap, slot: int, path: str) -> None:
    """The last tensor of a lent slot is gone: the worker may write to it again."""
    mm[slot] = 0
    _held[path] -= 1


_pool: dict[tuple, deque] = {}
# received batches (lent: the slot itself; copied), arrays that came back from the pool, and
# pinned allocations that fell back to plain memory (a torch without a pinned allocator)
counts = {"lent": 0, "copied": 0, "reused": 0, "pin_fallback": 0}


def _free_array(key: str, shape: tuple, dtype: str) -> np.ndarray:
    """An array to copy a received batch's `key` into: one of the last `POOL` made for it
    that nothing holds any more (its reference count is the pool's alone: no tensor, view or
    array of it is alive; a tensor from `torch.from_numpy` holds the array), else a new one.
    Fresh tensors cost ~400 page faults per 1.7 MB batch, more than the copy itself."""
    pool = _pool.setdefault((key, shape, dtype), deque())
    for i in range(len(pool)):
        # Nothing but the pool holds it (the other reference is getrefcount's argument). An
        # `enumerate` loop would not do: its reused result tuple holds the array too.
        if sys.getrefcount(pool[i]) <= 2:
            a = pool[i]
            del pool[i]
            pool.append(a)
            counts["reused"] += 1
            return a
    a = np.empty(shape, dtype=dtype)
    pool.append(a)
    if len(pool) > POOL:
        pool.popleft()
    return a


def ring_for(batch: dict, ring: SlotRing | None) -> SlotRing | None:
    """The ring to put `batch` in (a new one when its layout changed), or None when the batch
    holds something other than numpy arrays (it is then pickled as it is)."""
    if not all(isinstance(v, np.ndarray) for v in batch.values()):
        return None
    if ring is not None and ring.fits(batch):
        return ring
    layout, slot_bytes = _layout(batch)
    return SlotRing(layout, slot_bytes)
