"""Skeleton drawing for previews: COCO-17 limbs and points over the photo.

Legend: B batch, H, W image size. Drawing happens with OpenCV on a separate overlay and is composited in
float, so the photo itself is not quantised to 8 bits where nothing is drawn.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..errors import BoLIDError
from .keypoints import COCO_SKELETON, PoseBatch

# One colour per limb (RGB 0-255): face limbs pink, arms warm, legs cool, torso green.
_FACE, _ARM_L, _ARM_R, _LEG_L, _LEG_R, _TORSO = (255, 80, 200), (255, 170, 0), (255, 60, 60), (0, 200, 255), (60, 90, 255), (40, 220, 90)
_LIMB_COLOURS = {
    (15, 13): _LEG_L, (13, 11): _LEG_L, (16, 14): _LEG_R, (14, 12): _LEG_R, (11, 12): _TORSO, (5, 11): _TORSO,
    (6, 12): _TORSO, (5, 6): _TORSO, (5, 7): _ARM_L, (6, 8): _ARM_R, (7, 9): _ARM_L, (8, 10): _ARM_R,
    (1, 2): _FACE, (0, 1): _FACE, (0, 2): _FACE, (1, 3): _FACE, (2, 4): _FACE, (3, 5): _FACE, (4, 6): _FACE,
}
_POINT_COLOUR = (255, 255, 255)


def draw_skeleton(images: torch.Tensor, pose: PoseBatch, *, thickness: int | None = None) -> torch.Tensor:
    """images (B, 3, H, W) float in [0, 1] + PoseBatch -> (B, 3, H, W) with the skeletons drawn (same device, float32).

    Only visible keypoints (confidence > 0) and limbs whose two ends are visible are drawn; images where no
    person was found are returned unchanged. thickness: line width in pixels (default: short side / 160).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise BoLIDError(f"images must have shape (B, 3, H, W); got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if len(pose) != b:
        raise BoLIDError(f"got {b} images but {len(pose)} poses: give one pose per image")
    if tuple(pose.image_size) != (h, w):
        raise BoLIDError(f"the pose refers to images of size {pose.image_size} but the images are {(h, w)}")
    t = thickness or max(1, round(min(h, w) / 160))
    radius = max(2, round(t * 1.5))
    kps = pose.keypoints.detach().float().cpu().numpy()
    found = pose.found.cpu().numpy()
    out = images.detach().float().clamp(0, 1)          # the output (a new tensor), in range before compositing
    pad = t + radius + 2                                # anti-aliased strokes reach this far past a keypoint
    for i in range(b):
        kp = kps[i]
        visible = kp[:, 2] > 0
        if not found[i] or not visible.any():
            continue
        # Draw and composite only the box around the visible keypoints (every stroke lies inside it): on a
        # 12 MP photo a full-frame overlay costs more than the pose model's own post-processing.
        x0 = max(0, int(np.floor(kp[visible, 0].min())) - pad)
        y0 = max(0, int(np.floor(kp[visible, 1].min())) - pad)
        x1 = min(w, int(np.ceil(kp[visible, 0].max())) + pad + 1)
        y1 = min(h, int(np.ceil(kp[visible, 1].max())) + pad + 1)
        if x1 <= x0 or y1 <= y0:
            continue                                    # every keypoint lies outside the image
        overlay = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)

        def at(k: int) -> tuple[int, int]:
            return int(round(kp[k, 0])) - x0, int(round(kp[k, 1])) - y0

        for a, c in COCO_SKELETON:
            if visible[a] and visible[c]:
                cv2.line(overlay, at(a), at(c), _LIMB_COLOURS.get((a, c), _TORSO), t, cv2.LINE_AA)
                cv2.line(mask, at(a), at(c), 255, t, cv2.LINE_AA)
        for k in np.flatnonzero(visible):
            cv2.circle(overlay, at(k), radius, _POINT_COLOUR, -1, cv2.LINE_AA)
            cv2.circle(mask, at(k), radius, 255, -1, cv2.LINE_AA)
        colour = torch.from_numpy(overlay).to(out.device).permute(2, 0, 1).float() / 255   # (3, h, w) of the box
        alpha = torch.from_numpy(mask).to(out.device).float()[None] / 255                # (1, h, w)
        region = out[i, :, y0:y1, x0:x1]
        # OpenCV's anti-aliased overlay is premultiplied by coverage
        region.mul_(1 - alpha).add_(colour).clamp_(0, 1)
    return out
