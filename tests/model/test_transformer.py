"""The transformer: attention stays inside documents, positions drive RoPE, the sparse head,
presets' sizes."""

import pytest
import torch

from trimodal.errors import ConfigError
from trimodal.model.attention import segment_mask
from trimodal.model.config import PRESETS, ModelConfig
from trimodal.model.transformer import Transformer, count_params

from .conftest import pack, stack, t2i_doc, text_doc


def _model(vocab, **kw):
    torch.manual_seed(0)
    return Transformer(ModelConfig(preset="tiny", **kw), vocab.size).eval()


def _t(batch):
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def test_no_attention_leak_across_documents(vocab):
    m = _model(vocab)
    a = text_doc(vocab, [1, 2, 3, 4, 5])
    b1 = t2i_doc(vocab, [6, 7], [1, 2, 3, 4])
    b2 = t2i_doc(vocab, [9, 9], [15, 14, 13, 12])  # another second document of the same length
    x1 = _t(pack(vocab, [a, b1], 24))
    x2 = _t(pack(vocab, [a, b2], 24))
    with torch.no_grad():
        y1 = m(x1["tokens"][None], x1["positions"][None], x1["segment_ids"][None])[0]
        y2 = m(x2["tokens"][None], x2["positions"][None], x2["segment_ids"][None])[0]
    doc_a = x1["segment_ids"] == 1
    doc_b = x1["segment_ids"] == 2
    torch.testing.assert_close(y1[doc_a], y2[doc_a], rtol=0, atol=1e-6)  # first document unaffected
    assert (y1[doc_b] - y2[doc_b]).abs().max() > 1e-3  # while the changed one did change


def test_a_document_gives_the_same_logits_wherever_it_is_packed(vocab):
    """Positions reset per document and attention is confined to it, so a document packed after
    another equals the same document alone at the start of a row (RoPE sees `positions`)."""
    m = _model(vocab)
    a = text_doc(vocab, [1, 2, 3])
    b = t2i_doc(vocab, [6, 7], [1, 2, 3, 4])
    packed = _t(pack(vocab, [a, b], 24))
    alone = _t(pack(vocab, [b], 24))
    with torch.no_grad():
        yp = m(packed["tokens"][None], packed["positions"][None], packed["segment_ids"][None])[0]
        ya = m(alone["tokens"][None], alone["positions"][None], alone["segment_ids"][None])[0]
    n = len(b[0])
    torch.testing.assert_close(yp[len(a[0]) : len(a[0]) + n], ya[:n], rtol=1e-5, atol=1e-5)


def test_positions_matter(vocab):
    m = _model(vocab)
    x = _t(pack(vocab, [text_doc(vocab, [1, 2, 3, 4])], 8))
    with torch.no_grad():
        y = m(x["tokens"][None], x["positions"][None], x["segment_ids"][None])
        y_shift = m(x["tokens"][None], (x["positions"] * 3)[None], x["segment_ids"][None])
    assert (y - y_shift).abs().max() > 1e-4


def test_padding_is_never_attended(vocab):
    seg = torch.tensor([[1, 1, 2, 2, 0, 0]])
    mask = segment_mask(seg)[0, 0]
    assert not mask[:4, 4:].any()  # real queries never see padding keys
    assert mask[4, 4] and not mask[4, 5]  # a padding query sees only itself (finite softmax)
    assert mask[0, 1] and not mask[0, 2]


def test_predict_subset_equals_full_logits_and_excludes_padded_vocab(vocab):
    m = _model(vocab)
    x = _t(stack([pack(vocab, [text_doc(vocab, [1, 2, 3]), t2i_doc(vocab, [4], [5, 6, 7, 8])], 16)] * 2))
    sel = torch.zeros(2, 16, dtype=torch.bool)
    sel[0, 2] = sel[1, 9] = True
    with torch.no_grad():
        full = m(x["tokens"], x["positions"], x["segment_ids"])
        part = m(x["tokens"], x["positions"], x["segment_ids"], predict=sel)
    assert full.shape == (2, 16, vocab.size) and m.padded_vocab % 64 == 0 and m.padded_vocab >= vocab.size
    torch.testing.assert_close(part, full[sel])


def test_gradients_flow_and_init_is_seeded(vocab):
    m1, m2 = _model(vocab), _model(vocab)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    x = _t(pack(vocab, [text_doc(vocab, [1, 2, 3])], 8))
    m1.train()
    m1(x["tokens"][None], x["positions"][None], x["segment_ids"][None]).sum().backward()
    assert all(p.grad is not None for p in m1.parameters())


@pytest.mark.parametrize("preset,lo,hi", [("100m", 0.07e9, 0.13e9), ("1b", 0.8e9, 1.3e9), ("3b", 2.5e9, 3.5e9)])
def test_preset_sizes(preset, lo, hi):
    n = count_params(ModelConfig(preset=preset), 70000)["non_embedding"]
    assert lo < n < hi


def test_model_config_validation():
    with pytest.raises(ConfigError, match="preset"):
        ModelConfig(preset="7b").validate()
    with pytest.raises(ConfigError, match="n_heads"):
        ModelConfig(preset="tiny", n_heads=3).validate()
    for name in PRESETS:
        ModelConfig(preset=name).validate()


def _micro_step_inputs(vocab):
    from trimodal.model.diffusion import Noise

    rows = [pack(vocab, [text_doc(vocab, [1, 2, 3, 4]), t2i_doc(vocab, [5, 6], [1, 2, 3, 4])], 24)] * 2
    b = _t(stack(rows))
    g = torch.Generator().manual_seed(0)
    return b, torch.tensor([0.3, 0.8]), Noise.draw(2, 24, g)


@pytest.mark.parametrize(
    "param", [{}, {"parameterization": "completep", "base_width": 32, "base_depth": 1}], ids=["standard", "completep"]
)
def test_a_micro_step_traces_as_one_graph_without_breaks(vocab, param):
    """What the trainer runs per micro-batch (corruption, transformer, fused head + weighted
    cross-entropy, given the mask built for the step) is one graph for torch.compile: no graph
    break, hence no `.item()`, `.tolist()`, boolean-mask indexing or `nonzero` (each one breaks
    the graph, and on a GPU each one is a host sync). CompleteP's multipliers are constants."""
    from trimodal.model.attention import attention_masks
    from trimodal.model.config import DiffusionConfig
    from trimodal.model.diffusion import DiffusionLoss, Noise

    m = _model(vocab, **param).train()
    loss_fn = DiffusionLoss(DiffusionConfig(cfg_drop_prob=0.5), vocab)
    b, t, noise = _micro_step_inputs(vocab)
    (mask,) = attention_masks("sdpa", b["segment_ids"], 2)

    def micro_step(b, t, tok_noise, doc_noise, mask):
        c = loss_fn.corrupt(b, t=t, noise=Noise(tok_noise, doc_noise))
        out = loss_fn.compute(m, b, c, mask=mask)
        return out.loss_sum, out.modality_sums, out.modality_counts, out.count

    ex = torch._dynamo.explain(micro_step)(b, t, noise.token, noise.doc, mask)
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1


def test_compiled_model_and_loss_match_eager(vocab):
    """The fused head's custom autograd function compiles (AOTAutograd, no codegen on CPU) and
    gives the eager loss and gradients."""
    from trimodal.model.config import DiffusionConfig
    from trimodal.model.diffusion import DiffusionLoss

    loss_fn = DiffusionLoss(DiffusionConfig(cfg_drop_prob=0.0), vocab)
    b, t, noise = _micro_step_inputs(vocab)
    c = loss_fn.corrupt(b, t=t, noise=noise)
    eager, comp = _model(vocab).train(), _model(vocab).train()
    comp.compile(backend="aot_eager", fullgraph=True)
    le, lc = loss_fn.compute(eager, b, c).loss_sum, loss_fn.compute(comp, b, c).loss_sum
    le.backward()
    lc.backward()
    torch.testing.assert_close(lc, le)
    for (n, p), q in zip(eager.named_parameters(), comp.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=n)


def test_fused_head_loss_equals_full_logits_loss(vocab):
    """The head applied to every position with a weighted, chunked cross-entropy gives the loss,
    the per-modality sums and the gradients of plain logits → cross-entropy at the masked
    positions (chunks smaller than the batch, so more than one is summed)."""
    from trimodal.model.head_loss import head_cross_entropy

    torch.manual_seed(0)
    N, d, V, Vp = 50, 8, vocab.size, vocab.size + 13
    h = torch.randn(N, d, requires_grad=True)
    w = torch.randn(Vp, d, requires_grad=True)
    targets = torch.randint(0, V, (N,))
    masked = torch.rand(N) < 0.5
    scale = torch.rand(N) * masked
    groups = torch.randint(0, 4, (N,))
    loss, sums = head_cross_entropy(h, w, targets, scale, groups, 3, V, chunk=16)
    (2.5 * loss).backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    logits = (h2[masked] @ w2.t())[:, :V]  # the reference: only the masked positions, real vocabulary
    ce = torch.nn.functional.cross_entropy(logits, targets[masked], reduction="none") * scale[masked]
    (2.5 * ce.sum()).backward()
    torch.testing.assert_close(loss, ce.sum())
    ref_sums = torch.stack([ce[groups[masked] == k].sum() for k in range(3)])
    torch.testing.assert_close(sums, ref_sums.detach())
    torch.testing.assert_close(h.grad, h2.grad)
    torch.testing.assert_close(w.grad, w2.grad)
    assert torch.all(w.grad[V:] == 0)  # padded vocabulary rows are never predicted


def test_a_step_builds_its_masks_once_and_cuts_them_per_micro_batch():
    """`attention_masks` builds one mask for all of a rank's rows and cuts it per micro-batch: the
    boolean masks (SDPA) and the flex BlockMask's block tables and mask_mod (rebound to the
    micro-batch's own rows) equal masks built for each micro-batch alone. (Block tables only:
    flex_attention itself runs on CUDA.)"""
    from torch.nn.attention.flex_attention import create_mask

    from trimodal.model.attention import attention_masks, flex_block_mask

    g = torch.Generator().manual_seed(0)
    L = 384  # three 128-blocks
    seg = torch.sort(torch.randint(0, 6, (4, L), generator=g), dim=1).values.flip(1)  # padding (0) last
    for backend in ("sdpa", "flex"):
        masks = attention_masks(backend, seg, 2, compiled=False)
        assert len(masks) == 2
        for k, sl in enumerate((slice(0, 2), slice(2, 4))):
            if backend == "sdpa":
                assert torch.equal(masks[k], segment_mask(seg[sl]))
                continue
            alone = flex_block_mask(seg[sl], compiled=False)
            for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
                assert torch.equal(getattr(masks[k], name), getattr(alone, name)), name
            dense = create_mask(masks[k].mask_mod, 2, 1, L, L, device="cpu")
            assert torch.equal(dense, segment_mask(seg[sl]))


def test_predict_by_index_equals_full_logits(vocab):
    m = _model(vocab)
    x = _t(stack([pack(vocab, [text_doc(vocab, [1, 2, 3]), t2i_doc(vocab, [4], [5, 6, 7, 8])], 16)] * 2))
    idx = torch.tensor([2, 9, 10])
    with torch.no_grad():
        full = m(x["tokens"], x["positions"], x["segment_ids"])
        part = m(x["tokens"], x["positions"], x["segment_ids"], predict=idx)
    torch.testing.assert_close(part, full[:, idx])


@pytest.mark.slow  # an inductor compile of forward + backward on CPU (~30-60 s)
def test_the_micro_step_compiled_by_inductor_matches_eager(vocab):
    """The whole micro-step the trainer compiles on CUDA (corruption, transformer, fused chunked
    head + weighted cross-entropy) generated by inductor (C++ codegen on CPU, as Triton on a GPU),
    fullgraph: the same loss, per-modality sums and gradients as eager."""
    from trimodal.model.attention import attention_masks
    from trimodal.model.config import DiffusionConfig
    from trimodal.model.diffusion import DiffusionLoss, Noise

    loss_fn = DiffusionLoss(DiffusionConfig(cfg_drop_prob=0.5), vocab)
    b, t, noise = _micro_step_inputs(vocab)
    (mask,) = attention_masks("sdpa", b["segment_ids"], 2)
    eager, comp = _model(vocab).train(), _model(vocab).train()

    def micro_step(m):
        def step(b, t, tok_noise, doc_noise, mask):
            c = loss_fn.corrupt(b, t=t, noise=Noise(tok_noise, doc_noise))
            out = loss_fn.compute(m, b, c, mask=mask)
            return out.loss_sum, out.modality_sums, out.count

        return step

    ref = micro_step(eager)(b, t, noise.token, noise.doc, mask)
    got = torch.compile(micro_step(comp), backend="inductor", fullgraph=True)(b, t, noise.token, noise.doc, mask)
    ref[0].backward()
    got[0].backward()
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    for (n, p), q in zip(eager.named_parameters(), comp.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=n)
