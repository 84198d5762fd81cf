"""Deterministic evaluation of the masked diffusion ELBO, and the unigram baseline it is judged by.

The training loss is a one-sample Monte Carlo estimate of the per-token ELBO: noisy from step
to step because t and the mask are random. `elbo` replaces the draw of t by a midpoint rule
over [t_min, 1] (`n_t` points, every row at every point), so two models, or one model before
and after training, are compared on the same numbers. Conditioning is never dropped here.

`unigram_entropy` is the loss of the best model that ignores context: the entropy of the
token distribution within each modality, averaged with the modalities' token shares (knowing
which modality a masked position holds is free, since the layout gives it away). A model that
learned anything sits below it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from trimodal.model.diffusion import MASKABLE, DiffusionLoss, Noise
from trimodal.tokenizers.vocab import MODALITY_IDS


def _tensors(batch: dict, device) -> dict:
    return {
        k: torch.as_tensor(np.asarray(batch[k])).to(device) for k in ("tokens", "modality", "segment_ids", "positions")
    }


@torch.no_grad()
def elbo(model, diffusion_cfg, vocab, batches, n_t: int = 8, seed: int = 0) -> dict:
    """Per-token ELBO (nats) over `batches` (dicts of [B, L] arrays): {"loss", "loss.<modality>"}."""
    loss_fn = DiffusionLoss(dataclasses.replace(diffusion_cfg, cfg_drop_prob=0.0), vocab)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    mod_s = torch.zeros(len(MASKABLE), dtype=torch.float64)
    mod_n = torch.zeros(len(MASKABLE), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    for batch in batches:
        b = _tensors(batch, device)
        B, L = b["tokens"].shape
        for j in range(n_t):
            t = loss_fn.scale_t(torch.full((B,), (j + 0.5) / n_t, device=device))
            out = loss_fn(model, b, t=t, noise=Noise.draw(B, L, g))
            total += float(out.loss_sum)
            count += float(out.count)
            mod_s += out.modality_sums.double().cpu()
            mod_n += out.modality_counts.double().cpu()
    model.train(was_training)
    res = {"loss": float(total / count.clamp_min(1))}
    for i, m in enumerate(MASKABLE):
        if mod_n[i] > 0:
            res[f"loss.{m}"] = float(mod_s[i] / mod_n[i])
    return res


def unigram_entropy(batches) -> float:
    """Σ_m share_m · H(tokens of modality m), in nats per maskable token."""
    counts: dict[int, np.ndarray] = {}
    for batch in batches:
        tok, mod = np.asarray(batch["tokens"]).ravel(), np.asarray(batch["modality"]).ravel()
        for m in MASKABLE:
            sel = tok[mod == MODALITY_IDS[m]]
            if sel.size:
                counts.setdefault(MODALITY_IDS[m], []).append(sel)
    n_all = sum(sum(a.size for a in v) for v in counts.values())
    h = 0.0
    for arrays in counts.values():
        x = np.concatenate(arrays)
        _, c = np.unique(x, return_counts=True)
        p = c / c.sum()
        h += (x.size / n_all) * float(-(p * np.log(p)).sum())
    return h
