"""Views of the world: ``bolid_lib.data.synthetic``'s procedural people, drawn facing the camera, in a pose class.

Identity is the body shape of ``synthetic`` (limb lengths and widths, head size, proportions). What the prompt
controls is the pose class (``POSES``: arms down / out / up) and, in world v2 (palette "named"), the colours of the
top and the bottom, each one of ``COLOURS``; the background and the skin are then the same in every view. The other
palettes are today's ablations: "random" draws clothing, skin and background colours per view (named nowhere), and
"fixed" paints every view alike. Everything else is random per view: the exact joint angles inside the class, a
small turn of the body, position. The views a Body-ID is encoded from are drawn with palette "random", in colours
the prompt does not name, so a Body-ID cannot carry the clothes.

Legend: B views, S image side, K = 17 COCO keypoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...data import synthetic as syn
from ...errors import BoLIDError
from ...method.keypoints import NUM_KEYPOINTS

POSES: tuple[str, ...] = ("down", "out", "up")
ARM_SPREAD_DEG = {"down": (6.0, 18.0), "out": (80.0, 100.0), "up": (150.0, 168.0)}


@dataclass(frozen=True)
class WorldRender:
    size: int = 32
    body_frac: float = 0.78       # head-top to ankle height as a fraction of the side (arms up reach above it)
    max_yaw_deg: float = 12.0
    jitter: float = 0.03          # position jitter, fraction of the side
    palette: str = "random"       # "random": background, clothes and skin drawn per view; "fixed": one for all views;
                                  # "named": top and bottom from COLOURS (the prompt names them), the rest fixed


def _uniform(b: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(b, generator=g)


def _joints(shapes: torch.Tensor, pose: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
    """3D joints (B, 3) of each named joint, pelvis at the origin, y up, facing +z."""
    b = shapes.shape[0]
    p = {k: shapes[:, i] for k, i in syn._P.items()}
    zero = torch.zeros(b)
    lo = torch.tensor([math.radians(ARM_SPREAD_DEG[POSES[i]][0]) for i in range(len(POSES))])[pose]
    hi = torch.tensor([math.radians(ARM_SPREAD_DEG[POSES[i]][1]) for i in range(len(POSES))])[pose]
    j = {"pelvis": torch.zeros(b, 3), "neck": torch.stack([zero, p["torso_len"], zero], -1)}
    j["head"] = torch.stack([zero, p["torso_len"] + p["neck_len"] + p["head_r"], zero], -1)
    fwd = torch.tensor([0.0, 0.0, 1.0]).expand(b, 3)
    for side, sgn in (("l", 1.0), ("r", -1.0)):
        j[f"{side}_shoulder"] = torch.stack([sgn * p["shoulder_half"], 0.95 * p["torso_len"], zero], -1)
        j[f"{side}_hip"] = torch.stack([sgn * p["hip_half"], zero, zero], -1)
        spread = lo + (hi - lo) * torch.rand(b, generator=g)
        elbow = syn._limb(j[f"{side}_shoulder"], p["upper_arm"], _uniform(b, -0.2, 0.2, g), sgn * spread)
        arm_dir = (elbow - j[f"{side}_shoulder"]) / p["upper_arm"][:, None]
        j[f"{side}_elbow"] = elbow
        j[f"{side}_wrist"] = syn._bend(arm_dir, elbow, p["forearm"], _uniform(b, 0.0, 0.35, g), fwd)
        knee = syn._limb(j[f"{side}_hip"], p["thigh"], _uniform(b, -0.15, 0.15, g), sgn * _uniform(b, 0.03, 0.2, g))
        leg_dir = (knee - j[f"{side}_hip"]) / p["thigh"][:, None]
        j[f"{side}_knee"] = knee
        j[f"{side}_ankle"] = syn._bend(leg_dir, knee, p["shin"], _uniform(b, 0.0, 0.25, g), -fwd)
    return j


def _face(c: dict[str, torch.Tensor], view: torch.Tensor, head_r: torch.Tensor) -> dict[int, torch.Tensor]:
    b = head_r.shape[0]
    hf = (view @ torch.tensor([0.0, 0.0, 1.0]).expand(b, 3).unsqueeze(-1)).squeeze(-1)
    hr = (view @ torch.tensor([-1.0, 0.0, 0.0]).expand(b, 3).unsqueeze(-1)).squeeze(-1)
    hu = (view @ torch.tensor([0.0, 1.0, 0.0]).expand(b, 3).unsqueeze(-1)).squeeze(-1)
    r, hc = head_r[:, None], c["head"]
    return {0: hc + hf * r, 1: hc + hf * 0.8 * r - hr * 0.35 * r + hu * 0.25 * r,
            2: hc + hf * 0.8 * r + hr * 0.35 * r + hu * 0.25 * r, 3: hc - hr * r, 4: hc + hr * r}


BODY_KP = {5: "l_shoulder", 6: "r_shoulder", 7: "l_elbow", 8: "r_elbow", 9: "l_wrist", 10: "r_wrist",
           11: "l_hip", 12: "r_hip", 13: "l_knee", 14: "r_knee", 15: "l_ankle", 16: "r_ankle"}


def render(shapes: torch.Tensor, pose: torch.Tensor, seed: int, settings: WorldRender = WorldRender(),
           colours: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One view per row: shapes (B, P), pose (B,) index into POSES -> images (B, 3, S, S) in [0, 1], keypoints
    (B, 17, 3) px + confidence 1 (all visible: the person faces the camera). ``colours``: (top, bottom) (B,) indices
    into COLOURS, for palette "named" (required there, ignored by the others)."""
    g = torch.Generator().manual_seed(int(seed))
    b, s = shapes.shape[0], settings.size
    shapes = shapes.float()
    j = _joints(shapes, pose.long(), g)
    p = {k: shapes[:, i] for k, i in syn._P.items()}
    view = syn._rot_y(_uniform(b, -1, 1, g) * math.radians(settings.max_yaw_deg))
    c = {k: (view @ v.unsqueeze(-1)).squeeze(-1) for k, v in j.items()}
    top = c["head"][:, 1] + p["head_r"]
    bottom = torch.minimum(c["l_ankle"][:, 1], c["r_ankle"][:, 1]) - p["leg_r"]
    scale = settings.body_frac * s / (top - bottom)
    ox = s / 2 + _uniform(b, -1, 1, g) * settings.jitter * s
    oy = 0.95 * s + _uniform(b, -1, 1, g) * settings.jitter * s + bottom * scale       # ankles near the bottom edge

    def to_px(v: torch.Tensor) -> torch.Tensor:
        return torch.stack([ox + v[:, 0] * scale, oy - v[:, 1] * scale], -1)

    kp = torch.ones(b, NUM_KEYPOINTS, 3)
    face = _face(c, view, p["head_r"])
    for k in range(NUM_KEYPOINTS):
        kp[:, k, :2] = to_px(face[k] if k in face else c[BODY_KP[k]])
    return _paint(c, p, to_px, scale, s, b, g, settings.palette, colours), kp


FIXED = {"bg_a": (0.75, 0.8, 0.85), "bg_b": (0.55, 0.6, 0.5), "skin": (0.9, 0.7, 0.55), "top": (0.15, 0.3, 0.8),
         "bottom": (0.3, 0.2, 0.15)}
# world v2's clothing colours, one word each in the prompt; drawn with a small jitter per view
COLOURS: dict[str, tuple[float, float, float]] = {"red": (0.85, 0.15, 0.15), "green": (0.15, 0.65, 0.2),
                                                  "blue": (0.15, 0.25, 0.85), "yellow": (0.92, 0.82, 0.15)}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
COLOUR_JITTER = 0.06


def random_colours(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(top, bottom) (n,) indices into COLOURS, each uniform."""
    return torch.randint(0, len(COLOURS), (n,), generator=g), torch.randint(0, len(COLOURS), (n,), generator=g)


def _paint(c, p, to_px, scale, s, b, g, palette: str = "random", colours=None) -> torch.Tensor:
    """Background, then the body's parts z-buffered (capsules, torso quad, head disc), colours random per view
    (``palette`` "random"), the same for every view (``FIXED``, ``palette`` "fixed"), or the top and bottom named by
    ``colours`` with the rest fixed (``palette`` "named")."""
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32) + 0.5, torch.arange(s, dtype=torch.float32) + 0.5, indexing="ij")
    bg_a, bg_b = torch.rand(b, 3, generator=g), torch.rand(b, 3, generator=g)
    skin = 0.3 + 0.65 * torch.rand(b, 1, generator=g) * torch.tensor([1.0, 0.8, 0.65])
    top_c, bottom_c = torch.rand(b, 3, generator=g), torch.rand(b, 3, generator=g)
    if palette in ("fixed", "named"):   # the same draws are made, so the rest of the view is as under "random"
        bg_a, bg_b, skin, top_c, bottom_c = (torch.tensor(FIXED[k]).expand(b, 3) for k in ("bg_a", "bg_b", "skin", "top", "bottom"))
    if palette == "named":
        if colours is None:
            raise BoLIDError("palette 'named' paints the colours the prompt names: pass colours=(top, bottom)")
        table = torch.tensor(list(COLOURS.values()))
        jitter = COLOUR_JITTER * (2 * torch.rand(2, b, 3, generator=g) - 1)
        top_c = (table[colours[0].long()] + jitter[0]).clamp(0, 1)
        bottom_c = (table[colours[1].long()] + jitter[1]).clamp(0, 1)
    elif palette not in ("random", "fixed"):
        raise BoLIDError(f"palette must be 'named', 'random' or 'fixed', got {palette!r}")
    t = (yy / s)[None, None]
    img = bg_a[:, :, None, None] * (1 - t) + bg_b[:, :, None, None] * t
    zbuf = torch.full((b, s, s), -1e9)
    colour = torch.zeros(b, 3, s, s)

    def paint(mask: torch.Tensor, depth: torch.Tensor, col: torch.Tensor) -> None:
        nonlocal zbuf, colour
        win = mask & (depth[:, None, None] > zbuf)
        zbuf = torch.where(win, depth[:, None, None], zbuf)
        colour = torch.where(win[:, None], col[:, :, None, None], colour)

    def capsule(a: str, e: str, radius: torch.Tensor, col: torch.Tensor) -> None:
        d2 = syn._seg_dist2(xx, yy, to_px(c[a]), to_px(c[e]))
        paint(d2 <= ((radius * scale) ** 2)[:, None, None], (c[a][:, 2] + c[e][:, 2]) / 2, col)

    c = dict(c)
    c["mid_sh"] = (c["l_shoulder"] + c["r_shoulder"]) / 2
    c["mid_hip"] = (c["l_hip"] + c["r_hip"]) / 2
    capsule("mid_sh", "mid_hip", (p["shoulder_half"] + p["hip_half"]) / 2, top_c)
    for side in ("l", "r"):
        capsule(f"{side}_shoulder", f"{side}_hip", p["torso_depth"] * 0.6, top_c)
        capsule(f"{side}_hip", f"{side}_knee", p["leg_r"], bottom_c)
        capsule(f"{side}_knee", f"{side}_ankle", p["leg_r"] * 0.8, bottom_c)
        capsule(f"{side}_shoulder", f"{side}_elbow", p["arm_r"], top_c)
        capsule(f"{side}_elbow", f"{side}_wrist", p["arm_r"] * 0.85, skin.expand(b, 3))
    capsule("neck", "head", p["arm_r"] * 1.2, skin.expand(b, 3))
    head = ((torch.stack([xx, yy], -1)[None] - to_px(c["head"])[:, None, None, :]).norm(dim=-1)) <= (p["head_r"] * scale)[:, None, None]
    paint(head, c["head"][:, 2] + p["head_r"], skin.expand(b, 3))
    person = zbuf > -1e8
    img = torch.where(person[:, None], colour, img)
    return (img + 0.02 * torch.randn(b, 3, s, s, generator=g)).clamp(0, 1)


SHAPE_NAMES: tuple[str, ...] = tuple(q[0] for q in syn.SHAPE_PARAMS)


def unit_shapes(shapes: torch.Tensor) -> torch.Tensor:
    """Shape parameters scaled to their ranges (each in [0, 1]): the space people's distances are measured in."""
    lo = torch.tensor([q[1] for q in syn.SHAPE_PARAMS])
    hi = torch.tensor([q[2] for q in syn.SHAPE_PARAMS])
    return (shapes - lo) / (hi - lo)


def pick_identities(n: int, seed: int, pool: int = 400) -> torch.Tensor:
    """(n, P) shapes of ``n`` identities: farthest-point picks from ``pool`` random ``synthetic`` shapes (each
    parameter scaled to its range), so the world's people differ as much as its ranges allow."""
    cand = syn.random_shapes(max(pool, n), seed)
    u = unit_shapes(cand)
    chosen = [0]
    d = (u - u[0]).norm(dim=1)
    for _ in range(n - 1):
        i = int(d.argmax())
        chosen.append(i)
        d = torch.minimum(d, (u - u[i]).norm(dim=1))
    return cand[chosen]


def extra_identities(world: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, P) more random people, none of them nearer (in parameters scaled to their ranges) to one of ``world``'s
    people than half the distance between the two nearest of those: extra training people for the adapter that
    cannot stand in for a held-out identity."""
    u = unit_shapes(world)
    d = torch.cdist(u, u) + torch.eye(len(u)) * 1e9
    margin = float(d.min()) / 2
    kept, attempt = [], 0
    while sum(len(k) for k in kept) < n:
        cand = syn.random_shapes(4 * n, seed * 7919 + 104729 + attempt)
        attempt += 1
        kept.append(cand[torch.cdist(unit_shapes(cand), u).min(dim=1).values > margin])
        if attempt > 50:
            raise BoLIDError(f"could not find {n} extra people away from the world's {len(world)}")
    return torch.cat(kept)[:n]


def views(shapes: torch.Tensor, per_id: int, seed: int, settings: WorldRender = WorldRender(),
          poses: torch.Tensor | None = None, chunk: int = 512) -> dict[str, torch.Tensor]:
    """``per_id`` views of each identity, identity-major: {"images", "keypoints", "person", "pose"} (+ "top",
    "bottom" colour indices under palette "named", drawn uniformly). Poses cycle through POSES unless given (B,)."""
    n = shapes.shape[0]
    person = torch.arange(n).repeat_interleave(per_id)
    pose = torch.arange(person.numel()) % len(POSES) if poses is None else poses
    named = settings.palette == "named"
    top, bottom = random_colours(person.numel(), torch.Generator().manual_seed(int(seed) * 7 + 3)) if named else (None, None)
    imgs, kps = [], []
    for i, s0 in enumerate(range(0, person.numel(), chunk)):
        part = slice(s0, s0 + chunk)
        im, kp = render(shapes[person[part]], pose[part], int(seed) * 100003 + i, settings,
                        (top[part], bottom[part]) if named else None)
        imgs.append(im)
        kps.append(kp)
    out = {"images": torch.cat(imgs), "keypoints": torch.cat(kps), "person": person, "pose": pose}
    if named:
        out.update(top=top, bottom=bottom)
    return out
