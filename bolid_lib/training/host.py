"""The training host: diffusers' ``UNet2DConditionModel`` with a BoLID attention processor on its 70 ``attn2``.

The processor computes exactly what the ComfyUI patch computes (``bolid_lib.method.patch``): both call
``bolid_lib.method.attention.decoupled_attention`` on q, k, v of shape (B, N, H·d) with the branch K/V that the adapter's
``site_kv`` gives, so the weights trained here are the weights that run in ComfyUI (tests/unit/test_training_parity.py).

Branch tokens are computed once per UNet evaluation by ``AdapterTrainingModule.forward`` (the adapter is the only
module with trainable parameters) and read by the 70 processors through a shared ``BranchTokens`` holder. The
frozen UNet is kept outside the module's registered children, so DDP (``accelerate launch``) wraps and
synchronises the adapter alone and never broadcasts the UNet.

Shape letters: B batch, C latent channels, h, w latent size, N tokens, D Body-ID width, E CLIP feature width,
M context width (2048 for SDXL).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..method.adapter import BoLIDAdapter
from ..method.attention import Branch, decoupled_attention
from ..errors import BoLIDError
from ..method.sdxl_layers import NUM_SITES, SITES


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


class AdapterTrainingModule(nn.Module):
    """The trainable part (the adapter) plus the frozen UNet(s) it runs in.

    Only ``adapter`` is a registered child; ``unet`` (and the optional one-step ``shortcut_unet`` of the LCM-Lookahead
    preview) are frozen and held outside the parameter tree.
    """

    def __init__(self, adapter: BoLIDAdapter, unet: nn.Module, shortcut_unet: nn.Module | None = None):
        super().__init__()
        self.adapter = adapter
        self.tokens = BranchTokens()
        object.__setattr__(self, "unet", unet)
        object.__setattr__(self, "shortcut_unet", shortcut_unet)
        self.attach()

    def attach(self) -> None:
        """Install this module's processors on its UNet(s); done again automatically by ``forward`` when another
        module (sharing the UNet) has installed its own since, so the adapter never silently loses its gradient."""
        self._first_sites = []
        for unet in (self.unet, self.shortcut_unet):
            if unet is not None:
                install_processors(unet, self.adapter, self.tokens)
                self._first_sites.append(dict(unet.named_modules())[SITES[0].diffusers])

    def branch_tokens(self, ref_features: torch.Tensor | None, body: torch.Tensor | None) -> None:
        """Compute the branch tokens of this batch (with gradient) into the shared holder.

        ref_features: CLIP vision features (B, E) or (B, 257, E) (zeros for a dropped reference);
        body: c_body (B, D) (zeros for a dropped Body-ID).
        """
        a = self.adapter
        self.tokens.ref = a.ref_tokens(ref_features) if (a.ref is not None and ref_features is not None) else None
        self.tokens.body = a.body_tokens(body) if (a.body is not None and body is not None) else None

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor,
                time_ids: torch.Tensor, ref_features: torch.Tensor | None = None, body: torch.Tensor | None = None,
                shortcut_noisy: torch.Tensor | None = None, shortcut_timesteps: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """noisy (B, C, h, w), timesteps (B,), context (B, 77, M), pooled (B, P), time_ids (B, 6) ->
        (the UNet's prediction (B, C, h, w), the shortcut UNet's prediction at (shortcut_noisy, shortcut_timesteps)
        or None). Both evaluations see the same branch tokens, so the preview's gradient reaches the adapter."""
        if any(getattr(a.processor, "tokens", None) is not self.tokens for a in self._first_sites):
            self.attach()
        self.branch_tokens(ref_features, body)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        pred = self.unet(noisy, timesteps, encoder_hidden_states=context, added_cond_kwargs=added).sample
        short = None
        if shortcut_noisy is not None:
            if self.shortcut_unet is None:
                raise BoLIDError("preview 'shortcut' needs a shortcut UNet (shortcut_unet in the config)")
            short = self.shortcut_unet(shortcut_noisy, shortcut_timesteps, encoder_hidden_states=context,
                                       added_cond_kwargs=added).sample
        return pred, short
