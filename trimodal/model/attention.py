"""Document-masked bidirectional attention: a token attends only to tokens of its own document.

Two paths compute the same thing:
- SDPA with a boolean [B, 1, L, L] mask built from segment_ids (CPU, tests, any fallback). The mask
  costs O(L²) memory per row, fine at the lengths CPU runs use.
- flex_attention with a BlockMask (document masking) on CUDA, compiled once: it skips fully
  masked blocks, so packed rows of many short documents cost less than dense attention.
  It is imported lazily so CPU runs never touch torch.compile.

Padding (segment 0) is never attended by any real token. A padding query may attend only to
itself, which keeps its softmax finite (an all-False row would give NaN); its output is never used.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """segment_ids [B, L] -> bool [B, 1, L, L], True where query i may attend key j."""
    seg = segment_ids
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)
    eye = torch.eye(seg.shape[1], dtype=torch.bool, device=seg.device)
    return (same | eye)[:, None]


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_block_mask(segment_ids: torch.Tensor):
    """A flex_attention BlockMask for document masking (built once per batch, shared by layers)."""
    from torch.nn.attention.flex_attention import create_block_mask

    seg = segment_ids

    def doc_mask(b, h, q_idx, kv_idx):
        return ((seg[b, q_idx] == seg[b, kv_idx]) & (seg[b, kv_idx] != 0)) | (q_idx == kv_idx)

    B, L = seg.shape
    return create_block_mask(doc_mask, B, None, L, L, device=seg.device)


def flex_attention(q, k, v, block_mask) -> torch.Tensor:
    return _compiled_flex()(q, k, v, block_mask=block_mask)


def choose_backend(requested: str, device: torch.device) -> str:
    """auto -> flex on CUDA, sdpa elsewhere; an explicit flex on CPU falls back to sdpa
    (flex_attention has no backward on CPU in torch 2.13; its forward there matches sdpa)."""
    if requested == "flex" or (requested == "auto" and device.type == "cuda"):
        return "flex" if device.type == "cuda" else "sdpa"
    return "sdpa"


def build_attention_mask(backend: str, segment_ids: torch.Tensor):
    """What the layers receive: a boolean mask (sdpa) or a BlockMask (flex)."""
    if backend == "flex":
        return flex_block_mask(segment_ids)
    return segment_mask(segment_ids)


def attend(backend: str, q, k, v, mask) -> torch.Tensor:
    if backend == "flex":
        return flex_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
