"""The per-site logic of the BoLID model patch, host-agnostic (no ComfyUI import).

One ``BoLIDPatch`` holds what does not depend on the noisy latent: the branch tokens (reference image,
Body-ID, and the tokens of a zero embedding for unconditional rows) and, per site, K and V of each branch.
They are computed once (at construction, in float32 on the adapter's device) and cast once per
(device, dtype) on first use, then reused at every step and every row of the batch. The conditioning is
fixed per ``BoLIDPatch``: a new apply makes a new patch and so a new cache; the cache goes with the patch.

``BoLIDPatch.site(i, previous)`` gives the callable a host installs at site ``i``. ComfyUI calls it as
``fn(q, k, v, extra_options)`` with q (B, N, H·d) and k, v the text keys/values (B, 77, H·d), and expects the
pre-output-projection attention (B, N, H·d). ``extra_options`` supplies ``n_heads``, ``cond_or_uncond`` (one
entry per batch chunk: the chunk's index in the list of conditionings the guider evaluates), ``uuids`` (the
conditioning of each chunk) and ``sigmas`` (the current sigma per latent).

Which chunks are unconditional (they get the zero embedding's K/V): ComfyUI's KSampler evaluates [positive,
negative], so index 1 is the negative, the rule other packs use. Other guiders order their conditionings their own
way (ComfyUI's DualCFGGuider: [negative, middle, positive]; PerpNegGuider: [positive, negative, empty]), so the
index alone would give a negative prompt the body and the positive none. Where the host tells the roles (the node
pack's sampling wrapper puts ``{conditioning uuid: unconditional}`` under ``ROLES_KEY``, see ``cond_roles``), each
chunk's conditioning decides; a chunk the map does not know falls back to the index rule.

Batch rule for reference images (R of them, latent batch B): R = 1 is used for every latent; "average"
averages the R CLIP features into one before the projection (done by the caller, see ``average_refs``);
"per_latent" gives reference r to latent r and needs R = B (checked at the first step).
"""

from __future__ import annotations

import copy
import logging
import math
import types
from dataclasses import dataclass
from typing import Callable

import torch

from .adapter import BoLIDAdapter
from .attention import Branch, decoupled_attention, sdpa_attention
from ..errors import BoLIDError
from .sdxl_layers import CONTEXT_DIM, NUM_SITES, SITES, unet_sites

log = logging.getLogger("bolid")

# attention(q, k, v, heads, extra_options) -> (B, N, H·d); ComfyUI passes its optimized_attention.
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, dict], torch.Tensor]
# A previous attn2 replace patch: fn(q, k, v, extra_options) -> (B, N, H·d)
ReplacePatch = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]

BLOCKS = ("input", "middle", "output")
REF_BATCH_RULES = ("average", "per_latent")
UNCOND = 1  # ComfyUI's index of the unconditional chunk in cond_or_uncond (KSampler's [positive, negative])
ROLES_KEY = "bolid_uncond_by_uuid"   # transformer_options: {conditioning uuid: True when it is a negative}


def cond_roles(conds: dict) -> dict:
    """{uuid: unconditional} of a guider's conditionings ({name: [cond dict, ...]}, each dict with its ``uuid``).

    A conditioning is unconditional when the guider holds it as "negative" or when it is marked
    ``prompt_type: negative`` (how ComfyUI's DualCFGGuider marks its middle prompt and PerpNegGuider its empty one).
    """
    roles = {}
    for name, group in (conds or {}).items():
        for c in group or ():
            if isinstance(c, dict) and c.get("uuid") is not None:
                roles[c["uuid"]] = name == "negative" or c.get("prompt_type") == "negative"
    return roles


def uncond_chunks(extra_options: dict) -> list[bool]:
    """Per batch chunk, whether it is unconditional: by its conditioning's role when the host gave the roles, else
    by ComfyUI's index rule (chunk index 1)."""
    chunks = list(extra_options.get("cond_or_uncond") or [0])
    roles, uuids = extra_options.get(ROLES_KEY), extra_options.get("uuids")
    if roles and uuids is not None and len(uuids) == len(chunks):
        return [bool(roles.get(u, c == UNCOND)) for u, c in zip(uuids, chunks)]
    return [c == UNCOND for c in chunks]


def default_attention(q, k, v, heads, extra_options):
    return sdpa_attention(q, k, v, heads)


@dataclass(frozen=True)
class PatchSettings:
    """λ weights, the noise-level range and the per-block weights of a BoLID patch.

    The branches are on while ``noise_end <= σ_t <= noise_start``, σ_t the sampler's noise level (ComfyUI's
    ``sigmas``, falling during sampling; named ``noise_*`` here so that ``sigma`` in this pack means one thing, the
    weighting radius of eq. 11).
    block_weights_*: multipliers of λ for the (input, middle, output) blocks.
    """

    lambda_ref: float = 1.0
    lambda_body: float = 1.0
    noise_start: float = math.inf
    noise_end: float = 0.0
    block_weights_ref: tuple[float, float, float] = (1.0, 1.0, 1.0)
    block_weights_body: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ref_batch: str = "average"

    def __post_init__(self):
        for name in ("lambda_ref", "lambda_body", "noise_start", "noise_end"):
            if math.isnan(float(getattr(self, name))):
                raise BoLIDError(f"{name} is NaN: give a number")
        if self.noise_end > self.noise_start:
            raise BoLIDError(f"the branches end (sigma {self.noise_end:g}) before they start (sigma {self.noise_start:g}): make end_at larger than start_at")
        if self.ref_batch not in REF_BATCH_RULES:
            raise BoLIDError(f"ref_batch must be one of {REF_BATCH_RULES}; got {self.ref_batch!r}")
        for name in ("block_weights_ref", "block_weights_body"):
            w = tuple(float(x) for x in getattr(self, name))
            if len(w) != 3:
                raise BoLIDError(f"{name} needs 3 numbers (input, middle, output); got {w}")
            object.__setattr__(self, name, w)


def check_unet(unet, adapter_config) -> None:
    """Refuse a UNet the adapter cannot patch: not the SDXL layout (70 ``attn2`` sites), a text context other
    than 2048 (SD1.5 768, SD2 1024, the SDXL refiner 1280), or site widths other than the adapter's.

    ``unet`` is duck-typed on ComfyUI's layout (``input_blocks``, ``middle_block``, ``output_blocks``).
    """
    sites = unet_sites(unet)                                    # raises on a missing site
    contexts = {ctx for _, ctx, _ in sites}
    if contexts != {CONTEXT_DIM}:
        ctx = ", ".join(str(c) for c in sorted(contexts))
        family = {768: " (an SD1.5 model)", 1024: " (an SD2 model)", 1280: " (the SDXL refiner)"}.get(next(iter(contexts)), "")
        raise BoLIDError(f"the model's cross-attention reads a text context of width {ctx}{family}; BoLID patches SDXL "
                         f"(context {CONTEXT_DIM}): load an SDXL base checkpoint or a fine-tune of it")
    levels: list[set[int]] = [set(), set()]
    for s, (width, _, _) in zip(SITES, sites):
        levels[s.level].add(width)
    widths = tuple(sorted(x)[0] if len(x) == 1 else tuple(sorted(x)) for x in levels)
    if widths != tuple(adapter_config.widths):
        raise BoLIDError(f"the adapter is for an SDXL UNet of widths {tuple(adapter_config.widths)} but this model's cross-attention "
                         f"layers have widths {widths}: load the adapter made for this model (full SDXL is (640, 1280))")
    if adapter_config.context_dim != CONTEXT_DIM:
        raise BoLIDError(f"the adapter makes tokens of width {adapter_config.context_dim}, SDXL needs {CONTEXT_DIM}: it is not an SDXL adapter")


def average_refs(features: torch.Tensor) -> torch.Tensor:
    """CLIP features of R references (R, ...) -> their mean (1, ...): the "average" batch rule."""
    return features.mean(dim=0, keepdim=True)


class BoLIDPatch:
    """Branch K/V of every site for one conditioning, and the per-site callables.

    adapter: the loaded adapter. ref_features: CLIP vision features of the reference(s) (plain: image_embeds
    (R, E); plus: penultimate_hidden_states (R, 257, E)) or None. ref_uncond_features: the features of the
    "no image" input, (1, ...) (default zeros, as IP-Adapter is trained for image_embeds; for "plus" pass the
    hidden states of a black image, as ComfyUI_IPAdapter_plus does). c_body: the Body-ID c_body (D,) or (1, D) (``BodyEmbedding.mean``), or None. attention: the attention
    implementation. Sites with zero weight or branches with λ = 0 cost nothing.
    """

    def __init__(self, adapter: BoLIDAdapter, *, settings: PatchSettings, ref_features: torch.Tensor | None = None,
                 ref_uncond_features: torch.Tensor | None = None, c_body: torch.Tensor | None = None,
                 attention: Attention | None = None):
        self.settings = settings
        self.attention = attention or default_attention
        self.config = adapter.config
        if ref_features is None and c_body is None:
            raise BoLIDError("BoLID needs at least one branch: connect a reference image (with a CLIP vision model) or a Body-ID")
        if ref_features is not None and adapter.ref is None:
            raise BoLIDError("a reference image is connected but this adapter has no reference-image branch: "
                             "disconnect it, or load an adapter with one (an IP-Adapter SDXL file)")
        if c_body is not None and adapter.body is None:
            raise BoLIDError("a Body-ID is connected but this adapter has no body branch (an IP-Adapter file has only the image branch): "
                             "load a BoLID adapter trained with a body branch, or disconnect the Body-ID")
        self.n_refs = 0
        # branch name -> per site (K_cond, V_cond, K_uncond, V_uncond), float32 on the adapter's device
        self._base: dict[str, list[tuple[torch.Tensor, ...] | None]] = {}
        with torch.no_grad():
            if ref_features is not None:
                if settings.ref_batch == "average" and ref_features.shape[0] > 1:
                    ref_features = average_refs(ref_features)
                cond = adapter.ref_tokens(ref_features)                     # (R, N_ref, C)
                if ref_uncond_features is None:
                    ref_uncond_features = torch.zeros_like(ref_features[:1])
                uncond = adapter.ref_tokens(ref_uncond_features[:1])       # (1, N_ref, C)
                self.n_refs = cond.shape[0]
                self._base["ref"] = self._site_kv(adapter, "ref", cond, uncond, settings.lambda_ref, settings.block_weights_ref)
            if c_body is not None:
                c_body = c_body.reshape(1, -1) if c_body.ndim == 1 else c_body
                if c_body.shape[0] != 1:
                    raise BoLIDError(f"one Body-ID at a time: got {c_body.shape[0]}; blend them into one first")
                cond = adapter.body_tokens(c_body)                          # (1, T_b, C)
                uncond = adapter.body_tokens(torch.zeros_like(c_body))
                self._base["body"] = self._site_kv(adapter, "body", cond, uncond, settings.lambda_body, settings.block_weights_body)
        self._cache: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self._sigmas_seen = None
        self._noise_value = None
        self.site_calls = [0] * NUM_SITES  # calls per site (diagnostics: every site fires once per UNet forward)

    @staticmethod
    def _site_kv(adapter, branch, cond, uncond, lam, block_weights):
        out = []
        for s in SITES:
            if lam * block_weights[BLOCKS.index(s.block)] == 0:
                out.append(None)            # this site never uses the branch: no K/V kept
                continue
            k_c, v_c = adapter.site_kv(branch, s.index, cond)
            k_u, v_u = adapter.site_kv(branch, s.index, uncond)
            out.append((k_c, v_c, k_u, v_u))
        return out

    def __deepcopy__(self, memo):
        # ComfyUI 0.3.x deep-copies model_options on every ModelPatcher.clone() (0.33 shares such objects). The
        # conditioning K/V never change after construction, so clones share this object (and its cast cache)
        # instead of copying tensors; what can change (a SitePatch's added terms) is copied per clone.
        return self

    # -- model management ----------------------------------------------------------------------

    def to(self, device_or_dtype) -> "BoLIDPatch":
        """Follow the host's model moves: keep only the cast K/V on ``device`` (frees GPU memory on offload).

        A dtype is ignored (K/V are cast to the query's dtype on first use). Returns self.
        """
        if isinstance(device_or_dtype, (torch.device, str)):
            device = torch.device(device_or_dtype)
            self._cache = {k: v for k, v in self._cache.items() if _same_device(k[1], device)}
        return self

    def memory_bytes(self) -> int:
        """Bytes held by the float32 K/V of all sites and by the cast copies."""
        total = 0
        for sites in self._base.values():
            total += sum(t.numel() * t.element_size() for kv in sites if kv is not None for t in kv)
        total += sum(t.numel() * t.element_size() for kv in self._cache.values() for t in kv)
        return total

    # -- per call ------------------------------------------------------------------------------

    def _kv(self, branch: str, site: int, device: torch.device, dtype: torch.dtype):
        key = (branch, device, dtype, site)
        hit = self._cache.get(key)
        if hit is None:
            hit = tuple(t.to(device=device, dtype=dtype) for t in self._base[branch][site])
            self._cache[key] = hit
        return hit

    def _noise_level(self, extra_options: dict) -> float | None:
        sigmas = extra_options.get("sigmas")
        if sigmas is None:
            return None
        if sigmas is not self._sigmas_seen:
            # once per UNet forward (the same tensor object reaches all 70 sites): one device sync per step
            self._sigmas_seen = sigmas
            self._noise_value = float(sigmas.detach().max()) if isinstance(sigmas, torch.Tensor) else float(max(sigmas))
        return self._noise_value

    def active(self, extra_options: dict) -> bool:
        """Whether the current step lies in [noise_end, noise_start] (always True without sigmas)."""
        noise = self._noise_level(extra_options)
        return noise is None or self.settings.noise_end <= noise <= self.settings.noise_start

    def _rows(self, branch: str, site: int, q: torch.Tensor, extra_options: dict):
        """K, V of ``branch`` for every row of the batch (B, M, H·d): cond rows get the cond tokens'
        K/V, uncond rows those of the zero embedding."""
        k_c, v_c, k_u, v_u = self._kv(branch, site, q.device, q.dtype)
        b = q.shape[0]
        chunks = uncond_chunks(extra_options)
        if b % len(chunks):
            raise BoLIDError(f"batch of {b} rows does not split into {len(chunks)} cond/uncond chunks")
        per = b // len(chunks)
        if k_c.shape[0] not in (1, per):
            raise BoLIDError(
                f"{k_c.shape[0]} reference images for a batch of {per} latents with the 'one per latent' rule: "
                "give one reference, as many references as latents, or choose 'average'")
        if k_c.shape[0] == 1 and not any(chunks):
            return (k_c, v_c)            # broadcast inside decoupled_attention
        if k_c.shape[0] == 1 and all(chunks):
            return (k_u, v_u)
        ks, vs = [], []
        for uncond in chunks:
            if uncond:
                ks.append(k_u.expand(per, -1, -1))
                vs.append(v_u.expand(per, -1, -1))
            else:
                ks.append(k_c.expand(per, -1, -1))
                vs.append(v_c.expand(per, -1, -1))
        return torch.cat(ks), torch.cat(vs)

    def lambda_at(self, branch: str, block: str) -> float:
        """The branch's λ at a block: λ_ref or λ_body times the block weight."""
        s = self.settings
        if branch == "ref":
            return s.lambda_ref * s.block_weights_ref[BLOCKS.index(block)]
        return s.lambda_body * s.block_weights_body[BLOCKS.index(block)]

    def __call__(self, site: int, q, k, v, extra_options: dict, previous: ReplacePatch | None = None):
        """The attention output (B, N, H·d) at canonical ``site``; see the module docstring."""
        self.site_calls[site] += 1
        heads = extra_options["n_heads"]
        attn = self.attention

        def attn_fn(q_, k_, v_, h_):
            return attn(q_, k_, v_, h_, extra_options)

        text_out = previous(q, k, v, extra_options) if previous is not None else None
        branches = []
        if self.active(extra_options):
            block = SITES[site].block
            for name in ("ref", "body"):
                if name in self._base and self._base[name][site] is not None:
                    bk, bv = self._rows(name, site, q, extra_options)
                    branches.append(Branch(bk, bv, self.lambda_at(name, block)))
        return decoupled_attention(q, k, v, branches, heads, attn_fn=attn_fn, text_out=text_out)

    def site(self, index: int, previous: ReplacePatch | None = None) -> "SitePatch":
        if not 0 <= index < NUM_SITES:
            raise BoLIDError(f"site index must be in 0..{NUM_SITES - 1}; got {index}")
        return SitePatch(self, index, previous)


def detach_patch(fn):
    """A copy of an attention patch found on a site, owned by the model being patched.

    A ``SitePatch`` gets ``copy()``. Another pack's object (ComfyUI_IPAdapter_plus's ``Attn2Replace`` keeps its
    terms in lists that its ``add`` appends to) is shallow-copied with its list and dict attributes rebuilt, as
    ComfyUI 0.33's ``deepcopy_list_dict`` rebuilds model options: tensors and modules stay shared, containers
    that a later ``add`` could change do not. A plain function is returned as it is (nothing in it can change).
    """
    if isinstance(fn, SitePatch):
        return fn.copy()
    if isinstance(fn, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)) or not hasattr(fn, "__dict__"):
        return fn
    try:
        new = copy.copy(fn)
    except Exception:  # an object that cannot be copied is used as found (as 0.33 itself would share it)
        return fn
    for name, value in vars(new).items():
        if isinstance(value, (list, dict)):
            setattr(new, name, _copy_containers(value))
    return new


def _copy_containers(obj):
    if isinstance(obj, dict):
        return {k: _copy_containers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy_containers(v) for v in obj]
    return obj


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class SitePatch:
    """The callable installed at one site: ``fn(q, k, v, extra_options) -> (B, N, H·d)``.

    Wraps a previous replace patch of the same site (another pack's, or another BoLID patch), which then
    computes the text term, so both take effect. ``to``/``models`` reach the previous patch too, so the host's
    model management still sees it.
    """

    def __init__(self, patch: BoLIDPatch, index: int, previous: ReplacePatch | None = None):
        self.patch = patch
        self.index = index
        self.previous = previous
        self.added: list[tuple[Callable, dict]] = []

    def add(self, callback: Callable, **kwargs) -> None:
        """Take a later pack's attention term on top of this one (ComfyUI_IPAdapter_plus's stacking protocol).

        IPAdapter_plus, applied to a model that already has a replace patch at a site, does not wrap it: it calls
        ``existing.add(callback, **kwargs)`` and expects ``callback(out, q, k, v, extra_options, **kwargs)`` to
        return a term added to the output while ``sigma_end <= σ_t <= sigma_start`` (IPAdapter_plus's keywords). Without this method,
        BoLID Apply followed by an IPAdapter node failed with an AttributeError. The call changes this object
        only: the host gives every clone its own copy (see ``copy`` and ``nodes.adapter``), so it reaches no
        other model.
        """
        self.added.append((callback, kwargs))

    def copy(self) -> "SitePatch":
        """The same patch as a new object with its own list of added terms (what a model clone must hold).

        ComfyUI 0.3.x deep-copied model options on clone; ComfyUI 0.33 rebuilds only dicts and lists and shares
        every other object, so without a copy a later pack's ``add`` on one clone would reach the model it came
        from and all its other clones. The conditioning (``BoLIDPatch``) never changes and stays shared.
        """
        new = SitePatch(self.patch, self.index, self.previous)
        new.added = list(self.added)
        return new

    def __call__(self, q, k, v, extra_options):
        out = self.patch(self.index, q, k, v, extra_options, previous=self.previous)
        if self.added:
            sigmas = extra_options.get("sigmas")
            sigma = float(sigmas.detach().reshape(-1)[0]) if sigmas is not None else 999999999.9  # as IPAdapter_plus reads it
            for callback, kwargs in self.added:
                if kwargs.get("sigma_end", -math.inf) <= sigma <= kwargs.get("sigma_start", math.inf):
                    out = out + callback(out, q, k, v, extra_options, **kwargs)
            out = out.to(q.dtype)
        return out

    def to(self, device_or_dtype) -> "SitePatch":
        self.patch.to(device_or_dtype)
        if self.previous is not None and hasattr(self.previous, "to"):
            self.previous = self.previous.to(device_or_dtype)
        return self

    def models(self) -> list:
        """Models the host must load for this patch: none of BoLID's own (K/V are precomputed tensors)."""
        if self.previous is not None and hasattr(self.previous, "models"):
            return list(self.previous.models())
        return []
