"""Skeleton drawing for previews: COCO-17 limbs and points over the photo.

Legend: B batch, H, W image size. Drawing happens with OpenCV on a separate overlay and is composited in
float, so the photo itself is not quantised to 8 bits where nothing is drawn.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .errors import BoLIDError
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
    out = images.detach().float().clone()
    for i in range(b):
        if not found[i]:
            continue
        overlay = np.zeros((h, w, 3), np.uint8)
        mask = np.zeros((h, w), np.uint8)
        kp = kps[i]
        for a, c in COCO_SKELETON:
            if kp[a, 2] > 0 and kp[c, 2] > 0:
                p, q = (int(round(kp[a, 0])), int(round(kp[a, 1]))), (int(round(kp[c, 0])), int(round(kp[c, 1])))
                cv2.line(overlay, p, q, _LIMB_COLOURS.get((a, c), _TORSO), t, cv2.LINE_AA)
                cv2.line(mask, p, q, 255, t, cv2.LINE_AA)
        for k in range(kp.shape[0]):
            if kp[k, 2] > 0:
                centre = (int(round(kp[k, 0])), int(round(kp[k, 1])))
                cv2.circle(overlay, centre, radius, _POINT_COLOUR, -1, cv2.LINE_AA)
                cv2.circle(mask, centre, radius, 255, -1, cv2.LINE_AA)
        colour = torch.from_numpy(overlay).to(out.device).permute(2, 0, 1).float() / 255   # (3, H, W)
        alpha = torch.from_numpy(mask).to(out.device).float()[None] / 255                # (1, H, W)
        out[i] = out[i] * (1 - alpha) + colour  # OpenCV's anti-aliased overlay is premultiplied by coverage
    return out.clamp_(0, 1)
