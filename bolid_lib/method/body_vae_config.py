"""The Body-ID VAE's config: its sizes and how it cuts each view (stored in its file's metadata).

Shape letters: R input side, D latent width, F feature width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import settings
from ..errors import BoLIDError

CROPS = ("person", "image")


@dataclass(frozen=True)
class BodyVAEConfig:
    """Sizes of a Body-ID VAE; stored in its file.

    input_size: R, the side views are resized to. latent_dim: D. widths: channels of the encoder's
    stride-2 stages (the decoder mirrors them). feature_dim: F, the per-view feature. pool_size: the
    encoder's final spatial grid. heatmap_sigma: heat-map sigma as a fraction of R. beta: weight of the
    KL term. limb_head: train/predict limb ratios. groups: GroupNorm groups (divides every width).
    crop: "person" cuts a square around the view's visible keypoints (plus crop_margin of its side on each
    side) before resizing to R, so a person small in a large photo still fills the input; "image" letterboxes
    the whole image. keypoint_branch: add an MLP over scale-free keypoint geometry (torso-relative
    coordinates and distances) to each view's feature: body proportions are read off the keypoints directly
    instead of being left for the convolutions to infer from heat maps (segment lengths only, see
    GEOMETRY_PAIRS). tail_pool: kappa of the tail pooling of those segment ratios (0: off; needs the keypoint
    branch): besides the features' weighted mean, the Body-ID sees per segment the weighted soft maximum over
    views, log(mean_j exp(kappa r_j)) / kappa. Projection only shortens a segment, so the longest a segment
    appears over the views is the best estimate of its true length, whatever the poses; a plain mean drifts
    with how much the poses foreshorten. Streaming: it is a mean of exp(kappa r_j), a running sum like the rest.
    """

    input_size: int = 256
    latent_dim: int = 756
    widths: tuple[int, ...] = (32, 64, 128, 256, 256)
    feature_dim: int = 512
    pool_size: int = 4
    heatmap_sigma: float = 0.025
    beta: float = 1e-3
    limb_head: bool = True
    limb_weight: float = 1.0
    groups: int = 8
    crop: str = "person"
    crop_margin: float = 0.15
    keypoint_branch: bool = True
    tail_pool: float = 16.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.input_size < 8 or self.input_size % (2 ** len(self.widths)):
            raise BoLIDError(f"input_size must be >= 8 and divisible by 2**len(widths) = {2 ** len(self.widths)}; got {self.input_size}")
        if not self.widths or any(w < 1 or w % self.groups for w in self.widths):
            raise BoLIDError(f"widths must be positive multiples of groups={self.groups}; got {self.widths}")
        if self.latent_dim < 1 or self.feature_dim < 1 or self.pool_size < 1:
            raise BoLIDError(f"latent_dim, feature_dim and pool_size must be >= 1; got {self.latent_dim}, {self.feature_dim}, {self.pool_size}")
        if not (self.heatmap_sigma > 0 and math.isfinite(self.heatmap_sigma)):
            raise BoLIDError(f"heatmap_sigma must be > 0; got {self.heatmap_sigma}")
        if self.beta < 0:
            raise BoLIDError(f"beta must be >= 0; got {self.beta}")
        if not (self.tail_pool >= 0 and math.isfinite(self.tail_pool)):
            raise BoLIDError(f"tail_pool must be >= 0; got {self.tail_pool}")
        if self.crop not in CROPS:
            raise BoLIDError(f"crop must be one of {CROPS}; got {self.crop!r}")

    def to_dict(self) -> dict:
        return settings.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BodyVAEConfig":
        return settings.from_dict(cls, data, unknown="this Body-ID VAE config has fields this pack does not know "
                                                     "({}): update ComfyUI-BoLID")


__all__ = ["CROPS", "BodyVAEConfig"]
