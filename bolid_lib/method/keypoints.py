"""COCO-17 body keypoints and the batch type that carries them between steps.

Legend: B batch, K = 17 keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import BoLIDError

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


def view_confidence(keypoints: torch.Tensor) -> torch.Tensor:
    """(..., 17, 3) -> (...,) mean confidence of the visible keypoints (confidence > 0); 0 where none is visible.
    The weight of a view in a Body-ID and in the Body-ID VAE's training (``body_vae.view_weights``)."""
    conf = keypoints[..., 2]
    vis = conf > 0
    return torch.where(vis, conf, 0).sum(-1) / vis.sum(-1).clamp(min=1)


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
        return view_confidence(self.keypoints)

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


# --- POSE_KEYPOINT (the OpenPose-18 format comfyui_controlnet_aux emits) -------------------------
#
# One dict per image: {"people": [{"pose_keypoints_2d": [x, y, c] * 18, "face_keypoints_2d": None,
# "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}, ...], "canvas_width": W, "canvas_height": H}.
# OpenPose-18 order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, r-hip, r-knee,
# r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear. The neck is not a COCO point: it is the
# midpoint of the shoulders when both are visible.

OPENPOSE_KEYPOINTS: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
NUM_OPENPOSE_KEYPOINTS = len(OPENPOSE_KEYPOINTS)  # 18
OPENPOSE_NECK = 1
# COCO index of each OpenPose-18 point (None for the synthesised neck).
OPENPOSE_FROM_COCO: tuple[int | None, ...] = tuple(
    None if name == "neck" else KEYPOINT_INDEX[name] for name in OPENPOSE_KEYPOINTS
)


def _coco_to_openpose(kp: torch.Tensor) -> torch.Tensor:
    """(17, 3) COCO keypoints (x, y, conf; conf <= 0 = absent) -> (18, 3) OpenPose, visible points with c = 1."""
    out = torch.zeros(NUM_OPENPOSE_KEYPOINTS, 3, dtype=torch.float64)
    kp = kp.detach().to(torch.float64).cpu()
    for j, i in enumerate(OPENPOSE_FROM_COCO):
        if i is not None and kp[i, 2] > 0:
            out[j] = torch.tensor([kp[i, 0], kp[i, 1], 1.0], dtype=torch.float64)
    ls, rs = kp[KEYPOINT_INDEX["left_shoulder"]], kp[KEYPOINT_INDEX["right_shoulder"]]
    if ls[2] > 0 and rs[2] > 0:
        out[OPENPOSE_NECK] = torch.tensor([(ls[0] + rs[0]) / 2, (ls[1] + rs[1]) / 2, 1.0], dtype=torch.float64)
    return out


def pose_batch_to_pose_keypoint(pose: PoseBatch) -> list[dict]:
    """PoseBatch (B images) -> POSE_KEYPOINT: a list of B dicts in comfyui_controlnet_aux's format.

    Coordinates are pixels of the images the pose refers to (canvas_width x canvas_height); visible points
    are written with c = 1.0 (as controlnet_aux does), absent ones as 0, 0, 0; the neck is synthesised from
    the shoulders. An image where no person was found gets "people": [].
    """
    h, w = pose.image_size
    frames = []
    for b in range(len(pose)):
        people = []
        if bool(pose.found[b]):
            op = _coco_to_openpose(pose.keypoints[b])  # (18, 3)
            people.append({
                "pose_keypoints_2d": [float(v) for v in op.reshape(-1).tolist()],
                "face_keypoints_2d": None,
                "hand_left_keypoints_2d": None,
                "hand_right_keypoints_2d": None,
            })
        frames.append({"people": people, "canvas_width": int(w), "canvas_height": int(h)})
    return frames


def _frame_size(frame: dict, index: int) -> tuple[int, int] | None:
    ch, cw = frame.get("canvas_height"), frame.get("canvas_width")
    if ch is None or cw is None:
        return None
    try:
        ch, cw = int(ch), int(cw)
    except (TypeError, ValueError):
        raise BoLIDError(f"POSE_KEYPOINT frame {index}: canvas_width/canvas_height must be integers; got {cw!r}, {ch!r}") from None
    if ch <= 0 or cw <= 0:
        raise BoLIDError(f"POSE_KEYPOINT frame {index}: canvas size must be positive; got {cw} x {ch}")
    return ch, cw


def pose_keypoint_to_pose_batch(data, image_size: tuple[int, int] | None = None) -> PoseBatch:
    """POSE_KEYPOINT (a list of frame dicts, or one dict) -> PoseBatch (B = number of frames).

    Takes the first person of each frame; a frame with no person gets found = False and zero keypoints.
    Coordinates may be pixels of the frame's canvas or normalised to [0, 1] (a frame whose visible
    coordinates are all <= 1.0 is read as normalised). image_size (H, W): the size the keypoints must refer to,
    usually the images they will weight; pixel coordinates are rescaled from each frame's canvas to it.
    Without image_size every frame must carry the same canvas size. Points with c <= 0 are absent; c is kept
    for the rest (controlnet_aux writes 1.0). The box is the visible keypoints' bounding box.
    """
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)) or not data:
        raise BoLIDError(
            f"POSE_KEYPOINT must be a non-empty list of frame dicts with 'people'; got {type(data).__name__}"
            + (" (empty)" if isinstance(data, (list, tuple)) else "")
        )
    if image_size is not None:
        target = (int(image_size[0]), int(image_size[1]))
    else:
        sizes = {_frame_size(f, i) for i, f in enumerate(data) if isinstance(f, dict)}
        if None in sizes or len(sizes) != 1:
            raise BoLIDError(
                f"POSE_KEYPOINT frames carry canvas sizes {sorted(str(s) for s in sizes)}; one common canvas_width "
                "and canvas_height is needed when no image size is given: connect the images the pose belongs to"
            )
        target = sizes.pop()
    th, tw = target
    b = len(data)
    keypoints = torch.zeros(b, NUM_KEYPOINTS, 3)
    boxes = torch.zeros(b, 4)
    found = torch.zeros(b, dtype=torch.bool)
    for f, frame in enumerate(data):
        if not isinstance(frame, dict) or "people" not in frame:
            raise BoLIDError(f"POSE_KEYPOINT frame {f} must be a dict with a 'people' list; got {type(frame).__name__}")
        people = frame.get("people") or []
        if not people:
            continue
        flat = people[0].get("pose_keypoints_2d") if isinstance(people[0], dict) else None
        if not flat:
            continue
        if len(flat) != NUM_OPENPOSE_KEYPOINTS * 3:
            raise BoLIDError(
                f"POSE_KEYPOINT frame {f}: pose_keypoints_2d must hold 18 OpenPose body points (54 numbers); "
                f"got {len(flat)} numbers"
            )
        op = torch.tensor([float(v) for v in flat], dtype=torch.float64).reshape(NUM_OPENPOSE_KEYPOINTS, 3)
        vis = op[:, 2] > 0
        if not bool(vis.any()):
            continue
        if bool((op[vis, :2] <= 1.0).all()):  # normalised coordinates
            sx, sy = float(tw), float(th)
        else:
            size = _frame_size(frame, f)
            ch, cw = size if size is not None else target
            sx, sy = tw / cw, th / ch
        for j, i in enumerate(OPENPOSE_FROM_COCO):
            if i is not None and vis[j]:
                keypoints[f, i] = torch.tensor([op[j, 0] * sx, op[j, 1] * sy, op[j, 2]], dtype=torch.float32)
        vk = keypoints[f, keypoints[f, :, 2] > 0]
        if len(vk):
            found[f] = True
            boxes[f] = torch.stack([vk[:, 0].min(), vk[:, 1].min(), vk[:, 0].max(), vk[:, 1].max()])
    return PoseBatch(keypoints, boxes, found, (th, tw), {"source": "POSE_KEYPOINT"})
