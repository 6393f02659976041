"""The adapter's files: the BoLID format (``bolid.adapter``; keys under ``ref.`` and ``body.``; either branch may be
absent; config and version in metadata) and the public IP-Adapter SDXL files (``image_proj.*``,
``ip_adapter.{1,3,...,139}.to_k_ip/to_v_ip``), imported into the ref branch. A file's kind is read from its keys
and shapes, never from its name.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import BoLIDError
from ..files import (FORMAT_KEY, PICKLE_SUFFIXES, VERSION_KEY, describe_safetensors, read_format, read_safetensors,
                     save_safetensors_atomic, weights_mismatch)
from .adapter import BoLIDAdapter
from .adapter_config import AdapterConfig
from .sdxl_layers import CONTEXT_DIM, NUM_SITES, SITES

log = logging.getLogger("bolid")

FORMAT = "bolid.adapter"
VERSION = 1
BODY_VAE_KEY = "bolid.body_vae_fingerprint"   # metadata: the Body-ID VAE the body branch was trained with


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


__all__ = ["FORMAT", "VERSION", "BODY_VAE_KEY", "save_adapter", "load_adapter", "ip_adapter_key", "bolid_ref_key",
           "ip_adapter_config", "ip_adapter_state_to_bolid", "bolid_ref_state_to_ip_adapter"]
