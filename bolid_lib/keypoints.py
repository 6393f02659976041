"""COCO-17 body keypoints and the batch type that carries them between steps.

Legend: B batch, K = 17 keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import BoLIDError

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(COCO_KEYPOINTS)  # 17
KEYPOINT_INDEX = {name: i for i, name in enumerate(COCO_KEYPOINTS)}

# Limbs as pairs of COCO indices (the skeleton ultralytics and pycocotools draw), 0-based.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)


@dataclass
class PoseBatch:
    """One chosen person per image of a batch.

    keypoints: (B, 17, 3) float32, x and y in pixels of the original image, then confidence.
        A keypoint under the visibility threshold is all zeros (paper 4.2: "nullified").
    boxes: (B, 4) float32 xyxy in pixels of the chosen person; zeros where none was found.
    found: (B,) bool, whether a person was found in each image.
    image_size: (height, width) of the images the keypoints refer to.
    """

    keypoints: torch.Tensor
    boxes: torch.Tensor
    found: torch.Tensor
    image_size: tuple[int, int]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        kp = self.keypoints
        if kp.ndim != 3 or kp.shape[1:] != (NUM_KEYPOINTS, 3):
            raise BoLIDError(f"keypoints must have shape (B, 17, 3); got {tuple(kp.shape)}")
        b = kp.shape[0]
        if self.boxes.shape != (b, 4):
            raise BoLIDError(f"boxes must have shape ({b}, 4); got {tuple(self.boxes.shape)}")
        if self.found.shape != (b,):
            raise BoLIDError(f"found must have shape ({b},); got {tuple(self.found.shape)}")
        self.found = self.found.bool()

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    @property
    def visible(self) -> torch.Tensor:
        """(B, 17) bool: a keypoint is visible when its confidence is above zero."""
        return self.keypoints[..., 2] > 0

    def view_confidence(self) -> torch.Tensor:
        """(B,) mean confidence of each image's visible keypoints; 0 where none is visible."""
        conf = self.keypoints[..., 2]
        vis = self.visible
        return torch.where(vis, conf, 0).sum(-1) / vis.sum(-1).clamp(min=1)

    def select(self, index) -> "PoseBatch":
        """A sub-batch (index: int, slice, list or bool mask)."""
        if isinstance(index, int):
            index = [index]
        return PoseBatch(self.keypoints[index], self.boxes[index], self.found[index], self.image_size, dict(self.meta))

    @staticmethod
    def concat(poses: "list[PoseBatch]") -> "PoseBatch":
        if not poses:
            raise BoLIDError("no poses to join")
        sizes = {p.image_size for p in poses}
        if len(sizes) != 1:
            raise BoLIDError(f"poses refer to images of different sizes {sorted(sizes)}; resize the images to one size first")
        return PoseBatch(
            torch.cat([p.keypoints for p in poses]),
            torch.cat([p.boxes for p in poses]),
            torch.cat([p.found for p in poses]),
            poses[0].image_size,
        )
