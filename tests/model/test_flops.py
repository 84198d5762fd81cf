"""The compute count (model/flops.py) against torch's own FLOP counter and against a hand count.

torch.utils.flop_counter counts matmuls (mm/addmm/bmm) and the fused SDPA kernels of CUDA, but
not the CPU flash kernel, and it cannot know that a boolean mask keeps attention inside
documents. So the model runs here under SDPA's MATH backend (attention as two counted bmm's)
and each document as its own unpadded row: the counter then sees exactly what the convention
counts, the attention of each document over its own length, and nothing of padding."""

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from trimodal.model.config import ModelConfig
from trimodal.model.flops import (
    attention_flops,
    dense_flops_per_token,
    doc_length_squares,
    matmul_params,
    step_flops,
)
from trimodal.model.transformer import Transformer


def test_doc_length_squares_counts_each_document_of_each_row():
    seg = np.array([[1, 1, 1, 2, 2, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0]])
    assert doc_length_squares(seg) == 3**2 + 2**2 + 8**2
    # the same segment id in two rows is two documents, not one
    assert doc_length_squares(np.array([[1, 1, 0], [1, 1, 1]])) == 4 + 9
    assert doc_length_squares(np.zeros((0, 4), np.int64)) == 0


def test_hand_count_of_the_tiny_preset():
    """preset tiny: dim 64, 2 layers, SwiGLU hidden 8/3·64 rounded up to 192; vocabulary 104."""
    cfg, V = ModelConfig(preset="tiny"), 104
    per_layer = 64 * 192 + 64 * 64 + 64 * 384 + 192 * 64  # qkv, out, gate_up, down
    assert per_layer == 53248
    assert matmul_params(cfg, V) == {"blocks": 2 * 53248, "head": 64 * 104}
    assert dense_flops_per_token(cfg, V) == {"blocks": 638_976, "head": 39_936, "total": 678_912}
    # one row of two documents (5 and 3 tokens) and 2 padding positions:
    # attention = 3 (train) × 2 layers × 4·64 × (25 + 9)
    seg = np.array([[1] * 5 + [2] * 3 + [0, 0]])
    assert attention_flops(cfg, doc_length_squares(seg)) == 3 * 2 * 4 * 64 * 34 == 52224
    f = step_flops(cfg, V, real_tokens=8, len_sq_sum=34)
    assert f["total"] == 8 * 6 * 113152 + 52224
    assert f["non_embedding"] == f["total"] - 8 * 6 * 6656


@pytest.mark.parametrize("dim,layers,heads", [(64, 2, 4), (96, 3, 2)])
def test_count_agrees_with_torch_flop_counter(dim, layers, heads):
    cfg = ModelConfig(preset="tiny", dim=dim, n_layers=layers, n_heads=heads)
    V = 104
    torch.manual_seed(0)
    model = Transformer(cfg, V)
    lengths = [5, 11, 16]
    measured = 0
    for n in lengths:  # each document its own row: no padding, attention over its own length
        tokens = torch.randint(1, V, (1, n))
        pos = torch.arange(n)[None]
        seg = torch.ones(1, n, dtype=torch.long)
        # every position weighted: the fused head runs at every real token, as counted
        loss = (tokens, torch.ones(1, n), torch.zeros(1, n, dtype=torch.long), 1)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            out, _ = model(tokens, pos, seg, loss=loss)
            out.backward()
        measured += fc.get_total_flops()
    # the same documents packed into one row of 40 with padding: what the trainer counts
    seg = np.zeros((1, 40), np.int64)
    seg[0, :32] = np.repeat([1, 2, 3], lengths)
    counted = step_flops(cfg, V, real_tokens=sum(lengths), len_sq_sum=doc_length_squares(seg))["total"]
    assert counted == pytest.approx(measured, rel=1e-9)  # measured: equal to the FLOP
