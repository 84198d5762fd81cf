"""The mixer as a torch IterableDataset, resumable through torchdata's StatefulDataLoader.

Use it with ``DataLoader(ds, batch_size=None, num_workers=K)``: items are already batches. The
rank comes from torch.distributed when initialized (or is given). Each DataLoader worker builds
its own Mixer in its process (memory maps do not cross processes) and renders the steps
≡ worker mod K, which the DataLoader returns in step order: the rank's stream is the same with
any K. `state_dict` / `load_state_dict` follow the StatefulDataLoader protocol: called on the
dataset (in each worker with K > 0), they return / take the Mixer state, which restores the
stream in any process; a state from one K can be loaded into a single Mixer directly.
"""

from __future__ import annotations

import torch.utils.data

from trimodal.config import to_dict
from trimodal.mixer.config import load_mix
from trimodal.mixer.mixer import Mixer


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

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        m = self._mixer
        if m is None or (m.worker, m.num_workers) != (worker, workers):
            # A new iterator continues where this copy of the dataset stands (a loaded state, or
            # the live position): iterating a loader again never restarts the stream.
            state = self._state if self._state is not None else (m.state_dict() if m is not None else None)
            m = Mixer(self.cfg, rank=self.rank, world_size=self.world_size, worker=worker, num_workers=workers)
            if state:
                m.load_state_dict(state)
            self._mixer, self._state = m, None
        return m

    def state_dict(self) -> dict:
        if self._mixer is not None:
            return self._mixer.state_dict()
        return dict(self._state or {})

    def load_state_dict(self, state: dict) -> None:
        self._state = dict(state) if state else None
        self._mixer = None
