"""diffusers' side of the decoupled attention: BoLID's attention processor for diffusers' ``UNet2DConditionModel``.

ComfyUI's side is ``patch.py`` (an ``attn2`` replace patch on the ModelPatcher); both call
``attention.decoupled_attention`` (paper 4.3) on q, k, v of shape (B, N, H·d) with the branch K/V that the adapter's
``site_kv`` gives, so the weights trained through this host are the weights that run in ComfyUI
(tests/unit/test_training_parity.py). The trainer (``training/host.py``) and the world proof's sampler install it.

Branch tokens are computed once per UNet evaluation by the caller and read by the 70 processors through a shared
``BranchTokens`` holder. diffusers is imported only when processors are installed: importing this module needs
torch alone.

Shape letters: B batch, N tokens, M context width (2048 for SDXL), H heads, d head width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import BoLIDError
from .adapter import BoLIDAdapter
from .attention import Branch, decoupled_attention
from .sdxl_layers import NUM_SITES, SITES


@dataclass
class BranchTokens:
    """The branch tokens of the current UNet evaluation, shared by the 70 processors.

    ref, body: (B, N, M) tokens or None (branch absent). lambda_ref, lambda_body: λ of each branch (1 in training).
    """

    ref: torch.Tensor | None = None
    body: torch.Tensor | None = None
    lambda_ref: float = 1.0
    lambda_body: float = 1.0
    calls: int = field(default=0)

    def clear(self) -> None:
        self.ref = None
        self.body = None


class BoLIDAttnProcessor(nn.Module):
    """A diffusers attention processor for one SDXL ``attn2`` site (canonical index ``site``).

    Same contract as diffusers' ``AttnProcessor2_0`` for cross-attention, with the text term replaced by the
    decoupled attention of paper 4.3. Holds no parameters itself (the adapter does), so nothing is trained twice.
    """

    def __init__(self, site: int, adapter: BoLIDAdapter, tokens: BranchTokens):
        super().__init__()
        self.site = site
        object.__setattr__(self, "_adapter", adapter)   # not a child module: its parameters stay the adapter's
        self.tokens = tokens

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        """The pre-output-projection attention (B, N, H·d) from q (B, N, H·d) and text k, v (B, 77, H·d)."""
        adapter, st = self._adapter, self.tokens
        branches = []
        for name, tokens, scale in (("ref", st.ref, st.lambda_ref), ("body", st.body, st.lambda_body)):
            if tokens is None:
                continue
            bk, bv = adapter.site_kv(name, self.site, tokens)                # (B, N_b, width), float32
            branches.append(Branch(bk.to(q.dtype), bv.to(q.dtype), scale))
        st.calls += 1
        return decoupled_attention(q, k, v, branches, heads)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise BoLIDError("the BoLID processor sits on cross-attention (attn2) only; it was called without a context")
        if attention_mask is not None:
            raise BoLIDError("the BoLID processor does not take an attention mask (SDXL's cross-attention uses none)")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)          # (B, N, c)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        q = attn.to_q(hidden_states)                                                 # (B, N, H·d)
        k = attn.to_k(encoder_hidden_states)                                         # (B, 77, H·d)
        v = attn.to_v(encoder_hidden_states)
        out = self.attend(q, k, v, attn.heads).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def attn2_names(unet: nn.Module) -> list[str]:
    """The processor names of the 70 canonical sites in ``unet`` (diffusers naming), in canonical order.

    Raises BoLIDError when the UNet does not have SDXL's layout of cross-attention sites.
    """
    have = set(unet.attn_processors)
    names = [f"{s.diffusers}.processor" for s in SITES]
    missing = [n for n in names if n not in have]
    n_cross = sum(1 for n in have if n.endswith("attn2.processor"))
    if missing or n_cross != NUM_SITES:
        raise BoLIDError(
            f"the UNet has {n_cross} cross-attention sites and lacks {len(missing)} of SDXL's 70 "
            f"(first missing: {missing[:1]}): it is not an SDXL UNet; train on SDXL base or a fine-tune of it")
    return names


def check_unet_matches(unet: nn.Module, adapter: BoLIDAdapter) -> None:
    """Refuse an adapter whose widths or context width do not fit ``unet``."""
    cfg = adapter.config
    modules = dict(unet.named_modules())
    for s in SITES:
        attn = modules[s.diffusers]
        width, ctx = attn.to_q.out_features, attn.to_k.in_features
        want = cfg.widths[s.level]
        if width != want or ctx != cfg.context_dim:
            raise BoLIDError(
                f"site {s.key} of the UNet has width {width} and context {ctx}; the adapter expects {want} and "
                f"{cfg.context_dim}: build the adapter with widths={tuple(cfg.widths)} matching this UNet")


def install_processors(unet: nn.Module, adapter: BoLIDAdapter, tokens: BranchTokens) -> list[BoLIDAttnProcessor]:
    """Put a BoLIDAttnProcessor on each of the 70 attn2 sites of ``unet`` (self-attention keeps SDPA).

    Returns the processors in canonical order.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    names = attn2_names(unet)
    check_unet_matches(unet, adapter)
    procs = [BoLIDAttnProcessor(s.index, adapter, tokens) for s in SITES]
    by_name = dict(zip(names, procs))
    table = {n: by_name.get(n, AttnProcessor2_0()) for n in unet.attn_processors}
    unet.set_attn_processor(table)
    return procs


__all__ = ["BranchTokens", "BoLIDAttnProcessor", "attn2_names", "check_unet_matches", "install_processors"]
