"""The world's networks: the reduced-width SDXL-layout UNet (diffusers, ComfyUI's SDXL key layout), its noise
schedule, and the small CNNs that play the parts of YOLO (keypoints for L_id) and of the evaluators (identity and
pose-class classifiers, trained on ground-truth renders only).

Legend: B batch, S image side, K = 17 keypoints, N identities.
"""

from __future__ import annotations

import types
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...method.keypoints import NUM_KEYPOINTS
from ...method.sdxl_layers import CONTEXT_DIM

ADM_TIME_DIM = 256          # SDXL: each of the 6 size/crop numbers as a 256-wide sinusoid, + pooled 1280 = 2816


def unet_blocks(model_channels: int) -> tuple[int, int, int]:
    return (model_channels, 2 * model_channels, 4 * model_channels)


def build_unet(model_channels: int = 32, head_channels: int = 8, seed: int = 0) -> nn.Module:
    """diffusers' UNet2DConditionModel in SDXL's layout (70 attn2 sites, depths 2/10, text_time conditioning,
    context 2048, adm 2816, 32 norm groups as ComfyUI's SDXL) with widths (c, 2c, 4c). ComfyUI's SDXL class with
    ``model_channels = c`` holds the same weights under its own keys (comfy.utils.unet_to_diffusers)."""
    from diffusers import UNet2DConditionModel

    blocks = unet_blocks(model_channels)
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=blocks, transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=tuple(c // head_channels for c in blocks), cross_attention_dim=CONTEXT_DIM,
        norm_num_groups=32, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=ADM_TIME_DIM, projection_class_embeddings_input_dim=1280 + 6 * ADM_TIME_DIM)


PREDICTION = "v_prediction"


def scheduler():
    """SDXL's training schedule (ComfyUI's SDXL model_sampling: scaled-linear betas 0.00085..0.012, 1000 steps) with
    v-prediction (as SDXL fine-tunes such as "v_pred" checkpoints; ComfyUI's SDXL class takes it as
    ModelType.V_PREDICTION). A briefly trained eps model's error at the first sampling step is multiplied by
    sigma_max = 14.6 (an x0 error of 12 after 190 steps here); v-prediction's is not."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type=PREDICTION)


class _ContextRows:
    """The distinct rows of the last context the UNet was given, found once per forward and shared by its 140
    context projections: ``rows`` (U, 2048) with gradient, ``gather`` (B*T, U) one-hot (a matmul, whose backward is
    a matmul too, where indexing's backward is a scatter per layer)."""

    def __init__(self):
        self.x = None
        self.rows = self.gather = None

    def of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x is not self.x:
            flat = x.reshape(-1, x.shape[-1])
            _, inverse = torch.unique(flat.detach(), dim=0, return_inverse=True)
            u = int(inverse.max()) + 1
            first = torch.full((u,), flat.shape[0], dtype=torch.long, device=x.device)
            first = first.scatter_reduce(0, inverse, torch.arange(flat.shape[0], device=x.device), reduce="amin")
            self.x, self.rows = x, flat[first]
            self.gather = F.one_hot(inverse, u).to(flat.dtype)
        return self.rows, self.gather


def _dedup_linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear on the distinct rows of a context only (exact: equal rows give equal outputs)."""
    if x.ndim != 3:
        return F.linear(x, self.weight, self.bias)
    rows, gather = self._context_rows.of(x)
    return (gather @ F.linear(rows, self.weight, self.bias)).reshape(*x.shape[:-1], self.out_features)


def share_context_projections(unet: nn.Module) -> int:
    """Make every attn2 to_k / to_v of ``unet`` project each distinct context row once per forward. The weights and
    their names are untouched; returns how many layers were changed.

    A batch of this world holds a handful of prompts, and the text encoder's padding rows are all alike
    (``text.WorldTextEncoder``), so a batch's context has a few dozen distinct rows among B x 77; the 2048-wide
    context projections were most of the reduced-width UNet's work (70 sites x 2 x 77 x 2048 x width)."""
    shared = _ContextRows()
    n = 0
    for name, mod in unet.named_modules():
        if name.endswith("attn2"):
            for lin in (mod.to_k, mod.to_v):
                lin._context_rows = shared
                lin.forward = types.MethodType(_dedup_linear, lin)
                n += 1
    return n


def time_ids(size: int, batch: int) -> torch.Tensor:
    """SDXL's (orig_h, orig_w, crop_top, crop_left, target_h, target_w) for an uncropped square image."""
    return torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32).expand(batch, 6)


# --- small CNNs -----------------------------------------------------------------------------------

def _trunk(width: int, size: int) -> tuple[nn.Module, int]:
    layers, c, s = [], 3, size
    for w in (width, 2 * width, 4 * width):
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, w, 3, padding=1),
                   nn.GroupNorm(8, w), nn.SiLU(), nn.AvgPool2d(2)]
        c, s = w, s // 2
    return nn.Sequential(*layers, nn.Flatten()), c * s * s


class Classifier(nn.Module):
    """images (B, 3, S, S) in [0, 1] -> logits (B, classes); ``features`` gives the penultimate layer (FID/IS)."""

    def __init__(self, classes: int, size: int, width: int = 16, feature_dim: int = 128):
        super().__init__()
        self.trunk, flat = _trunk(width, size)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(flat, feature_dim), nn.SiLU())
        self.out = nn.Linear(feature_dim, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x * 2 - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


class PoseHead(nn.Module):
    """Stands in for the last layer of an ultralytics pose model: what ``training.losses.pose_head`` checks."""

    kpt_shape = (NUM_KEYPOINTS, 3)
    nc = 1
    end2end = False


class KeypointNet(nn.Module):
    """A small keypoint regressor trained on the world's ground truth, in place of YOLO for L_id.

    Called as the trainer calls a YOLO pose DetectionModel in eval mode: images (B, 3, S, S) in [0, 1] ->
    ((B, 4 + 1 + 17*3, 1) decoded output over one anchor: box centre/size covering the image, objectness, keypoints
    x, y in pixels and visibility), raw). ``model[-1]`` is the head the loss checks.
    """

    def __init__(self, size: int, width: int = 16):
        super().__init__()
        self.size = size
        trunk, flat = _trunk(width, size)
        self.model = nn.ModuleList([trunk, nn.Sequential(nn.Linear(flat, 256), nn.SiLU(), nn.Linear(256, NUM_KEYPOINTS * 3)), PoseHead()])

    def keypoints(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 17, 3): x, y in pixels of the input, visibility logit."""
        out = self.model[1](self.model[0](x * 2 - 1)).reshape(-1, NUM_KEYPOINTS, 3)
        s = x.shape[-1]
        return torch.cat([(out[..., :2] + 0.5) * s, out[..., 2:]], -1)

    def forward(self, x: torch.Tensor):
        kp = self.keypoints(x)
        b, s = x.shape[0], x.shape[-1]
        box = torch.tensor([s / 2, s / 2, s, s], device=x.device).expand(b, 4)
        score = torch.full((b, 1), 0.99, device=x.device)
        kp = torch.cat([kp[..., :2], torch.sigmoid(kp[..., 2:])], -1).reshape(b, -1)
        decoded = torch.cat([box, score, kp], 1)[..., None]
        return decoded, SimpleNamespace()
