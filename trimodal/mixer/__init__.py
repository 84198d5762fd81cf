"""The streaming mixer: ratio-exact, packed, deterministic, elastic and resumable batches.

`Mixer(cfg, rank, world_size)` is the stream; `MixerDataset` wraps it for torch DataLoaders and
`MixerLoader` is a StatefulDataLoader that resumes on any number of workers (both imported
lazily, so the mixer itself never imports torch); `rank_stream` builds a Ray Train
worker's stream (the trainer's, through `trimodal.model.data`); `preview_mix` reports realized
shares for a number of steps. Owns the mix config, shard reading (through `trimodal.dataset`),
per-source streams and shuffles, the ratio scheduler, packing and rendering into the unified
vocabulary's ids.

May import: `trimodal.tokenizers` (the vocabulary), `trimodal.dataset`, `trimodal.config`,
`trimodal.cluster`, `trimodal.errors`. Never `trimodal.pipeline` (its independent sibling) nor
anything above (enforced by `lint-imports`, see docs/design.md, "Layout and layers").
"""

from trimodal.mixer.config import MixConfig, MixSource, ScheduleEntry, load_mix
from trimodal.mixer.mixer import Mixer
from trimodal.mixer.preview import preview_mix
from trimodal.mixer.ray_worker import rank_stream

__all__ = [
    "MixConfig",
    "MixSource",
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
