"""Compute accounting: parameters, training FLOPs per token and the FLOPs of a packed batch.

Runs are compared at equal compute (isoFLOP sweeps, fitted laws), so every run counts the same
way, written down in docs/training.md ("Compute accounting"):

- Only matrix multiplications count: the block projections (qkv, out, gate_up, down), the
  output head over the REAL vocabulary, and attention (QKᵀ and attention·V). Not counted: the
  embedding gather, norms, rotary, softmax, SiLU, residual adds, the optimizer.
- Training = 3 × the forward matmul FLOPs (backward: one matmul for the input's gradient and
  one for the weight's, each as costly as the forward one).
- Per real token (segment id ≠ 0): padding is excluded, whatever the kernels do with it. The
  head is counted at every real token, as the GPU path computes it (the CPU eager path skips
  unmasked positions; the count is the model's, not the kernel's).
- Attention over each document's real length as packed: the model keeps attention inside
  documents (segment_ids), so a row's attention costs Σ_docs 4·d·len² per layer forward, not
  4·d·L². That is what a document-masked kernel (flex_attention) can skip to; the SDPA path with
  a dense boolean mask does more work than is counted.

Everything here is cheap: the dense part comes from the config alone, the attention part from
the batch's segment ids with one `np.bincount` per batch (the prefetch thread computes it).
"""

from __future__ import annotations

import numpy as np

from trimodal.model.config import ModelConfig


def matmul_params(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Weights that take part in a matmul per token: the blocks' projections and the head over
    the real vocabulary (the padded rows of the head are never logits)."""
    r = cfg.resolve()
    d, f = r.dim, r.ffn_hidden
    per_layer = d * 3 * d + d * d + d * 2 * f + f * d  # qkv, out, gate_up, down
    return {"blocks": r.n_layers * per_layer, "head": d * vocab_size}


def dense_flops_per_token(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Training FLOPs per real token of everything but attention: 6 × matmul weights
    (2 per multiply-add, × 3 for forward + backward). Keys: blocks, head, total."""
    p = matmul_params(cfg, vocab_size)
    out = {k: 6 * v for k, v in p.items()}
    out["total"] = out["blocks"] + out["head"]
    return out


def doc_length_squares(segment_ids: np.ndarray) -> int:
    """Σ over the documents of every row of len², from segment ids [B, L] (0 = padding). One
    bincount over (row, segment) keys: no per-token Python."""
    seg = np.asarray(segment_ids)
    if seg.size == 0:
        return 0
    seg = seg.reshape(seg.shape[0], -1).astype(np.int64)
    width = int(seg.max()) + 1
    keys = (np.arange(seg.shape[0], dtype=np.int64)[:, None] * width + seg).ravel()
    counts = np.bincount(keys[seg.ravel() != 0])
    return int((counts * counts).sum())


def attention_flops(cfg: ModelConfig, len_sq_sum: float) -> float:
    """Training FLOPs of attention given Σ_docs len² (`doc_length_squares`): per layer and
    document, QKᵀ and attention·V cost 2·len²·d each forward; × 3 for training."""
    r = cfg.resolve()
    return 3 * r.n_layers * 4 * r.dim * float(len_sq_sum)


def step_flops(cfg: ModelConfig, vocab_size: int, real_tokens: float, len_sq_sum: float) -> dict[str, float]:
    """Training FLOPs of one step's batch: total and non-embedding (total less the head)."""
    dense = dense_flops_per_token(cfg, vocab_size)
    attn = attention_flops(cfg, len_sq_sum)
    total = dense["total"] * real_tokens + attn
    return {"total": total, "non_embedding": total - dense["head"] * real_tokens}
