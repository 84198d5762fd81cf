"""The mixer as a torch IterableDataset, resumable through torchdata's StatefulDataLoader.

Use it with ``DataLoader(ds, batch_size=None, num_workers=K)``: items are already batches. The
rank comes from torch.distributed when initialized (or is given). Each DataLoader worker builds
its own Mixer in its process (memory maps do not cross processes) and renders the steps
≡ base + worker mod K, which the DataLoader returns in step order: the rank's stream is the
same with any K. Workers hand batches over through shared memory (transport.py), not pickles.

State (`state_dict` / `load_state_dict`, the StatefulDataLoader protocol, called in each worker
with K > 0) is the Mixer state plus a `loader` entry (K, the worker, the base step). A state
loads into a plain Mixer directly, in any process. To resume with another number of workers:

- `MixerLoader` (a StatefulDataLoader) accepts a state saved with any number of workers;
- with a plain StatefulDataLoader, call ``ds.load_state_dict(ds.position(saved_loader_state))``
  on a new dataset and loader instead of ``loader.load_state_dict(...)``. Loading the saved
  loader state into a loader with another K is refused with a ConfigError that says this
  (torchdata itself cannot map K workers' states onto K').
"""

from __future__ import annotations

import copy

import torch.utils.data

from trimodal.config import to_dict
from trimodal.errors import ConfigError
from trimodal.mixer.config import load_mix
from trimodal.mixer.mixer import Mixer
from trimodal.mixer.transport import ring_for

_HOW = (
    "resume through trimodal.mixer.MixerLoader (a StatefulDataLoader that maps the saved state onto any number "
    "of workers), or call dataset.load_state_dict(dataset.position(saved_loader_state)) on a new dataset and "
    "loader instead of loader.load_state_dict"
)


class MixerDataset(torch.utils.data.IterableDataset):
    def __init__(self, mix_cfg, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.cfg = to_dict(load_mix(mix_cfg))  # a plain dict pickles cheaply to workers
        if rank is None or world_size is None:
            import torch.distributed as dist

            live = dist.is_available() and dist.is_initialized()
            rank = (dist.get_rank() if live else 0) if rank is None else rank
            world_size = (dist.get_world_size() if live else 1) if world_size is None else world_size
        self.rank, self.world_size = rank, world_size
        self._state: dict | None = None
        self._mixer: Mixer | None = None
        self._base = 0

    def __getstate__(self):  # a Mixer (maps, threads) never crosses processes: its position does
        d = dict(self.__dict__)
        if d.get("_mixer") is not None:
            d["_state"], d["_mixer"] = self.state_dict(), None
        return d

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        m = self._mixer
        if m is None or (m.worker, m.num_workers) != (worker, workers):
            # A new iterator continues where this copy of the dataset stands (a loaded state, or
            # the live position): iterating a loader again never restarts the stream.
            state = self._state if self._state is not None else (self.state_dict() if m is not None else None)
            base = self._base
            if state and "loader" in state:
                saved = state["loader"]
                if saved["workers"] == workers:
                    base = saved["base"]
                else:
                    base = state["step"]
            elif state:
                base = state["step"]  # a global position: this loader's worker 0 renders the next step
            m = Mixer(
                self.cfg,
                rank=self.rank,
                world_size=self.world_size,
                worker=worker,
                num_workers=workers,
                worker_base=base,
            )
            if state:
                m.load_state_dict(state)
            self._mixer, self._state, self._base = m, None, base
        if info is None:
            return m
        return _ShmIter(m)

    def state_dict(self) -> dict:
        if self._mixer is not None:
            m = self._mixer
            return {**m.state_dict(), "loader": {"workers": m.num_workers, "worker": m.worker, "base": m.worker_base}}
        return copy.deepcopy(self._state or {})

    def load_state_dict(self, state: dict) -> None:
        info = torch.utils.data.get_worker_info()
        if state and "loader" in state and info is not None and state["loader"]["workers"] != info.num_workers:
            raise ConfigError(
                f"the loader state was saved with {state['loader']['workers']} DataLoader workers, this loader has "
                f"{info.num_workers}: {_HOW}"
            )
        self._state = copy.deepcopy(state) if state else None
        self._mixer = None

    def position(self, loader_state: dict) -> dict:
        """The global stream position (a Mixer state, without loader details) in a saved state:
        a StatefulDataLoader's state with any number of workers, or a dataset's state. Load it
        into a new dataset to resume on another number of workers."""
        if not loader_state:
            return {}
        if "format" in loader_state:  # a dataset or mixer state already
            return {k: v for k, v in loader_state.items() if k != "loader"}
        snap = loader_state.get("_snapshot")
        if snap is not None:
            states = [w.get("dataset_state") for w in snap.get("_worker_snapshots", {}).values()]
            states = [s for s in states if s]
            if not states:
                return {}
            best = max(states, key=lambda s: s["step"])
            extra = int(loader_state.get("_steps_since_snapshot", 0))
        else:
            best = loader_state.get("dataset_state")
            extra = 0
            if not best:
                return {}
        pos = {k: v for k, v in best.items() if k != "loader"}
        if extra:  # batches yielded after the last snapshot
            m = Mixer(self.cfg, rank=self.rank, world_size=self.world_size)
            m.load_state_dict(pos)
            m.advance(extra)
            pos = m.state_dict()
        return pos


class _ShmIter:
    """A worker's iterator: the Mixer's batches, each written to the worker's shared-memory
    ring and handed over as a small handle."""

    def __init__(self, mixer: Mixer):
        self.mixer, self.ring = mixer, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.ring is not None and not self.mixer.with_docs:  # rendered straight into the slot
            self.mixer.next_into(self.ring.acquire())
            return self.ring.publish()
        batch = next(self.mixer)
        ring = ring_for(batch, self.ring)
        if ring is None:
            return batch
        self.ring = ring
        return ring.put(batch)


def _loader_class():
    from torchdata.stateful_dataloader import StatefulDataLoader

    class MixerLoader(StatefulDataLoader):
        """A StatefulDataLoader over a MixerDataset whose `load_state_dict` takes a state saved
        with any number of workers (same number: torchdata's own resume; another: the global
        position, from which this loader's workers continue)."""

        def load_state_dict(self, state_dict: dict) -> None:
            if state_dict:
                snap = state_dict.get("_snapshot")
                saved = snap["_main_snapshot"].get("_num_workers", 0) if snap else 0
                if saved != self.num_workers and isinstance(self.dataset, MixerDataset):
                    self.dataset.load_state_dict(self.dataset.position(state_dict))
                    super().load_state_dict({})
                    return
            super().load_state_dict(state_dict)

    return MixerLoader


_MixerLoader = None


def MixerLoader(*args, **kwargs):  # noqa: N802 (a class, built on first use: torchdata is optional)
    global _MixerLoader
    if _MixerLoader is None:
        _MixerLoader = _loader_class()
    return _MixerLoader(*args, **kwargs)
