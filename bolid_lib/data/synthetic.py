"""Procedural people for tests and for the Body-ID learning proof.

No real photos or pretrained weights can be had where this pack is developed and tested, so the
Body-ID VAE is trained and checked on synthetic people. A person's identity here is their *body
shape* only: limb lengths, limb and torso widths, head size, proportions. Each view draws a new
pose, scale, position and viewpoint, and new clothing, skin and background colours, so nothing but
shape can tell two people apart. The COCO-17 keypoints of every view are known exactly.

Rendering is a batched z-buffer over capsules, a torso quad and a head disc in plain torch: a few
thousand 64-128 px views take seconds on a CPU.

Legend: N identities, B views, S image side, P shape parameters, K = 17 keypoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import BoLIDError
from ..method.keypoints import NUM_KEYPOINTS

# Shape parameters of one identity, in body-height-free units (the renderer rescales every view).
SHAPE_PARAMS: tuple[tuple[str, float, float], ...] = (
    ("torso_len", 0.24, 0.36),
    ("neck_len", 0.03, 0.09),
    ("head_r", 0.050, 0.090),
    ("shoulder_half", 0.07, 0.15),
    ("hip_half", 0.045, 0.105),
    ("upper_arm", 0.13, 0.23),
    ("forearm", 0.11, 0.21),
    ("thigh", 0.19, 0.31),
    ("shin", 0.18, 0.30),
    ("arm_r", 0.018, 0.048),
    ("leg_r", 0.025, 0.065),
    ("torso_depth", 0.045, 0.10),
)
NUM_SHAPE_PARAMS = len(SHAPE_PARAMS)
_P = {name: i for i, (name, _, _) in enumerate(SHAPE_PARAMS)}


def random_shapes(n: int, seed: int) -> torch.Tensor:
    """(N, P) shape parameters of ``n`` identities, uniform in the ranges of ``SHAPE_PARAMS``."""
    if n < 1:
        raise BoLIDError(f"need at least one identity; got n={n}")
    g = torch.Generator().manual_seed(int(seed))
    lo = torch.tensor([p[1] for p in SHAPE_PARAMS])
    hi = torch.tensor([p[2] for p in SHAPE_PARAMS])
    return lo + (hi - lo) * torch.rand(n, NUM_SHAPE_PARAMS, generator=g)


def _rot_x(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([o, z, z], -1), torch.stack([z, c, -s], -1), torch.stack([z, s, c], -1)], -2)


def _rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)], -2)


def _rot_z(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)], -2)


def _limb(origin: torch.Tensor, length: torch.Tensor, swing: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """End point of a limb hanging down from ``origin`` (B,3), swung forward by ``swing`` about x and
    out sideways by ``spread`` about z (radians, (B,)); length (B,)."""
    down = torch.stack([torch.zeros_like(length), -length, torch.zeros_like(length)], -1)  # (B, 3)
    rot = _rot_z(spread) @ _rot_x(swing)  # (B, 3, 3)
    return origin + (rot @ down.unsqueeze(-1)).squeeze(-1)


def _bend(parent_dir: torch.Tensor, start: torch.Tensor, length: torch.Tensor, angle: torch.Tensor,
          axis_hint: torch.Tensor) -> torch.Tensor:
    """End point of a segment continuing ``parent_dir`` (B,3 unit) from ``start``, bent by ``angle`` (B,)
    in the plane spanned by parent_dir and axis_hint (B,3)."""
    perp = axis_hint - (axis_hint * parent_dir).sum(-1, keepdim=True) * parent_dir
    perp = perp / perp.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    d = torch.cos(angle)[:, None] * parent_dir + torch.sin(angle)[:, None] * perp
    return start + length[:, None] * d


@dataclass(frozen=True)
class RenderSettings:
    """How views are drawn. ``pose_range`` = (lo, hi) in [0, 1]: each joint's articulation is drawn as
    a fraction in that range of its maximum angle, so tests can hold out a range never seen in training."""

    size: int = 64
    pose_range: tuple[float, float] = (0.0, 1.0)
    min_height: float = 0.55   # person height as a fraction of the image side
    max_height: float = 0.92
    confidence_low: float = 0.6
    keypoint_noise_px: float = 0.0


def _poses(shapes: torch.Tensor, lo: float, hi: float, g: torch.Generator) -> dict[str, torch.Tensor]:
    """3D joint positions (B, 3) of each named joint, pelvis at the origin, y up, z towards the camera
    before the view rotation."""
    b = shapes.shape[0]

    def amp(max_deg: float, signed: bool = True) -> torch.Tensor:
        u = lo + (hi - lo) * torch.rand(b, generator=g)
        if signed:
            u = u * (torch.randint(0, 2, (b,), generator=g) * 2 - 1)
        return u * math.radians(max_deg)

    p = {k: shapes[:, i] for k, i in _P.items()}
    zero = torch.zeros(b)
    lean = _rot_x(amp(20)) @ _rot_z(amp(12))  # torso lean (B, 3, 3)

    def up(v: torch.Tensor) -> torch.Tensor:
        return (lean @ v.unsqueeze(-1)).squeeze(-1)

    j: dict[str, torch.Tensor] = {}
    j["pelvis"] = torch.zeros(b, 3)
    j["neck"] = up(torch.stack([zero, p["torso_len"], zero], -1))
    j["head"] = up(torch.stack([zero, p["torso_len"] + p["neck_len"] + p["head_r"], zero], -1))
    for side, sgn in (("l", 1.0), ("r", -1.0)):
        j[f"{side}_shoulder"] = up(torch.stack([sgn * p["shoulder_half"], 0.95 * p["torso_len"], zero], -1))
        j[f"{side}_hip"] = torch.stack([sgn * p["hip_half"], zero, zero], -1)
        # Arm: swing forward/back, raise sideways (outwards only), elbow bends forward.
        elbow = _limb(j[f"{side}_shoulder"], p["upper_arm"], -amp(90), sgn * amp(150, signed=False))
        arm_dir = elbow - j[f"{side}_shoulder"]
        arm_dir = arm_dir / arm_dir.norm(dim=-1, keepdim=True)
        fwd = torch.tensor([0.0, 0.0, 1.0]).expand(b, 3)
        j[f"{side}_elbow"] = elbow
        j[f"{side}_wrist"] = _bend(arm_dir, elbow, p["forearm"], amp(140, signed=False), fwd)
        # Leg: swing forward/back, spread outwards, knee bends backwards.
        knee = _limb(j[f"{side}_hip"], p["thigh"], -amp(80), sgn * amp(40, signed=False))
        leg_dir = knee - j[f"{side}_hip"]
        leg_dir = leg_dir / leg_dir.norm(dim=-1, keepdim=True)
        j[f"{side}_knee"] = knee
        j[f"{side}_ankle"] = _bend(leg_dir, knee, p["shin"], amp(130, signed=False), -fwd)
    # Head axes follow the torso lean.
    j["head_fwd"] = up(torch.tensor([0.0, 0.0, 1.0]).expand(b, 3).clone())
    j["head_right"] = up(torch.tensor([-1.0, 0.0, 0.0]).expand(b, 3).clone())  # the person's right is -x
    j["head_up"] = up(torch.tensor([0.0, 1.0, 0.0]).expand(b, 3).clone())
    return j


def _seg_dist2(xx: torch.Tensor, yy: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distance (B, S, S) from pixel centres (xx, yy: (S, S)) to segments a->c (B, 2)."""
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    dx, dy = (c[:, 0] - a[:, 0])[:, None, None], (c[:, 1] - a[:, 1])[:, None, None]
    px, py = xx[None] - ax, yy[None] - ay  # (B, S, S)
    t = ((px * dx + py * dy) / (dx * dx + dy * dy).clamp(min=1e-9)).clamp_(0, 1)
    return (px - t * dx).square_() + (py - t * dy).square_()


def render_views(shapes: torch.Tensor, seed: int, settings: RenderSettings = RenderSettings()) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one view per row of ``shapes``.

    shapes: (B, P) shape parameters (repeat an identity's row for several views of it).
    Returns images (B, 3, S, S) float in [0, 1] and keypoints (B, 17, 3): x, y in pixels, confidence;
    a keypoint facing away from the camera is all zeros (as a pose model's invisible points are).
    """
    if shapes.ndim != 2 or shapes.shape[1] != NUM_SHAPE_PARAMS:
        raise BoLIDError(f"shapes must have shape (B, {NUM_SHAPE_PARAMS}); got {tuple(shapes.shape)}")
    lo, hi = settings.pose_range
    if not 0.0 <= lo <= hi <= 1.0:
        raise BoLIDError(f"pose_range must satisfy 0 <= lo <= hi <= 1; got {settings.pose_range}")
    g = torch.Generator().manual_seed(int(seed))
    b, s = shapes.shape[0], settings.size
    shapes = shapes.float()
    j = _poses(shapes, lo, hi, g)
    p = {k: shapes[:, i] for k, i in _P.items()}

    # Viewpoint: any yaw, a little pitch and roll.
    yaw = torch.rand(b, generator=g) * 2 * math.pi
    pitch = (torch.rand(b, generator=g) * 2 - 1) * math.radians(12)
    roll = (torch.rand(b, generator=g) * 2 - 1) * math.radians(8)
    view = _rot_z(roll) @ _rot_x(pitch) @ _rot_y(yaw)  # (B, 3, 3)

    def cam(v: torch.Tensor) -> torch.Tensor:
        return (view @ v.unsqueeze(-1)).squeeze(-1)

    c = {k: cam(v) for k, v in j.items()}
    head_r = p["head_r"]
    names = ["pelvis", "neck", "head", "l_shoulder", "r_shoulder", "l_hip", "r_hip", "l_elbow", "r_elbow",
             "l_wrist", "r_wrist", "l_knee", "r_knee", "l_ankle", "r_ankle"]
    pts = torch.stack([c[n] for n in names], 1)  # (B, J, 3)
    # Orthographic projection; scale so the body's extent fits the drawn height, then place at random.
    top = pts[..., 1].amax(1) + head_r
    bottom = pts[..., 1].amin(1) - p["leg_r"]
    left = pts[..., 0].amin(1) - p["arm_r"] * 2
    right = pts[..., 0].amax(1) + p["arm_r"] * 2
    extent = torch.maximum(top - bottom, right - left)
    frac = settings.min_height + (settings.max_height - settings.min_height) * torch.rand(b, generator=g)
    scale = frac * s / extent  # px per unit (B,)
    span_x = (right - left) * scale
    span_y = (top - bottom) * scale
    ox = (s - span_x) * torch.rand(b, generator=g) - left * scale
    oy = (s - span_y) * torch.rand(b, generator=g) + top * scale

    def to_px(v: torch.Tensor) -> torch.Tensor:  # (B, 3) -> (B, 2), image y down
        return torch.stack([ox + v[:, 0] * scale, oy - v[:, 1] * scale], -1)

    # --- keypoints (COCO-17) ---------------------------------------------------------------------
    hc, hf, hr, hu = c["head"], c["head_fwd"], c["head_right"], c["head_up"]
    face = {
        0: hc + hf * head_r[:, None],
        1: hc + hf * 0.8 * head_r[:, None] - hr * 0.35 * head_r[:, None] + hu * 0.25 * head_r[:, None],  # left eye
        2: hc + hf * 0.8 * head_r[:, None] + hr * 0.35 * head_r[:, None] + hu * 0.25 * head_r[:, None],
        3: hc - hr * head_r[:, None],  # left ear
        4: hc + hr * head_r[:, None],
    }
    body = {5: "l_shoulder", 6: "r_shoulder", 7: "l_elbow", 8: "r_elbow", 9: "l_wrist", 10: "r_wrist",
            11: "l_hip", 12: "r_hip", 13: "l_knee", 14: "r_knee", 15: "l_ankle", 16: "r_ankle"}
    kp = torch.zeros(b, NUM_KEYPOINTS, 3)
    for k in range(NUM_KEYPOINTS):
        kp[:, k, :2] = to_px(face[k] if k in face else c[body[k]])
    # Face points are seen only from the side they are on (the camera looks along -z).
    facing = hf[:, 2]
    visible = torch.ones(b, NUM_KEYPOINTS, dtype=torch.bool)
    visible[:, 0:3] = (facing > -0.2)[:, None]
    visible[:, 3] = (-hr[:, 2]) > -0.5
    visible[:, 4] = hr[:, 2] > -0.5
    conf = settings.confidence_low + (1 - settings.confidence_low) * torch.rand(b, NUM_KEYPOINTS, generator=g)
    if settings.keypoint_noise_px > 0:
        kp[..., :2] += settings.keypoint_noise_px * torch.randn(b, NUM_KEYPOINTS, 2, generator=g)
    kp[..., 2] = conf
    kp = torch.where(visible[..., None], kp, torch.zeros(()))

    # --- colours, per view -----------------------------------------------------------------------
    def colour() -> torch.Tensor:
        return torch.rand(b, 3, generator=g)

    skin = 0.25 + 0.7 * torch.rand(b, 1, generator=g) * torch.tensor([1.0, 0.8, 0.65]) + 0.05
    top_c, bottom_c, bg_a, bg_b = colour(), colour(), colour(), colour()
    sleeves = torch.rand(b, 1, generator=g) < 0.5     # long sleeves: forearms in the top's colour
    trousers = torch.rand(b, 1, generator=g) < 0.5    # long trousers: shins in the bottom's colour
    fore_c = torch.where(sleeves, top_c, skin)
    shin_c = torch.where(trousers, bottom_c, skin)

    # Background: a random two-colour gradient plus noise and a few random rectangles.
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32) + 0.5, torch.arange(s, dtype=torch.float32) + 0.5, indexing="ij")
    px = torch.stack([xx, yy], -1)  # (S, S, 2)
    ang = torch.rand(b, generator=g) * 2 * math.pi
    t = ((xx[None] * torch.cos(ang)[:, None, None] + yy[None] * torch.sin(ang)[:, None, None]) / (s * 1.42) + 0.5).clamp(0, 1)
    img = bg_a[:, :, None, None] * (1 - t[:, None]) + bg_b[:, :, None, None] * t[:, None]
    for _ in range(3):
        r0 = torch.rand(b, 4, generator=g) * s
        x0, x1 = torch.minimum(r0[:, 0], r0[:, 1]), torch.maximum(r0[:, 0], r0[:, 1])
        y0, y1 = torch.minimum(r0[:, 2], r0[:, 3]), torch.maximum(r0[:, 2], r0[:, 3])
        m = ((xx[None] >= x0[:, None, None]) & (xx[None] < x1[:, None, None])
             & (yy[None] >= y0[:, None, None]) & (yy[None] < y1[:, None, None]))
        img = torch.where(m[:, None], colour()[:, :, None, None], img)
    img = img + 0.06 * torch.randn(b, 3, s, s, generator=g)

    # --- body: z-buffered parts ------------------------------------------------------------------
    zbuf = torch.full((b, s, s), -1e9)
    part = torch.zeros(b, s, s, dtype=torch.long)  # index into part_colours; 0 = background
    part_colours: list[torch.Tensor] = [torch.zeros(b, 3)]

    def paint(mask: torch.Tensor, depth: torch.Tensor, col: torch.Tensor) -> None:
        nonlocal zbuf, part
        d = depth[:, None, None].expand_as(zbuf)
        win = mask & (d > zbuf)
        zbuf = torch.where(win, d, zbuf)
        part = torch.where(win, len(part_colours), part)
        part_colours.append(col)

    def capsule(a: str, e: str, radius: torch.Tensor, col: torch.Tensor) -> None:
        d2 = _seg_dist2(xx, yy, to_px(c[a]), to_px(c[e]))
        paint(d2 <= ((radius * scale) ** 2)[:, None, None], (c[a][:, 2] + c[e][:, 2]) / 2, col)

    # Torso: quad between shoulders and hips plus a capsule of its depth (so a side view has a torso).
    quad = torch.stack([to_px(c["l_shoulder"]), to_px(c["r_shoulder"]), to_px(c["r_hip"]), to_px(c["l_hip"])], 1)  # (B,4,2)
    cross = []
    for i in range(4):
        a_, e_ = quad[:, i], quad[:, (i + 1) % 4]
        edge = (e_ - a_)[:, None, None, :]
        rel = px[None] - a_[:, None, None, :]
        cross.append(edge[..., 0] * rel[..., 1] - edge[..., 1] * rel[..., 0])
    cross = torch.stack(cross, 0)
    in_quad = (cross >= 0).all(0) | (cross <= 0).all(0)
    torso_depth = (c["l_shoulder"][:, 2] + c["r_shoulder"][:, 2] + c["l_hip"][:, 2] + c["r_hip"][:, 2]) / 4
    paint(in_quad, torso_depth, top_c)
    mid_sh = (c["l_shoulder"] + c["r_shoulder"]) / 2
    c["mid_sh"] = mid_sh
    capsule("mid_sh", "pelvis", p["torso_depth"], top_c)
    for side in ("l", "r"):
        capsule(f"{side}_shoulder", f"{side}_hip", p["torso_depth"] * 0.5, top_c)
        capsule(f"{side}_hip", f"{side}_knee", p["leg_r"], bottom_c)
        capsule(f"{side}_knee", f"{side}_ankle", p["leg_r"] * 0.8, shin_c)
        capsule(f"{side}_shoulder", f"{side}_elbow", p["arm_r"], top_c)
        capsule(f"{side}_elbow", f"{side}_wrist", p["arm_r"] * 0.85, fore_c)
    capsule("pelvis", "l_hip", p["leg_r"], bottom_c)
    capsule("pelvis", "r_hip", p["leg_r"], bottom_c)
    capsule("neck", "mid_sh", p["arm_r"] * 1.2, skin)
    capsule("neck", "head", p["arm_r"] * 1.2, skin)
    head_d = ((px[None] - to_px(c["head"])[:, None, None, :]).norm(dim=-1))
    paint(head_d <= (head_r * scale)[:, None, None], c["head"][:, 2] + head_r, skin)

    person = zbuf > -1e8
    table = torch.stack(part_colours, 1)  # (B, parts, 3)
    body_img = torch.gather(table, 1, part.reshape(b, -1, 1).expand(-1, -1, 3)).reshape(b, s, s, 3).permute(0, 3, 1, 2)
    shade = 0.85 + 0.15 * torch.rand(b, 1, 1, 1, generator=g)
    img = torch.where(person[:, None], body_img * shade, img)
    return img.clamp(0, 1), kp


@dataclass
class SyntheticSet:
    """Views of procedural people. images (B, 3, S, S), keypoints (B, 17, 3) px, person (B,) long index
    into ``shapes`` (N, P)."""

    images: torch.Tensor
    keypoints: torch.Tensor
    person: torch.Tensor
    shapes: torch.Tensor


def make_views(shapes: torch.Tensor, views_per_person: int, seed: int, settings: RenderSettings = RenderSettings(),
               chunk: int = 512) -> SyntheticSet:
    """``views_per_person`` fresh views of each identity in ``shapes`` (N, P), rendered in chunks."""
    n = shapes.shape[0]
    person = torch.arange(n).repeat_interleave(views_per_person)  # (B,)
    imgs, kps = [], []
    for i, start in enumerate(range(0, person.numel(), chunk)):
        idx = person[start:start + chunk]
        im, kp = render_views(shapes[idx], seed=int(seed) * 100003 + i, settings=settings)
        imgs.append(im)
        kps.append(kp)
    return SyntheticSet(torch.cat(imgs), torch.cat(kps), person, shapes)
