"""The world's fixed image <-> latent map, in the interface of a diffusers VAE (what the adapter trainer calls).

Each 2x2 patch of an image in [-1, 1] (12 numbers) is projected on 4 fixed orthonormal directions: the patch's
mean red, green and blue (3) and its luminance left-minus-right difference (1, the vertical edges limb widths are
read from). Decoding is the transpose, so encode(decode(z)) = z exactly and decode(encode(x)) is x seen at half
resolution in colour with its vertical edges kept. No weights are learned: nothing in the experiment can lean on
a map fitted to its own data, and it costs two reshapes.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn


def projection() -> torch.Tensor:
    """(4, 12) orthonormal rows over a patch flattened as (channel, dy, dx)."""
    p = torch.zeros(4, 3, 2, 2)
    for ch in range(3):
        p[ch, ch] = 0.5
    p[3, :, :, 0] = 1.0
    p[3, :, :, 1] = -1.0
    p[3] /= p[3].norm()
    return p.reshape(4, 12)


class PatchLatentMap(nn.Module):
    """image (B, 3, H, W) in [-1, 1] <-> latent (B, 4, H/2, W/2). ``encode(x).latents``, ``decode(z).sample`` as
    diffusers' AutoencoderTiny (scaling factor 1), so the trainer's ``encode_images`` / ``decode_latents`` use it.
    It works on its input's device, wherever the trainer has moved it (its 4 x 12 projection goes along)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Parameter(projection(), requires_grad=False)
        self.config = SimpleNamespace(scaling_factor=1.0, shift_factor=None)

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        b, c, h, w = x.shape
        patches = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h // 2, w // 2, 12)
        z = patches @ self.proj.t().to(x.device)
        return SimpleNamespace(latents=z.permute(0, 3, 1, 2).contiguous())

    def decode(self, z: torch.Tensor) -> SimpleNamespace:
        b, _, h, w = z.shape
        patches = z.permute(0, 2, 3, 1) @ self.proj.to(z.device)              # (B, h, w, 12)
        x = patches.reshape(b, h, w, 3, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, 3, 2 * h, 2 * w)
        return SimpleNamespace(sample=x)


def to_latent(images: torch.Tensor, latent_map: PatchLatentMap) -> torch.Tensor:
    """images (B, 3, H, W) in [0, 1] -> latents."""
    with torch.no_grad():
        return latent_map.encode(images * 2 - 1).latents


def to_image(latents: torch.Tensor, latent_map: PatchLatentMap) -> torch.Tensor:
    """latents -> images in [0, 1]."""
    with torch.no_grad():
        return ((latent_map.decode(latents.float()).sample + 1) / 2).clamp(0, 1)


def round_trip(images: torch.Tensor, latent_map: PatchLatentMap) -> torch.Tensor:
    """What the world's decoder can show of an image: decode(encode(x))."""
    return to_image(to_latent(images, latent_map), latent_map)
