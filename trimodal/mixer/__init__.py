"""The streaming mixer: ratio-exact, packed, deterministic, elastic and resumable batches.

`Mixer(cfg, rank, world_size)` is the stream; `MixerDataset` wraps it for torch DataLoaders and
`MixerLoader` is a StatefulDataLoader that resumes on any number of workers (both imported
lazily, so the mixer itself never imports torch); `rank_stream` builds a Ray Train worker's
stream; `preview_mix` reports realized shares for a number of steps.
"""

from trimodal.mixer.config import MixConfig, ScheduleEntry, SourceConfig, load_mix
from trimodal.mixer.mixer import Mixer
from trimodal.mixer.preview import preview_mix
from trimodal.mixer.ray_worker import rank_stream

__all__ = [
    "MixConfig",
    "SourceConfig",
    "ScheduleEntry",
    "load_mix",
    "Mixer",
    "MixerDataset",
    "MixerLoader",
    "preview_mix",
    "rank_stream",
]


def __getattr__(name):
    if name in ("MixerDataset", "MixerLoader"):
        from trimodal.mixer import torch_dataset

        return getattr(torch_dataset, name)
    raise AttributeError(name)
