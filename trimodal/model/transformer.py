"""The bidirectional transformer over the unified vocabulary.

Pre-norm blocks (RMSNorm), rotary positions driven by the batch's `positions` (reset at each
document, so packed documents all start at position 0), SwiGLU MLP, no causal mask, attention
kept inside documents (attention.py). The embedding is padded to a multiple of
`vocab_multiple` rows for tensor-core friendly shapes; logits are cut back to the real
vocabulary so padded ids can never be predicted.

`forward(..., predict=mask)` applies the output head only at the selected positions: the loss
needs logits only where tokens were masked, which saves the largest matmul and the [B, L, V]
logits tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from trimodal.model.attention import attend, build_attention_mask, choose_backend
from trimodal.model.config import ModelConfig


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

    def forward(self, x, cos, sin, mask, backend):
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
        self.reset_parameters()

    def reset_parameters(self):
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue  # norm scales stay at 1
            # Residual output projections scaled down with depth (GPT-2 style) so the residual
            # stream's variance does not grow with the number of layers.
            s = std / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("out.weight", "down.weight")) else std
            nn.init.normal_(p, mean=0.0, std=s)

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not embeddings:
            n -= self.embed.weight.numel()
            if not self.cfg.tie_embeddings:
                n -= self.head.weight.numel()
        return n

    def hidden(self, tokens, positions, segment_ids) -> torch.Tensor:
        backend = choose_backend(self.cfg.attention, tokens.device)
        mask = build_attention_mask(backend, segment_ids)
        cos, sin = rotary_tables(positions, self.cfg.dim // self.cfg.n_heads, self.cfg.rope_theta)
        x = self.embed(tokens.long())
        for blk in self.blocks:
            x = blk(x, cos, sin, mask, backend)
        return self.norm(x)

    def forward(self, tokens, positions, segment_ids, predict: torch.Tensor | None = None) -> torch.Tensor:
        """tokens/positions/segment_ids [B, L] -> logits [B, L, V], or [N, V] at the N positions
        where the bool mask `predict` [B, L] is True. V is the real (unpadded) vocabulary size."""
        h = self.hidden(tokens, positions, segment_ids)
        if predict is not None:
            h = h[predict]
        return self.head(h)[..., : self.vocab_size]


def count_params(cfg: ModelConfig, vocab_size: int) -> dict:
    """Parameter counts of a config without allocating it (meta device)."""
    with torch.device("meta"):
        m = Transformer(cfg, vocab_size)
    return {"total": m.num_params(), "non_embedding": m.num_params(embeddings=False)}
