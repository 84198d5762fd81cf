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
