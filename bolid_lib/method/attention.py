"""Decoupled cross-attention of BoLID (paper section 4.3), host-agnostic.

    Z' = Attn(Q, K_t, V_t) + λ_ref · Attn(Q, K_ref, V_ref) + λ_body · Attn(Q, K_b, V_b)

λ_body is the paper's λ_b; in code it is ``lambda_body`` everywhere (node input, PatchSettings, the trainer's
BranchTokens), as λ_ref is ``lambda_ref``.

Each branch is its own softmax over its own tokens (as in IP-Adapter), so a branch never competes with
the text for attention mass and a branch with λ = 0 can be dropped exactly.

Shapes (ComfyUI's convention for attention callables): q (B, N, H·d), k and v (B, M, H·d) with any M;
the result is (B, N, H·d) before the output projection. H heads, d head width.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

# attn_fn(q, k, v, heads) -> (B, N, H·d)
AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


class Branch(NamedTuple):
    """One extra attention branch: keys/values (B, M, H·d) and its weight.

    lambda_: the branch's λ (λ_ref or λ_body, times a block weight): a float, or a (B,) tensor of per-row
    values (0 switches the branch off for that row).
    """

    k: torch.Tensor
    v: torch.Tensor
    lambda_: float | torch.Tensor


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(Q Kᵀ / √d) V per head with torch's scaled_dot_product_attention. (B, N, H·d) -> (B, N, H·d)."""
    b, n, c = q.shape
    d = c // heads
    # (B, N, H·d) -> (B, H, N, d)
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, n, c)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """The textbook formula, softmax(Q Kᵀ / √d) V, evaluated directly in float64 (for tests)."""
    b, n, c = q.shape
    d = c // heads
    q, k, v = (t.double().reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    w = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)
    return (w @ v).transpose(1, 2).reshape(b, n, c)


def _is_off(scale: float | torch.Tensor) -> bool:
    if isinstance(scale, torch.Tensor):
        return bool((scale == 0).all())
    return scale == 0


def decoupled_attention(q: torch.Tensor, k_text: torch.Tensor, v_text: torch.Tensor,
                        branches: Sequence[Branch], heads: int, attn_fn: AttnFn | None = None,
                        text_out: torch.Tensor | None = None) -> torch.Tensor:
    """Text attention plus weighted image/body branches (paper 4.3).

    q (B, N, H·d); k_text, v_text (B, M_t, H·d); each branch's k, v (B, M_b, H·d) (a batch of 1 is
    broadcast). ``attn_fn`` is the attention implementation (ComfyUI passes its optimized_attention);
    default torch SDPA. ``text_out`` (B, N, H·d), when given, is used as the text term instead of
    computing it (e.g. the output of another pack's patch on the same layer).

    Branches whose weight is 0 are skipped, so with no active branch the result *is* ``attn_fn(q, k_text,
    v_text, heads)`` (the same call on the same inputs: bit for bit the plain attention).
    """
    attn = attn_fn or sdpa_attention
    out = text_out if text_out is not None else attn(q, k_text, v_text, heads)
    b = q.shape[0]
    for br in branches:
        if _is_off(br.lambda_):
            continue
        k, v = br.k, br.v
        if k.shape[0] != b:
            # materialised: some attention backends .view() their inputs
            k, v = k.expand(b, -1, -1).contiguous(), v.expand(b, -1, -1).contiguous()
        branch_out = attn(q, k, v, heads)
        if isinstance(br.lambda_, torch.Tensor):
            # (B,) per-row weights -> (B, 1, 1)
            out = out + branch_out * br.lambda_.to(branch_out).reshape(b, 1, 1)
        else:
            out = torch.add(out, branch_out, alpha=float(br.lambda_))
    return out
