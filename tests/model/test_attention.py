"""The flex-attention branch (the CUDA default: a compiled `create_block_mask` for document
masking and a compiled `flex_attention`) run on CPU against the SDPA reference the CPU path uses,
on the same packed batch: documents must not see each other, padding is never attended.

On torch 2.13, CPU runs flex_attention's FORWARD compiled (inductor's CPU template), but refuses its
backward ("FlexAttention does not support backward on CPU"). The gradients are checked through
flex_attention's eager (dense) implementation with that device check lifted: the same block
mask and mask_mod, autograd through the reference math; the compiled backward kernel itself
runs only on a GPU (bench/bench_gpu.py, docs/training.md).
"""

import pytest
import torch
import torch.nn.functional as F

from trimodal.model.attention import attention_masks, document_mask_mod, flex_block_mask, segment_mask

B, H, L, D = 2, 2, 256, 16  # two 128-blocks per row: one block full, one mixed


def _segments() -> torch.Tensor:
    # row 0: three documents, then padding; row 1: one document over a block boundary, then two
    s0 = [1] * 100 + [2] * 60 + [3] * 40 + [0] * 56
    s1 = [1] * 150 + [2] * 70 + [3] * 36
    return torch.tensor([s0, s1])


def _qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, D, generator=g) for _ in range(3)]


def _real(seg):  # the positions whose outputs are used: not padding
    return (seg != 0)[:, None, :, None].expand(B, H, L, D)


@pytest.mark.slow  # two inductor compiles on CPU (~15-30 s)
def test_compiled_flex_forward_with_the_compiled_block_mask_equals_sdpa():
    from trimodal.model.attention import flex_attention

    seg = _segments()
    (mask,) = attention_masks("flex", seg, B)  # what the trainer builds: compiled create_block_mask
    q, k, v = _qkv()
    out = flex_attention(q, k, v, mask)  # compiled flex_attention
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=segment_mask(seg))
    torch.testing.assert_close(out[_real(seg)], ref[_real(seg)], rtol=1e-5, atol=1e-5)
    # documents do not see each other: changing document 2 of row 0 leaves documents 1 and 3 alone
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 100:160] += 3.0
    v2[0, :, 100:160] -= 5.0
    out2 = flex_attention(q, k2, v2, mask)
    torch.testing.assert_close(out2[0, :, :100], out[0, :, :100])
    torch.testing.assert_close(out2[0, :, 160:200], out[0, :, 160:200])
    assert not torch.allclose(out2[0, :, 100:160], out[0, :, 100:160])


def test_flex_gradients_through_the_block_mask_equal_sdpa(monkeypatch):
    import torch.nn.attention.flex_attention as fa

    monkeypatch.setattr(fa, "_validate_device", lambda *a, **k: None)  # CPU refuses the backward
    seg = _segments()
    bm = flex_block_mask(seg, compiled=False)
    q, k, v = (x.requires_grad_() for x in _qkv(1))
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    w = torch.randn(B, H, L, D, generator=torch.Generator().manual_seed(2)) * _real(seg)  # padding outputs unused
    (fa.flex_attention(q, k, v, block_mask=bm) * w).sum().backward()
    (F.scaled_dot_product_attention(q2, k2, v2, attn_mask=segment_mask(seg)) * w).sum().backward()
    for a, b, name in ((q, q2, "q"), (k, k2, "k"), (v, v2, "v")):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
    # no gradient crosses documents: a loss on document 1 of row 0 leaves document 2's keys at 0
    q.grad = k.grad = v.grad = None
    fa.flex_attention(q, k, v, block_mask=bm)[0, :, :100].sum().backward()
    assert torch.all(k.grad[0, :, 100:] == 0) and torch.all(v.grad[0, :, 100:] == 0)
    assert k.grad[0, :, :100].abs().sum() > 0


def test_the_mask_mod_is_the_boolean_mask():
    from torch.nn.attention.flex_attention import create_mask

    seg = _segments()
    dense = create_mask(document_mask_mod(seg), B, 1, L, L, device="cpu")
    assert torch.equal(dense, segment_mask(seg))
