"""The masked diffusion loss (MDLM-style, continuous time), with per-modality schedules and
classifier-free-guidance dropout.

For each row a time t is drawn; each *maskable* token of modality m is replaced by <mask> with
probability 1 − α_m(t); the loss is the cross-entropy of the clean token at masked positions,
weighted by the ELBO weight w_m(t) = −α_m′(t)/(1 − α_m(t)).

Choices, written down because results depend on them:
- Maskable tokens are those of modality text/image/audio. Padding (modality 0) and specials /
  structure tokens (modality 4: <bos>, <t2i>, <boi>, ...) are never masked and never in the loss:
  they are fixed by the layout, so predicting them would only add free loss.
- The cross-entropy runs on every position with weight w where masked and 0 elsewhere (the
  model's fused, chunked head: head_loss.py), so the loss of a micro-batch has static shapes.
- Normalization: the loss is Σ w·CE over masked tokens divided by the number of MASKABLE tokens
  (masked or not) in the logical batch, i.e. a per-token ELBO. The trainer passes that count
  (summed over micro-batches and ranks) so accumulation and DDP give the same value as one big
  batch; `LossOutput.loss` normalizes by this micro-batch's count when used alone. Per-modality
  losses use the same rule per modality, so the total is their count-weighted mean.
- t sampling (DiffusionConfig.t_sampling): ``stratified`` draws ONE u per step and a random
  permutation π of the N rows of the GLOBAL batch, and sets t_i = (π_i + u)/N (ranks take their
  slice), so every step covers [0, 1) evenly and the gradient variance from t drops, while the
  stratum a row gets does not follow its index: the mixer's row pattern may repeat (it does
  whenever the shares divide the batch), and tying stratum to row index then gave a modality only
  a few narrow bands of t (measured: 99.7% of audio tokens in three bands of width 0.05), so its
  loss was not its ELBO. ``stratified_per_row`` draws one u per row (MDLM's low-discrepancy
  sampler) over the same permuted strata; ``iid`` is plain uniform. Then t ← t_min + (1−t_min)·t,
  because w ~ 1/t blows up at 0 (see schedules.py). The mask and CFG draws of a row come from
  a generator seeded by the row's global index (`Noise.per_row`), so neither the world size
  nor the micro-batching changes what a row sees.
- CFG dropout: in a document holding text AND image or audio (a pair), with probability
  cfg_drop_prob the condition (the text of a <t2i>/<t2s> document, the media of an <i2t>/<s2t>
  one) is replaced by <mask> and taken out of the loss and the count, so the model also learns
  the unconditional distribution that guidance needs. The sampler builds its unconditional
  input the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from trimodal.dataset.schema import MODALITIES
from trimodal.model.config import DiffusionConfig
from trimodal.model.schedules import Schedule, make_schedule
from trimodal.tokenizers.vocab import MODALITY_IDS

MASKABLE = MODALITIES


@dataclass
class Corruption:
    noisy: torch.Tensor  # [B, L] int64 model input
    masked: torch.Tensor  # [B, L] bool: replaced by <mask> and in the loss
    weight: torch.Tensor  # [B, L] float: ELBO weight (0 where not masked)
    maskable: torch.Tensor  # [B, L] bool: counted in the normalization
    dropped: torch.Tensor  # [B, L] bool: condition hidden for CFG
    t: torch.Tensor  # [B]

    def rows(self, sl: slice) -> Corruption:
        """The corruption of a slice of the rows (a micro-batch)."""
        return Corruption(**{f.name: getattr(self, f.name)[sl] for f in fields(self)})


@dataclass
class LossOutput:
    """Sums, not means, so micro-batches and ranks can be added up before normalizing. All are
    tensors on the batch's device: reading them as numbers is left to the caller (one host sync
    per step in the trainer, not one per micro-batch)."""

    loss_sum: torch.Tensor  # Σ w·CE over masked tokens (differentiable)
    count: torch.Tensor  # maskable tokens (the normalizer)
    modality_sums: torch.Tensor  # [3] Σ w·CE per modality of MASKABLE (detached)
    modality_counts: torch.Tensor  # [3] maskable tokens per modality
    masked: torch.Tensor  # tokens masked

    @property
    def loss(self) -> torch.Tensor:
        return self.loss_sum / self.count.clamp_min(1)

    @property
    def per_modality(self) -> dict[str, float]:
        """Per-token loss of each modality present in the batch."""
        s, n = self.modality_sums.tolist(), self.modality_counts.tolist()
        return {m: s[i] / n[i] for i, m in enumerate(MASKABLE) if n[i] > 0}


def stratified_t(n_total: int, start: int, count: int, mode: str, shared: torch.Generator, device=None) -> torch.Tensor:
    """Times in [0, 1) for rows start..start+count of a global batch of n_total rows.

    Stratified modes give each row one stratum [k/n, (k+1)/n) of a random permutation drawn
    anew every step: row i is NOT tied to stratum i, so a mixer whose row pattern repeats
    (rows of one source always at the same indices) still sees every t, for every modality.
    `shared` must be seeded identically on every rank so the strata line up across ranks."""
    if mode == "iid":
        return torch.rand(n_total, generator=shared)[start : start + count].to(device)
    if mode == "stratified":
        u = torch.rand(1, generator=shared).expand(n_total)
    elif mode == "stratified_per_row":
        u = torch.rand(n_total, generator=shared)
    else:
        raise ValueError(f"unknown t_sampling {mode!r}")
    strata = torch.randperm(n_total, generator=shared)
    t = (strata.double() + u.double()) / n_total
    return t[start : start + count].float().to(device)


@dataclass
class Noise:
    """The uniforms a corruption consumes: `token` [B, L] decides masking, `doc` [B, L+1] decides
    CFG dropout per (row, segment id)."""

    token: torch.Tensor
    doc: torch.Tensor

    @classmethod
    def draw(cls, B: int, L: int, generator: torch.Generator | None = None) -> Noise:
        return cls(torch.rand(B, L, generator=generator), torch.rand(B, L + 1, generator=generator))

    def to(self, device, non_blocking: bool = False) -> Noise:
        return Noise(self.token.to(device, non_blocking=non_blocking), self.doc.to(device, non_blocking=non_blocking))

    @classmethod
    def per_row(cls, seeds, L: int) -> Noise:
        """One generator per row, seeded by the row's global identity: a row gets the same noise
        whatever the world size or micro-batching, which keeps training elastic and resumable."""
        tok, doc = [], []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            tok.append(torch.rand(L, generator=g))
            doc.append(torch.rand(L + 1, generator=g))
        return cls(torch.stack(tok), torch.stack(doc))


class DiffusionLoss:
    def __init__(self, cfg: DiffusionConfig, vocab):
        self.cfg = cfg
        self.mask_id = vocab.mask_id
        self.reverse_ids = [vocab.special("<i2t>"), vocab.special("<s2t>")]
        self.schedules: dict[str, Schedule] = {
            m: make_schedule(cfg.modality_schedules.get(m, cfg.schedule)) for m in MASKABLE
        }

    def schedule_for(self, modality: str) -> Schedule:
        return self.schedules[modality]

    def scale_t(self, t: torch.Tensor) -> torch.Tensor:
        return self.cfg.t_min + (1.0 - self.cfg.t_min) * t

    # ----------------------------------------------------------------------------------
    def corrupt(
        self,
        batch: dict,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: Noise | None = None,
        masked: torch.Tensor | None = None,
        dropped: torch.Tensor | None = None,
    ) -> Corruption:
        """Noise a batch. `t` [B] (already in [t_min, 1]) and `noise` may be given (the trainer
        derives both from the global row index); `masked` / `dropped` [B, L] fix the outcome
        outright (tests). What is not given is drawn from `generator`."""
        tokens, modality = batch["tokens"].long(), batch["modality"]
        B, L = tokens.shape
        dev = tokens.device
        if t is None:
            t = self.scale_t(torch.rand(B, generator=generator).to(dev))
        if noise is None and (masked is None or dropped is None):
            noise = Noise.draw(B, L, generator)
        t = t.to(dev, torch.float32)
        maskable = torch.zeros_like(tokens, dtype=torch.bool)
        p_mask = torch.zeros(B, L, device=dev)
        w = torch.zeros(B, L, device=dev)
        for m in MASKABLE:
            sel = modality == MODALITY_IDS[m]
            maskable |= sel
            s = self.schedules[m]
            p_mask = torch.where(sel, s.mask_prob(t)[:, None], p_mask)
            w = torch.where(sel, s.weight(t)[:, None], w)
        if dropped is None:
            dropped = (
                self._cfg_drop(batch, noise.doc.to(dev)) if self.cfg.cfg_drop_prob > 0 else torch.zeros_like(maskable)
            )
        dropped = dropped.to(dev) & maskable
        maskable = maskable & ~dropped
        if masked is None:
            masked = (noise.token.to(dev) < p_mask) & maskable
        else:
            masked = masked.to(dev)
            if (masked & ~maskable).any():
                raise ValueError("a fixed mask selects a token that is not maskable")
        noisy = torch.where(masked | dropped, torch.full_like(tokens, self.mask_id), tokens)
        return Corruption(
            noisy=noisy,
            masked=masked,
            weight=torch.where(masked, w, torch.zeros_like(w)),
            maskable=maskable,
            dropped=dropped,
            t=t,
        )

    def _cfg_drop(self, batch: dict, u_doc: torch.Tensor) -> torch.Tensor:
        """Condition tokens of pair documents whose condition is dropped this time: the text of a
        forward document (<t2i>, <t2s>), the media of a reverse one (<i2t>, <s2t>)."""
        tokens, modality, seg = batch["tokens"], batch["modality"], batch["segment_ids"].long()
        B, L = seg.shape
        dev = seg.device
        key = (torch.arange(B, device=dev)[:, None] * (L + 1) + seg.clamp(0, L)).reshape(-1)
        n = B * (L + 1)

        def per_doc(flag: torch.Tensor) -> torch.Tensor:
            return torch.zeros(n, device=dev).index_add_(0, key, flag.reshape(-1).float()) > 0

        is_text = modality == MODALITY_IDS["text"]
        is_media = (modality == MODALITY_IDS["image"]) | (modality == MODALITY_IDS["audio"])
        reverse = torch.zeros_like(seg, dtype=torch.bool)
        for rid in self.reverse_ids:  # comparisons with Python ints: no host-to-device copy
            reverse |= tokens == rid
        pair = per_doc(is_text) & per_doc(is_media)
        drop_doc = pair & (u_doc.reshape(-1) < self.cfg.cfg_drop_prob)
        drop_doc[0 :: L + 1] = False  # segment 0 is padding
        rev_doc = per_doc(reverse)[key].view(B, L)
        cond = torch.where(rev_doc, is_media, is_text)
        return drop_doc[key].view(B, L) & cond

    # ----------------------------------------------------------------------------------
    def __call__(
        self,
        model,
        batch: dict,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: Noise | None = None,
        masked: torch.Tensor | None = None,
        dropped: torch.Tensor | None = None,
    ) -> LossOutput:
        c = self.corrupt(batch, generator, t=t, noise=noise, masked=masked, dropped=dropped)
        return self.compute(model, batch, c)

    @staticmethod
    def loss_inputs(batch: dict, c: Corruption) -> tuple:
        """What the model's fused head needs: (targets, scale, groups, n_groups), [B, L] each.
        scale is the ELBO weight (0 where not masked: the position adds nothing); groups index
        MASKABLE (len(MASKABLE) for every other modality)."""
        mod = batch["modality"]
        groups = torch.full(mod.shape, len(MASKABLE), dtype=torch.long, device=mod.device)
        for i, m in enumerate(MASKABLE):
            groups = torch.where(mod == MODALITY_IDS[m], i, groups)
        return batch["tokens"].long(), c.weight, groups, len(MASKABLE)

    def compute(self, model, batch: dict, c: Corruption, mask=None) -> LossOutput:
        """The loss of corrupted rows: one forward of `model` with its fused head + weighted
        cross-entropy (static shapes, no host sync: the trainer's micro-step). `mask`: the rows'
        attention mask when the caller built it already (once per step)."""
        out = model(c.noisy, batch["positions"], batch["segment_ids"], mask=mask, loss=self.loss_inputs(batch, c))
        return self._output(out[0], out[1].detach(), batch, c)

    @staticmethod
    def _output(loss_sum: torch.Tensor, sums: torch.Tensor, batch: dict, c: Corruption) -> LossOutput:
        mod = batch["modality"]
        counts = torch.stack([(c.maskable & (mod == MODALITY_IDS[m])).sum() for m in MASKABLE])
        return LossOutput(
            loss_sum=loss_sum,
            count=c.maskable.sum(),
            modality_sums=sums.float(),
            modality_counts=counts.to(torch.float32),
            masked=c.masked.sum(),
        )
