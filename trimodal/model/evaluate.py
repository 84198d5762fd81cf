"""One estimator of the held-out NELBO for every run, whatever schedule it trained with.

The continuous-time NELBO of masked diffusion, ∫ w(t)·E[Σ_masked CE] dt with
w = −α′/(1 − α), becomes ∫₀¹ (1/r)·E_r[Σ_masked CE] dr under the change of variables
r = 1 − α(t) (the masking rate): the schedule is gone, only an estimator's variance depended on
it. This module estimates that integral the same way for every run and never reads the run's
`diffusion` config (docs/training.md, "Evaluation", has the derivation):

- Conditioning on the number of masked tokens (given m, a Bernoulli(r) mask is a uniform
  m-subset, and ∫ (1/r)·Binom(m; n, r) dr = 1/m) gives NELBO = Σ_{m=1..n} g(m)/m for a document
  of n eligible tokens, g(m) = E[Σ CE | m masked]; the estimator draws m = ⌈t·n⌉ (uniform on
  1..n for uniform t), masks exactly m tokens of the document and weights them n/m: unbiased,
  weights bounded by n (the 1/t weight of the plain form has an infinite-variance tail as
  t → 0, which t_min only hides by a bias), and exact for a model whose predictions ignore the
  context (uniform logits give log V for any draw).
- t is low-discrepancy: t_k = (u + k/K) mod 1, k < K, with one u per (seed, global row).
- `seeds` independent replicates (u and the masks) give the standard error std/√S.
- Every draw is keyed by (seed, replicate, global row index), never by shard or rank, and the
  partial sums are float64 sums reduced before dividing: W shards agree with one up to float
  summation order.

Two passes per (replicate, t): the joint one masks every text/image/audio token at the same
rate (per-modality figures: the NELBO of the whole document, split by the modality of the
token); the conditional one keeps a pair's condition clean and masks its target only
(per-task figures: caption → image `t2i`, caption → audio `t2s`, image → caption `i2t`, audio
→ transcript `s2t`); a text document's target is all of it (`text`, unconditional, taken from
the joint pass). The second forward runs only on batches that hold a pair. Conditioning is never
dropped here (no classifier-free-guidance dropout).

`unigram` beside each figure is the entropy of the same tokens' empirical distribution: the
loss of the best model that ignores context, the "learned nothing" line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from trimodal.dataset.schema import MODALITIES
from trimodal.model.seeding import seed_for
from trimodal.tokenizers.vocab import MODALITY_IDS

MODS = MODALITIES
TASKS = ("text", "t2i", "t2s", "i2t", "s2t")  # index 0: a document with no task token
# the modality of each task's target
TARGET = {"text": "text", "t2i": "image", "t2s": "audio", "i2t": "text", "s2t": "text"}


@dataclass
class EvalSums:
    """Partial sums of one shard (or of all, once added up): float64 numerators per replicate,
    token counts and token histograms. Additive, so shards and ranks reduce by `+`."""

    n_t: int
    seeds: int
    vocab_size: int
    joint: np.ndarray = None  # [S, tasks, mods] Σ_k Σ weight·CE, joint masking
    cond: np.ndarray = None  # [S, tasks] Σ_k Σ weight·CE of the targets, condition clean
    count: np.ndarray = None  # [tasks, mods] maskable tokens
    target_count: np.ndarray = None  # [tasks] target tokens
    hist_mod: np.ndarray = None  # [mods, V] token counts
    hist_task: np.ndarray = None  # [tasks, V] target token counts
    rows: int = 0
    forwards: int = 0  # model forwards (of a batch each)
    forward_tokens: int = 0  # positions run through the model, padding included
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        S, T, M, V = self.seeds, len(TASKS), len(MODS), self.vocab_size
        for name, shape, dt in (
            ("joint", (S, T, M), np.float64),
            ("cond", (S, T), np.float64),
            ("count", (T, M), np.float64),
            ("target_count", (T,), np.float64),
            ("hist_mod", (M, V), np.int64),
            ("hist_task", (T, V), np.int64),
        ):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(shape, dt))

    _ARRAYS = ("joint", "cond", "count", "target_count", "hist_mod", "hist_task")

    def __add__(self, other: EvalSums) -> EvalSums:
        if (self.n_t, self.seeds, self.vocab_size) != (other.n_t, other.seeds, other.vocab_size):
            raise ValueError("cannot add eval sums of different n_t / seeds / vocabulary")
        out = EvalSums(self.n_t, self.seeds, self.vocab_size)
        for k in self._ARRAYS:
            setattr(out, k, getattr(self, k) + getattr(other, k))
        out.rows = self.rows + other.rows
        out.forwards = self.forwards + other.forwards
        out.forward_tokens = self.forward_tokens + other.forward_tokens
        return out

    def flat(self) -> np.ndarray:
        """Everything as one float64 vector (one all-reduce in training; counts stay exact)."""
        parts = [getattr(self, k).astype(np.float64).ravel() for k in self._ARRAYS]
        return np.concatenate(parts + [np.array([self.rows, self.forwards, self.forward_tokens], np.float64)])

    def from_flat(self, v: np.ndarray) -> EvalSums:
        out, i = EvalSums(self.n_t, self.seeds, self.vocab_size), 0
        for k in self._ARRAYS:
            a = getattr(self, k)
            setattr(out, k, v[i : i + a.size].reshape(a.shape).astype(a.dtype))
            i += a.size
        out.rows, out.forwards, out.forward_tokens = (int(x) for x in v[i : i + 3])
        return out


# per-document structure ----------------------------------------------------------------
def _per_doc(values: torch.Tensor, seg: torch.Tensor, reduce: str) -> torch.Tensor:
    """Reduce `values` [B, L] over each (row, segment) and broadcast back to the tokens."""
    B, L = seg.shape
    out = torch.zeros(B, L + 1, dtype=values.dtype, device=values.device)
    out = out.scatter_reduce(1, seg, values, reduce=reduce, include_self=True)
    return out.gather(1, seg)


def task_of_tokens(tokens: torch.Tensor, seg: torch.Tensor, vocab) -> torch.Tensor:
    """Per token the index in TASKS of its document (the task token it holds; 0: none)."""
    code = torch.zeros_like(tokens)
    for i, name in enumerate(TASKS[1:], start=1):
        code = torch.where(tokens == vocab.special(f"<{name}>"), i, code)
    return _per_doc(code, seg, "amax")


def count_mask(eligible, seg, keys, t):
    """Mask exactly m = ⌈t·n⌉ (at least 1) of the n eligible tokens of each document, the
    ones with the smallest `keys`; returns (masked [B, L] bool, weight n/m where masked).
    eligible/seg/keys [B, L], t [B] in [0, 1)."""
    B, L = seg.shape
    n = _per_doc(eligible.double(), seg, "sum")
    m = torch.minimum(torch.ceil(t[:, None].double() * n).clamp_min(1.0), n)
    # rank of each eligible token within its document by key: sort by (segment, key)
    comp = seg.double() * 4.0 + torch.where(eligible, keys.double(), 2.0)
    order = comp.argsort(dim=1)
    sseg = seg.gather(1, order)
    idx = torch.arange(L, device=seg.device).expand(B, L)
    first = torch.ones_like(sseg, dtype=torch.bool)
    first[:, 1:] = sseg[:, 1:] != sseg[:, :-1]
    start = torch.where(first, idx, torch.zeros_like(idx)).cummax(dim=1).values
    rank = torch.empty_like(idx).scatter_(1, order, idx - start)
    masked = eligible & (rank < m)
    weight = torch.where(masked, n / m.clamp_min(1.0), torch.zeros_like(n))
    return masked, weight


def draws(seed: int, replicate: int, first_row: int, B: int, L: int, n_t: int):
    """(t [n_t, B], keys [n_t, B, L]) of rows first_row..first_row+B−1 for one replicate: one u
    per row and t_k = (u + k/K) mod 1; keyed by the global row index only."""
    us, keys = [], []
    for r in range(first_row, first_row + B):
        g = torch.Generator().manual_seed(seed_for(seed, "eval", replicate, r))
        us.append(torch.rand(1, generator=g, dtype=torch.float64))
        keys.append(torch.rand(n_t, L, generator=g))
    u = torch.cat(us)
    t = torch.remainder(u[None, :] + torch.arange(n_t, dtype=torch.float64)[:, None] / n_t, 1.0)
    return t, torch.stack(keys, dim=1)


def _sums(model, noisy, batch, weight, groups, n_groups) -> torch.Tensor:
    out = model(noisy, batch["positions"], batch["segment_ids"], loss=(batch["tokens"], weight, groups, n_groups))
    return out[1].double().cpu()


@torch.no_grad()
def accumulate(
    model, vocab, batch: dict, first_row: int, acc: EvalSums, seed: int = 0, always_cond: bool = False
) -> EvalSums:
    """Add the figures of `batch` (dict of [B, L] arrays: rows first_row.. of the global eval
    stream) to `acc`. The model is called as the trainer calls it: (noisy tokens, positions,
    segment ids, loss=(targets, scale, groups, n_groups)) -> (Σ, per-group sums).
    `always_cond`: run the conditional pass even on a batch without pairs (FSDP: every rank
    must run the same forwards)."""
    dev = next(model.parameters()).device
    b = {
        k: torch.tensor(np.asarray(batch[k]), dtype=torch.long, device=dev)
        for k in ("tokens", "modality", "segment_ids", "positions")
    }
    tokens, mod, seg = b["tokens"], b["modality"], b["segment_ids"]
    B, L = tokens.shape
    T, M = len(TASKS), len(MODS)
    mod_idx = torch.full_like(mod, M)
    for i, m in enumerate(MODS):
        mod_idx = torch.where(mod == MODALITY_IDS[m], i, mod_idx)
    maskable = mod_idx < M
    task = task_of_tokens(tokens, seg, vocab)
    tgt_mod = torch.tensor([MODALITY_IDS[TARGET[k]] for k in TASKS], device=dev)[task]
    target = maskable & (mod == tgt_mod)
    pairs = always_cond or bool((task > 0).any())
    # joint groups: task × modality; conditional groups: task; the rest: the spare group
    g_joint = torch.where(maskable, task * M + mod_idx, T * M)
    g_cond = torch.where(target, task, T)

    acc.count += (
        torch.zeros(T * M + 1, dtype=torch.float64)
        .index_add_(0, g_joint.cpu().ravel(), torch.ones(B * L, dtype=torch.float64))[: T * M]
        .view(T, M)
        .numpy()
    )
    acc.target_count += torch.bincount(g_cond.cpu().ravel(), minlength=T + 1)[:T].double().numpy()
    tok_cpu = tokens.cpu()
    V = acc.vocab_size
    for i in range(M):
        acc.hist_mod[i] += torch.bincount(tok_cpu[(mod_idx == i).cpu()], minlength=V)[:V].numpy()
    for i in range(T):
        acc.hist_task[i] += torch.bincount(tok_cpu[(g_cond == i).cpu()], minlength=V)[:V].numpy()
    acc.rows += B

    for s in range(acc.seeds):
        ts, keys = draws(seed, s, first_row, B, L, acc.n_t)
        ts, keys = ts.to(dev), keys.to(dev)
        for k in range(acc.n_t):
            masked, w = count_mask(maskable, seg, keys[k], ts[k])
            noisy = torch.where(masked, vocab.mask_id, tokens)
            joint = _sums(model, noisy, b, w.float(), g_joint, T * M).view(T, M)
            acc.joint[s] += joint.numpy()
            acc.cond[s, 0] += float(joint[0].sum())  # a text document's target is all of it
            acc.forwards += 1
            acc.forward_tokens += B * L
            if pairs:
                masked, w = count_mask(target & (task > 0), seg, keys[k], ts[k])
                noisy = torch.where(masked, vocab.mask_id, tokens)
                cond = _sums(model, noisy, b, w.float(), torch.where(masked, task, T), T)
                acc.cond[s, 1:] += cond[1:].numpy()
                acc.forwards += 1
                acc.forward_tokens += B * L
    return acc


# figures ---------------------------------------------------------------------------------
def _entropy(hist: np.ndarray) -> float | None:
    n = hist.sum()
    if n == 0:
        return None
    p = hist[hist > 0] / n
    return float(-(p * np.log(p)).sum())


def _figure(per_seed: np.ndarray, tokens: float, hist: np.ndarray) -> dict:
    """One row of the table from the per-replicate sums (already Σ over t points)."""
    S = len(per_seed)
    vals = per_seed / tokens
    nelbo = float(vals.mean())
    se = float(vals.std(ddof=1) / math.sqrt(S)) if S > 1 else None
    return {
        "tokens": int(tokens),
        "nelbo": nelbo,
        "se": se,
        "bits": nelbo / math.log(2),
        "ppl": math.exp(min(nelbo, 700.0)),
        "unigram": _entropy(hist),
    }


def summarize(acc: EvalSums) -> dict:
    """The figures: per modality (joint), per task (target given condition), and `all`
    (every maskable token, joint), each {tokens, nelbo (nats/token), se, bits, ppl, unigram}.
    Groups without tokens are left out. The unigram line of `all` mixes the modalities with
    their token shares (which modality a position holds is given by the layout)."""
    K = acc.n_t
    out: dict = {"modality": {}, "task": {}}
    per_mod = acc.joint.sum(axis=1) / K  # [S, M]
    count_mod = acc.count.sum(axis=0)
    for i, m in enumerate(MODS):
        if count_mod[i] > 0:
            out["modality"][m] = _figure(per_mod[:, i], count_mod[i], acc.hist_mod[i])
    for i, name in enumerate(TASKS):
        if acc.target_count[i] > 0:
            out["task"][name] = _figure(acc.cond[:, i] / K, acc.target_count[i], acc.hist_task[i])
    n = count_mod.sum()
    if n > 0:
        fig = _figure(per_mod.sum(axis=1), n, acc.hist_mod.sum(axis=0))
        shares = count_mod / n
        fig["unigram"] = float(sum(sh * (_entropy(acc.hist_mod[i]) or 0.0) for i, sh in enumerate(shares) if sh > 0))
        out["all"] = fig
    out.update({"n_t": acc.n_t, "seeds": acc.seeds, "rows": acc.rows, "forwards": acc.forwards})
    return out


def flatten(res: dict, prefix: str = "eval") -> dict:
    """A result as flat scalars for metrics.jsonl / TensorBoard: eval.nelbo,
    eval.nelbo.text, eval.se.text, eval.bits.text, eval.unigram.text, eval.task.t2i.nelbo, ..."""
    out = {}
    if "all" in res:
        for k in ("nelbo", "se", "bits", "unigram"):
            if res["all"][k] is not None:
                out[f"{prefix}.{k}"] = res["all"][k]
    for m, fig in res["modality"].items():
        for k in ("nelbo", "se", "bits", "unigram"):
            if fig[k] is not None:
                out[f"{prefix}.{k}.{m}"] = fig[k]
    for t, fig in res["task"].items():
        for k in ("nelbo", "se", "unigram"):
            if fig[k] is not None:
                out[f"{prefix}.task.{t}.{k}"] = fig[k]
    return out


def elbo(model, vocab, batches, n_t: int = 8, seeds: int = 1, seed: int = 0) -> dict:
    """The figures of `batches` (dicts of [B, L] arrays, taken as consecutive rows of one
    stream) in this process: the convenience form of `accumulate` + `summarize`."""
    was_training = model.training
    model.eval()
    acc, row = EvalSums(n_t, seeds, vocab.size), 0
    for batch in batches:
        accumulate(model, vocab, batch, row, acc, seed=seed)
        row += len(batch["tokens"])
    model.train(was_training)
    return summarize(acc)


def unigram_entropy(batches) -> float:
    """Σ_m share_m · H(tokens of modality m), in nats per maskable token."""
    counts: dict[int, list] = {}
    for batch in batches:
        tok, mod = np.asarray(batch["tokens"]).ravel(), np.asarray(batch["modality"]).ravel()
        for m in MODS:
            sel = tok[mod == MODALITY_IDS[m]]
            if sel.size:
                counts.setdefault(MODALITY_IDS[m], []).append(sel)
    n_all = sum(sum(a.size for a in v) for v in counts.values())
    h = 0.0
    for arrays in counts.values():
        x = np.concatenate(arrays)
        _, c = np.unique(x, return_counts=True)
        p = c / c.sum()
        h += (x.size / n_all) * float(-(p * np.log(p)).sum())
    return h
