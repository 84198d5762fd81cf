"""Iterative unmasking: ids stay in the target modality's range (per audio level), the layout
matches training documents, options behave."""

import numpy as np
import pytest
import torch

from trimodal.model.config import ModelConfig
from trimodal.model.sampler import build_template, sample, sample_many
from trimodal.model.transformer import Transformer


class Biased(torch.nn.Module):
    """Random logits plus a large bonus on one id (outside the target's range in the tests):
    the range restriction, not the model, must keep it out."""

    def __init__(self, V, favourite):
        super().__init__()
        self.V, self.fav = V, favourite
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.calls = 0
        self.inputs = []

    def forward(self, tokens, positions, segment_ids, predict=None):
        self.calls += 1
        self.inputs.append(tokens.clone())
        g = torch.Generator().manual_seed(int(tokens.sum()))
        out = torch.randn(*tokens.shape, self.V, generator=g)
        out[..., self.fav] += 100.0
        return out if predict is None else out[:, predict]  # the sampler asks for its target positions


def test_t2i_ids_in_image_range_despite_a_model_preferring_text(vocab):
    tpl = build_template(vocab, "t2i", [vocab.range("text")[0] + 3] * 3, 4)
    m = Biased(vocab.size, vocab.range("text")[0])
    for remasking in ("low_confidence", "random"):
        ids = sample(m, vocab, tpl, steps=3, temperature=1.0, remasking=remasking, seed=1)
        lo, hi = vocab.range("image")
        assert ids.shape == (4,) and np.all((ids >= lo) & (ids < hi))
    ids0 = sample(m, vocab, tpl, steps=4, temperature=0.0)
    assert np.all((ids0 >= lo) & (ids0 < hi))


def test_t2s_ids_follow_the_audio_level_of_each_position(vocab):
    levels = vocab.levels("audio")
    tpl = build_template(vocab, "t2s", [vocab.range("text")[0] + 1], 3 * levels)
    torch.manual_seed(0)
    m = Transformer(ModelConfig(preset="tiny"), vocab.size).eval()
    ids = sample(m, vocab, tpl, steps=4, temperature=1.0, cfg_scale=2.0, seed=0)
    for j, i in enumerate(ids):
        lo, hi = vocab.range("audio", j % levels)
        assert lo <= i < hi
    with pytest.raises(ValueError, match="levels"):
        build_template(vocab, "t2s", [], 3 * levels + 1)


def test_template_layout_matches_training_documents(vocab):
    p = [vocab.range("text")[0] + k for k in (1, 2)]
    tpl = build_template(vocab, "t2i", p, 4)
    sp = vocab.special
    expect = [sp("<bos>"), sp("<t2i>"), *p, sp("<boi>")] + [vocab.mask_id] * 4 + [sp("<eoi>"), sp("<eos>")]
    assert tpl.tokens.tolist() == expect
    assert tpl.cond.nonzero().flatten().tolist() == [2, 3]
    assert tpl.target.nonzero().flatten().tolist() == [5, 6, 7, 8]
    text = build_template(vocab, "text", p, 3)
    assert text.tokens.tolist() == [sp("<bos>"), *p] + [vocab.mask_id] * 3 + [sp("<eos>")]


def test_sampling_is_deterministic_and_steps_bound_the_passes(vocab):
    torch.manual_seed(0)
    m = Transformer(ModelConfig(preset="tiny"), vocab.size).eval()
    tpl = build_template(vocab, "text", [vocab.range("text")[0] + 5], 8)
    a = sample(m, vocab, tpl, steps=4, seed=3)
    b = sample(m, vocab, tpl, steps=4, seed=3)
    assert np.array_equal(a, b)
    lo, hi = vocab.range("text")
    assert np.all((a >= lo) & (a < hi))
    counter = Biased(vocab.size, 0)
    sample(counter, vocab, tpl, steps=4, cfg_scale=1.0)
    assert counter.calls == 4 and all(x.shape[0] == 1 for x in counter.inputs)
    counter = Biased(vocab.size, 0)
    sample(counter, vocab, tpl, steps=4, cfg_scale=3.0)
    # guidance: the unconditional row rides in the same forward (one pass per step, 2 rows)
    assert counter.calls == 4 and all(x.shape[0] == 2 for x in counter.inputs)
    for x in counter.inputs:
        assert torch.equal(x[1][~tpl.cond], x[0][~tpl.cond])  # the same sequence ...
        assert torch.all(x[1][tpl.cond] == vocab.mask_id)  # ... with the prompt masked out


def test_samples_in_one_batch_are_independent_and_valid(vocab):
    """`sample_many` fills n samples in one batch: each stays in the target's range, they differ
    (independent draws), and a seed gives the same batch again."""
    torch.manual_seed(0)
    m = Transformer(ModelConfig(preset="tiny"), vocab.size).eval()
    tpl = build_template(vocab, "t2i", [vocab.range("text")[0] + 2], 4)
    ids = sample_many(m, vocab, tpl, 6, steps=4, temperature=1.0, cfg_scale=2.0, seed=1)
    lo, hi = vocab.range("image")
    assert ids.shape == (6, 4) and np.all((ids >= lo) & (ids < hi))
    assert len({tuple(r) for r in ids.tolist()}) > 1
    assert np.array_equal(ids, sample_many(m, vocab, tpl, 6, steps=4, temperature=1.0, cfg_scale=2.0, seed=1))
