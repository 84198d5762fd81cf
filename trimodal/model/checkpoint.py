"""Checkpoints on local disk or S3, written through trimodal.dataset.storage.

Layout: ``<run>/checkpoints/step-NNNNNNNN/`` with ``model.pt`` (full, unsharded state dict),
``optim.pt``, ``vocab.json``, ``config.json`` (the TrainConfig, including tokenizer paths for
generation) and ``state.json`` (step, mixer state, metrics) written LAST: a directory without
state.json is an interrupted write and is ignored, so "the newest checkpoint" is always whole.

Our own writer rather than ray.train.Checkpoint: the same code serves Ray Train workers, the
in-process path and `generate`, and the files are plain torch/JSON anyone can open. The
trade-off is full (gathered) state dicts written by rank 0, which is fine up to a few billion
parameters; sharded torch.distributed.checkpoint would be the next step beyond that.
"""

from __future__ import annotations

import io
import json
import re

import pyarrow.fs as pafs
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from trimodal.dataset.storage import Location, resolve
from trimodal.errors import InputError

_STEP_DIR = re.compile(r"step-(\d{8})$")


def checkpoint_root(run_uri: str) -> Location:
    return resolve(run_uri).join("checkpoints")


def list_checkpoints(run_uri: str) -> list[tuple[int, str]]:
    """Complete checkpoints of a run as (step, uri), oldest first."""
    root = checkpoint_root(run_uri)
    info = root.fs.get_file_info(root.path)
    if info.type != pafs.FileType.Directory:
        return []
    out = []
    for i in root.fs.get_file_info(pafs.FileSelector(root.path, recursive=False)):
        m = _STEP_DIR.search(i.path.rstrip("/"))
        if m and root.join(m.group(0), "state.json").exists():
            out.append((int(m.group(1)), root.join(m.group(0)).uri))
    return sorted(out)


def latest_checkpoint(run_uri: str) -> str | None:
    ck = list_checkpoints(run_uri)
    return ck[-1][1] if ck else None


def resolve_checkpoint(uri: str) -> str:
    """A checkpoint directory, or a run directory (→ its newest checkpoint)."""
    if resolve(uri).join("state.json").exists():
        return uri
    latest = latest_checkpoint(uri)
    if latest is None:
        raise InputError(f"no complete checkpoint at {uri} (expected state.json, or checkpoints/step-*/ under it)")
    return latest


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def gather_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None):
    """Full CPU state dicts (collective under FSDP: every rank must call it)."""
    msd = get_model_state_dict(model, options=_FULL)
    osd = get_optimizer_state_dict(model, optimizer, options=_FULL) if optimizer is not None else None
    return msd, osd


def save_checkpoint(
    run_uri: str,
    step: int,
    model_state: dict,
    optim_state: dict | None,
    state: dict,
    vocab_json: str,
    config: dict,
    keep: int = 0,
) -> str:
    """Write one checkpoint (rank 0 only) and prune to the newest `keep` (0 keeps all)."""
    d = checkpoint_root(run_uri).join(f"step-{step:08d}")
    d.makedirs()
    d.join("model.pt").write_bytes_atomic(_torch_bytes(model_state))
    if optim_state is not None:
        d.join("optim.pt").write_bytes_atomic(_torch_bytes(optim_state))
    d.join("vocab.json").write_bytes_atomic(vocab_json.encode())
    d.join("config.json").write_bytes_atomic(json.dumps(config, indent=2, sort_keys=True).encode())
    d.join("state.json").write_bytes_atomic(json.dumps({"step": step, **state}, indent=2, sort_keys=True).encode())
    if keep > 0:
        for _, uri in list_checkpoints(run_uri)[:-keep]:
            loc = resolve(uri)
            loc.fs.delete_dir(loc.path)
    return d.uri


def read_json(ckpt_uri: str, name: str) -> dict:
    return json.loads(resolve(ckpt_uri).join(name).read_bytes().decode())


def read_torch(ckpt_uri: str, name: str):
    data = resolve(ckpt_uri).join(name).read_bytes()
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_into(ckpt_uri: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load model (and optimizer) state into possibly DDP/FSDP-wrapped objects; returns state.json."""
    set_model_state_dict(model, read_torch(ckpt_uri, "model.pt"), options=StateDictOptions(full_state_dict=True))
    if optimizer is not None:
        set_optimizer_state_dict(
            model, optimizer, read_torch(ckpt_uri, "optim.pt"), options=StateDictOptions(full_state_dict=True)
        )
    return read_json(ckpt_uri, "state.json")


def load_model(uri: str, device: str | torch.device = "cpu"):
    """(model in eval mode, Vocabulary, TrainConfig) from a checkpoint or run directory, for
    generation and evaluation."""
    from trimodal.config import from_dict
    from trimodal.model.config import TrainConfig
    from trimodal.model.transformer import Transformer
    from trimodal.tokenizers.vocab import Vocabulary

    ckpt = resolve_checkpoint(uri)
    cfg = from_dict(TrainConfig, read_json(ckpt, "config.json"), where=f"{ckpt}/config.json")
    vocab = Vocabulary.from_json(resolve(ckpt).join("vocab.json").read_bytes().decode())
    model = Transformer(cfg.model, vocab.size)
    model.load_state_dict(read_torch(ckpt, "model.pt"))
    return model.to(device).eval(), vocab, cfg
