"""The masked diffusion loss: hand-computed values per schedule, what is masked and counted,
the ELBO weighting and stratified t (Monte Carlo mean = integral), CFG dropout, micro-batching."""

import math

import numpy as np
import pytest
import torch

from tests.model.reference import logits_cross_entropy
from trimodal.model.config import DiffusionConfig, ScheduleConfig
from trimodal.model.diffusion import DiffusionLoss, Noise, stratified_t
from trimodal.model.schedules import SCHEDULES, make_schedule
from trimodal.tokenizers.vocab import MODALITY_IDS

from .conftest import pack, stack, t2i_doc, text_doc


class FixedLogits(torch.nn.Module):
    """Predicts the same distribution q(v) ∝ v % 5 + 1 everywhere: CE(v) = −log q(v) is known
    in closed form, so the loss can be computed by hand."""

    def __init__(self, V):
        super().__init__()
        w = torch.tensor([v % 5 + 1 for v in range(V)], dtype=torch.float64)
        self.register_buffer("logq", (w / w.sum()).log().float())
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.V = V

    def forward(self, tokens, positions, segment_ids, predict=None, *, mask=None, loss=None):
        B, L = tokens.shape
        out = self.logq.expand(B, L, self.V) + 0 * self.dummy
        if loss is not None:  # the contract of Transformer.forward(..., loss=...)
            return logits_cross_entropy(out, *loss)
        return out[predict] if predict is not None else out


def hand_ce(V, target):
    Z = sum(v % 5 + 1 for v in range(V))
    return -math.log((target % 5 + 1) / Z)


HAND_WEIGHT = {  # w(t) = −α′(t)/(1 − α(t)) written out per schedule
    ("linear", None): lambda t: 1 / t,
    ("cosine", None): lambda t: (math.pi / 2) * math.sin(math.pi * t / 2) / (1 - math.cos(math.pi * t / 2)),
    ("polynomial", 3.0): lambda t: 3 * t**2 / t**3,
    ("log-linear", None): lambda t: (1 - 0.01) / ((1 - 0.01) * t),
}


def _sched_cfg(name, exponent):
    return ScheduleConfig(name=name, exponent=exponent or 2.0, eps=0.01)


@pytest.fixture
def batch(vocab):
    r0 = pack(vocab, [text_doc(vocab, [3, 7, 11, 2])], 12)
    r1 = pack(vocab, [t2i_doc(vocab, [5, 9], [1, 4, 0, 15])], 12)
    return {k: torch.from_numpy(v) for k, v in stack([r0, r1]).items()}


@pytest.mark.parametrize("name,exponent", list(HAND_WEIGHT))
def test_loss_equals_hand_computed_value(vocab, batch, name, exponent):
    cfg = DiffusionConfig(schedule=_sched_cfg(name, exponent), cfg_drop_prob=0.0)
    loss_fn = DiffusionLoss(cfg, vocab)
    masked = torch.zeros(2, 12, dtype=torch.bool)
    masked[0, [1, 3]] = True  # two text tokens of the text document
    masked[1, [2, 5, 7]] = True  # one caption token, two image codes
    t = torch.tensor([0.3, 0.8])
    out = loss_fn(FixedLogits(vocab.size), batch, t=t, masked=masked, dropped=torch.zeros_like(masked))

    w = HAND_WEIGHT[(name, exponent)]
    tok = batch["tokens"]
    ce = {(b, i): hand_ce(vocab.size, int(tok[b, i])) for b, i in [(0, 1), (0, 3), (1, 2), (1, 5), (1, 7)]}
    text_sum = w(0.3) * (ce[0, 1] + ce[0, 3]) + w(0.8) * ce[1, 2]
    image_sum = w(0.8) * (ce[1, 5] + ce[1, 7])
    # maskable: 4 text tokens in row 0; 2 caption + 4 image tokens in row 1 (specials, padding excluded)
    assert float(out.count) == 10
    assert float(out.loss) == pytest.approx((text_sum + image_sum) / 10, rel=1e-5)
    assert out.per_modality["text"] == pytest.approx(text_sum / 6, rel=1e-5)
    assert out.per_modality["image"] == pytest.approx(image_sum / 4, rel=1e-5)
    assert "audio" not in out.per_modality
    out.loss.backward()  # differentiable end to end


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_derivative_and_endpoints(name):
    s = make_schedule(ScheduleConfig(name=name, exponent=1.7, eps=0.01))
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
    assert torch.allclose(s.alpha_prime(t), numeric, rtol=1e-5, atol=1e-8)
    assert float(s.alpha(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(1.0)
    assert float(s.alpha(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(
        0.01 if name == "log-linear" else 0.0, abs=1e-12
    )
    assert torch.all(s.alpha_prime(t) < 0)


def test_only_text_image_audio_tokens_are_masked(vocab, batch):
    loss_fn = DiffusionLoss(DiffusionConfig(cfg_drop_prob=0.0), vocab)
    noise = Noise(token=torch.zeros(2, 12), doc=torch.ones(2, 13))  # u = 0 < 1 − α(t): every maskable token
    c = loss_fn.corrupt(batch, t=torch.tensor([0.5, 0.5]), noise=noise)
    maskable = (batch["modality"] == MODALITY_IDS["text"]) | (batch["modality"] == MODALITY_IDS["image"])
    assert torch.equal(c.masked, maskable)
    assert torch.all(c.noisy[c.masked] == vocab.mask_id)
    assert torch.equal(c.noisy[~c.masked], batch["tokens"][~c.masked])  # pad, <bos>, <t2i>, <boi>... kept


def test_mask_probability_follows_the_schedule(vocab, batch):
    loss_fn = DiffusionLoss(DiffusionConfig(schedule=ScheduleConfig(name="cosine"), cfg_drop_prob=0.0), vocab)
    t = torch.tensor([0.4, 0.4])
    p = 1 - math.cos(math.pi * 0.4 / 2)
    u = torch.full((2, 12), p - 1e-4)
    assert loss_fn.corrupt(batch, t=t, noise=Noise(u, torch.ones(2, 13))).masked.sum() == 10
    u = torch.full((2, 12), p + 1e-4)
    assert loss_fn.corrupt(batch, t=t, noise=Noise(u, torch.ones(2, 13))).masked.sum() == 0


def test_per_modality_schedule(vocab, batch):
    cfg = DiffusionConfig(
        schedule=ScheduleConfig(name="linear"),
        modality_schedules={"image": ScheduleConfig(name="polynomial", exponent=3.0)},
        cfg_drop_prob=0.0,
    )
    loss_fn = DiffusionLoss(cfg, vocab)
    noise = Noise(token=torch.zeros(2, 12), doc=torch.ones(2, 13))
    c = loss_fn.corrupt(batch, t=torch.tensor([0.5, 0.5]), noise=noise)
    is_img = batch["modality"] == MODALITY_IDS["image"]
    is_txt = batch["modality"] == MODALITY_IDS["text"]
    assert torch.allclose(c.weight[is_img], torch.tensor(3 / 0.5))  # p/t
    assert torch.allclose(c.weight[is_txt], torch.tensor(1 / 0.5))  # 1/t


def test_stratified_t_covers_every_stratum_and_ranks_tile_it():
    n = 16
    g = lambda: torch.Generator().manual_seed(7)  # the same shared draw on every rank
    full = stratified_t(n, 0, n, "stratified", g())
    idx = torch.arange(n)
    ordered = full.sort().values  # one row per stratum (which row gets which is permuted)
    assert torch.all((ordered >= idx / n) & (ordered < (idx + 1) / n))
    parts = torch.cat([stratified_t(n, r * 4, 4, "stratified", g()) for r in range(4)])
    assert torch.equal(parts, full)
    per_row = stratified_t(n, 0, n, "stratified_per_row", g()).sort().values
    assert torch.all((per_row >= idx / n) & (per_row < (idx + 1) / n))
    shared = torch.Generator().manual_seed(7)  # successive steps draw new permutations
    steps = [(stratified_t(n, 0, n, "stratified", shared) * n).floor() for _ in range(3)]
    assert not torch.equal(steps[0], steps[1]) and not torch.equal(steps[1], steps[2])


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_elbo_weighting_mean_matches_integral(vocab, name):
    """With a model of constant cross-entropy c, E[loss] = c · E_t[w(t)(1 − α(t))]
    = c · (α(t_min) − α(1)) / (1 − t_min): the masking rate and the weight must agree."""
    cfg = DiffusionConfig(schedule=ScheduleConfig(name=name, exponent=2.5, eps=0.01), t_min=0.02, cfg_drop_prob=0.0)
    loss_fn = DiffusionLoss(cfg, vocab)
    B, L = 64, 24
    rows = [pack(vocab, [text_doc(vocab, list(range(20)))], L) for _ in range(B)]
    batch = {k: torch.from_numpy(v) for k, v in stack(rows).items()}
    V = vocab.size
    model = FixedLogits(V)
    model.logq.fill_(-math.log(V))  # uniform: CE = log V for every token
    s = make_schedule(cfg.schedule)
    tt = torch.tensor([cfg.t_min, 1.0], dtype=torch.float64)
    expected = math.log(V) * float(s.alpha(tt[:1]) - s.alpha(tt[1:])) / (1 - cfg.t_min)

    def draws(mode, n):
        g = torch.Generator().manual_seed(0)
        out = []
        for _ in range(n):
            t = loss_fn.scale_t(stratified_t(B, 0, B, mode, g))
            out.append(float(loss_fn(model, batch, generator=g, t=t).loss))
        return np.array(out)

    strat = draws("stratified", 300)
    iid = draws("iid", 300)
    se = strat.std() / math.sqrt(len(strat))
    assert abs(strat.mean() - expected) < max(4 * se, 0.01 * expected)
    assert abs(iid.mean() - expected) < max(4 * iid.std() / math.sqrt(len(iid)), 0.01 * expected)
    assert strat.var() < iid.var()  # low-discrepancy t lowers the variance of the estimate


def test_cfg_dropout_hides_the_condition_of_pairs_only(vocab):
    L = 24
    row = pack(vocab, [text_doc(vocab, [1, 2, 3]), t2i_doc(vocab, [4, 5, 6], [1, 2, 3, 4])], L)
    batch = {k: torch.from_numpy(v)[None] for k, v in row.items()}
    loss_fn = DiffusionLoss(DiffusionConfig(cfg_drop_prob=0.5), vocab)
    noise = Noise(token=torch.ones(1, L), doc=torch.zeros(1, L + 1))  # u_doc = 0 < p: every pair dropped
    c = loss_fn.corrupt(batch, t=torch.tensor([0.5]), noise=noise)
    seg, mod = batch["segment_ids"][0], batch["modality"][0]
    caption = (seg == 2) & (mod == MODALITY_IDS["text"])
    assert torch.equal(c.dropped[0], caption)  # the caption of the t2i document only
    assert torch.all(c.noisy[0][caption] == vocab.mask_id)
    assert not c.maskable[0][caption].any()  # out of the loss and of the count
    assert c.maskable[0][(seg == 1) & (mod == MODALITY_IDS["text"])].all()  # text-only doc untouched
    noise = Noise(token=torch.ones(1, L), doc=torch.ones(1, L + 1))
    assert not loss_fn.corrupt(batch, t=torch.tensor([0.5]), noise=noise).dropped.any()


def test_per_row_noise_depends_only_on_the_row_seed():
    a = Noise.per_row([11, 12, 13, 14], 8)
    b = Noise.per_row([13, 14], 8)
    assert torch.equal(a.token[2:], b.token) and torch.equal(a.doc[2:], b.doc)
    assert not torch.equal(a.token[0], a.token[1])


def test_micro_batches_sum_to_the_whole_batch(vocab):
    """Sums over row slices (micro-batches) normalized by the total count equal the one-batch loss."""
    torch.manual_seed(0)
    from trimodal.model.config import ModelConfig
    from trimodal.model.transformer import Transformer

    rows = [
        pack(vocab, [text_doc(vocab, np.random.randint(0, 40, 6)), t2i_doc(vocab, [1, 2], [3, 4, 5, 6])], 24)
        for _ in range(4)
    ]
    batch = {k: torch.from_numpy(v) for k, v in stack(rows).items()}
    model = Transformer(ModelConfig(preset="tiny"), vocab.size)
    loss_fn = DiffusionLoss(DiffusionConfig(), vocab)
    c = loss_fn.corrupt(batch, t=torch.full((4,), 0.6), noise=Noise.per_row(range(4), 24))
    whole = loss_fn.compute(model, batch, c)
    total = 0.0
    for sl in (slice(0, 2), slice(2, 4)):
        b, cc = {k: v[sl] for k, v in batch.items()}, c.rows(sl)
        total += float(loss_fn.compute(model, b, cc).loss_sum)
    assert total / float(c.maskable.sum()) == pytest.approx(float(whole.loss), rel=1e-5)


def _ks_uniform(x: np.ndarray) -> float:
    """Kolmogorov–Smirnov distance between the sample's CDF and U[0, 1)."""
    x = np.sort(x)
    n = len(x)
    return float(max((np.arange(1, n + 1) / n - x).max(), (x - np.arange(n) / n).max()))


@pytest.mark.parametrize("mode", ["stratified", "stratified_per_row"])
def test_t_is_uniform_for_every_modality_under_a_repeating_row_pattern(mode):
    """The mixer's rows repeat a pattern whenever the shares divide the batch (measured: shares
    60/25/15, share_unit: positions): the same rows hold the same modality at every step. Each
    modality's t must still be uniform over [0, 1) (KS distance ≤ 0.05 over 50 steps), on 2 ranks
    as the trainer draws it. Here each modality holds a block of rows, the pattern that hurts a
    stratum tied to the row index most (audio would only see t in [0.85, 1))."""
    from trimodal.model.seeding import seed_for

    B, ranks = 200, 2
    rows = np.array(["text"] * 120 + ["image"] * 50 + ["audio"] * 30)
    per_rank = B // ranks
    seen = {m: [] for m in ("text", "image", "audio")}
    tied = {m: [] for m in seen}  # what a stratum tied to the row index would give
    for step in range(50):
        shared = torch.Generator().manual_seed(seed_for(0, "t", step))
        t = torch.cat([stratified_t(B, r * per_rank, per_rank, mode, shared) for r in range(ranks)]).numpy()
        u = torch.rand(B, generator=torch.Generator().manual_seed(step)).numpy()
        for m in seen:
            seen[m].append(t[rows == m])
            tied[m].append(((np.arange(B) + u) / B)[rows == m])
    for m in seen:
        assert _ks_uniform(np.concatenate(seen[m])) <= 0.05, m
    assert _ks_uniform(np.concatenate(tied["audio"])) > 0.8  # the pattern is one that breaks a tied stratum


def test_polynomial_exponents_below_one_are_refused():
    from trimodal.config import from_dict
    from trimodal.errors import ConfigError

    with pytest.raises(ConfigError, match="exponent"):
        ScheduleConfig(name="polynomial", exponent=0.5).validate()
    with pytest.raises(ConfigError, match="exponent"):  # a modality's own schedule is checked too
        from_dict(DiffusionConfig, {"modality_schedules": {"audio": {"name": "polynomial", "exponent": 0.9}}})
    ScheduleConfig(name="polynomial", exponent=1.0).validate()
    ScheduleConfig(name="linear", exponent=0.5).validate()  # the exponent of another schedule is unused
