"""The bidirectional transformer over the unified vocabulary.

Pre-norm blocks (RMSNorm), rotary positions driven by the batch's `positions` (reset at each
document, so packed documents all start at position 0), SwiGLU MLP, no causal mask, attention
kept inside documents (attention.py). The embedding is padded to a multiple of
`vocab_multiple` rows for tensor-core friendly shapes; logits are cut back to the real
vocabulary so padded ids can never be predicted.

Training calls `forward(..., loss=(targets, scale, groups, n_groups))`: the output head runs on
every position fused with a weighted cross-entropy in chunks (head_loss.py), so the step has
static shapes, no host sync and one compiled graph for model + loss. Sampling and evaluation
call `forward(..., predict=mask)`, which applies the head only at the selected positions.

Parameters are initialized per name (`init_weights`), so a model built on the meta device and
materialized shard by shard under FSDP2 holds the same values as one built whole on one device.
Their scales, the residual branch multiplier and the logits multiplier follow
`model.parameterization` (parameterization.py: standard, or CompleteP's width and depth rules).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trimodal.model.attention import attend, build_attention_mask, choose_backend
from trimodal.model.config import ModelConfig
from trimodal.model.head_loss import head_cross_entropy
from trimodal.model.parameterization import Multipliers, init_std


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, L] -> cos, sin [B, 1, L, head_dim/2] (float32)."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    ang = positions.to(torch.float32)[..., None] * inv
    return ang.cos()[:, None], ang.sin()[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the head dim; x [B, H, L, D]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.dim // cfg.n_heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, mask, backend):
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = attend(backend, q, k, v, mask)
        return self.out(y.transpose(1, 2).reshape(B, L, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.dim, 2 * cfg.ffn_hidden, bias=False)
        self.down = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)

    def forward(self, x):
        g, u = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(g) * u)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg)
        self.branch_scale = Multipliers.of(cfg).residual  # completep: (base_depth/depth)^α

    def forward(self, x, cos, sin, mask, backend):
        if self.branch_scale != 1.0:
            x = x + self.branch_scale * self.attn(self.attn_norm(x), cos, sin, mask, backend)
            return x + self.branch_scale * self.mlp(self.mlp_norm(x))
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, backend)
        return x + self.mlp(self.mlp_norm(x))


def padded_vocab(vocab_size: int, multiple: int) -> int:
    return ((vocab_size + multiple - 1) // multiple) * multiple


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        cfg = cfg.resolve()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.padded_vocab = padded_vocab(vocab_size, cfg.vocab_multiple)
        self.embed = nn.Embedding(self.padded_vocab, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, self.padded_vocab, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.output_scale = Multipliers.of(cfg).output  # completep: base_width/width on the logits
        self.reset_parameters()

    def _init_value(self, name: str, p: torch.Tensor, generator: torch.Generator | None, device) -> torch.Tensor:
        if p.dim() < 2:
            return torch.ones(p.shape, dtype=p.dtype, device=device)  # norm scales start at 1
        std = init_std(self.cfg, name)  # per parameterization (parameterization.py)
        return torch.empty(p.shape, dtype=p.dtype, device=device).normal_(0.0, std, generator=generator)

    def reset_parameters(self):
        """Initialize from the global RNG, parameter after parameter (direct construction)."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.device.type != "meta":
                    p.copy_(self._init_value(name, p, None, p.device))

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Initialize every parameter from its own generator, seeded by (seed, its name), drawn
        whole and then cut to this rank's shard when the parameter is a DTensor (FSDP2).
        The values therefore do not depend on the world size, the sharding or the order of
        construction: a model built on the meta device and materialized shard by shard equals
        one built whole. They do depend on the device type (CPU and CUDA generators differ).
        Cost: one full parameter at a time on the device (the largest, the embedding)."""
        from trimodal.model.seeding import seed_for

        for name, p in self.named_parameters():
            clean = name.replace("_orig_mod.", "")  # compiled blocks keep their plain names
            dev = p.device
            g = torch.Generator(device=dev).manual_seed(seed_for(seed, "init", clean))
            full = self._init_value(clean, p, g, dev)
            if hasattr(p, "to_local"):  # a DTensor: keep this rank's shard of the full value
                from torch.distributed.tensor import distribute_tensor

                local = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None).to_local()
                p.to_local().copy_(local)
            else:
                p.copy_(full)

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not embeddings:
            n -= self.embed.weight.numel()
            if not self.cfg.tie_embeddings:
                n -= self.head.weight.numel()
        return n

    def hidden(self, tokens, positions, segment_ids, mask=None) -> torch.Tensor:
        """Final hidden states [B, L, dim]. `mask`: the attention mask of these rows as built by
        `attention.attention_masks` (the trainer builds them once per step); built here if None."""
        backend = choose_backend(self.cfg.attention, tokens.device)
        if mask is None:
            mask = build_attention_mask(backend, segment_ids)
        cos, sin = rotary_tables(positions, self.cfg.dim // self.cfg.n_heads, self.cfg.rope_theta)
        x = self.embed(tokens.long())
        for blk in self.blocks:
            x = blk(x, cos, sin, mask, backend)
        if self.output_scale != 1.0:
            # the output logit multiplier, applied to h so that every use of the head gets it
            return self.norm(x) * self.output_scale
        return self.norm(x)

    def forward(
        self,
        tokens,
        positions,
        segment_ids,
        predict: torch.Tensor | None = None,
        *,
        mask=None,
        loss: tuple | None = None,
    ):
        """tokens/positions/segment_ids [B, L] ->

        - with `loss` = (targets, scale, groups, n_groups), each [B, L] but n_groups: the fused
          head + weighted cross-entropy over ALL positions (head_loss.py), returning
          (Σ scale·CE, per-group sums [n_groups]) with static shapes: what training compiles;
        - else logits [B, L, V]; or [N, V] at the N positions where the bool mask `predict`
          [B, L] is True (evaluation; a data-dependent shape); or [B, T, V] at the T positions
          listed by the integer tensor `predict` [T], the same in every row (sampling: a static
          shape, no host sync). V is the real (unpadded) vocabulary size."""
        h = self.hidden(tokens, positions, segment_ids, mask)
        if loss is not None:
            targets, scale, groups, n_groups = loss
            return head_cross_entropy(h, self.head.weight, targets, scale, groups, n_groups, self.vocab_size)
        if predict is not None:
            h = h[predict] if predict.dtype == torch.bool else h[:, predict]
        return self.head(h)[..., : self.vocab_size]


def count_params(cfg: ModelConfig, vocab_size: int) -> dict:
    """Parameter counts of a config without allocating it (meta device)."""
    with torch.device("meta"):
        m = Transformer(cfg, vocab_size)
    return {"total": m.num_params(), "non_embedding": m.num_params(embeddings=False)}
