"""The adapter's projections, with IP-Adapter's parameter names (so the public IP-Adapter SDXL files load):
the reference image's (``ImageProjModel``: 4 tokens from CLIP ``image_embeds``; ``Resampler``: 16 tokens from the
penultimate hidden states) and the Body-ID's (``BodyProjModel``: c_body -> T_b tokens).

Shape letters: R reference images, N tokens, E CLIP embed width, D Body-ID width, C context (2048).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ImageProjModel(nn.Module):
    """IP-Adapter's projection: image_embeds (R, E) -> (R, tokens, C). Keys: proj.*, norm.*."""

    def __init__(self, cross_attention_dim: int, clip_embeddings_dim: int, clip_extra_context_tokens: int):
        super().__init__()
        self.cross_attention_dim = cross_attention_dim
        self.clip_extra_context_tokens = clip_extra_context_tokens
        self.proj = nn.Linear(clip_embeddings_dim, clip_extra_context_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        x = self.proj(image_embeds).reshape(-1, self.clip_extra_context_tokens, self.cross_attention_dim)
        return self.norm(x)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    inner = int(dim * mult)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    """IP-Adapter's perceiver attention (latents attend to image features and to themselves)."""

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.dim_head, self.heads = dim_head, heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        # x (R, N_img, dim), latents (R, N_q, dim)
        x, latents = self.norm1(x), self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        # (R, M, H·d) -> (R, H, M, d)
        q, k, v = (t.reshape(b, -1, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class Resampler(nn.Module):
    """IP-Adapter "plus" projection: hidden states (R, 257, E) -> (R, num_queries, C).

    Keys: latents, proj_in.*, proj_out.*, norm_out.*, layers.{i}.0.* (attention), layers.{i}.1.* (feed-forward).
    """

    def __init__(self, dim: int, depth: int, dim_head: int, heads: int, num_queries: int, embedding_dim: int,
                 output_dim: int, ff_mult: int):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)]) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.repeat(x.shape[0], 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class BodyProjModel(nn.Module):
    """c_body (B, D) -> MLP -> (B, T_b, C) -> LayerNorm."""

    def __init__(self, body_dim: int, hidden: int, tokens: int, context_dim: int):
        super().__init__()
        self.tokens, self.context_dim = tokens, context_dim
        self.mlp = nn.Sequential(nn.Linear(body_dim, hidden), nn.GELU(), nn.Linear(hidden, tokens * context_dim))
        self.norm = nn.LayerNorm(context_dim)

    def forward(self, c_body: torch.Tensor) -> torch.Tensor:
        return self.norm(self.mlp(c_body).reshape(-1, self.tokens, self.context_dim))


__all__ = ["ImageProjModel", "PerceiverAttention", "Resampler", "BodyProjModel"]
