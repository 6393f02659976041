"""Random-weight adapter files of the real layouts, for tests and benchmarks (no ComfyUI needed).

- IP-Adapter SDXL files with the public key names and shapes (``image_proj.*``, ``ip_adapter.{1,3,...,139}.
  to_k_ip/to_v_ip.weight``): "plain" (ip-adapter_sdxl_vit-h: ImageProjModel from 1024-d embeds; or
  ip-adapter_sdxl: ViT-bigG, 1280-d) and "plus" (ip-adapter-plus_sdxl_vit-h / -plus-face: Resampler from
  1280-d hidden states). ``widths`` shrinks the per-site widths for reduced-width test UNets; the full
  SDXL widths (640, 1280) give the real shapes (about 700 MB in float16).
- An SD1.5 IP-Adapter layout (context 768, 16 layers), for refusal tests.
- BoLID-format adapter files (any config), random weights.
- Canary pickles: files whose unpickling creates a marker file, to prove a loader never unpickles them.

Usable as functions (tests, other helpers) or as a script:
    python tests/tools/make_test_models.py OUT_DIR [--widths 64 128]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bolid_lib.method.adapter import AdapterConfig, BoLIDAdapter, save_adapter  # noqa: E402
from bolid_lib.method.sdxl_layers import CONTEXT_DIM, SDXL_WIDTHS, SITES  # noqa: E402

class Canary:
    """A pickle payload: unpickling it creates ``path`` (and does nothing else), the proof that a file was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def save_canary_pt(path: str | Path, marker: str | Path) -> Path:
    """An ultralytics-looking ``.pt`` (torch.save zip) whose unpickling creates ``marker``."""
    torch.save({"model": Canary(marker), "train_args": {}}, str(path))
    return Path(path)


CLIP_EMBED = {"h": 1024, "bigg": 1280}      # image_embeds width
CLIP_HIDDEN = {"h": 1280, "bigg": 1664}     # penultimate_hidden_states width


def _randn(gen, *shape, std=0.02, dtype=torch.float16):
    return (torch.randn(*shape, generator=gen) * std).to(dtype)


def ip_adapter_state(kind: str = "plain", clip: str = "h", *, widths: tuple[int, int] = SDXL_WIDTHS,
                     context_dim: int = CONTEXT_DIM, seed: int = 0, dtype=torch.float16,
                     resampler_dim: int = 1280, resampler_depth: int = 4, resampler_heads: int = 20,
                     tokens: int | None = None, sites=SITES, std: float = 0.02,
                     clip_dim: int | None = None) -> dict[str, torch.Tensor]:
    """State dict of an IP-Adapter file with the public key names and shapes (random weights).

    kind "plain": image_proj.proj (tokens*C, E), image_proj.norm (C); "plus": the Resampler
    (latents (1, 16, dim), proj_in (dim, E), proj_out (C, dim), norm_out, layers.{i}.0/1.*).
    ip_adapter.{2i+1}.to_k_ip/to_v_ip.weight (width_i, C) for every site i. ``clip_dim`` overrides the CLIP
    feature width E (for tests with a reduced CLIP vision model).
    """
    gen = torch.Generator().manual_seed(seed)
    c = context_dim
    sd: dict[str, torch.Tensor] = {}
    if kind == "plain":
        n = tokens or 4
        e = clip_dim or CLIP_EMBED[clip]
        sd["image_proj.proj.weight"] = _randn(gen, n * c, e, std=std, dtype=dtype)
        sd["image_proj.proj.bias"] = _randn(gen, n * c, std=std, dtype=dtype)
        sd["image_proj.norm.weight"] = torch.ones(c, dtype=dtype)
        sd["image_proj.norm.bias"] = _randn(gen, c, std=std, dtype=dtype)
    elif kind == "plus":
        n = tokens or 16
        e = clip_dim or CLIP_HIDDEN[clip]
        d = resampler_dim
        inner = 64 * resampler_heads
        sd["image_proj.latents"] = _randn(gen, 1, n, d, std=d ** -0.5, dtype=dtype)
        sd["image_proj.proj_in.weight"] = _randn(gen, d, e, std=std, dtype=dtype)
        sd["image_proj.proj_in.bias"] = torch.zeros(d, dtype=dtype)
        sd["image_proj.proj_out.weight"] = _randn(gen, c, d, std=std, dtype=dtype)
        sd["image_proj.proj_out.bias"] = torch.zeros(c, dtype=dtype)
        sd["image_proj.norm_out.weight"] = torch.ones(c, dtype=dtype)
        sd["image_proj.norm_out.bias"] = _randn(gen, c, std=std, dtype=dtype)
        for i in range(resampler_depth):
            p = f"image_proj.layers.{i}"
            for norm in ("norm1", "norm2"):
                sd[f"{p}.0.{norm}.weight"] = torch.ones(d, dtype=dtype)
                sd[f"{p}.0.{norm}.bias"] = torch.zeros(d, dtype=dtype)
            sd[f"{p}.0.to_q.weight"] = _randn(gen, inner, d, std=std, dtype=dtype)
            sd[f"{p}.0.to_kv.weight"] = _randn(gen, 2 * inner, d, std=std, dtype=dtype)
            sd[f"{p}.0.to_out.weight"] = _randn(gen, d, inner, std=std, dtype=dtype)
            sd[f"{p}.1.0.weight"] = torch.ones(d, dtype=dtype)
            sd[f"{p}.1.0.bias"] = torch.zeros(d, dtype=dtype)
            sd[f"{p}.1.1.weight"] = _randn(gen, 4 * d, d, std=std, dtype=dtype)
            sd[f"{p}.1.3.weight"] = _randn(gen, d, 4 * d, std=std, dtype=dtype)
    else:
        raise ValueError(f"kind must be 'plain' or 'plus'; got {kind!r}")
    for s in sites:
        w = widths[s.level]
        sd[f"ip_adapter.{s.ip_adapter_number}.to_k_ip.weight"] = _randn(gen, w, c, std=std, dtype=dtype)
        sd[f"ip_adapter.{s.ip_adapter_number}.to_v_ip.weight"] = _randn(gen, w, c, std=std, dtype=dtype)
    return sd


def sd15_ip_adapter_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """An SD1.5 IP-Adapter's layout (ip-adapter_sd15): context 768, 16 cross-attention layers (numbers 1..31)."""
    gen = torch.Generator().manual_seed(seed)
    widths = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 1280]
    sd = {"image_proj.proj.weight": _randn(gen, 4 * 768, 1024), "image_proj.proj.bias": torch.zeros(4 * 768, dtype=torch.float16),
          "image_proj.norm.weight": torch.ones(768, dtype=torch.float16), "image_proj.norm.bias": torch.zeros(768, dtype=torch.float16)}
    for i, w in enumerate(widths):
        sd[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = _randn(gen, w, 768)
        sd[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = _randn(gen, w, 768)
    return sd


def save_ip_adapter(path: str | Path, kind: str = "plain", clip: str = "h", **kwargs) -> Path:
    """Write a random IP-Adapter SDXL .safetensors (no metadata, like the public files); see ip_adapter_state."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ip_adapter_state(kind, clip, **kwargs), str(path))
    return path


def fill_random_(module: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Normal(0, std) weights and biases (so a zero input still gives distinct tokens), unit norm weights; deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and p.ndim == 1 and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


def random_bolid_adapter(config: AdapterConfig | None = None, seed: int = 0, std: float = 0.02, **config_kwargs) -> BoLIDAdapter:
    """A BoLIDAdapter with random weights (config from ``config`` or the keyword arguments)."""
    cfg = config or AdapterConfig(**config_kwargs)
    return fill_random_(BoLIDAdapter(cfg), seed=seed, std=std).eval()


def save_bolid_adapter(path: str | Path, config: AdapterConfig | None = None, seed: int = 0, std: float = 0.02,
                       **config_kwargs) -> Path:
    """Write a random BoLID-format adapter file."""
    return save_adapter(random_bolid_adapter(config, seed=seed, std=std, **config_kwargs), path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--widths", type=int, nargs=2, default=list(SDXL_WIDTHS))
    ap.add_argument("--body-dim", type=int, default=756)
    a = ap.parse_args(argv)
    widths = tuple(a.widths)
    save_ip_adapter(a.out / "ipadapter" / "ip-adapter_sdxl_vit-h.safetensors", "plain", "h", widths=widths)
    save_ip_adapter(a.out / "ipadapter" / "ip-adapter-plus_sdxl_vit-h.safetensors", "plus", "h", widths=widths)
    save_bolid_adapter(a.out / "bolid" / "bolid_adapter.safetensors", widths=widths, ref_kind="plain", clip_embed_dim=1024,
                       body_dim=a.body_dim)


if __name__ == "__main__":
    main()
