"""The BoLID adapter: projections of the reference image and of the Body-ID, and per-site K/V (paper 4.3).

- Ref branch: CLIP vision output -> IP-Adapter projection (``ImageProjModel``: 4 tokens from
  ``image_embeds``; or ``Resampler``: 16 tokens from ``penultimate_hidden_states``) -> per site
  ``to_k_ref``, ``to_v_ref`` (2048 -> site width, no bias). Parameter names follow IP-Adapter, so the public
  IP-Adapter SDXL files load into this branch.
- Body branch: ``c_body`` (D) -> MLP -> ``T_b`` tokens of width 2048 -> LayerNorm -> per site ``to_k_body``,
  ``to_v_body``.

Files: the BoLID format (``bolid.adapter``; keys under ``ref.`` and ``body.``; either branch may be absent;
config and version in metadata) and the public IP-Adapter SDXL files (``image_proj.*``,
``ip_adapter.{1,3,...,139}.to_k_ip/to_v_ip``), imported into the ref branch. A file's kind is read from its
keys and shapes, never from its name.

Shape letters: R reference images, B batch, N tokens, E CLIP embed width, D Body-ID width, C context (2048).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open

from .. import settings
from ..errors import BoLIDError
from ..files import (FORMAT_KEY, PICKLE_SUFFIXES, VERSION_KEY, describe_safetensors, read_format, read_safetensors,
                     save_safetensors_atomic, weights_mismatch)
from .sdxl_layers import CONTEXT_DIM, NUM_SITES, SDXL_WIDTHS, SITES, site_widths

log = logging.getLogger("bolid")

FORMAT = "bolid.adapter"
VERSION = 1
REF_KINDS = (None, "plain", "plus")


@dataclass(frozen=True)
class AdapterConfig:
    """Everything that fixes the adapter's parameter shapes; stored in the file's metadata.

    context_dim: text context width (2048 for SDXL); widths: widths of the two SDXL levels (640, 1280).
    ref_kind: None (no ref branch), "plain" (ImageProjModel on ``image_embeds`` (R, clip_embed_dim)) or
    "plus" (Resampler on ``penultimate_hidden_states`` (R, 257, clip_hidden_dim)); ref_tokens: tokens it makes.
    body_dim: D of the Body-ID (None: no body branch); body_tokens: T_b; body_hidden: width of the MLP.
    """

    context_dim: int = CONTEXT_DIM
    widths: tuple[int, int] = SDXL_WIDTHS
    ref_kind: str | None = None
    ref_tokens: int = 4
    clip_embed_dim: int = 1024
    clip_hidden_dim: int = 1280
    resampler_dim: int = 1280
    resampler_depth: int = 4
    resampler_heads: int = 20
    resampler_dim_head: int = 64
    resampler_ff_mult: int = 4
    body_dim: int | None = 756
    body_tokens: int = 4
    body_hidden: int = 1024

    def __post_init__(self):
        if self.ref_kind not in REF_KINDS:
            raise BoLIDError(f"adapter ref_kind must be one of {REF_KINDS}; got {self.ref_kind!r}")
        if self.ref_kind is None and self.body_dim is None:
            raise BoLIDError("an adapter needs at least one branch: set ref_kind ('plain' or 'plus') or body_dim")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 2:
            raise BoLIDError(f"adapter widths must be two numbers (the 640 and 1280 levels of SDXL); got {self.widths}")
        for name in ("context_dim", "ref_tokens", "clip_embed_dim", "clip_hidden_dim", "resampler_dim",
                     "resampler_depth", "resampler_heads", "resampler_dim_head", "resampler_ff_mult",
                     "body_tokens", "body_hidden"):
            if int(getattr(self, name)) <= 0:
                raise BoLIDError(f"adapter {name} must be positive; got {getattr(self, name)}")
        if self.body_dim is not None and int(self.body_dim) <= 0:
            raise BoLIDError(f"adapter body_dim must be positive or None; got {self.body_dim}")

    @property
    def ref_input_dim(self) -> int:
        """Width of the CLIP vision feature the ref branch reads (E)."""
        return self.clip_hidden_dim if self.ref_kind == "plus" else self.clip_embed_dim

    def to_dict(self) -> dict:
        return settings.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AdapterConfig":
        return settings.from_dict(cls, d, unknown="the adapter config has fields this ComfyUI-BoLID does not know "
                                                  "({}): update the pack")


def clip_vision_name(ref_kind: str, dim: int) -> str:
    """Which CLIP vision model gives features of width ``dim`` for a ref branch of ``ref_kind``."""
    table = {("plain", 1024): "ViT-H (1024-dim image embeds; clip_vision_h / CLIP-ViT-H-14-laion2B-s32B-b79K)",
             ("plain", 1280): "ViT-bigG (1280-dim image embeds; CLIP-ViT-bigG-14-laion2B-39B-b160k)",
             ("plus", 1280): "ViT-H (1280-dim hidden states; clip_vision_h / CLIP-ViT-H-14-laion2B-s32B-b79K)",
             ("plus", 1664): "ViT-bigG (1664-dim hidden states; CLIP-ViT-bigG-14-laion2B-39B-b160k)"}
    return table.get((ref_kind, dim), f"a CLIP vision model with {dim}-dim {'hidden states' if ref_kind == 'plus' else 'image embeds'}")


# --- projections (IP-Adapter parameter names) -------------------------------------------------------

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


# --- files ------------------------------------------------------------------------------------

BODY_VAE_KEY = "bolid.body_vae_fingerprint"   # metadata: the Body-ID VAE the body branch was trained with

# --- the reference the ref branch reads ------------------------------------------------------------

# Which CLIP vision output each ref kind reads: "plain" (ImageProjModel) the pooled image_embeds (R, E), "plus"
# (Resampler) the penultimate hidden states (R, 257, E).
CLIP_FEATURE_KEYS = {"plain": "image_embeds", "plus": "penultimate_hidden_states"}
# Side of the black image whose encoding is a plus adapter's "no image", for an encoder that names no image_size.
DEFAULT_CLIP_IMAGE_SIZE = 224


def encode_reference(adapter: "BoLIDAdapter", clip_vision=None, image=None, clip_vision_output=None):
    """(features, uncond features) of the reference for the adapter's ref branch, or (None, None) for no reference.

    The reference is given either as ``image`` (a ComfyUI IMAGE (R, H, W, 3) in [0, 1]) with ``clip_vision`` (an
    encoder: ``encode_image(IMAGE)`` returns a mapping with ``image_embeds`` and ``penultimate_hidden_states``;
    ``image_size``, its input side, is optional) or as an already encoded ``clip_vision_output`` (such a mapping),
    never both. features: what the adapter's ref kind reads (``CLIP_FEATURE_KEYS``), float32 on the CPU: (R, E)
    for "plain", (R, 257, E) for "plus". uncond: None for "plain" (its "no image" is zero image_embeds, the
    patch's default, as in IPAdapter_plus); for "plus", the same key of the encoding of one black image (1, 257, E)
    when ``clip_vision`` is given, as ComfyUI_IPAdapter_plus and this pack's trainer encode "no image", else None
    (the patch then uses zeros) with a warning. Every wrong combination is a BoLIDError that names the fix.
    """
    if image is None and clip_vision_output is None:
        if clip_vision is not None:
            raise BoLIDError("a CLIP vision model is connected but no reference image: connect the image too, or "
                             "disconnect the CLIP vision model")
        return None, None
    if image is not None and clip_vision_output is not None:
        raise BoLIDError("connect the reference as an image (with a CLIP vision model) or as a CLIP_VISION_OUTPUT, not both")
    if adapter.ref is None:
        raise BoLIDError("a reference is connected but this adapter has no reference-image branch: disconnect it, "
                         "or load an IP-Adapter SDXL file (or a BoLID adapter with a ref branch)")
    kind = adapter.config.ref_kind
    key = CLIP_FEATURE_KEYS[kind]
    if image is not None:
        if clip_vision is None:
            raise BoLIDError("the reference image needs a CLIP vision model: connect a Load CLIP Vision node with "
                             f"{clip_vision_name(kind, adapter.config.ref_input_dim)}")
        clip_vision_output = clip_vision.encode_image(image)
    features = clip_vision_output[key]
    if features is None:
        raise BoLIDError(f"the CLIP vision output has no {key}, which this {kind} adapter reads: encode with a CLIP vision model")
    uncond = None
    if kind == "plus":
        # "No image" for the unconditional rows of a plus adapter: the hidden states of a black image, as
        # ComfyUI_IPAdapter_plus encodes it (a zero IMAGE, then CLIP's normalisation), so the weights users run
        # there give the same picture here (tests/host/test_ipadapter_parity.py).
        if clip_vision is not None:
            size = getattr(clip_vision, "image_size", DEFAULT_CLIP_IMAGE_SIZE)
            uncond = clip_vision.encode_image(torch.zeros(1, size, size, 3))[key]            # (1, 257, E)
        else:
            log.warning("BoLID: no CLIP vision model connected, so the unconditional reference of this 'plus' adapter is "
                        "a zero tensor instead of the encoding of a black image (what IPAdapter_plus uses); connect the CLIP "
                        "vision model too to get IPAdapter_plus's picture")
    return features.float().cpu(), None if uncond is None else uncond.float().cpu()


def save_adapter(adapter: BoLIDAdapter, path: str | os.PathLike, *, overwrite: bool = True,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write ``adapter`` as one BoLID-format .safetensors (keys ``ref.*``, ``body.*``; config in metadata)."""
    tensors = {k: v for k, v in adapter.state_dict().items()}
    if adapter.body_vae_fingerprint:
        metadata = {**(metadata or {}), BODY_VAE_KEY: adapter.body_vae_fingerprint}
    return save_safetensors_atomic(tensors, path, fmt=FORMAT, version=VERSION, config=adapter.config.to_dict(),
                                   metadata=metadata, overwrite=overwrite)


def _peek(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Key -> shape and metadata of a safetensors file, reading only its header."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise BoLIDError(f"{path.name} is not a valid safetensors file ({e}); it may be truncated or of another format: get the file again") from e
    return shapes, meta


def _build(cfg: AdapterConfig, state: dict[str, torch.Tensor], name: str) -> BoLIDAdapter:
    """An adapter holding exactly ``state`` (no random init, no copy: built on the meta device, then assigned)."""
    with torch.device("meta"):
        adapter = BoLIDAdapter(cfg)
    details = weights_mismatch(adapter.state_dict(), state)
    if details:
        raise BoLIDError(f"{name} does not match its adapter config: {details}; the file is damaged or was written by another version: get it again")
    adapter.load_state_dict(state, strict=True, assign=True)
    return adapter.eval().requires_grad_(False)


def load_adapter(path: str | os.PathLike) -> BoLIDAdapter:
    """Load a BoLID adapter file or a public IP-Adapter SDXL file (into the ref branch), on the CPU.

    The kind is read from metadata, keys and shapes. Pickle files (.bin) are refused: they can run code.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BoLIDError(
            f"{path.name} is a pickle file ({path.suffix}), which can run arbitrary code when loaded, so BoLID does not open it: "
            "download the .safetensors release of the same adapter (h94/IP-Adapter publishes ip-adapter_sdxl_vit-h.safetensors, "
            "ip-adapter-plus_sdxl_vit-h.safetensors, ...) or convert the file to .safetensors once with a tool you trust")
    if not path.is_file():
        raise BoLIDError(f"adapter file not found: {path}")
    shapes, meta = _peek(path)
    fmt = meta.get(FORMAT_KEY)
    if fmt == FORMAT:
        version, config = read_format(meta, path, fmt=FORMAT, max_version=VERSION)
        cfg = AdapterConfig.from_dict(config)
        tensors, _ = read_safetensors(path)
        adapter = _build(cfg, tensors, path.name)
        adapter.source = "bolid"
        adapter.body_vae_fingerprint = meta.get(BODY_VAE_KEY, "")
        return adapter
    if fmt is not None:
        raise BoLIDError(f"{path.name} is a {fmt} file (version {meta.get(VERSION_KEY)}), not an adapter: pick a BoLID adapter or an IP-Adapter SDXL file")
    if any(k.startswith("ip_adapter.") for k in shapes) or any(k.startswith("image_proj.") for k in shapes):
        cfg = ip_adapter_config(shapes, path.name)
        tensors, _ = read_safetensors(path)
        adapter = _build(cfg, ip_adapter_state_to_bolid(tensors), path.name)
        adapter.source = "ip-adapter"
        log.info("loaded %s as an IP-Adapter SDXL file: %s", path.name, adapter.describe())
        return adapter
    raise BoLIDError(
        f"{path.name} is not an adapter: it is {describe_safetensors(path)}. "
        "Pick a BoLID adapter (models/bolid) or a public IP-Adapter SDXL .safetensors (models/ipadapter)")


# --- IP-Adapter import ------------------------------------------------------------------------

_IP_KEY = re.compile(r"^ip_adapter\.(\d+)\.to_([kv])_ip\.weight$")


def ip_adapter_key(site: int, kv: str) -> str:
    """The IP-Adapter key of canonical ``site``'s ``kv`` ("k" or "v") projection."""
    return f"ip_adapter.{SITES[site].ip_adapter_number}.to_{kv}_ip.weight"


def bolid_ref_key(site: int, kv: str) -> str:
    """The BoLID key of canonical ``site``'s ref-branch ``kv`` projection."""
    return f"ref.attn.{site}.to_{kv}_ref.weight"


def ip_adapter_config(shapes: dict[str, tuple[int, ...]], name: str = "the file") -> AdapterConfig:
    """The AdapterConfig (ref branch only) of an IP-Adapter SDXL file, from its keys and shapes.

    Refuses SD1.5/SD2 IP-Adapters, FaceID and full-face variants with a message that says what to use.
    """
    ip = {k: s for k, s in shapes.items() if k.startswith("ip_adapter.")}
    proj = {k[len("image_proj."):]: s for k, s in shapes.items() if k.startswith("image_proj.")}
    use_instead = "use ip-adapter_sdxl_vit-h, ip-adapter_sdxl, ip-adapter-plus_sdxl_vit-h or ip-adapter-plus-face_sdxl_vit-h (.safetensors)"
    if any("lora" in k for k in ip) or any(k.startswith(("proj.0.", "perceiver_resampler.")) for k in proj):
        raise BoLIDError(f"{name} is a FaceID IP-Adapter (it needs InsightFace face embeddings), which BoLID does not read: {use_instead}")
    if not ip or not proj:
        raise BoLIDError(f"{name} looks like part of an IP-Adapter ({'no ip_adapter.* keys' if not ip else 'no image_proj.* keys'}): get the complete file; {use_instead}")
    numbers: dict[int, dict[str, tuple[int, ...]]] = {}
    for k, s in ip.items():
        m = _IP_KEY.match(k)
        if not m:
            raise BoLIDError(f"{name} has an IP-Adapter key BoLID does not know ({k}): it is a variant BoLID does not read; {use_instead}")
        numbers.setdefault(int(m.group(1)), {})[m.group(2)] = s
    contexts = {s[1] for d in numbers.values() for s in d.values() if len(s) == 2}
    n_layers = len(numbers)
    if contexts != {CONTEXT_DIM} or n_layers != NUM_SITES:
        ctx = ", ".join(str(c) for c in sorted(contexts))
        family = {768: "an SD1.5 IP-Adapter", 1024: "an SD2 IP-Adapter"}.get(next(iter(contexts)) if len(contexts) == 1 else -1, "not an SDXL IP-Adapter")
        raise BoLIDError(
            f"{name} is {family}: its layers read a context of width {ctx} and it has {n_layers} cross-attention layers; "
            f"SDXL needs width {CONTEXT_DIM} and {NUM_SITES} layers. BoLID works with SDXL: {use_instead}")
    expected_numbers = {s.ip_adapter_number for s in SITES}
    if set(numbers) != expected_numbers:
        bad = sorted(set(numbers) ^ expected_numbers)[:5]
        raise BoLIDError(f"{name} has IP-Adapter layer numbers that SDXL does not use ({bad} ...): the file is damaged; get it again")
    widths: list[set[int]] = [set(), set()]
    for s in SITES:
        d = numbers[s.ip_adapter_number]
        if set(d) != {"k", "v"} or d["k"] != d["v"]:
            raise BoLIDError(f"{name}: ip_adapter.{s.ip_adapter_number} lacks to_k_ip or to_v_ip, or their shapes differ: the file is damaged; get it again")
        widths[s.level].add(d["k"][0])
    if any(len(w) != 1 for w in widths):
        raise BoLIDError(f"{name}: its layer widths {sorted(widths[0])} / {sorted(widths[1])} do not follow SDXL's two levels (640, 1280): the file is damaged or not an SDXL IP-Adapter")
    level_widths = (widths[0].pop(), widths[1].pop())

    if "proj.3.weight" in proj:
        raise BoLIDError(f"{name} is a 'full face' IP-Adapter (an SD1.5-only variant): {use_instead}")
    if set(proj) == {"proj.weight", "proj.bias", "norm.weight", "norm.bias"}:
        out, embed = proj["proj.weight"]
        if proj["norm.weight"] != (CONTEXT_DIM,) or out % CONTEXT_DIM:
            raise BoLIDError(f"{name}: its image projection makes tokens of width {proj['norm.weight'][0]}, not {CONTEXT_DIM}: not an SDXL IP-Adapter; {use_instead}")
        return AdapterConfig(widths=level_widths, ref_kind="plain", ref_tokens=out // CONTEXT_DIM, clip_embed_dim=embed, body_dim=None)
    if "latents" in proj:
        try:
            _, queries, dim = proj["latents"]
            dim_in, embed = proj["proj_in.weight"]
            output_dim, _ = proj["proj_out.weight"]
            depth = 1 + max(int(k.split(".")[1]) for k in proj if k.startswith("layers."))
            inner = proj["layers.0.0.to_q.weight"][0]
            ff_inner = proj["layers.0.1.1.weight"][0]
        except (KeyError, ValueError) as e:
            raise BoLIDError(f"{name} has a Resampler image projection missing a part ({e}): the file is damaged; get it again") from None
        if output_dim != CONTEXT_DIM or dim_in != dim:
            raise BoLIDError(f"{name}: its Resampler makes tokens of width {output_dim}, not {CONTEXT_DIM}: not an SDXL IP-Adapter (Kolors and others are not supported); {use_instead}")
        dim_head = 64
        return AdapterConfig(widths=level_widths, ref_kind="plus", ref_tokens=queries, clip_hidden_dim=embed,
                             resampler_dim=dim, resampler_depth=depth, resampler_heads=inner // dim_head,
                             resampler_dim_head=dim_head, resampler_ff_mult=max(1, ff_inner // dim), body_dim=None)
    raise BoLIDError(f"{name} has an image projection BoLID does not know (keys {', '.join(sorted(proj)[:4])} ...): {use_instead}")


def ip_adapter_state_to_bolid(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """IP-Adapter keys -> BoLID keys: image_proj.X -> ref.image_proj.X; ip_adapter.(2i+1).to_k_ip -> ref.attn.i.to_k_ref."""
    out = {}
    for k, v in tensors.items():
        if k.startswith("image_proj."):
            out["ref." + k] = v
            continue
        m = _IP_KEY.match(k)
        if m is None:
            raise BoLIDError(f"unexpected IP-Adapter key {k}")
        site = (int(m.group(1)) - 1) // 2
        out[bolid_ref_key(site, m.group(2))] = v
    return out


def bolid_ref_state_to_ip_adapter(adapter: BoLIDAdapter) -> dict[str, torch.Tensor]:
    """The ref branch of ``adapter`` in IP-Adapter's key layout (the inverse of the import)."""
    if adapter.ref is None:
        raise BoLIDError("this adapter has no ref branch to export")
    out = {}
    for k, v in adapter.ref.state_dict().items():
        if k.startswith("image_proj."):
            out[k] = v
        else:
            _, site, name, _ = k.split(".")   # attn.{i}.to_k_ref.weight
            out[ip_adapter_key(int(site), name[3])] = v
    return out

