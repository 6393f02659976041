"""The Body-ID VAE: views of one person -> one Body-ID (paper 4.2, DESIGN.md "Body-ID VAE").

The paper stacks all weighted views (100 of 1024 x 1024) in one tensor and feeds it to "a VAE encoder";
it says nothing more. Our reading:

- Each view enters as its Gaussian-weighted image (paper 4.1), cut to a square around the person's
  keypoints (or letterboxed whole) and resized to R x R, plus 17 keypoint heat maps (eq. 11 per keypoint)
  at R x R: 20 channels; and, in a small MLP branch, the keypoints' scale-free geometry (proportions).
- A convolutional encoder maps each view j to a feature f_j (F). Views are pooled by a confidence-weighted
  mean, w_j = mean confidence of the view's visible keypoints ("weighted by pose confidence"):
      f = sum_j w_j f_j / sum_j w_j
  computed as a running sum over chunks of views, so memory does not grow with the number of views. Beside
  f, each keypoint segment's length ratio r_j is pooled as mean_j exp(kappa r_j) (weighted alike), read back
  as the soft maximum log(.) / kappa: projection only shortens a segment, so its longest appearance over the
  views estimates its true length whatever the poses (config tail_pool = kappa).
  GroupNorm (never BatchNorm) keeps every view's feature independent of its chunk-mates, so the chunked sum
  equals the all-at-once computation.
- Heads give mu and log sigma^2 of size D (default 756, as the paper's c_body).
- A decoder, used only in training, reconstructs a view's weighted image from z and that view's heat maps.
  Because the decoder is told the pose, z need not carry it; trained across views (z from some views of a
  person, reconstruction of *other* views) z carries what stays the same between views: body shape and look.
- An optional head predicts normalised limb-length ratios from z (an auxiliary identity signal).

Its config is in ``body_vae_config``, its file in ``body_vae_files`` (both names still import from here); what
prepares photos for it (the recipe) in ``body_id``.

Legend: V views, P persons, K = 17 keypoints, R input side, F feature width, D latent width, L limbs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BoLIDError
from .body_id import BodyIDRecipe
from .body_vae_config import CROPS, BodyVAEConfig  # noqa: F401 (also re-exported: their home until issue 27)
from .keypoints import NUM_KEYPOINTS, view_confidence
from .weighting import keypoint_gaussians

log = logging.getLogger("bolid")


# Limbs whose 2D lengths, relative to the torso, the limb-ratio head predicts (COCO indices).
LIMBS: tuple[tuple[int, int], ...] = (
    (5, 6), (11, 12),            # shoulder width, hip width
    (5, 7), (6, 8), (7, 9), (8, 10),      # upper arms, forearms
    (11, 13), (12, 14), (13, 15), (14, 16),  # thighs, shins
    (0, 5), (0, 6),              # nose to shoulders (head and neck)
)
NUM_LIMBS = len(LIMBS)
# Rigid segments whose 2D length (relative to the torso) the keypoint branch sees: bones and the torso's
# sides and diagonals, whose true length does not depend on the pose (only projection shortens them).
# Raw coordinates and spans across joints are left out on purpose: they describe the pose, and a branch
# that reads the pose does not carry over to poses never seen in training.
GEOMETRY_PAIRS: tuple[tuple[int, int], ...] = LIMBS[:10] + ((5, 11), (6, 12), (5, 12), (6, 11), (3, 4), (1, 2), (0, 1), (0, 2))
# Left/right twins among GEOMETRY_PAIRS (indices): the branch also sees the longer of the two. A person's
# left and right bones are (near enough) equally long and projection only shortens, so the longer one is the
# better single-view estimate of the true length: a limb turned towards the camera does not pull it down.
SYMMETRIC_PAIRS: tuple[tuple[int, int], ...] = ((2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13))
GEOMETRY_DIM = 2 * len(GEOMETRY_PAIRS) + len(SYMMETRIC_PAIRS) + 1
# The segment ratios of keypoint_geometry (first TAIL_DIM columns) that also go through the tail pooling.
TAIL_DIM = len(GEOMETRY_PAIRS) + len(SYMMETRIC_PAIRS)
TAIL_SHIFT = 2.0


def _block(c_in: int, c_out: int, groups: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.GroupNorm(groups, c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GroupNorm(groups, c_out),
        nn.SiLU(),
    )


def letterbox(images: torch.Tensor, keypoints: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad views to a centred square (zeros) and resize to size x size, keeping the body's proportions.

    images (V, 3, H, W) float; keypoints (V, 17, 3) in pixels of the images. Returns
    ((V, 3, size, size) float32, (V, 17, 3) keypoints in pixels of the result; invisible ones stay zero).
    """
    v, _, h, w = images.shape
    side = max(h, w)
    pad_x, pad_y = (side - w) / 2, (side - h) / 2
    x = images.float()
    if h != w:
        left, top = int(pad_x), int(pad_y)
        x = F.pad(x, (left, side - w - left, top, side - h - top))
        pad_x, pad_y = float(left), float(top)
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    s = size / side
    kp = keypoints.float().clone()
    visible = kp[..., 2:3] > 0
    kp[..., 0] = (kp[..., 0] + pad_x) * s
    kp[..., 1] = (kp[..., 1] + pad_y) * s
    kp = torch.where(visible, kp, torch.zeros((), device=kp.device))
    return x, kp


def person_crop(images: torch.Tensor, keypoints: torch.Tensor, size: int, margin: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a square around each view's visible keypoints and resize it to size x size (antialiased).

    images (V, 3, H, W); keypoints (V, 17, 3) px. The square is centred on the keypoints' box, its side the
    box's longer side times (1 + 2 margin); parts outside the image are zero. A view without visible keypoints
    is letterboxed whole. Returns ((V, 3, size, size) float32, (V, 17, 3) keypoints in pixels of the crops).
    """
    from torchvision.ops import roi_align

    v, _, h, w = images.shape
    kp = keypoints.float().to(images.device)
    vis = kp[..., 2] > 0                                                     # (V, K)
    big = torch.tensor(1e9, device=kp.device)
    x0 = torch.where(vis, kp[..., 0], big).amin(1)
    y0 = torch.where(vis, kp[..., 1], big).amin(1)
    x1 = torch.where(vis, kp[..., 0], -big).amax(1)
    y1 = torch.where(vis, kp[..., 1], -big).amax(1)
    any_vis = vis.any(1)
    side = torch.maximum(x1 - x0, y1 - y0).clamp(min=8.0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    whole = float(max(h, w))
    side = torch.where(any_vis, side, torch.full_like(side, whole))
    cx = torch.where(any_vis, cx, torch.full_like(cx, w / 2))
    cy = torch.where(any_vis, cy, torch.full_like(cy, h / 2))
    bx0, by0 = cx - side / 2, cy - side / 2
    boxes = torch.stack([torch.arange(v, device=kp.device, dtype=torch.float32), bx0, by0, bx0 + side, by0 + side], 1)  # (V, 5)
    crops = roi_align(images.float(), boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    out = kp.clone()
    scale = (size / side)[:, None]
    out[..., 0] = (kp[..., 0] - bx0[:, None]) * scale
    out[..., 1] = (kp[..., 1] - by0[:, None]) * scale
    out = torch.where(vis[..., None], out, torch.zeros((), device=out.device))
    return crops, out.cpu()


def prepare_views(images: torch.Tensor, keypoints: torch.Tensor, config: "BodyVAEConfig") -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's view preparation: (V, 3, H, W) + (V, 17, 3) px -> (V, 3, R, R) + keypoints in px of R."""
    if config.crop == "person":
        return person_crop(images, keypoints, config.input_size, config.crop_margin)
    return letterbox(images, keypoints, config.input_size)


def keypoint_geometry(keypoints: torch.Tensor) -> torch.Tensor:
    """Scale-free body proportions of each view: (V, 17, 3) -> (V, GEOMETRY_DIM).

    The lengths of GEOMETRY_PAIRS divided by the torso length (mean shoulder-hip distance), a mask of which are
    known, and whether the torso was seen. Missing segments give zeros; without a visible torso the
    keypoints' box size (/ 3) is the scale.
    """
    kp = keypoints.float()
    xy, vis = kp[..., :2], kp[..., 2] > 0
    torso_ok = vis[:, 5] & vis[:, 6] & vis[:, 11] & vis[:, 12]
    torso = ((xy[:, 5] - xy[:, 11]).norm(dim=-1) + (xy[:, 6] - xy[:, 12]).norm(dim=-1)) / 2
    big = torch.tensor(1e9, device=kp.device)
    lo = torch.where(vis[..., None], xy, big).amin(1)
    hi = torch.where(vis[..., None], xy, -big).amax(1)
    extent = (hi - lo).amax(-1).clamp(min=1e-3) / 3
    use_torso = torso_ok & (torso > 1e-3)
    scale = torch.where(use_torso, torso, extent).clamp(min=1e-3)                          # (V,)
    a = torch.tensor([p[0] for p in GEOMETRY_PAIRS], device=kp.device)
    b = torch.tensor([p[1] for p in GEOMETRY_PAIRS], device=kp.device)
    pair_ok = (vis[:, a] & vis[:, b]).float()
    dist = (xy[:, a] - xy[:, b]).norm(dim=-1) / scale[:, None] * pair_ok                 # (V, pairs)
    longer = torch.stack([torch.maximum(dist[:, i], dist[:, j]) for i, j in SYMMETRIC_PAIRS], 1)  # (V, twins)
    return torch.cat([dist, longer, pair_ok, use_torso.float()[:, None]], 1)


def view_weights(keypoints: torch.Tensor) -> torch.Tensor:
    """(V, 17, 3) -> (V,) mean confidence of each view's visible keypoints (0 when none is visible)."""
    return view_confidence(keypoints)


def limb_ratios_from_keypoints(keypoints: torch.Tensor, quantile: float = 0.9) -> torch.Tensor:
    """A person's limb-length ratios estimated from 2D keypoints of their views.

    keypoints (V, 17, 3). Per view, each limb of ``LIMBS`` is divided by the torso length (mean of
    shoulder-hip distances); per limb the ``quantile`` over views is taken, because 2D projection only
    shortens a limb, so a high quantile is near its true ratio. Returns (L,) with NaN for limbs never seen.
    """
    xy, vis = keypoints[..., :2].float(), keypoints[..., 2] > 0
    torso_vis = vis[:, 5] & vis[:, 6] & vis[:, 11] & vis[:, 12]
    torso = ((xy[:, 5] - xy[:, 11]).norm(dim=-1) + (xy[:, 6] - xy[:, 12]).norm(dim=-1)) / 2  # (V,)
    out = torch.full((NUM_LIMBS,), float("nan"))
    for i, (a, b) in enumerate(LIMBS):
        ok = torso_vis & vis[:, a] & vis[:, b] & (torso > 1e-3)
        if ok.any():
            r = (xy[ok, a] - xy[ok, b]).norm(dim=-1) / torso[ok]
            out[i] = torch.quantile(r, quantile)
    return out


class BodyVAE(nn.Module):
    """Encoder (per view) + weighted pooling + mu/logvar heads + pose-conditioned decoder (training)."""

    def __init__(self, config: BodyVAEConfig = BodyVAEConfig()) -> None:
        super().__init__()
        self.config = cfg = config
        # How the photos it learns from are prepared (body_id.BodyIDRecipe): set by the trainer, read from and
        # written to its file; None for a file that records none (body_id.recipe_of names the old defaults then).
        self.recipe: BodyIDRecipe | None = None
        k, g = NUM_KEYPOINTS, cfg.groups
        # --- encoder: (3 + K, R, R) -> (F,)
        # No full-resolution stem: the first stage reads the 20 input channels with a stride-2 conv, which
        # keeps the cost per view low at R = 256 (and on CPUs).
        layers: list[nn.Module] = []
        c = 3 + k
        for w in cfg.widths:
            layers.append(_block(c, w, g, stride=2))
            c = w
        layers += [nn.AdaptiveAvgPool2d(cfg.pool_size), nn.Flatten(), nn.Linear(c * cfg.pool_size ** 2, cfg.feature_dim), nn.SiLU()]
        self.encoder = nn.Sequential(*layers)
        self.geometry = (nn.Sequential(nn.Linear(GEOMETRY_DIM, cfg.feature_dim), nn.SiLU(), nn.Linear(cfg.feature_dim, cfg.feature_dim))
                         if cfg.keypoint_branch else None)
        # --- after pooling: (F [+ TAIL_DIM],) -> mu, logvar (D,)
        self.tail = cfg.tail_pool if (cfg.keypoint_branch and cfg.tail_pool > 0) else 0.0
        self.pooled_dim = cfg.feature_dim + (TAIL_DIM if self.tail else 0)
        self.trunk = nn.Sequential(nn.Linear(self.pooled_dim, cfg.feature_dim), nn.SiLU())
        self.to_mean = nn.Linear(cfg.feature_dim, cfg.latent_dim)
        self.to_logvar = nn.Linear(cfg.feature_dim, cfg.latent_dim)
        # --- decoder: z (D,) + heat maps (K, R, R) -> weighted image (3, R, R)
        dec = tuple(reversed(cfg.widths))
        self.base = cfg.input_size // 2 ** len(cfg.widths)
        self.dec_in = nn.Linear(cfg.latent_dim, dec[0] * self.base * self.base)
        self.dec_blocks = nn.ModuleList()
        self.dec_film = nn.ModuleList()
        c = dec[0]
        for w in dec:
            self.dec_blocks.append(_block(c + k, w, g))
            self.dec_film.append(nn.Linear(cfg.latent_dim, 2 * w))
            c = w
        self.dec_out = nn.Conv2d(c + k, 3, 3, padding=1)
        # --- limb ratios from z
        self.limb = nn.Sequential(nn.Linear(cfg.latent_dim, 128), nn.SiLU(), nn.Linear(128, NUM_LIMBS)) if cfg.limb_head else None

    # ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def heatmaps(self, keypoints: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """(V, 17, 3) keypoints in pixels of an R x R view -> (V, 17, s, s) heat maps (s = size or R)."""
        r = self.config.input_size
        s = size or r
        kp = keypoints
        if s != r:
            kp = keypoints.clone()
            kp[..., :2] = kp[..., :2] * (s / r)
        return keypoint_gaussians(kp, s, s, self.config.heatmap_sigma * s).to(self.device)

    def view_features(self, views: torch.Tensor, keypoints: torch.Tensor, image_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Per-view features, the quantities that are pooled. views (V, 3, R, R) weighted images; keypoints
        (V, 17, 3) px at R -> (V, pooled_dim): F learnt features, then (tail pooling on) exp(kappa (r - shift))
        of the TAIL_DIM segment ratios r (0 for a segment not seen). image_keep (V,) 0/1, training only: 0 drops
        that view's convolutional (image + heat map) feature, leaving the keypoint branch alone."""
        x = torch.cat([views.to(self.device, torch.float32), self.heatmaps(keypoints)], 1)  # (V, 3 + K, R, R)
        f = self.encoder(x)                                                                   # (V, F)
        if image_keep is not None:   # training: views whose image branch is dropped keep only their geometry
            f = f * image_keep.to(f.device, f.dtype)[:, None]
        if self.geometry is not None:
            geo = keypoint_geometry(keypoints).to(self.device)
            f = f + self.geometry(geo)
            if self.tail:
                r = geo[:, :TAIL_DIM]
                known = r > 0
                e = torch.exp(self.tail * (r.clamp(max=4.0) - TAIL_SHIFT))
                f = torch.cat([f, torch.where(known, e, torch.zeros((), device=e.device))], 1)
        return f

    def heads(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, pooled_dim) pooled features -> mean (P, D), logvar (P, D)."""
        if self.tail:
            f, t = pooled[:, :self.config.feature_dim], pooled[:, self.config.feature_dim:]
            floor = math.exp(-self.tail * TAIL_SHIFT)
            soft_max = torch.log(t.clamp(min=floor)) / self.tail + TAIL_SHIFT                  # (P, TAIL_DIM) >= 0
            pooled = torch.cat([f, soft_max], 1)
        h = self.trunk(pooled)
        return self.to_mean(h), self.to_logvar(h).clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """z (N, D) and keypoints (N, 17, 3) px at R -> reconstructed weighted views (N, 3, R, R) in [0, 1]."""
        n = z.shape[0]
        x = self.dec_in(z).view(n, -1, self.base, self.base)
        s = self.base
        for i, (block, film) in enumerate(zip(self.dec_blocks, self.dec_film)):
            if i:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                s *= 2
            x = block(torch.cat([x, self.heatmaps(keypoints, s)], 1))
            scale, shift = film(z).chunk(2, -1)
            x = x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return torch.sigmoid(self.dec_out(torch.cat([x, self.heatmaps(keypoints)], 1)))

    def forward(self, ctx_views: torch.Tensor, ctx_keypoints: torch.Tensor, ctx_weights: torch.Tensor,
                ctx_owner: torch.Tensor, n_persons: int, tgt_keypoints: torch.Tensor, tgt_owner: torch.Tensor,
                noise: torch.Tensor | None, view_means: bool = False,
                image_keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training pass (one call, so DDP sees every parameter).

        ctx_views (Nc, 3, R, R), ctx_keypoints (Nc, 17, 3), ctx_weights (Nc,), ctx_owner (Nc,) person index
        in [0, P); tgt_keypoints (Nt, 17, 3), tgt_owner (Nt,); noise (P, D) for z = mu + sigma * noise
        (None: z = mu). Returns recon (Nt, 3, R, R), mean (P, D), logvar (P, D), limbs (P, L) if the head is on,
        and with view_means the Body-ID mean each context view gives alone, view_mean (Nc, D). image_keep (Nc,)
        0/1: views whose image branch is dropped for this step (see TrainConfig.image_dropout).
        """
        f = self.view_features(ctx_views, ctx_keypoints, image_keep)            # (Nc, F)
        w = ctx_weights.to(f.device, f.dtype)
        owner = ctx_owner.to(f.device)
        num = torch.zeros(n_persons, f.shape[1], device=f.device, dtype=f.dtype).index_add(0, owner, f * w[:, None])
        den = torch.zeros(n_persons, device=f.device, dtype=f.dtype).index_add(0, owner, w)
        mean, logvar = self.heads(num / den.clamp(min=1e-8)[:, None])          # (P, D)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise.to(mean)
        out = {"mean": mean, "logvar": logvar, "recon": self.decode(z[tgt_owner.to(f.device)], tgt_keypoints)}
        if view_means:
            out["view_mean"] = self.heads(f)[0]                                  # (Nc, D): each view's own Body-ID
        if self.limb is not None:
            out["limbs"] = self.limb(z)
        return out

    # ---------------------------------------------------------------------------------------------
    def _check_views(self, images: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise BoLIDError(f"views must be a tensor (V, 3, H, W); got {got}")
        v = images.shape[0]
        if v == 0:
            raise BoLIDError("no views to encode: give at least one image with a person in it")
        if keypoints.shape != (v, NUM_KEYPOINTS, 3):
            raise BoLIDError(f"keypoints must have shape ({v}, 17, 3), one pose per view; got {tuple(keypoints.shape)}")
        w = view_weights(keypoints) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != (v,):
            raise BoLIDError(f"view weights must have shape ({v},); got {tuple(w.shape)}")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise BoLIDError("view weights must be finite and >= 0")
        if float(w.sum()) <= 0:
            raise BoLIDError("every view has weight 0 (no visible keypoint in any view): give views in which the pose model finds the person")
        return w.float().cpu()

    @torch.no_grad()
    def encode_views(self, images: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None = None, *,
                     chunk: int = 8, progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Body-ID of one person from V views, streaming: memory does not grow with V.

        images (V, 3, H, W) weighted views in [0, 1] (any H, W; cropped or letterboxed to R here), keypoints (V, 17, 3) in
        pixels of the images, weights (V,) per view (default: mean keypoint confidence). Views are read
        ``chunk`` at a time through a ``ViewPool``; only sum_j w_j f_j (F) and sum_j w_j are kept between chunks.
        Returns mean (D,), logvar (D,) on the CPU, float32.
        """
        w = self._check_views(images, keypoints, weights)
        if chunk < 1:
            raise BoLIDError(f"chunk must be >= 1; got {chunk}")
        v = images.shape[0]
        pool = ViewPool(self)
        for start in range(0, v, chunk):
            stop = min(v, start + chunk)
            pool.add(images[start:stop], keypoints[start:stop], w[start:stop])
            if progress is not None:
                progress(stop, v)
        return pool.result()

    @torch.no_grad()
    def encode_views_batched(self, images: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The same Body-ID computed the paper's way: every view stacked in one tensor at once.

        Memory grows with V; kept as the reference the streaming path is tested and benchmarked against.
        """
        w = self._check_views(images, keypoints, weights)
        views, kp = prepare_views(images, keypoints.cpu(), self.config)         # (V, 3, R, R)
        f = self.view_features(views, kp)                                        # (V, F)
        wd = w.to(f.device, torch.float64)
        pooled = (f.double() * wd[:, None]).sum(0) / wd.sum()
        mean, logvar = self.heads(pooled.float()[None])
        return mean[0].cpu(), logvar[0].cpu()

    def fingerprint(self, *, refresh: bool = False) -> str:
        """A short hex hash of the config and every weight: which VAE made a Body-ID.

        Hashing every weight of a full-size VAE takes a moment, so the value is kept after the first call;
        pass refresh=True after changing the weights (training computes it afresh when it saves).
        """
        cached = getattr(self, "_fingerprint", None)
        if cached is not None and not refresh:
            return cached
        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for key, t in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


class ViewPool:
    """The running confidence-weighted mean of view features (DESIGN.md "Body-ID VAE"), fed a few views at a time.

    What ``BodyVAE.encode_views`` streams over the views of one tensor, for callers whose views come from
    somewhere that never holds them all (a folder read a few photos at a time: ``body_from_folder``). Between
    calls only sum_j w_j f_j (pooled width, float64) and sum_j w_j are kept, so memory does not depend on how
    many views go in; the sums are in float64 and a chunk's views are summed before they join, so feeding the
    same chunks gives the same Body-ID as ``encode_views`` bit for bit.
    """

    def __init__(self, model: BodyVAE) -> None:
        self.model = model
        self.acc = torch.zeros(model.pooled_dim, dtype=torch.float64, device=model.device)  # sum_j w_j f_j
        self.total = 0.0                                                                    # sum_j w_j
        self.views = 0                                                                      # views of weight > 0

    @torch.no_grad()
    def add(self, images: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor) -> None:
        """images (c, 3, H, W) weighted views in [0, 1], keypoints (c, 17, 3) in their pixels, weights (c,) >= 0."""
        c = images.shape[0]
        if keypoints.shape != (c, NUM_KEYPOINTS, 3) or tuple(weights.shape) != (c,):
            raise BoLIDError(f"each view needs one pose (17, 3) and one weight: got {c} views, keypoints "
                             f"{tuple(keypoints.shape)}, weights {tuple(weights.shape)}")
        wc = weights.float().cpu()
        keep = wc > 0  # a view of weight 0 cannot change the mean: do not spend time on it
        if not keep.any():
            return
        model = self.model
        views, kp = prepare_views(images[keep.to(images.device)], keypoints[keep.to(keypoints.device)].cpu(), model.config)
        f = model.view_features(views, kp)                                                  # (c', F)
        self.acc += (f.double() * wc[keep].to(f.device, torch.float64)[:, None]).sum(0)
        self.total += float(wc[keep].double().sum())
        self.views += int(keep.sum())

    @torch.no_grad()
    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """mean (D,), logvar (D,) on the CPU, float32, of every view added so far."""
        if self.total <= 0:
            raise BoLIDError("every view has weight 0 (no visible keypoint in any view): give views in which the pose "
                             "model finds the person")
        mean, logvar = self.model.heads((self.acc / self.total).float()[None])
        return mean[0].cpu(), logvar[0].cpu()


def encode_body(model: BodyVAE, images: torch.Tensor, pose, *, sample_seed: int | None = None, chunk: int = 8,
                progress: Callable[[int, int], None] | None = None):
    """Body-ID of one person from weighted views and their poses; views without a person are skipped.

    images (V, 3, H, W) weighted views in [0, 1]; pose: a PoseBatch of V entries for these images.
    sample_seed: None gives the deterministic mean (c_body = mu); a seed gives a draw from q(z | views).
    Returns a BodyEmbedding with views used / skipped and the mean confidence in its metadata.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise BoLIDError(f"views must be a tensor (V, 3, H, W); got {got}")
    v = images.shape[0]
    if len(pose) != v:
        raise BoLIDError(f"got {v} views but poses for {len(pose)} images: find the poses of exactly these views")
    if tuple(pose.image_size) != tuple(images.shape[2:]):
        raise BoLIDError(f"the poses were found on images of size {tuple(pose.image_size)} (H, W) but the views are "
                         f"{tuple(images.shape[2:])}: weight the same images the poses were found on")
    weights = pose.view_confidence().float() * pose.found.float()   # (V,) a view with no person weighs 0
    used = weights > 0
    n_used = int(used.sum())
    if n_used == 0:
        raise no_person_error(v)
    mean, logvar = model.encode_views(images, pose.keypoints, weights, chunk=chunk, progress=progress)
    return body_embedding(model, mean, logvar, views_used=n_used, views_skipped=v - n_used,
                          mean_confidence=float(weights[used].mean()), sample_seed=sample_seed)


def no_person_error(views: int) -> BoLIDError:
    """What to tell the user when none of ``views`` photos shows a person with a visible keypoint."""
    return BoLIDError(f"no person was found in any of the {views} views (or none has a visible keypoint): "
                      "use photos where the whole person is visible, or lower the pose detector's confidence threshold")


def body_embedding(model: BodyVAE, mean: torch.Tensor, logvar: torch.Tensor, *, views_used: int, views_skipped: int,
                   mean_confidence: float, sample_seed: int | None = None):
    """A BodyEmbedding of mean (D,), logvar (D,) with how it was made in its metadata; a draw when sample_seed is set."""
    from .embedding import BodyEmbedding

    emb = BodyEmbedding(mean, logvar, {
        "vae_fingerprint": model.fingerprint(), "views_used": views_used, "views_skipped": views_skipped,
        "mean_confidence": mean_confidence, "source": "encode",
    })
    return emb if sample_seed is None else emb.sample(sample_seed)


# Names whose home moved to body_vae_files (issue 27), still importable from here; looked up on first use, since
# that module imports BodyVAE from this one.
_MOVED = ("FORMAT", "VERSION", "FINGERPRINT_KEY", "save_body_vae", "load_body_vae")


def __getattr__(name: str):
    if name in _MOVED:
        from . import body_vae_files

        return getattr(body_vae_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
