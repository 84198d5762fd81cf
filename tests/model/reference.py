"""Reference pieces the tests compare the product with."""

import torch


def logits_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor, groups: torch.Tensor, n_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same sums from logits a model already computed ([..., V]); for stub models that
    return logits instead of using the fused head (head_loss.py)."""
    V = logits.shape[-1]
    lg = logits.reshape(-1, V).float()
    ce = torch.logsumexp(lg, -1) - lg.gather(1, targets.reshape(-1, 1).long()).squeeze(1)
    wce = ce * scale.reshape(-1).float()
    sums = torch.zeros(n_groups + 1, dtype=wce.dtype, device=wce.device).index_add(0, groups.reshape(-1).long(), wce)
    return wce.sum(), sums[:n_groups].detach()
