"""The BoLID adapter: projections of the reference image and of the Body-ID, and per-site K/V (paper 4.3).

- Ref branch: CLIP vision output -> IP-Adapter projection (``ImageProjModel``: 4 tokens from
  ``image_embeds``; or ``Resampler``: 16 tokens from ``penultimate_hidden_states``) -> per site
  ``to_k_ref``, ``to_v_ref`` (2048 -> site width, no bias). Parameter names follow IP-Adapter, so the public
  IP-Adapter SDXL files load into this branch.
- Body branch: ``c_body`` (D) -> MLP -> ``T_b`` tokens of width 2048 -> LayerNorm -> per site ``to_k_body``,
  ``to_v_body``.

Split by idea, as diffusers splits projections, processors and loaders: the config is in ``adapter_config``,
the projections in ``projections``, this module holds the adapter's modules (per-site K/V, the two branches),
``adapter_files`` reads and writes its files (and imports IP-Adapter's), ``reference`` turns ComfyUI's reference
image into the ref branch's features. The names that lived here before keep importing from here.

Shape letters: R reference images, B batch, N tokens, E CLIP embed width, D Body-ID width, C context (2048).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BoLIDError
from .adapter_config import REF_KINDS, AdapterConfig, clip_vision_name  # noqa: F401 (also re-exported)
from .projections import BodyProjModel, ImageProjModel, PerceiverAttention, Resampler  # noqa: F401 (also re-exported)
from .sdxl_layers import site_widths


class _SiteKV(nn.Module):
    """The K and V projections of one branch at one site: context (C) -> site width, no bias."""

    def __init__(self, context_dim: int, width: int, suffix: str):
        super().__init__()
        self.suffix = suffix
        setattr(self, f"to_k_{suffix}", nn.Linear(context_dim, width, bias=False))
        setattr(self, f"to_v_{suffix}", nn.Linear(context_dim, width, bias=False))

    def kv(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, N, C) -> K, V (B, N, width), computed in float32."""
        x = tokens.float()
        k = F.linear(x, getattr(self, f"to_k_{self.suffix}").weight.float())
        v = F.linear(x, getattr(self, f"to_v_{self.suffix}").weight.float())
        return k, v


def _forward_fp32(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``module`` in float32 (half weights from a public file are slow or unsupported on CPU)."""
    if all(p.dtype == torch.float32 for p in module.parameters()):
        return module(x.float())
    return copy.deepcopy(module).float()(x.float())


class RefBranch(nn.Module):
    def __init__(self, cfg: AdapterConfig):
        super().__init__()
        if cfg.ref_kind == "plain":
            self.image_proj = ImageProjModel(cfg.context_dim, cfg.clip_embed_dim, cfg.ref_tokens)
        else:
            self.image_proj = Resampler(cfg.resampler_dim, cfg.resampler_depth, cfg.resampler_dim_head, cfg.resampler_heads,
                                        cfg.ref_tokens, cfg.clip_hidden_dim, cfg.context_dim, cfg.resampler_ff_mult)
        self.attn = nn.ModuleList(_SiteKV(cfg.context_dim, w, "ref") for w in site_widths(cfg.widths))


class BodyBranch(nn.Module):
    def __init__(self, cfg: AdapterConfig):
        super().__init__()
        self.proj = BodyProjModel(cfg.body_dim, cfg.body_hidden, cfg.body_tokens, cfg.context_dim)
        self.attn = nn.ModuleList(_SiteKV(cfg.context_dim, w, "body") for w in site_widths(cfg.widths))


class BoLIDAdapter(nn.Module):
    """Both branches of the BoLID adapter; either may be absent (``None``). Sites in canonical order."""

    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.config = config
        self.ref = RefBranch(config) if config.ref_kind is not None else None
        self.body = BodyBranch(config) if config.body_dim is not None else None
        self.source = "bolid"   # "bolid" or "ip-adapter": where the weights came from (for messages)
        # Fingerprint of the Body-ID VAE whose Body-IDs the body branch was trained on ("" when unknown):
        # a Body-ID of the right width from another VAE lives in another latent space.
        self.body_vae_fingerprint = ""

    def body_vae_mismatch(self, body_fingerprint: str) -> str | None:
        """A warning when a Body-ID was made by another Body-ID VAE than the one this adapter was trained with.

        A warning, not an error: the Body-ID still has the width the adapter reads, and a fine-tuned VAE may stay
        close to the original; but the body branch may then follow another body. None when both are known and
        equal, or either is unknown (an older file).
        """
        if not self.body_vae_fingerprint or not body_fingerprint or body_fingerprint == self.body_vae_fingerprint:
            return None
        return (f"this adapter was trained on Body-IDs of Body-ID VAE {self.body_vae_fingerprint}, but the Body-ID connected "
                f"was made by VAE {body_fingerprint}: the body branch may not follow this person; encode the photos again "
                "with the VAE the adapter was trained with")

    # -- tokens ----------------------------------------------------------------------------------

    def ref_tokens(self, clip_features: torch.Tensor) -> torch.Tensor:
        """CLIP vision features -> ref tokens (R, N_ref, C), float32.

        plain: ``image_embeds`` (R, E); plus: ``penultimate_hidden_states`` (R, 257, E).
        """
        cfg = self.config
        if self.ref is None:
            raise BoLIDError("this adapter has no reference-image branch: disconnect the reference image, or load an adapter with one (an IP-Adapter SDXL file)")
        want_ndim = 3 if cfg.ref_kind == "plus" else 2
        what = "penultimate_hidden_states (R, 257, E)" if cfg.ref_kind == "plus" else "image_embeds (R, E)"
        if clip_features.ndim != want_ndim:
            raise BoLIDError(f"the {cfg.ref_kind} ref branch reads CLIP vision {what}; got a tensor of shape {tuple(clip_features.shape)}")
        got = clip_features.shape[-1]
        if got != cfg.ref_input_dim:
            raise BoLIDError(
                f"this adapter needs a {clip_vision_name(cfg.ref_kind, cfg.ref_input_dim)} CLIP vision model; "
                f"the one connected gives {got}-dim features ({clip_vision_name(cfg.ref_kind, got)}): load the matching CLIP vision model")
        return _forward_fp32(self.ref.image_proj, clip_features)

    def body_tokens(self, c_body: torch.Tensor) -> torch.Tensor:
        """Body-ID vectors c_body (B, D) or (D,) -> body tokens (B, T_b, C), float32."""
        if self.body is None:
            raise BoLIDError("this adapter has no body branch (it is an image-only adapter, e.g. an IP-Adapter): disconnect the Body-ID, or load a BoLID adapter trained with one")
        if c_body.ndim == 1:
            c_body = c_body[None]
        if c_body.ndim != 2 or c_body.shape[-1] != self.config.body_dim:
            raise BoLIDError(
                f"this adapter reads Body-IDs of width D={self.config.body_dim}; the Body-ID connected has shape {tuple(c_body.shape)}: "
                "build the Body-ID with the Body-ID VAE this adapter was trained with")
        return _forward_fp32(self.body.proj, c_body)

    def site_kv(self, branch: str, site: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K, V (B, N, width) of ``branch`` ("ref" or "body") at canonical ``site`` for tokens (B, N, C), float32."""
        module = self.ref if branch == "ref" else self.body
        return module.attn[site].kv(tokens)

    def describe(self) -> str:
        cfg = self.config
        parts = []
        if cfg.ref_kind:
            feat = "hidden states" if cfg.ref_kind == "plus" else "image embeds"
            parts.append(f"ref branch: IP-Adapter {cfg.ref_kind} ({cfg.ref_tokens} tokens from {cfg.ref_input_dim}-dim CLIP {feat})")
        if cfg.body_dim:
            parts.append(f"body branch: Body-ID D={cfg.body_dim} -> {cfg.body_tokens} tokens")
        return "; ".join(parts)


# Names whose home moved to adapter_files / reference (issue 27), still importable from here. Looked up on first use:
# those modules import BoLIDAdapter from this one.
_MOVED = {name: "adapter_files" for name in (
    "FORMAT", "VERSION", "BODY_VAE_KEY", "save_adapter", "load_adapter", "ip_adapter_key", "bolid_ref_key",
    "ip_adapter_config", "ip_adapter_state_to_bolid", "bolid_ref_state_to_ip_adapter")}
_MOVED.update({name: "reference" for name in ("CLIP_FEATURE_KEYS", "DEFAULT_CLIP_IMAGE_SIZE", "encode_reference")})


def __getattr__(name: str):
    if name in _MOVED:
        if _MOVED[name] == "adapter_files":      # plain imports: the Registry's scanner flags dynamic ones
            from . import adapter_files as home
        else:
            from . import reference as home
        return getattr(home, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
