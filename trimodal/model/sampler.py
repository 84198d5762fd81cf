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

Classifier-free guidance: with scale s ≠ 1 the unconditional rows (the prompt replaced by <mask>,
as training dropped conditions, diffusion.py) run in the SAME forward as the conditional ones,
and the logits are uncond + s·(cond − uncond). `sample_many` fills n samples in one batch; the
loop never copies logits to the host (sampling by Gumbel-max on the device).
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
def sample_many(
    model,
    vocab: Vocabulary,
    tpl: Template,
    n: int,
    steps: int = 16,
    temperature: float = 1.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 1.0,
    schedule: Schedule | None = None,
    seed: int = 0,
    device=None,
) -> np.ndarray:
    """Fill the template's target span in `n` independent samples at once (one batch); returns
    their unified ids (int64, [n, n_target]).

    Everything between the first forward and the final copy stays on the device: guidance is one
    forward over the conditional and unconditional rows together ([2n, L]); tokens are drawn by
    Gumbel-max on the device (no [n, V] copy to the host per step); how many positions each step
    commits is known on the host in advance (the schedule), so `topk` needs no sync either."""
    if remasking not in REMASKING:
        raise ValueError(f"remasking must be one of {REMASKING}, got {remasking!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    schedule = schedule or make_schedule("linear")
    g = torch.Generator(device=device).manual_seed(seed)
    L = tpl.tokens.numel()
    tgt_idx = tpl.target.nonzero().squeeze(1).to(device)  # once, from the host template
    T = tgt_idx.numel()
    guided = cfg_scale != 1.0
    rows = 2 * n if guided else n
    x = tpl.tokens.to(device)[None].repeat(n, 1)
    cond = tpl.cond.to(device)[None]
    pos = torch.arange(L, device=device)[None].expand(rows, L)
    seg = torch.ones(rows, L, dtype=torch.long, device=device)
    # Only the ids some target position may take are scored: [vlo, vhi) (the image range for
    # t2i, the audio levels' for t2s), a third of the bench vocabulary for images.
    vlo, vhi = int(tpl.lo.min()), int(tpl.hi.max())  # host tensors: no device sync
    ar = torch.arange(vlo, vhi, device=device)
    allowed = (ar[None] >= tpl.lo.to(device)[:, None]) & (ar[None] < tpl.hi.to(device)[:, None])  # [T, vhi - vlo]
    still = torch.ones(n, T, dtype=torch.bool, device=device)  # target positions still masked
    remaining = T
    for k in range(steps):
        t_next = torch.tensor(1.0 - (k + 1) / steps)
        keep_masked = 0 if k == steps - 1 else int(math.floor(T * float(schedule.mask_prob(t_next)) + 0.5))
        n_commit = remaining - keep_masked
        if n_commit <= 0:
            continue
        inp = torch.cat([x, x.masked_fill(cond, vocab.mask_id)]) if guided else x
        logits = model(inp, pos, seg, predict=tgt_idx)[..., vlo:vhi].float()  # [rows, T, V']: targets only
        if guided:
            c, u = logits.chunk(2)
            logits = u + cfg_scale * (c - u)
        logits = logits.masked_fill(~allowed, float("-inf"))
        if temperature <= 0:
            pred = logits.argmax(-1)
            conf = torch.softmax(logits, -1).gather(-1, pred[..., None])[..., 0]
        else:
            logp = torch.log_softmax(logits / temperature, -1)
            gumbel = -torch.log(-torch.log(torch.rand(logp.shape, generator=g, device=device).clamp_min(1e-20)))
            pred = (logp + gumbel).argmax(-1)  # a draw from softmax(logits / temperature)
            conf = logp.gather(-1, pred[..., None])[..., 0].exp()
        score = conf if remasking == "low_confidence" else torch.rand(n, T, generator=g, device=device)
        score = score.masked_fill(~still, float("-inf"))
        chosen = score.topk(n_commit, dim=1).indices  # [n, n_commit], all still masked
        span = x[:, tgt_idx]
        span.scatter_(1, chosen, pred.gather(1, chosen) + vlo)
        x[:, tgt_idx] = span
        still.scatter_(1, chosen, False)
        remaining = keep_masked
    return x[:, tgt_idx].cpu().numpy()


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
    return sample_many(model, vocab, tpl, 1, steps, temperature, remasking, cfg_scale, schedule, seed, device)[0]
