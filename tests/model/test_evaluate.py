"""The held-out NELBO estimator (trimodal/model/evaluate.py): exact on models whose predictions
are known by hand, unbiased per modality, a standard error that shrinks with the number of
masking rates, and figures that depend on the global rows only, not on how they are batched."""

import math

import numpy as np
import pytest
import torch

from tests.model.reference import logits_cross_entropy
from trimodal.model.config import ModelConfig, SyntheticStreamConfig
from trimodal.model.data import SyntheticStream
from trimodal.model.evaluate import EvalSums, accumulate, count_mask, elbo, summarize, unigram_entropy
from trimodal.model.transformer import Transformer
from trimodal.tokenizers.vocab import MODALITY_IDS

from .conftest import FPS, pack, stack, t2i_doc, text_doc


class FixedModel(torch.nn.Module):
    """Predictions that ignore the input: uniform over the whole vocabulary, or (`per_modality`)
    uniform over the id range of the modality each position holds (set with `.modality`)."""

    def __init__(self, vocab, modality=None):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.modality = vocab, modality

    def forward(self, tokens, positions, segment_ids, mask=None, loss=None):
        B, L = tokens.shape
        lg = torch.zeros(B, L, self.vocab.size)
        if self.modality is not None:
            lg.fill_(-1e9)
            for m in ("text", "image", "audio"):
                lo, hi = self.vocab.range(m)
                sel = torch.as_tensor(self.modality) == MODALITY_IDS[m]
                view = lg[..., lo:hi]
                view[sel] = 0.0
        return logits_cross_entropy(lg, *loss)


def _rows(vocab, n=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        pack(
            vocab,
            [text_doc(vocab, rng.integers(0, 40, 10)), t2i_doc(vocab, rng.integers(0, 40, 3), rng.integers(0, 16, 4))],
            32,
        )
        for _ in range(n)
    ]
    return stack(rows)


@pytest.mark.parametrize("n_t", [1, 5])
def test_uniform_predictions_give_log_v_exactly(vocab, n_t):
    """Uniform logits over V ids: every masked token costs log V whatever is masked, and the
    estimator (exactly ⌈t·n⌉ masked per document, weight n/m) returns n·log V for every draw
    of a document: log V per token with standard error 0, per task and overall."""
    b = _rows(vocab)
    res = elbo(FixedModel(vocab), vocab, [b], n_t=n_t, seeds=3)
    assert set(res["modality"]) == {"text", "image"} and set(res["task"]) == {"text", "t2i"}
    for f in [*res["task"].values(), res["all"]]:
        assert f["nelbo"] == pytest.approx(math.log(vocab.size), rel=1e-6)
        assert f["se"] == pytest.approx(0.0, abs=1e-6)
        assert f["bits"] == pytest.approx(math.log2(vocab.size), rel=1e-6)
        assert f["ppl"] == pytest.approx(vocab.size, rel=1e-5)
    # per modality the joint draw of a pair splits the document's n·log V between caption and
    # image by which tokens it masked: log V in expectation only
    for f in res["modality"].values():
        assert abs(f["nelbo"] - math.log(vocab.size)) <= 4 * f["se"] + 1e-6
    # token counts: 10 text tokens per text document, 3 caption + 4 image codes per pair
    assert res["modality"]["text"]["tokens"] == 3 * 13 and res["modality"]["image"]["tokens"] == 12
    assert res["task"]["t2i"]["tokens"] == 12 and res["task"]["text"]["tokens"] == 30
    assert res["all"]["unigram"] == pytest.approx(unigram_entropy([b]))


def test_per_modality_predictions_give_log_v_of_each_modality(vocab):
    """Uniform over the modality's own ids: a task's target is one modality, so its figure is
    exactly log V_modality (caption → image: log 16; text: log 40); the joint per-modality
    figures of a pair mix the two in each draw and are log V_m in expectation (within 4 SE)."""
    b = _rows(vocab, n=6)
    res = elbo(FixedModel(vocab, b["modality"]), vocab, [b], n_t=4, seeds=16)
    assert res["task"]["t2i"]["nelbo"] == pytest.approx(math.log(16), rel=1e-6)
    assert res["task"]["text"]["nelbo"] == pytest.approx(math.log(40), rel=1e-6)
    for m, v in (("text", 40), ("image", 16)):
        f = res["modality"][m]
        assert f["se"] > 0
        assert abs(f["nelbo"] - math.log(v)) < 4 * f["se"], (m, f)


def test_count_mask_masks_ceil_tn_tokens_of_each_document():
    seg = torch.tensor([[1, 1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    eligible = torch.tensor([[1, 1, 1, 0, 1, 1, 0, 0], [1] * 8], dtype=torch.bool)
    keys = torch.rand(2, 8, generator=torch.Generator().manual_seed(0))
    masked, w = count_mask(eligible, seg, keys, torch.tensor([0.5, 0.3], dtype=torch.float64))
    # row 0: document 1 has 3 eligible tokens → ⌈1.5⌉ = 2 masked, weight 3/2; document 2: 1 of 2
    assert masked[0, :4].sum() == 2 and masked[0, 4:6].sum() == 1 and not masked[0, 3] and not masked[0, 6:].any()
    assert torch.allclose(w[0][masked[0]], torch.tensor([1.5, 1.5, 2.0], dtype=torch.float64))
    # the smallest keys go first; row 1: ⌈0.3·8⌉ = 3 of 8
    assert set(torch.nonzero(masked[1]).ravel().tolist()) == set(keys[1].argsort()[:3].tolist())
    assert (w[1][masked[1]] == 8 / 3).all()
    # t near 0 still masks one token (m = ⌈t·n⌉ ≥ 1): m is uniform on 1..n for uniform t
    masked, w = count_mask(eligible, seg, keys, torch.tensor([1e-9, 1e-9], dtype=torch.float64))
    assert masked[1].sum() == 1 and w[1].max() == 8


def _tiny_model(vocab, seed=0):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(preset="tiny"), vocab.size)
    model.init_weights(seed)
    return model.eval()


def _synthetic(rows=8, seed=0):
    spec = SyntheticStreamConfig(fingerprints=FPS, seq_len=32, pool=rows, seed=seed)
    stream = SyntheticStream(spec, 0, 1, rows)
    return stream.vocab, next(stream)


def test_standard_error_shrinks_with_the_number_of_masking_rates():
    """Low-discrepancy t (t_k = (u + k/K) mod 1): 16 rates per row give a standard error over
    seeds well under half that of one rate (iid draws would give 1/4 at best by count alone)."""
    vocab, b = _synthetic(rows=4)
    model = _tiny_model(vocab)
    se = {k: elbo(model, vocab, [b], n_t=k, seeds=12)["all"]["se"] for k in (1, 16)}
    assert se[16] < 0.5 * se[1], se


def test_figures_depend_on_the_global_rows_not_on_the_batching():
    """The same rows in one batch of 8 or four batches of 2 (each with its first global row)
    give the same sums up to float summation order: the draws are keyed by global row."""
    vocab, b = _synthetic(rows=8)
    model = _tiny_model(vocab)
    whole = elbo(model, vocab, [b], n_t=3, seeds=2)
    parts = elbo(model, vocab, [{k: v[i : i + 2] for k, v in b.items()} for i in range(0, 8, 2)], n_t=3, seeds=2)
    assert parts["all"]["nelbo"] == pytest.approx(whole["all"]["nelbo"], rel=1e-5)
    assert parts["task"].keys() == whole["task"].keys()
    for t in whole["task"]:
        assert parts["task"][t]["nelbo"] == pytest.approx(whole["task"][t]["nelbo"], rel=1e-5)
    # and two shards' sums, added, equal one process's
    a, c = EvalSums(3, 2, vocab.size), EvalSums(3, 2, vocab.size)
    with torch.no_grad():
        accumulate(model, vocab, {k: v[:4] for k, v in b.items()}, 0, a)
        accumulate(model, vocab, {k: v[4:] for k, v in b.items()}, 4, c)
    assert summarize(a + c)["all"]["nelbo"] == pytest.approx(whole["all"]["nelbo"], rel=1e-5)
    assert (a + c).rows == 8 and summarize(a + c)["all"]["tokens"] == whole["all"]["tokens"]


def test_a_different_seed_gives_different_draws_but_one_seed_repeats():
    vocab, b = _synthetic(rows=4)
    model = _tiny_model(vocab)
    r0 = elbo(model, vocab, [b], n_t=2, seeds=1, seed=0)["all"]["nelbo"]
    assert elbo(model, vocab, [b], n_t=2, seeds=1, seed=0)["all"]["nelbo"] == r0
    assert elbo(model, vocab, [b], n_t=2, seeds=1, seed=1)["all"]["nelbo"] != r0
