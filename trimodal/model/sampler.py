"""Generation by iterative unmasking (MaskGIT / MDLM style) over a target span.

The sequence is laid out exactly as the mixer renders training documents, with the target span
all <mask>:

    t2i    <bos> <t2i> prompt <boi> [mask × grid] <eoi> <eos>
    t2s    <bos> <t2s> prompt <boa> [mask × frames·levels] <eoa> <eos>     (frame-major)
    text   <bos> prompt [mask × n] <eos>

Each of `steps` steps predicts every masked position, samples a token (temperature; 0 = argmax)
from logits restricted to the position's id range (the target modality; for audio the range of
that position's codebook level), and commits some of them; the rest stay masked. How many stay
masked after step k follows the target modality's noise schedule: round(n·(1 − α(1 − (k+1)/steps))),
so the last step leaves none. Which ones are committed: ``low_confidence`` re-masks the least
confident predictions (MaskGIT), ``random`` picks uniformly (the MDLM ancestral sampler's choice).
Committed tokens are never changed again.

Classifier-free guidance: with scale s ≠ 1 a second pass sees the prompt replaced by <mask>
(how training dropped conditions, diffusion.py) and the logits are uncond + s·(cond − uncond).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from trimodal.model.schedules import Schedule, make_schedule
from trimodal.tokenizers.vocab import Vocabulary

TASKS = {
    # task -> (target modality, task token, begin token, end token)
    "t2i": ("image", "<t2i>", "<boi>", "<eoi>"),
    "t2s": ("audio", "<t2s>", "<boa>", "<eoa>"),
    "text": ("text", None, None, None),
}
REMASKING = ("low_confidence", "random")


@dataclass
class Template:
    tokens: torch.Tensor  # [L] int64, target positions = <mask>
    target: torch.Tensor  # [L] bool
    cond: torch.Tensor  # [L] bool: the prompt (hidden for the unconditional pass)
    lo: torch.Tensor  # [n_target] allowed id range per target position
    hi: torch.Tensor
    modality: str


def build_template(vocab: Vocabulary, task: str, prompt_ids, n_target: int) -> Template:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    modality, task_tok, begin, end = TASKS[task]
    sp, mask = vocab.special, vocab.mask_id
    prompt = [int(i) for i in prompt_ids]
    head = [sp("<bos>")] + ([sp(task_tok)] if task_tok else []) + prompt + ([sp(begin)] if begin else [])
    tail = ([sp(end)] if end else []) + [sp("<eos>")]
    toks = head + [mask] * n_target + tail
    L = len(toks)
    target = torch.zeros(L, dtype=torch.bool)
    target[len(head) : len(head) + n_target] = True
    cond = torch.zeros(L, dtype=torch.bool)
    start = 2 if task_tok else 1
    cond[start : start + len(prompt)] = True
    if modality == "audio":
        levels = vocab.levels("audio")
        if n_target % levels:
            raise ValueError(f"audio target length {n_target} is not a multiple of {levels} levels")
        rng = [vocab.range("audio", j % levels) for j in range(n_target)]
    else:
        rng = [vocab.range(modality)] * n_target
    lo = torch.tensor([r[0] for r in rng])
    hi = torch.tensor([r[1] for r in rng])
    return Template(torch.tensor(toks, dtype=torch.long), target, cond, lo, hi, modality)


@torch.no_grad()
def sample(
    model,
    vocab: Vocabulary,
    tpl: Template,
    steps: int = 16,
    temperature: float = 1.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 1.0,
    schedule: Schedule | None = None,
    seed: int = 0,
    device=None,
) -> np.ndarray:
    """Fill the template's target span; returns the target's unified ids (int64, [n_target])."""
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    device = device or next(model.parameters()).device
    schedule = schedule or make_schedule("linear")
    g = torch.Generator().manual_seed(seed)
    x = tpl.tokens.clone().to(device)
    L = x.numel()
    pos = torch.arange(L, device=device)[None]
    seg = torch.ones(1, L, dtype=torch.long, device=device)
    tgt_idx = tpl.target.nonzero().squeeze(1).to(device)
    n = tgt_idx.numel()
    still = torch.ones(n, dtype=torch.bool, device=device)  # target positions still masked
    allowed = None
    for k in range(steps):
        t_next = torch.tensor(1.0 - (k + 1) / steps)
        keep_masked = 0 if k == steps - 1 else int(math.floor(n * float(schedule.mask_prob(t_next)) + 0.5))
        n_commit = int(still.sum()) - keep_masked
        if n_commit <= 0:
            continue
        logits = model(x[None], pos, seg)[0, tgt_idx].float()
        if cfg_scale != 1.0:
            xu = x.clone()
            xu[tpl.cond.to(device)] = vocab.mask_id
            un = model(xu[None], pos, seg)[0, tgt_idx].float()
            logits = un + cfg_scale * (logits - un)
        if allowed is None:
            ar = torch.arange(logits.shape[-1], device=device)
            allowed = (ar[None] >= tpl.lo.to(device)[:, None]) & (ar[None] < tpl.hi.to(device)[:, None])
        logits = logits.masked_fill(~allowed, float("-inf"))
        if temperature <= 0:
            pred = logits.argmax(-1)
            conf = torch.softmax(logits, -1).gather(1, pred[:, None])[:, 0]
        else:
            probs = torch.softmax(logits / temperature, -1)
            pred = torch.multinomial(probs.cpu(), 1, generator=g)[:, 0].to(device)
            conf = probs.gather(1, pred[:, None])[:, 0]
        if remasking == "low_confidence":
            score = conf
        else:
            score = torch.rand(n, generator=g).to(device)
        score = score.masked_fill(~still, float("-inf"))
        chosen = score.topk(n_commit).indices
        x[tgt_idx[chosen]] = pred[chosen]
        still[chosen] = False
    return x[tgt_idx].cpu().numpy()
