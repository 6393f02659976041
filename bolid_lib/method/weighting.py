"""Gaussian keypoint weighting of images, paper section 4.1, eq. 11-13.

    w_i(x, y)   = exp(-((x - x_i)^2 + (y - y_i)^2) / (2 sigma^2))          (11)
    W(x, y)     = max_i w_i(x, y)      over the VISIBLE keypoints i          (12)
    W_norm      = W / max_{x, y} W(x, y)                                     (13)
    I_w         = I * (alpha + (1 - alpha) * W_norm)

Legend: B batch, K keypoints (17), C channels, H, W image size.

Conventions (chosen here, the paper is silent):
- Keypoints are (x, y, confidence) in continuous pixel coordinates, as ultralytics returns them: the image
  spans [0, W] x [0, H] and pixel (row r, column c) is evaluated at its centre (c + 0.5, r + 0.5).
- A keypoint is visible when its confidence is > 0 (the pose step zeroes points under its visibility
  threshold, paper 4.2). Invisible keypoints take no part. With no visible keypoint W_norm is 0 everywhere
  (so I_w = alpha * I): an image with nothing to weight is dimmed, not divided by zero.
- sigma is relative to the image's short side by default (sigma_px = sigma * min(H, W)): the same value
  then covers the same share of a body at 512 and at 1024 pixels, so one setting works for every
  resolution in a batch of photos. ``sigma_mode="pixels"`` takes sigma in pixels as in eq. 11.
- sigma = 0 is the limit of a very narrow Gaussian: sigma in pixels is clamped to MIN_SIGMA_PX, which
  leaves weight 1 only at the pixel(s) nearest the keypoint. A negative or non-finite sigma is an error.
  A huge sigma works (W_norm tends to 1 everywhere, I_w to I).

Implementation: eq. 11 is separable, w_i(x, y) = g_i(x) * h_i(y), so each map is an outer product of two
vectors, and eq. 13 is folded into those vectors in log space before exponentiation (each factor's maximum
over the image is known in closed form): the normalisation is exact and free of underflow for any sigma > 0,
with no 0/0 when a tiny sigma makes every Gaussian underflow at pixel centres. Eq. 12 is evaluated per
32 x 32 tile over only the keypoints that can be the maximum there (one sigma for all keypoints, so the
nearest keypoint wins; a keypoint farther from every pixel of a tile than another keypoint's farthest
distance is exactly dominated): about two keypoints per tile instead of 17, and (B, K, H, W) is never
materialised. Factors under 1.1e-19 are flushed to zero so that no product is a subnormal float (those
make CPU arithmetic some 20x slower).
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch

from ..errors import BoLIDError
from .body_id import DEFAULT_RECIPE, SIGMA_MODES
from .keypoints import PoseBatch, pose_keypoint_to_pose_batch

SigmaLike = Union[float, int, torch.Tensor]

# The defaults of a Body-ID's weighting live in body_id.DEFAULT_RECIPE (issue 27: one value for the nodes, the
# trainer and every other caller). Relative sigma 0.1: 10% of the short side (about 102 px at 1024 x 1024).
DEFAULT_SIGMA_MODE = DEFAULT_RECIPE.sigma_mode
DEFAULT_SIGMA = DEFAULT_RECIPE.sigma
DEFAULT_ALPHA = DEFAULT_RECIPE.alpha
MIN_SIGMA_PX = 1e-3          # sigma = 0 is clamped here (a one-pixel peak), see module docstring

# Elements per row block of the running max (1 MiB of float32): much smaller blocks cost more in per-op
# overhead than they gain in cache (measured on a 2-core CPU, 1024 x 1024).
_ROW_BLOCK_ELEMENTS = 1 << 18
_TILE = 32  # tile side for the candidate keypoints of eq. 12, see _tile_candidates
_FLUSH_BELOW = math.sqrt(torch.finfo(torch.float32).tiny)  # 1.08e-19, see _normalised_factors


def _check_keypoints(keypoints: torch.Tensor) -> torch.Tensor:
    if not isinstance(keypoints, torch.Tensor) or keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        shape = tuple(keypoints.shape) if isinstance(keypoints, torch.Tensor) else type(keypoints).__name__
        raise BoLIDError(f"keypoints must be a tensor of shape (B, K, 3) holding x, y, confidence; got {shape}")
    return keypoints


def _check_size(height: int, width: int) -> tuple[int, int]:
    h, w = int(height), int(width)
    if h <= 0 or w <= 0 or h != height or w != width:
        raise BoLIDError(f"image size must be two positive integers (height, width); got ({height}, {width})")
    return h, w


def sigma_to_pixels(sigma: SigmaLike, height: int, width: int, mode: str = DEFAULT_SIGMA_MODE) -> torch.Tensor:
    """sigma (float, or a tensor (B,) or ()) -> sigma in pixels, a float64 tensor of sigma's shape.

    mode "relative" (the default): sigma is a fraction of the short side, sigma_px = sigma * min(H, W);
    this is resolution-independent: the same setting covers the same part of a body at any image size.
    mode "pixels": sigma is already in pixels (eq. 11 as written).
    The result is clamped to MIN_SIGMA_PX so that sigma = 0 means "a one-pixel peak" instead of 0/0.
    """
    if mode not in SIGMA_MODES:
        raise BoLIDError(f"sigma_mode must be one of {SIGMA_MODES}; got {mode!r}")
    height, width = _check_size(height, width)
    s = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu()
    if s.ndim > 1:
        raise BoLIDError(f"sigma must be a number or a tensor of shape (B,); got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or (s < 0).any():
        raise BoLIDError(f"sigma must be a finite number >= 0; got {s.tolist()}")
    if mode == "relative":
        s = s * min(height, width)
    return s.clamp(min=MIN_SIGMA_PX)


def _sigma_per_item(sigma_px: SigmaLike, batch: int) -> torch.Tensor:
    """(B,) float64 sigma in pixels from a float or a tensor (B,) / ()."""
    s = torch.as_tensor(sigma_px, dtype=torch.float64).detach().cpu()
    if not torch.isfinite(s).all() or (s < 0).any():
        raise BoLIDError(f"sigma must be a finite number >= 0; got {s.tolist()}")
    if s.ndim == 0:
        s = s.expand(batch)
    elif s.shape != (batch,):
        raise BoLIDError(f"sigma must be one number or one per image ({batch},); got shape {tuple(s.shape)}")
    return s.clamp(min=MIN_SIGMA_PX)


def _axis_log_terms(coord: torch.Tensor, size: int, inv_two_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis log factors of eq. 11.

    coord (B, K) float64 keypoint coordinate on this axis; inv_two_var (B, 1) = 1 / (2 sigma^2).
    Returns log_g (B, K, size) = -(p - coord)^2 / (2 sigma^2) at pixel centres p, and its max over p (B, K),
    known in closed form: attained at the pixel centre nearest to coord (clamped into the image).
    """
    centres = torch.arange(size, dtype=torch.float64, device=coord.device) + 0.5  # (size,)
    log_g = -(centres - coord[..., None]).square() * inv_two_var[..., None]        # (B, K, size)
    nearest = (torch.floor(coord).clamp(0, size - 1)) + 0.5
    log_max = -(nearest - coord).square() * inv_two_var                            # (B, K)
    return log_g, log_max


def _normalised_factors(keypoints: torch.Tensor, height: int, width: int, sigma_px: torch.Tensor):
    """Separable factors of W_norm: W_norm(y, x) = max_k hy[b, k, y] * gx[b, k, x].

    keypoints (B, K, 3); sigma_px (B,). Returns gx (B, K, W), hy (B, K, H) in float32 on the keypoints' device,
    all in [0, 1]; invisible keypoints (conf <= 0) and images with no visible keypoint give zero factors.
    """
    kp = keypoints.detach().to(torch.float64)
    visible = kp[..., 2] > 0                                               # (B, K)
    inv_two_var = (1.0 / (2.0 * sigma_px.square())).to(kp.device)[:, None]  # (B, 1)
    log_gx, max_x = _axis_log_terms(kp[..., 0], width, inv_two_var)       # (B, K, W), (B, K)
    log_hy, max_y = _axis_log_terms(kp[..., 1], height, inv_two_var)      # (B, K, H), (B, K)
    # Eq. 13: max over the image of W is max_k (max_x log g_k + max_y log h_k) over visible k.
    peak = torch.where(visible, max_x + max_y, -math.inf)                 # (B, K)
    top = peak.amax(dim=1, keepdim=True)                                  # (B, 1)
    top = torch.where(torch.isfinite(top), top, 0.0)                      # all invisible: any finite shift
    # Shift each axis by its own maximum (so each factor peaks at exactly 1: no overflow), and put
    # exp(peak_k - top) <= 1 (= 1 for the best keypoint) into the x factor.
    log_gx = log_gx - max_x[..., None] + (peak - top)[..., None]
    log_hy = log_hy - max_y[..., None]
    gx = torch.where(visible[..., None], log_gx.exp(), 0.0)
    hy = torch.where(visible[..., None], log_hy.exp(), 0.0)
    # Factors under sqrt(float32's smallest normal) are flushed to 0, so that no product is subnormal:
    # subnormal floats make CPU arithmetic some 20x slower, and W_norm changes by less than 1.1e-19.
    gx = torch.where(gx < _FLUSH_BELOW, 0.0, gx).float()
    hy = torch.where(hy < _FLUSH_BELOW, 0.0, hy).float()
    return gx, hy


def keypoint_gaussians(keypoints: torch.Tensor, height: int, width: int, sigma_px: SigmaLike) -> torch.Tensor:
    """Eq. 11 for every keypoint: (B, K, 3) keypoints -> (B, K, H, W) float32 maps w_k(x, y), not normalised.

    sigma_px: sigma in pixels, a float or a tensor (B,). Invisible keypoints (confidence <= 0) give all-zero maps.
    This materialises B*K*H*W values: use it for heat-map inputs at small sizes; weight_map() for W_norm.
    """
    kp = _check_keypoints(keypoints)
    height, width = _check_size(height, width)
    b = kp.shape[0]
    s = _sigma_per_item(sigma_px, b)
    kp64 = kp.detach().to(torch.float64)
    inv_two_var = (1.0 / (2.0 * s.square())).to(kp.device)[:, None]
    log_gx, _ = _axis_log_terms(kp64[..., 0], width, inv_two_var)
    log_hy, _ = _axis_log_terms(kp64[..., 1], height, inv_two_var)
    visible = (kp64[..., 2] > 0)[..., None]
    gx = torch.where(visible, log_gx.exp(), 0.0).float()                  # (B, K, W)
    hy = torch.where(visible, log_hy.exp(), 0.0).float()                  # (B, K, H)
    return hy[..., :, None] * gx[..., None, :]                            # (B, K, H, W)


def _tile_candidates(kp: torch.Tensor, height: int, width: int, tile: int) -> torch.Tensor:
    """(B, K, Ty, Tx) bool: keypoints that can be the maximum of eq. 12 somewhere in each tile x tile block.

    All Gaussians share one sigma, so at any pixel the nearest visible keypoint gives the maximum. A keypoint
    whose nearest distance to a tile exceeds the smallest farthest distance of any visible keypoint to that
    tile is beaten at every pixel of the tile and is left out there: exact, and it cuts the work from K
    products per pixel to the few keypoints near each tile.
    """
    kp = kp.detach().to(torch.float64)
    visible = kp[..., 2] > 0                                                  # (B, K)

    def axis(coord, size):                                                    # coord (B, K) -> (B, K, T) each
        lo = torch.arange(0, size, tile, dtype=torch.float64, device=coord.device) + 0.5
        hi = (lo + tile - 1).clamp(max=size - 0.5)                            # centres of the tile's first/last pixel
        c = coord[..., None]
        near = torch.maximum(torch.maximum(lo - c, c - hi), torch.zeros(()))
        far = torch.maximum((c - lo).abs(), (c - hi).abs())
        return near.square(), far.square()

    near_x, far_x = axis(kp[..., 0], width)                                   # (B, K, Tx)
    near_y, far_y = axis(kp[..., 1], height)                                  # (B, K, Ty)
    near = near_y[..., :, None] + near_x[..., None, :]                        # (B, K, Ty, Tx)
    far = far_y[..., :, None] + far_x[..., None, :]
    far = torch.where(visible[..., None, None], far, math.inf)
    bound = far.amin(dim=1, keepdim=True)                                     # (B, 1, Ty, Tx)
    return visible[..., None, None] & (near <= bound * (1 + 1e-9) + 1e-9)


def weight_map(
    keypoints: torch.Tensor,
    height: int,
    width: int,
    sigma: SigmaLike = DEFAULT_SIGMA,
    sigma_mode: str = DEFAULT_SIGMA_MODE,
) -> torch.Tensor:
    """Eq. 12-13: (B, K, 3) keypoints -> W_norm (B, H, W) float32 in [0, 1], on the keypoints' device.

    W_norm is the max over visible keypoints of eq. 11, divided by its own maximum over the image (so it
    peaks at exactly 1); all-zero for an image without visible keypoints. sigma: float or tensor (B,),
    interpreted by sigma_mode (see sigma_to_pixels). Memory: the (B, H, W) output plus one block of rows.
    """
    kp = _check_keypoints(keypoints)
    height, width = _check_size(height, width)
    b, k = kp.shape[:2]
    sigma_px = _sigma_per_item(sigma_to_pixels(sigma, height, width, sigma_mode), b)
    dev = kp.device
    any_visible = (kp[..., 2] > 0).any(dim=1)                                 # (B,)
    if not bool(any_visible.any()):
        return torch.zeros(b, height, width, dtype=torch.float32, device=dev)
    t = _TILE
    ty, tx = -(-height // t), -(-width // t)
    hp, wp = ty * t, tx * t
    gx, hy = _normalised_factors(kp, height, width, sigma_px)                # (B, K, W), (B, K, H)
    # Zero padding up to whole tiles, then split into tiles.
    gx = torch.nn.functional.pad(gx, (0, wp - width)).reshape(b, k, tx, t)     # (B, K, Tx, t)
    hy = torch.nn.functional.pad(hy, (0, hp - height)).reshape(b, k, ty, t)    # (B, K, Ty, t)
    need = _tile_candidates(kp, height, width, t)                              # (B, K, Ty, Tx)
    out = torch.empty(b, hp, wp, dtype=torch.float32, device=dev)
    rows = max(1, _ROW_BLOCK_ELEMENTS // max(1, b * t * wp))                   # tile rows per block
    tmp = torch.empty(b * min(rows, ty) * tx, t * t, dtype=torch.float32, device=dev)
    for r0 in range(0, ty, rows):
        r1 = min(ty, r0 + rows)
        # Every (image, keypoint, tile) where the keypoint can win: eq. 11 on that tile only.
        bi, ki, yi, xi = need[:, :, r0:r1].nonzero(as_tuple=True)             # (P,) each
        vals = hy[bi, ki, r0 + yi][:, :, None] * gx[bi, ki, xi][:, None, :]    # (P, t, t)
        tile_id = (bi * (r1 - r0) + yi) * tx + xi                              # (P,) tile in this block
        # Eq. 12: the max over a tile's candidates. Every tile of an image with a visible keypoint has one
        # (its nearest keypoint), so only the images without any are left unwritten: zeroed below.
        tiles = tmp[: b * (r1 - r0) * tx]
        tiles.scatter_reduce_(0, tile_id[:, None].expand(-1, t * t), vals.reshape(-1, t * t), "amax",
                              include_self=False)
        # Tiles (B, ty', Tx, t, t) back to rows of pixels (B, ty', t, Tx, t), in one copy.
        out[:, r0 * t : r1 * t].view(b, r1 - r0, t, tx, t).copy_(tiles.view(b, r1 - r0, tx, t, t).permute(0, 1, 3, 2, 4))
    if not bool(any_visible.all()):
        out[~any_visible] = 0.0                                                # no visible keypoint: W_norm = 0
    if (hp, wp) != (height, width):
        out = out[:, :height, :width].contiguous()
    return out


def apply_weighting(
    images: torch.Tensor,
    keypoints: torch.Tensor,
    sigma: SigmaLike = DEFAULT_SIGMA,
    alpha: SigmaLike = DEFAULT_ALPHA,
    sigma_mode: str = DEFAULT_SIGMA_MODE,
    *,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """I_w = I * (alpha + (1 - alpha) * W_norm) (paper 4.1).

    images (B, C, H, W) float; keypoints (B, K, 3) in pixels of these images; sigma float or (B,);
    alpha in [0, 1], float or (B,) (alpha = 1 leaves the image unchanged, alpha = 0 keeps only the
    Gaussian blobs). Returns (weighted (B, C, H, W) in the images' dtype, W_norm (B, H, W) float32),
    both on the images' device. batch_size: images per step (None: all at once; smaller steps bound the
    temporary memory of a long batch); progress(done, total) after each step.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise BoLIDError(f"images must be a tensor of shape (B, C, H, W); got {shape}")
    kp = _check_keypoints(keypoints)
    b, c, h, w = images.shape
    if kp.shape[0] != b:
        raise BoLIDError(f"got {b} images but keypoints for {kp.shape[0]}: give one pose per image")
    a = torch.as_tensor(alpha, dtype=torch.float32).detach().cpu()
    if a.ndim > 1 or (a.ndim == 1 and a.shape != (b,)):
        raise BoLIDError(f"alpha must be one number or one per image ({b},); got shape {tuple(a.shape)}")
    if not torch.isfinite(a).all() or (a < 0).any() or (a > 1).any():
        raise BoLIDError(f"alpha must lie in [0, 1] (paper 4.1); got {a.tolist()}")
    sigma_px = _sigma_per_item(sigma_to_pixels(sigma, h, w, sigma_mode), b)    # (B,) validated once
    a = a.to(images.device).reshape(-1, 1, 1).expand(b, 1, 1)
    step = b if batch_size is None else int(batch_size)
    if step < 1:
        raise BoLIDError(f"batch_size must be >= 1; got {batch_size}")
    if step >= b:
        w_norm = weight_map(kp.to(images.device), h, w, sigma_px, "pixels")     # (B, H, W)
        factor = torch.addcmul(a, w_norm, 1.0 - a)                              # alpha + (1 - alpha) W_norm
        weighted = images * factor[:, None].to(images.dtype)                    # (B, C, H, W)
        if progress is not None:
            progress(b, b)
        return weighted, w_norm
    weighted = torch.empty_like(images)
    w_norm = torch.empty(b, h, w, dtype=torch.float32, device=images.device)
    for s in range(0, b, step):
        e = min(b, s + step)
        w_norm[s:e] = weight_map(kp[s:e].to(images.device), h, w, sigma_px[s:e], "pixels")
        factor = torch.addcmul(a[s:e], w_norm[s:e], 1.0 - a[s:e])
        torch.mul(images[s:e], factor[:, None].to(images.dtype), out=weighted[s:e])
        if progress is not None:
            progress(e, b)
    return weighted, w_norm


# A compact "turbo"-like colour map: 0 dark blue -> cyan -> green -> yellow -> red at 1.
_COLORMAP = (
    (0.19, 0.07, 0.23), (0.16, 0.47, 0.93), (0.10, 0.85, 0.75), (0.55, 0.98, 0.25),
    (0.98, 0.75, 0.20), (0.90, 0.28, 0.04), (0.48, 0.02, 0.01),
)


def colorize(w_norm: torch.Tensor) -> torch.Tensor:
    """(B, H, W) values in [0, 1] -> (B, 3, H, W) RGB colours of a turbo-like map (blue low, red high)."""
    lut = torch.tensor(_COLORMAP, dtype=torch.float32, device=w_norm.device)  # (L, 3)
    pos = w_norm.float().clamp(0, 1) * (lut.shape[0] - 1)                # (B, H, W)
    lo = pos.floor().long().clamp(max=lut.shape[0] - 2)
    frac = (pos - lo)[..., None]                                          # (B, H, W, 1)
    rgb = lut[lo] * (1 - frac) + lut[lo + 1] * frac                      # (B, H, W, 3)
    return rgb.permute(0, 3, 1, 2).contiguous()


def heatmap_overlay(images: torch.Tensor, w_norm: torch.Tensor, opacity: float = 0.5) -> torch.Tensor:
    """Preview: the photo blended with a colour map of W_norm. images (B, C, H, W), w_norm (B, H, W) -> (B, 3, H, W).

    Grey images are repeated to RGB; extra channels (alpha) are dropped.
    """
    if images.ndim != 4 or w_norm.ndim != 3 or images.shape[0] != w_norm.shape[0] or images.shape[2:] != w_norm.shape[1:]:
        raise BoLIDError(
            f"heatmap_overlay needs images (B, C, H, W) and w_norm (B, H, W) of the same B, H, W; "
            f"got {tuple(images.shape)} and {tuple(w_norm.shape)}"
        )
    rgb = images[:, :3].float() if images.shape[1] >= 3 else images[:, :1].float().expand(-1, 3, -1, -1)
    heat = colorize(w_norm.to(rgb.device))
    return (rgb * (1 - opacity) + heat * opacity).clamp(0, 1)


# A pose found on the same photos at another resolution is rescaled; beyond this relative difference in aspect
# ratio (W/H) it belongs to other pixels (a crop or a pad) and is refused.
ASPECT_TOLERANCE = 0.01


def resolve_pose(pose: PoseBatch | None, pose_keypoint, size: tuple[int, int], batch: int) -> PoseBatch:
    """The pose for ``batch`` images of ``size`` (H, W) from exactly one of BOLID_POSE / POSE_KEYPOINT.

    pose: a PoseBatch (BoLID Pose Keypoints); pose_keypoint: OpenPose POSE_KEYPOINT frames (e.g. DWPose), read
    with ``size`` as the image size. Keypoints and boxes are rescaled when the pose refers to the same images at
    another resolution; another aspect ratio (a crop) is an error. One pose for a batch of images is repeated;
    any other count that differs from ``batch`` is an error.
    """
    if (pose is None) == (pose_keypoint is None):
        which = "both are" if pose is not None else "neither is"
        raise BoLIDError(
            f"connect exactly one of 'pose' (BOLID_POSE, from BoLID Pose Keypoints) or 'pose_keypoint' "
            f"(POSE_KEYPOINT, e.g. from DWPose); {which} connected"
        )
    if pose is None:
        pose = pose_keypoint_to_pose_batch(pose_keypoint, image_size=size)
    h, w = size
    ph, pw = pose.image_size
    if (ph, pw) != (h, w):
        if abs(pw / ph - w / h) > ASPECT_TOLERANCE * (w / h):
            raise BoLIDError(
                f"the pose refers to images of {pw}x{ph} but the images are {w}x{h} (another aspect ratio): "
                "find the pose on these same images"
            )
        kp = pose.keypoints.clone()                                              # (B, K, 3)
        kp[..., 0] *= w / pw
        kp[..., 1] *= h / ph
        boxes = pose.boxes * torch.tensor([w / pw, h / ph, w / pw, h / ph])      # (B, 4) xyxy
        pose = PoseBatch(kp, boxes, pose.found, (h, w), dict(pose.meta))
    if len(pose) == 1 and batch > 1:
        pose = pose.select([0] * batch)
    if len(pose) != batch:
        raise BoLIDError(f"got {batch} images but {len(pose)} poses: give one pose per image (or one for all)")
    return pose
