"""The BoLID adapter's config: its sizes and which branches it has (stored in its file's metadata).

Shape letters: E CLIP embed width, D Body-ID width, C context (2048).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import settings
from ..errors import BoLIDError
from .sdxl_layers import CONTEXT_DIM, SDXL_WIDTHS

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


__all__ = ["REF_KINDS", "AdapterConfig", "clip_vision_name"]
