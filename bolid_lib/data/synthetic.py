"""Procedural people for tests and for the Body-ID learning proof.

No real photos or pretrained weights can be had where this pack is developed and tested, so the
Body-ID VAE is trained and checked on synthetic people. A person's identity here is their *body
shape* only: limb lengths, limb and torso widths, head size, proportions. Each view draws a new
pose, scale, position and viewpoint, and new clothing, skin and background colours, so nothing but
shape can tell two people apart. The COCO-17 keypoints of every view are known exactly.

Rendering is a batched z-buffer over capsules, a torso quad and a head disc in plain torch: a few
thousand 64-128 px views take seconds on a CPU.

Legend: N identities, B views, S image side, P shape parameters, K = 17 keypoints. Inside the renderer
``c`` maps joint names to camera coordinates (B, 3) and ``p`` shape-parameter names to values (B,).
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


# Joints whose extent decides the framing of a view (the head's own axes are directions, not points).
_FRAMED_JOINTS = ("pelvis", "neck", "head", "l_shoulder", "r_shoulder", "l_hip", "r_hip", "l_elbow", "r_elbow",
                  "l_wrist", "r_wrist", "l_knee", "r_knee", "l_ankle", "r_ankle")
# COCO-17 indices 5..16 and the joint each one is; 0..4 (nose, eyes, ears) are placed on the head.
_COCO_BODY_JOINTS = {5: "l_shoulder", 6: "r_shoulder", 7: "l_elbow", 8: "r_elbow", 9: "l_wrist", 10: "r_wrist",
                     11: "l_hip", 12: "r_hip", 13: "l_knee", 14: "r_knee", 15: "l_ankle", 16: "r_ankle"}


def _to_camera(joints: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
    """The joints (B, 3) seen from a random viewpoint: any yaw, a little pitch and roll."""
    b = joints["pelvis"].shape[0]
    yaw = torch.rand(b, generator=g) * 2 * math.pi
    pitch = (torch.rand(b, generator=g) * 2 - 1) * math.radians(12)
    roll = (torch.rand(b, generator=g) * 2 - 1) * math.radians(8)
    view = _rot_z(roll) @ _rot_x(pitch) @ _rot_y(yaw)  # (B, 3, 3)
    return {k: (view @ v.unsqueeze(-1)).squeeze(-1) for k, v in joints.items()}


@dataclass(frozen=True)
class _Framing:
    """Orthographic projection of one batch of views: ``scale`` px per body unit (B,), offsets ox, oy (B,) px."""

    scale: torch.Tensor
    ox: torch.Tensor
    oy: torch.Tensor

    @staticmethod
    def draw(c: dict[str, torch.Tensor], p: dict[str, torch.Tensor], settings: RenderSettings,
             g: torch.Generator) -> _Framing:
        """Scale so the body's extent fits a random drawn height, then place it at random inside the image."""
        s = settings.size
        pts = torch.stack([c[n] for n in _FRAMED_JOINTS], 1)  # (B, J, 3)
        top = pts[..., 1].amax(1) + p["head_r"]
        bottom = pts[..., 1].amin(1) - p["leg_r"]
        left = pts[..., 0].amin(1) - p["arm_r"] * 2
        right = pts[..., 0].amax(1) + p["arm_r"] * 2
        extent = torch.maximum(top - bottom, right - left)
        frac = settings.min_height + (settings.max_height - settings.min_height) * torch.rand(pts.shape[0], generator=g)
        scale = frac * s / extent  # px per unit (B,)
        span_x = (right - left) * scale
        span_y = (top - bottom) * scale
        ox = (s - span_x) * torch.rand(pts.shape[0], generator=g) - left * scale
        oy = (s - span_y) * torch.rand(pts.shape[0], generator=g) + top * scale
        return _Framing(scale, ox, oy)

    def to_px(self, v: torch.Tensor) -> torch.Tensor:
        """(B, 3) camera coordinates -> (B, 2) pixels, image y down."""
        return torch.stack([self.ox + v[:, 0] * self.scale, self.oy - v[:, 1] * self.scale], -1)


def _keypoints(c: dict[str, torch.Tensor], head_r: torch.Tensor, framing: _Framing, settings: RenderSettings,
               g: torch.Generator) -> torch.Tensor:
    """(B, 17, 3) COCO keypoints in pixels with a random confidence; points facing away are all zeros."""
    b = head_r.shape[0]
    hc, hf, hr, hu = c["head"], c["head_fwd"], c["head_right"], c["head_up"]
    face = {
        0: hc + hf * head_r[:, None],
        1: hc + hf * 0.8 * head_r[:, None] - hr * 0.35 * head_r[:, None] + hu * 0.25 * head_r[:, None],  # left eye
        2: hc + hf * 0.8 * head_r[:, None] + hr * 0.35 * head_r[:, None] + hu * 0.25 * head_r[:, None],
        3: hc - hr * head_r[:, None],  # left ear
        4: hc + hr * head_r[:, None],
    }
    kp = torch.zeros(b, NUM_KEYPOINTS, 3)
    for k in range(NUM_KEYPOINTS):
        kp[:, k, :2] = framing.to_px(face[k] if k in face else c[_COCO_BODY_JOINTS[k]])
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
    return torch.where(visible[..., None], kp, torch.zeros(()))


@dataclass(frozen=True)
class _Palette:
    """Colours (B, 3) of one batch of views, drawn anew for every view so they carry no identity."""

    skin: torch.Tensor
    top: torch.Tensor
    bottom: torch.Tensor
    background_a: torch.Tensor
    background_b: torch.Tensor
    forearm: torch.Tensor   # the top's colour with long sleeves, else skin
    shin: torch.Tensor      # the bottom's colour with long trousers, else skin

    @staticmethod
    def draw(b: int, g: torch.Generator) -> _Palette:
        """Drawn in this order: skin, top, bottom, the two background colours, sleeves, trousers."""
        skin = 0.25 + 0.7 * torch.rand(b, 1, generator=g) * torch.tensor([1.0, 0.8, 0.65]) + 0.05
        top, bottom, bg_a, bg_b = (torch.rand(b, 3, generator=g) for _ in range(4))
        sleeves = torch.rand(b, 1, generator=g) < 0.5     # long sleeves: forearms in the top's colour
        trousers = torch.rand(b, 1, generator=g) < 0.5    # long trousers: shins in the bottom's colour
        return _Palette(skin, top, bottom, bg_a, bg_b, forearm=torch.where(sleeves, top, skin),
                        shin=torch.where(trousers, bottom, skin))


def _pixel_centres(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(yy, xx): (S, S) each, the y and x of every pixel's centre."""
    return torch.meshgrid(torch.arange(s, dtype=torch.float32) + 0.5, torch.arange(s, dtype=torch.float32) + 0.5,
                          indexing="ij")


def _background(colours: _Palette, s: int, g: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S): a random two-colour gradient plus a few random rectangles and noise."""
    bg_a, bg_b = colours.background_a, colours.background_b
    b = bg_a.shape[0]
    yy, xx = _pixel_centres(s)
    ang = torch.rand(b, generator=g) * 2 * math.pi
    t = ((xx[None] * torch.cos(ang)[:, None, None] + yy[None] * torch.sin(ang)[:, None, None]) / (s * 1.42) + 0.5).clamp(0, 1)
    img = bg_a[:, :, None, None] * (1 - t[:, None]) + bg_b[:, :, None, None] * t[:, None]
    for _ in range(3):
        r0 = torch.rand(b, 4, generator=g) * s
        x0, x1 = torch.minimum(r0[:, 0], r0[:, 1]), torch.maximum(r0[:, 0], r0[:, 1])
        y0, y1 = torch.minimum(r0[:, 2], r0[:, 3]), torch.maximum(r0[:, 2], r0[:, 3])
        m = ((xx[None] >= x0[:, None, None]) & (xx[None] < x1[:, None, None])
             & (yy[None] >= y0[:, None, None]) & (yy[None] < y1[:, None, None]))
        img = torch.where(m[:, None], torch.rand(b, 3, generator=g)[:, :, None, None], img)
    return img + 0.06 * torch.randn(b, 3, s, s, generator=g)


class _ZBuffer:
    """Body parts painted in any order; each pixel shows the nearest part (largest z), the earlier one on a tie."""

    def __init__(self, b: int, s: int):
        self.depth = torch.full((b, s, s), -1e9)
        self.part = torch.zeros(b, s, s, dtype=torch.long)  # index into colours; 0 = background
        self.colours: list[torch.Tensor] = [torch.zeros(b, 3)]

    def paint(self, mask: torch.Tensor, depth: torch.Tensor, col: torch.Tensor) -> None:
        """mask (B, S, S) of a part at one depth (B,) per view, in colour col (B, 3)."""
        d = depth[:, None, None].expand_as(self.depth)
        win = mask & (d > self.depth)
        self.depth = torch.where(win, d, self.depth)
        self.part = torch.where(win, len(self.colours), self.part)
        self.colours.append(col)

    def image(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(person mask (B, S, S), body colours (B, 3, S, S))."""
        b, s, _ = self.part.shape
        table = torch.stack(self.colours, 1)  # (B, parts, 3)
        body = torch.gather(table, 1, self.part.reshape(b, -1, 1).expand(-1, -1, 3)).reshape(b, s, s, 3).permute(0, 3, 1, 2)
        return self.depth > -1e8, body


def _in_quad(quad: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """(B, S, S) whether each pixel centre px (S, S, 2) lies inside the convex quad (B, 4, 2)."""
    cross = []
    for i in range(4):
        a_, e_ = quad[:, i], quad[:, (i + 1) % 4]
        edge = (e_ - a_)[:, None, None, :]
        rel = px[None] - a_[:, None, None, :]
        cross.append(edge[..., 0] * rel[..., 1] - edge[..., 1] * rel[..., 0])
    cross = torch.stack(cross, 0)
    return (cross >= 0).all(0) | (cross <= 0).all(0)


def _paint_body(c: dict[str, torch.Tensor], p: dict[str, torch.Tensor], framing: _Framing, colours: _Palette,
                s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The body's parts z-buffered: (person mask (B, S, S), body colours (B, 3, S, S))."""
    yy, xx = _pixel_centres(s)
    px = torch.stack([xx, yy], -1)  # (S, S, 2)
    to_px = framing.to_px
    zbuf = _ZBuffer(c["pelvis"].shape[0], s)

    def capsule(a: torch.Tensor, e: torch.Tensor, radius: torch.Tensor, col: torch.Tensor) -> None:
        d2 = _seg_dist2(xx, yy, to_px(a), to_px(e))
        zbuf.paint(d2 <= ((radius * framing.scale) ** 2)[:, None, None], (a[:, 2] + e[:, 2]) / 2, col)

    # Torso: quad between shoulders and hips plus a capsule of its depth (so a side view has a torso).
    quad = torch.stack([to_px(c["l_shoulder"]), to_px(c["r_shoulder"]), to_px(c["r_hip"]), to_px(c["l_hip"])], 1)  # (B,4,2)
    torso_depth = (c["l_shoulder"][:, 2] + c["r_shoulder"][:, 2] + c["l_hip"][:, 2] + c["r_hip"][:, 2]) / 4
    zbuf.paint(_in_quad(quad, px), torso_depth, colours.top)
    mid_sh = (c["l_shoulder"] + c["r_shoulder"]) / 2
    capsule(mid_sh, c["pelvis"], p["torso_depth"], colours.top)
    for side in ("l", "r"):
        shoulder, elbow, wrist = c[f"{side}_shoulder"], c[f"{side}_elbow"], c[f"{side}_wrist"]
        hip, knee, ankle = c[f"{side}_hip"], c[f"{side}_knee"], c[f"{side}_ankle"]
        capsule(shoulder, hip, p["torso_depth"] * 0.5, colours.top)
        capsule(hip, knee, p["leg_r"], colours.bottom)
        capsule(knee, ankle, p["leg_r"] * 0.8, colours.shin)
        capsule(shoulder, elbow, p["arm_r"], colours.top)
        capsule(elbow, wrist, p["arm_r"] * 0.85, colours.forearm)
    capsule(c["pelvis"], c["l_hip"], p["leg_r"], colours.bottom)
    capsule(c["pelvis"], c["r_hip"], p["leg_r"], colours.bottom)
    capsule(c["neck"], mid_sh, p["arm_r"] * 1.2, colours.skin)
    capsule(c["neck"], c["head"], p["arm_r"] * 1.2, colours.skin)
    head_d = ((px[None] - to_px(c["head"])[:, None, None, :]).norm(dim=-1))
    zbuf.paint(head_d <= (p["head_r"] * framing.scale)[:, None, None], c["head"][:, 2] + p["head_r"], colours.skin)
    return zbuf.image()


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
    # One generator for the whole view, drawn from in this order: pose, viewpoint, framing, keypoint
    # confidence (and noise), colours, background, shading. A new draw goes at the end, or every
    # seeded set of views changes.
    g = torch.Generator().manual_seed(int(seed))
    b, s = shapes.shape[0], settings.size
    shapes = shapes.float()
    p = {k: shapes[:, i] for k, i in _P.items()}
    c = _to_camera(_poses(shapes, lo, hi, g), g)
    framing = _Framing.draw(c, p, settings, g)
    kp = _keypoints(c, p["head_r"], framing, settings, g)
    colours = _Palette.draw(b, g)
    img = _background(colours, s, g)
    person, body_img = _paint_body(c, p, framing, colours, s)
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
