"""The output head fused with a weighted cross-entropy, in chunks of positions: the [N, V] fp32
logits are never whole in memory, and no position is selected by a data-dependent mask.

The loss needs logits only where tokens were masked, but which positions those are changes with
every batch. Gathering them (`h[mask]`) gives a tensor whose size the host must know: a host
sync and, under torch.compile, a graph break. Here the head runs on EVERY position and each
position's cross-entropy is multiplied by its weight (the ELBO weight where masked, 0 elsewhere),
so shapes are static and model + loss compile as one graph. Trade-off, with numbers: the head
does the work of all positions instead of the masked half (E[1 − α(t)] = 1/2 for the linear
schedule), i.e. 6·d·V extra FLOPs per unmasked token; at preset 1b with the bench vocabulary
(d = 2048, V ≈ 52.5k) that is ~0.32 GFLOP per unmasked token next to ~6.1 GFLOP per token in the
blocks: about 5% more work per step, against a compiled step with no sync and no break.

Memory: one chunk of positions at a time has fp32 logits and their gradient ([chunk, V]: 0.43 GB
each at chunk 2048 and V = 52.5k, where the whole [N, V] of a 8 × 2048 micro-batch would be
3.4 GB); the gradients with respect to h and the head weight are computed in the same pass (as
Liger's fused linear cross-entropy does), so backward keeps only those (N·d and V·d), never the
logits.
Gradients match autograd's through `F.linear` + `F.cross_entropy` (tested), with the logits in
the input's compute dtype (bf16 under autocast) and the softmax in fp32.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK = 2048  # positions per chunk


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, scale, groups, n_groups: int, vocab_size: int, chunk: int):
        N = h.shape[0]
        dt = _compute_dtype(h)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(h.device.type, enabled=False):
            hh = h.to(dt)
            w = weight[:vocab_size].to(dt)  # the padded rows are never logits: never predicted
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            sums = torch.zeros(n_groups + 1, dtype=torch.float32, device=h.device)
            gh = torch.empty_like(hh) if need_h else None
            gw = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
            for s in range(0, N, chunk):
                e = min(N, s + chunk)
                logits = (hh[s:e] @ w.t()).float()
                lse = torch.logsumexp(logits, dim=-1)
                tgt = targets[s:e, None]
                wce = (lse - logits.gather(1, tgt).squeeze(1)) * scale[s:e]
                loss = loss + wce.sum()
                sums = sums.index_add(0, groups[s:e], wce)
                if need_h or need_w:
                    # d(Σ scale·CE)/d logits = scale · (softmax − onehot(target))
                    g = (logits - lse[:, None]).exp_()
                    g.scatter_add_(1, tgt, torch.full_like(tgt, -1, dtype=g.dtype))
                    g = g.mul_(scale[s:e, None]).to(dt)
                    if need_h:
                        gh[s:e] = g @ w
                    if need_w:
                        gw[:vocab_size] += (g.t() @ hh[s:e]).float()
        ctx.save_for_backward(gh if need_h else None, gw if need_w else None)
        ctx.h_dtype, ctx.w_dtype = h.dtype, weight.dtype
        ctx.mark_non_differentiable(sums)
        return loss, sums[:n_groups]

    @staticmethod
    def backward(ctx, grad_loss, grad_sums):
        gh, gw = ctx.saved_tensors
        dh = (gh.float() * grad_loss).to(ctx.h_dtype) if gh is not None else None
        dw = (gw * grad_loss).to(ctx.w_dtype) if gw is not None else None
        return dh, dw, None, None, None, None, None, None


def skip_unweighted() -> bool:
    """Whether to drop the positions of weight 0 before the head: only in eager CPU runs (tests,
    the CPU demo). There no device waits on the host, and the head is most of a small model's
    work (~80% at preset small: d = 256 against V ≈ 52.5k), so halving it matters; on a GPU, or
    whenever torch.compile traces, the static all-positions path runs."""
    return not torch.compiler.is_compiling()


def head_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    scale: torch.Tensor,
    groups: torch.Tensor,
    n_groups: int,
    vocab_size: int,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_i scale_i · CE(h_i · weight[:vocab_size]ᵀ, target_i) and its per-group sums.

    h [..., d], targets / scale / groups [...] (groups in [0, n_groups]; n_groups collects the
    positions not reported, e.g. padding). Returns (loss_sum, group_sums [n_groups]); only
    loss_sum carries gradients (to h and weight). Positions of scale 0 add exactly nothing, so
    on CPU (eager) they are dropped first (`skip_unweighted`): the same sums for half the work."""
    d = h.shape[-1]
    h, targets, scale, groups = h.reshape(-1, d), targets.reshape(-1), scale.reshape(-1), groups.reshape(-1)
    if h.device.type == "cpu" and skip_unweighted():
        keep = scale != 0
        h, targets, scale, groups = h[keep], targets[keep], scale[keep], groups[keep]
    return _HeadCrossEntropy.apply(h, weight, targets.long(), scale.float(), groups.long(), n_groups, vocab_size, chunk)
