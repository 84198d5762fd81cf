"""Where a training worker runs and the model it trains: `WorkerContext` (rank, world size,
device, whether a process group exists) and `build_model` (built on the meta device, sharded
with FSDP2 or wrapped in DDP, materialized and initialized per parameter name, compiled where
`compile` says so). Split from trainer.py: the loop and the model it is handed change for
different reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trimodal.model.config import TrainConfig
from trimodal.model.transformer import Transformer


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    distributed: bool = False  # a torch process group exists (Ray Train)


def compile_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """`compile: null` (the default) means on CUDA only: CPU compiles take minutes here."""
    return cfg.compile if cfg.compile is not None else device.type == "cuda"


def bf16_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """`bf16: null` (the default) means on CUDA only; true on CPU runs the same autocast and
    mixed-precision branch there (CPU autocast supports bf16)."""
    return cfg.bf16 if cfg.bf16 is not None else device.type == "cuda"


def autocast_for(cfg: TrainConfig, device: torch.device):
    """The training step's autocast: bf16 on the device where `bf16_enabled`, else none."""
    import contextlib

    if bf16_enabled(cfg, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(cfg: TrainConfig, vocab_size: int, ctx: WorkerContext) -> tuple[torch.nn.Module, int]:
    """(model ready to train, parameter count). The model is built on the meta device (no
    memory, no init), sharded with FSDP2 when distributed with `fsdp`, then materialized on the
    device shard by shard and initialized per parameter name (`Transformer.init_weights`), so
    no rank ever holds the whole fp32 model and every layout starts from the same values.

    Compilation (`compile_enabled`): without FSDP the whole model, loss included, is compiled in
    place (one graph; DDP's compiler splits it at its gradient buckets); with FSDP each block is
    compiled before it is sharded (FSDP's hooks stay outside the block graphs), as torchtitan does."""
    with torch.device("meta"):
        model = Transformer(cfg.model, vocab_size)
    n_params = model.num_params()
    compiled = compile_enabled(cfg, ctx.device)
    if ctx.distributed and cfg.fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        kw = {}
        if bf16_enabled(cfg, ctx.device):
            kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for i, blk in enumerate(model.blocks):
            if compiled:
                blk = torch.compile(blk)
                model.blocks[i] = blk
            fully_shard(blk, **kw)
        fully_shard(model, **kw)
        model.to_empty(device=ctx.device)
        model.init_weights(cfg.seed)
        return model, n_params
    model.to_empty(device=ctx.device)
    model.init_weights(cfg.seed)
    if ctx.distributed:
        # Plain DDP over whatever process group exists (Ray Train's, or torchrun's).
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if compiled:
        model.compile()
    return model, n_params
