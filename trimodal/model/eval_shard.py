"""One worker's share of `trimodal eval`: load the checkpoint, read shard `shard` of the eval
stream (eval_data.py), return its partial sums (evaluate.py). Nothing per token goes back to
the caller: the sums are a few arrays (the histograms are [modality or task, V])."""

from __future__ import annotations

import torch

from trimodal.errors import IntegrityError
from trimodal.model.eval_data import eval_rows
from trimodal.model.evaluate import EvalSums, accumulate


def evaluate_shard(
    ckpt: str,
    source,
    split: str,
    shard: int,
    n_shards: int,
    batch: int,
    max_rows: int | None,
    n_t: int,
    seeds: int,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
) -> EvalSums:
    from trimodal.dataset.storage import resolve
    from trimodal.model.checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    model, vocab, _ = load_model(ckpt, device=device)
    data_vocab, rows = eval_rows(
        source, split, shard, n_shards, batch, max_rows, vocab_uri=resolve(ckpt).join("vocab.json").uri
    )
    if data_vocab.to_json() != vocab.to_json():
        raise IntegrityError(f"the eval data's vocabulary differs from the checkpoint's ({ckpt}/vocab.json)")
    acc = EvalSums(n_t, seeds, vocab.size)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.startswith("cuda")
        else torch.autocast("cpu", enabled=False)
    )
    with autocast:
        for first, b in rows:
            accumulate(model, vocab, b, first, acc, seed)
    return acc
