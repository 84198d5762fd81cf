"""Document-masked bidirectional attention: a token attends only to tokens of its own document.

Two paths compute the same thing:
- SDPA with a boolean [B, 1, L, L] mask built from segment_ids (CPU, tests, any fallback). The mask
  costs O(L²) memory per row, fine at the lengths CPU runs use.
- flex_attention with a BlockMask (document masking) on CUDA, compiled once: it skips fully
  masked blocks, so packed rows of many short documents cost less than dense attention.
  It is imported lazily so CPU runs never touch torch.compile.

The trainer builds the masks of a whole step at once (`attention_masks`: one boolean mask or
one compiled `create_block_mask` over all of the rank's rows, cut per micro-batch) and passes
each micro-batch's mask into the model, so no layer and no micro-batch rebuilds one.

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


@functools.lru_cache(maxsize=1)
def _compiled_block_mask():
    # Compiled once per process: uncompiled, a mask of B=8 × L=2048 costs 8.7 ms on an H200 and
    # materializes the dense [B, L, L] mask on the way (docs/training.md).
    from torch.nn.attention.flex_attention import create_block_mask

    return torch.compile(create_block_mask, dynamic=False)


def document_mask_mod(segment_ids: torch.Tensor):
    """flex_attention's mask_mod for document masking over `segment_ids` [B, L]."""
    seg = segment_ids

    def doc_mask(b, h, q_idx, kv_idx):
        return ((seg[b, q_idx] == seg[b, kv_idx]) & (seg[b, kv_idx] != 0)) | (q_idx == kv_idx)

    return doc_mask


def flex_block_mask(segment_ids: torch.Tensor, compiled: bool = True):
    """A flex_attention BlockMask for document masking (built once, shared by all layers)."""
    from torch.nn.attention.flex_attention import create_block_mask

    B, L = segment_ids.shape
    build = _compiled_block_mask() if compiled else create_block_mask
    return build(document_mask_mod(segment_ids), B, None, L, L, device=segment_ids.device)


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


def attention_masks(backend: str, segment_ids: torch.Tensor, rows: int, compiled: bool = True) -> list:
    """The masks of the micro-batches of `rows` rows of `segment_ids` [B, L], built ONCE for the
    whole batch (one call per optimizer step) and cut per micro-batch; every layer of a
    micro-batch then shares its mask. A sliced BlockMask keeps its block tables and gets the
    mask_mod of its own rows (slicing leaves a placeholder that refuses to run)."""
    B = segment_ids.shape[0]
    slices = [slice(i, i + rows) for i in range(0, B, rows)]
    if backend != "flex":
        full = segment_mask(segment_ids)
        return [full[sl] for sl in slices]
    full = flex_block_mask(segment_ids, compiled=compiled)
    out = []
    for sl in slices:
        m = full[sl]
        m.mask_mod = document_mask_mod(segment_ids[sl])
        out.append(m)
    return out


def attend(backend: str, q, k, v, mask) -> torch.Tensor:
    if backend == "flex":
        return flex_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
