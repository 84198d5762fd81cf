"""A Ray Train worker's own stream: co-located, so batches never cross the network.

Each training worker builds the mixer for its rank inside `train_loop_per_worker`; all workers
plan the same global stream and render their slice, so nothing is shipped between processes
and a restarted job on another number of workers resumes from the saved state. The trainer's
data stream (`trimodal.model.data`, ``mix.kind: mixer``) is built here.
"""

from __future__ import annotations

from trimodal.mixer.mixer import Mixer


def rank_stream(
    mix_cfg, rank: int | None = None, world_size: int | None = None, state: dict | None = None, **kwargs
) -> Mixer:
    """The Mixer for this worker's rank (from `ray.train.get_context()` when not given),
    positioned at `state` if one is passed."""
    if rank is None or world_size is None:
        import ray.train

        ctx = ray.train.get_context()
        rank = ctx.get_world_rank() if rank is None else rank
        world_size = ctx.get_world_size() if world_size is None else world_size
    mixer = Mixer(mix_cfg, rank=rank, world_size=world_size, **kwargs)
    if state:
        mixer.load_state_dict(state)
    return mixer
