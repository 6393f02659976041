"""The three terms of BoLID's objective (paper eq. 14): ``L = L_diff + α_id·L_id + β_CLIP·L_CLIP``.

- ``L_diff``: the usual denoising MSE against ε (``prediction_type`` "epsilon") or against v ("v_prediction").
- ``L_id``: the 17 COCO keypoints of a clean *preview* of the generated image against those of the target.
  The preview is the x0 the model implies at the sampled timestep (one-step x0 prediction), or the output of a
  one-step shortcut model (LCM / Lightning: the LCM-Lookahead idea), decoded by a VAE (a tiny one is fine).
  Keypoints come from a *differentiable* decode of the YOLO pose head: the head's raw output over all anchors,
  no NMS, reduced to one person by an objectness-weighted soft-argmax, or by the best anchor inside the target's
  box (the choice of the anchor is discrete, the values at it are differentiable). Invisible joints of the target
  are masked out.
- ``L_CLIP = 1 − cos(CLIP_image(preview), CLIP_text(caption))``.

And the Body-ID VAE trainer's identity terms (``contrast_loss``, ``view_contrast_loss``: InfoNCE over Body-IDs of
one person's disjoint view subsets, see training/body_vae.py's TrainConfig).

Shape letters: B batch, C latent channels, h, w latent size, H, W image size, K = 17 keypoints, A anchors,
E CLIP embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BoLIDError
from ..method.keypoints import NUM_KEYPOINTS

PREDICTION_TYPES = ("epsilon", "v_prediction")
KEYPOINT_DECODES = ("soft", "target_box")

# OpenAI CLIP's input normalisation (also used by the LAION/OpenCLIP ViT-H and bigG image encoders).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# --- diffusion ----------------------------------------------------------------------------------

def diffusion_target(latents: torch.Tensor, noise: torch.Tensor, alphas_cumprod_t: torch.Tensor,
                     prediction_type: str) -> torch.Tensor:
    """What the UNet should predict: ε, or v = √ᾱ·ε − √(1−ᾱ)·x0. latents, noise (B, C, h, w); ᾱ_t (B,)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        a = alphas_cumprod_t.reshape(-1, 1, 1, 1).to(latents.dtype)
        return a.sqrt() * noise - (1 - a).sqrt() * latents
    raise BoLIDError(f"prediction_type must be one of {PREDICTION_TYPES}; got {prediction_type!r} (sample prediction is not supported)")


def diffusion_loss(model_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_diff: mean squared error, computed in float32. (B, C, h, w) each -> scalar."""
    return F.mse_loss(model_pred.float(), target.float())


def predict_x0(noisy: torch.Tensor, model_pred: torch.Tensor, alphas_cumprod_t: torch.Tensor,
               prediction_type: str) -> torch.Tensor:
    """The clean latent implied by one model evaluation (the one-step x0 preview). All (B, C, h, w); ᾱ_t (B,).

    epsilon: x0 = (x_t − √(1−ᾱ)·ε̂) / √ᾱ;  v: x0 = √ᾱ·x_t − √(1−ᾱ)·v̂.
    """
    a = alphas_cumprod_t.reshape(-1, 1, 1, 1).float()
    x, p = noisy.float(), model_pred.float()
    if prediction_type == "epsilon":
        return (x - (1 - a).sqrt() * p) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * p
    raise BoLIDError(f"prediction_type must be one of {PREDICTION_TYPES}; got {prediction_type!r}")


def lcm_boundary(timesteps: torch.Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """LCM's boundary-condition scalings (c_skip, c_out), each (B,), as diffusers' LCMScheduler applies them:
    the consistency output is ``c_skip·x_t + c_out·x0_pred``."""
    t = timesteps.float() * timestep_scaling
    c_skip = sigma_data ** 2 / (t ** 2 + sigma_data ** 2)
    c_out = t / (t ** 2 + sigma_data ** 2) ** 0.5
    return c_skip, c_out


# --- VAE decode ---------------------------------------------------------------------------------

def decode_latents(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """UNet latents (B, C, h, w) -> images (B, 3, H, W) in [0, 1], differentiable.

    Works with diffusers' AutoencoderKL (latents divided by its ``scaling_factor``, shifted by ``shift_factor``)
    and AutoencoderTiny (its latents are the UNet's, scaling factor 1). Both decoders give [-1, 1].
    """
    cfg = vae.config
    z = latents / float(getattr(cfg, "scaling_factor", 1.0) or 1.0)
    shift = getattr(cfg, "shift_factor", None)
    if shift:
        z = z + float(shift)
    dtype = next(vae.parameters()).dtype
    images = vae.decode(z.to(dtype)).sample
    return ((images.float() + 1) / 2).clamp(0, 1)


def encode_images(vae: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> UNet latents (B, C, h, w): the posterior mean of an AutoencoderKL (no
    sampling, so every process and every resume agrees), the latents of an AutoencoderTiny; scaled and shifted."""
    dtype = next(vae.parameters()).dtype
    out = vae.encode((images * 2 - 1).to(dtype))
    z = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
    cfg = vae.config
    shift = getattr(cfg, "shift_factor", None)
    if shift:
        z = z - float(shift)
    return z.float() * float(getattr(cfg, "scaling_factor", 1.0) or 1.0)


# --- differentiable pose ------------------------------------------------------------------------

@dataclass
class DenseKeypoints:
    """Decoded YOLO pose head output over all anchors (no NMS).

    boxes (B, 4, A) x1 y1 x2 y2 in pixels of the network input; scores (B, A) person objectness in [0, 1];
    keypoints (B, K, 3, A): x, y in pixels and visibility in [0, 1].
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    keypoints: torch.Tensor


def pose_head(pose_net: nn.Module) -> nn.Module:
    """The ultralytics Pose head (the last layer) of a YOLO pose DetectionModel; refuses other models."""
    layers = getattr(pose_net, "model", None)
    head = layers[-1] if layers is not None else None
    if head is None or tuple(getattr(head, "kpt_shape", ()) or ()) != (NUM_KEYPOINTS, 3):
        raise BoLIDError("the identity loss needs a YOLO pose model with the 17 COCO keypoints and their visibility "
                         "(kpt_shape (17, 3)), e.g. yolo11n-pose.pt; the model given is not one")
    return head


def dense_keypoints(pose_net: nn.Module, images: torch.Tensor) -> DenseKeypoints:
    """Run a frozen ultralytics pose network on images (B, 3, H, W) in [0, 1] (H, W multiples of 32) and decode
    its head over all anchors, differentiably with respect to the images.

    The network must be in eval mode (BatchNorm uses its running statistics, so the network stays frozen).
    """
    head = pose_head(pose_net)
    if pose_net.training:
        raise BoLIDError("the pose network must be in eval mode for the identity loss (call .eval())")
    if images.shape[-1] % 32 or images.shape[-2] % 32:
        raise BoLIDError(f"pose network input must be a multiple of 32 on each side; got {tuple(images.shape[-2:])}: set pose_imgsz to a multiple of 32")
    dtype = next(pose_net.parameters()).dtype
    out = pose_net(images.to(dtype))
    # eval mode: (decoded, raw); decoded (B, 4 + nc + K·3, A): xywh, class scores, keypoints (x, y px, sigmoid vis)
    decoded = out[0] if isinstance(out, (tuple, list)) else out
    if getattr(head, "end2end", False):
        raw = out[1]
        raw = raw["one2one"] if "one2one" in raw else raw
        decoded = head._inference(raw)          # (B, 4 + nc + K·3, A), before the top-k of the end-to-end head
    nc = int(head.nc)
    decoded = decoded.float()
    xy, wh = decoded[:, 0:2], decoded[:, 2:4]
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)               # (B, 4, A)
    scores = decoded[:, 4:4 + nc].amax(dim=1)                          # (B, A); nc is 1 (person) for COCO pose
    kpts = decoded[:, 4 + nc:]
    b, _, a = kpts.shape
    kpts = kpts.reshape(b, NUM_KEYPOINTS, 3, a)                         # (B, K, 3, A)
    return DenseKeypoints(boxes, scores, kpts)


def reduce_keypoints(dense: DenseKeypoints, mode: str = "soft", temperature: float = 0.05,
                     target_boxes: torch.Tensor | None = None) -> torch.Tensor:
    """One person's keypoints (B, K, 3) from dense predictions, differentiably.

    soft: soft-argmax over anchors with weights softmax(logit(objectness) / temperature): a weighted mean of the
    anchors' keypoints that tends to the most confident anchor as temperature -> 0.
    target_box: the highest-scoring anchor whose centre lies inside ``target_boxes`` (B, 4) x1 y1 x2 y2 (the
    anchor's choice is discrete; the keypoints at it carry the gradient); the best anchor overall when none does.
    """
    scores = dense.scores.clamp(1e-6, 1 - 1e-6)
    if mode == "soft":
        weights = torch.softmax(torch.logit(scores) / temperature, dim=-1)     # (B, A)
        return torch.einsum("bkca,ba->bkc", dense.keypoints, weights)
    if mode == "target_box":
        if target_boxes is None:
            raise BoLIDError("keypoint decode 'target_box' needs the target's box")
        centres = (dense.boxes[:, 0:2] + dense.boxes[:, 2:4]) / 2               # (B, 2, A)
        tb = target_boxes.to(centres).unsqueeze(-1)                              # (B, 4, 1)
        inside = ((centres[:, 0] >= tb[:, 0]) & (centres[:, 0] <= tb[:, 2]) &
                  (centres[:, 1] >= tb[:, 1]) & (centres[:, 1] <= tb[:, 3]))     # (B, A)
        masked = torch.where(inside, scores, scores - 2.0)                       # outside only wins when nothing is inside
        idx = masked.detach().argmax(dim=-1)                                      # (B,)
        index = idx.reshape(-1, 1, 1, 1).expand(-1, dense.keypoints.shape[1], 3, 1)
        return dense.keypoints.gather(-1, index).squeeze(-1)
    raise BoLIDError(f"keypoint decode must be one of {KEYPOINT_DECODES}; got {mode!r}")


def best_boxes(dense: DenseKeypoints) -> torch.Tensor:
    """The box (B, 4) of the highest-scoring anchor (for the target's box; no gradient)."""
    idx = dense.scores.argmax(dim=-1)
    return dense.boxes.gather(-1, idx.reshape(-1, 1, 1).expand(-1, 4, 1)).squeeze(-1)


def keypoint_loss(pred: torch.Tensor, target: torch.Tensor, image_size: tuple[int, int],
                  visibility: float = 0.5, reduce: bool = True) -> torch.Tensor:
    """L_id = Σ_k ‖p_k^gen − p_k^ref‖² over the target's visible joints (paper eq. 14), averaged over the batch
    (``reduce``) or per row (B,).

    pred, target (B, K, 3) in pixels of an image of ``image_size`` (H, W); coordinates are divided by (W, H) so
    the loss does not depend on the resolution. A joint whose target visibility is below ``visibility`` is masked.
    """
    h, w = image_size
    scale = torch.tensor([w, h], dtype=torch.float32, device=pred.device)
    mask = (target[..., 2] >= visibility).float()                               # (B, K)
    d2 = ((pred[..., :2].float() - target[..., :2].float()) / scale).pow(2).sum(-1)   # (B, K)
    per_row = (d2 * mask).sum(-1)
    return per_row.mean() if reduce else per_row


# --- CLIP ---------------------------------------------------------------------------------------

def clip_preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] -> CLIP input (B, 3, size, size): bicubic resize of the short side, centre
    crop, CLIP normalisation. Differentiable."""
    h, w = images.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(images.float(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=(s < 1))
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device).reshape(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).reshape(1, 3, 1, 1)
    return (x - mean) / std


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, reduce: bool = True) -> torch.Tensor:
    """L_CLIP = 1 − cos(CLIP_image, CLIP_text), averaged over the batch (``reduce``) or per row (B,). (B, E) each."""
    per_row = 1 - F.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
    return per_row.mean() if reduce else per_row


# --- the Body-ID VAE's identity terms ---------------------------------------------------------------

def contrast_loss(a: torch.Tensor, b: torch.Tensor, person: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised InfoNCE between two Body-IDs per slot: a, b (P, D), person (P,) identity of each slot.

    logits_ij = -|a_i - b_j|^2 / temperature; every j of the same person as i is a positive (a person may
    fill several slots when the step has more slots than people). Symmetric in a and b.
    """
    logits = -torch.cdist(a, b).square() / temperature                       # (P, P)
    same = (person[:, None] == person[None, :]).to(logits.device)
    return (_info_nce(logits, same, 1) + _info_nce(logits, same, 0)) / 2


def _info_nce(logits: torch.Tensor, same: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over the other dimension of -log(sum of the positives' softmax along ``dim``); same: positives mask."""
    pos = torch.where(same, logits, torch.full_like(logits, -float("inf")))
    return (torch.logsumexp(logits, dim) - torch.logsumexp(pos, dim)).mean()


def view_contrast_loss(view_mean: torch.Tensor, owner: torch.Tensor, slot_mean: torch.Tensor, person: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """InfoNCE of single views against the other subset's Body-IDs.

    view_mean (Nc, D) each context view's own Body-ID; owner (Nc,) its slot in [0, 2P) (slot i and P + i are the
    two disjoint subsets of person[i]); slot_mean (2P, D). A view of the first half is scored against the
    second half's Body-IDs and the other way round, so a view is never compared with a pool it is part of;
    every slot of the view's person in that half is a positive.
    """
    p = person.shape[0]
    first = owner < p
    who = person[owner % p]                                                   # (Nc,) identity of each view
    half = torch.where(first[:, None, None], slot_mean[None, p:], slot_mean[None, :p])     # (Nc, P, D)
    logits = -(view_mean[:, None, :] - half).square().sum(-1) / temperature   # (Nc, P)
    return _info_nce(logits, who[:, None] == person[None, :], 1)
