"""Adapter training: ``python -m bolid_lib.training adapter --config FILE`` (paper 4.4).

    L = L_diff + α_id·L_id + β_CLIP·L_CLIP                                         (eq. 14)

SDXL stays frozen; the body branch, the ref branch or both learn (the ref branch may start from an IP-Adapter
SDXL file). The host is diffusers' UNet2DConditionModel with BoLID processors on its 70 attn2 sites (host.py);
the losses are in losses.py, the data in data.py. One GPU: run it as it is; several: ``accelerate launch
--num_processes N -m bolid_lib.training adapter --config FILE`` (accelerate's Accelerator does the rest).

The config file is YAML, JSON or TOML with the field names of ``AdapterTrainConfig``; a command-line flag
(``--alpha-id 0.1``) overrides the file. Checkpoints (safetensors only: adapter, optimizer state tensors; JSON
for the step) go to ``output_dir/checkpoints/step_NNNNNNN``; ``resume: latest`` continues from the newest one.
The final adapter is ``output_dir/<name>.safetensors`` in the BoLID adapter format, ready for ComfyUI's
``models/bolid`` folder.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..method.adapter import AdapterConfig, BoLIDAdapter
from ..method.adapter_files import load_adapter, save_adapter
from ..errors import BoLIDError
from . import dataset as D
from . import loop
from . import losses as L
from .host import AdapterTrainingModule

log = logging.getLogger("bolid")

BRANCHES = ("body", "ref", "both")
PREVIEWS = ("x0", "shortcut")
WEIGHTS_FILE = "adapter.safetensors"     # in each checkpoint folder (loop.CHECKPOINTS)
CHECKPOINTS = loop.CHECKPOINTS


@dataclass(frozen=True)
class AdapterTrainConfig:
    """Every setting of an adapter training run (file keys = field names; flags = --field-name)."""

    # data
    data_dir: str = ""
    resolution: int = 1024
    default_caption: str | None = None
    ref_source: str = "same"             # "same": the target photo (as IP-Adapter); "other": another photo of the person
    cache_dir: str | None = None         # Body-ID cache (default data_dir/.bolid_cache)
    dropout_text: float = 0.05
    dropout_ref: float = 0.05
    dropout_body: float = 0.05
    dropout_together: float = 0.05      # text, ref and body dropped together: CFG's unconditional row (IP-Adapter)
    num_workers: int = 0
    # models (local paths only)
    tiny: bool = False                   # tiny random models of the real classes (tests, smoke runs)
    pretrained: str | None = None        # SDXL diffusers folder, or an SDXL .safetensors checkpoint (ComfyUI's models/checkpoints/)
    unet: str | None = None              # UNet folder or .safetensors file (overrides pretrained's UNet)
    vae: str | None = None               # VAE folder or .safetensors file (overrides pretrained's VAE)
    tokenizer: str | None = None         # folder with CLIP's vocab.json + merges.txt (ComfyUI's comfy/sd1_tokenizer or the ComfyUI folder); needed when a single-file pretrained lies outside ComfyUI
    preview_vae: str | None = None       # e.g. a taesdxl (AutoencoderTiny) folder; default: vae
    image_encoder: str | None = None     # CLIPVisionModelWithProjection folder (ref branch)
    clip_model: str | None = None        # CLIPModel folder (L_CLIP)
    pose_model: str | None = None        # YOLO pose .pt (L_id and Body-IDs)
    pose_conf: float | None = None       # detection threshold when computing Body-IDs (None: the Body-ID VAE's recipe)
    body_vae: str | None = None          # Body-ID VAE file
    shortcut_unet: str | None = None     # one-step UNet (LCM / Lightning) for preview "shortcut"
    prediction_type: str | None = None   # default: the scheduler's
    # adapter
    branches: str = "both"
    init_adapter: str | None = None      # BoLID adapter or IP-Adapter SDXL .safetensors to start from
    ref_kind: str = "plain"
    ref_tokens: int = 4
    body_tokens: int = 4
    body_hidden: int = 1024
    body_init: str = "random"            # a fresh body branch's K/V: "random", or "unet": copies of each site's text K/V (IP-Adapter's init)
    # objective (eq. 14)
    alpha_id: float = 0.1
    beta_clip: float = 0.1
    preview: str = "x0"                  # "x0": the model's own one-step x0; "shortcut": one LCM/Lightning step
    preview_timesteps: tuple[int, int] = (0, 700)
    train_timesteps: tuple[int, int] | None = None   # [lo, hi] of L_diff's timesteps (default: all); body shape is set at mid noise
    shortcut_kind: str = "lcm"           # "lcm" (boundary scalings of LCMScheduler) or "x0"
    shortcut_prediction_type: str = "epsilon"
    keypoint_decode: str = "soft"
    keypoint_temperature: float = 0.05
    visibility: float = 0.5
    pose_imgsz: int = 640
    # optimisation
    seed: int = 0
    batch_size: int = 1                  # per process
    grad_accum: int = 1
    max_steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    lr_decay: str = "constant"           # after warm-up: "constant", or "cosine" down to 5% of lr at max_steps
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"          # "no", "fp16", "bf16" (accelerate)
    cpu: bool = False                    # train on the CPU even where a GPU is (accelerate's cpu=True)
    gradient_checkpointing: bool = False
    # output
    output_dir: str = "bolid_adapter_run"
    name: str = "bolid_adapter"
    save_every: int = 500
    keep_checkpoints: int = 3            # newest checkpoints kept in output_dir/checkpoints (0: keep all)
    log_every: int = 10
    resume: str | None = None            # "latest" or a checkpoint folder
    overwrite: bool = False              # a fresh run may replace another run's checkpoints and files in output_dir
    tensorboard: bool = True             # when tensorboard is installed

    def __post_init__(self):
        checks = [
            (self.branches in BRANCHES, f"branches must be one of {BRANCHES}; got {self.branches!r}"),
            (self.preview in PREVIEWS, f"preview must be one of {PREVIEWS}; got {self.preview!r}"),
            (self.keypoint_decode in L.KEYPOINT_DECODES, f"keypoint_decode must be one of {L.KEYPOINT_DECODES}; got {self.keypoint_decode!r}"),
            (self.shortcut_kind in ("lcm", "x0"), f"shortcut_kind must be 'lcm' or 'x0'; got {self.shortcut_kind!r}"),
            (self.mixed_precision in ("no", "fp16", "bf16"), f"mixed_precision must be no, fp16 or bf16; got {self.mixed_precision!r}"),
            (self.ref_kind in ("plain", "plus"), f"ref_kind must be 'plain' or 'plus'; got {self.ref_kind!r}"),
            (len(self.preview_timesteps) == 2 and 0 <= self.preview_timesteps[0] <= self.preview_timesteps[1],
             f"preview_timesteps must be [lo, hi] with 0 <= lo <= hi; got {self.preview_timesteps}"),
            (self.train_timesteps is None or (len(self.train_timesteps) == 2 and 0 <= self.train_timesteps[0] <= self.train_timesteps[1]),
             f"train_timesteps must be [lo, hi] with 0 <= lo <= hi; got {self.train_timesteps}"),
            (self.body_init in ("random", "unet"), f"body_init must be 'random' or 'unet'; got {self.body_init!r}"),
            (self.lr_decay in ("constant", "cosine"), f"lr_decay must be 'constant' or 'cosine'; got {self.lr_decay!r}"),
            (min(self.batch_size, self.grad_accum, self.max_steps, self.resolution) >= 1,
             "batch_size, grad_accum, max_steps and resolution must be >= 1"),
            (self.alpha_id >= 0 and self.beta_clip >= 0, "alpha_id and beta_clip must be >= 0"),
            (all(0 <= p <= 1 for p in (self.dropout_text, self.dropout_ref, self.dropout_body, self.dropout_together)), "dropout probabilities must lie in [0, 1]"),
            (self.pose_imgsz % 32 == 0, f"pose_imgsz must be a multiple of 32; got {self.pose_imgsz}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise BoLIDError(msg)
        object.__setattr__(self, "preview_timesteps", tuple(int(t) for t in self.preview_timesteps))
        if self.train_timesteps is not None:
            object.__setattr__(self, "train_timesteps", tuple(int(t) for t in self.train_timesteps))

    @property
    def train_ref(self) -> bool:
        return self.branches in ("ref", "both")

    @property
    def train_body(self) -> bool:
        return self.branches in ("body", "both")

    @property
    def lr_schedule(self) -> loop.Schedule:
        """Linear warm-up over warmup_steps, then constant, or a cosine down to 5% of lr at max_steps."""
        if self.lr_decay == "cosine":
            return loop.Schedule(self.lr, self.warmup_steps, decay="cosine", total=self.max_steps, min_ratio=0.05)
        return loop.Schedule(self.lr, self.warmup_steps)

    def to_dict(self) -> dict:
        return loop.config_to_dict(self)


# --- config file and flags ----------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML, JSON or TOML file of settings (flags override it)")
    loop.add_config_flags(parser, AdapterTrainConfig)


def config_from_args(args: argparse.Namespace) -> AdapterTrainConfig:
    d = loop.read_config_file(args.config, AdapterTrainConfig) if getattr(args, "config", None) else {}
    d = loop.flag_values(args, AdapterTrainConfig, d)
    if not d.get("data_dir"):
        raise BoLIDError("no data_dir given: set it in the config file or pass --data-dir")
    return loop.config_from_dict(AdapterTrainConfig, d)


# --- the adapter to train -----------------------------------------------------------------------

def build_adapter(cfg: AdapterTrainConfig, models, body_dim: int | None) -> tuple[BoLIDAdapter, list[torch.nn.Parameter]]:
    """The adapter of this run (fresh, or grown from ``init_adapter``) and its trainable parameters.

    A branch in ``init_adapter`` that is not trained is kept frozen (it still takes part in the forward pass).
    """
    init = load_adapter(cfg.init_adapter) if cfg.init_adapter else None
    widths = models.adapter_widths()
    context = int(models.unet.config.cross_attention_dim)
    ref_kind = None
    ref_fields: dict = {}
    if init is not None and init.ref is not None:
        ic = init.config
        ref_kind = ic.ref_kind
        ref_fields = {k: getattr(ic, k) for k in ("ref_tokens", "clip_embed_dim", "clip_hidden_dim", "resampler_dim",
                                                  "resampler_depth", "resampler_heads", "resampler_dim_head", "resampler_ff_mult")}
        if tuple(ic.widths) != widths or ic.context_dim != context:
            raise BoLIDError(f"{cfg.init_adapter} has widths {ic.widths} / context {ic.context_dim}; this UNet needs {widths} / {context}: "
                             "start from an adapter made for SDXL")
        enc = models.image_encoder
        if enc is None:
            raise BoLIDError(f"{cfg.init_adapter} has a ref branch, which needs a CLIP vision encoder: set image_encoder")
        got = int(enc.config.hidden_size if ic.ref_kind == "plus" else enc.config.projection_dim)
        if got != ic.ref_input_dim:
            raise BoLIDError(f"{cfg.init_adapter} reads {ic.ref_input_dim}-dim CLIP vision features; image_encoder gives {got}: "
                             "use the CLIP vision model the IP-Adapter was made for (ViT-H for the _vit-h files, bigG for ip-adapter_sdxl)")
    elif cfg.train_ref:
        enc = models.image_encoder
        if enc is None:
            raise BoLIDError("training the ref branch needs a CLIP vision encoder: set image_encoder")
        ref_kind = cfg.ref_kind
        ref_fields = {"ref_tokens": cfg.ref_tokens if ref_kind == "plain" else 16,
                      "clip_embed_dim": int(enc.config.projection_dim), "clip_hidden_dim": int(enc.config.hidden_size)}
    body = body_dim if cfg.train_body else (init.config.body_dim if init is not None and init.body is not None else None)
    if init is not None and init.body is not None and body_dim is not None and init.config.body_dim != body_dim:
        raise BoLIDError(f"{cfg.init_adapter} reads Body-IDs of D={init.config.body_dim} but the Body-ID VAE gives {body_dim}")
    acfg = AdapterConfig(context_dim=context, widths=widths, ref_kind=ref_kind, body_dim=body,
                         body_tokens=cfg.body_tokens, body_hidden=cfg.body_hidden, **ref_fields)
    torch.manual_seed(cfg.seed)
    adapter = BoLIDAdapter(acfg)
    if init is not None:
        loop.load_weights(adapter, init.state_dict(), cfg.init_adapter, partial=True)
    if cfg.train_body and cfg.body_init == "unet" and not (init is not None and init.body is not None):
        init_branch_from_unet(adapter.body, models.unet)
    adapter.float().train()
    adapter.requires_grad_(False)
    trainable = []
    if cfg.train_ref:
        adapter.ref.requires_grad_(True)
        trainable += list(adapter.ref.parameters())
    if cfg.train_body:
        adapter.body.requires_grad_(True)
        trainable += list(adapter.body.parameters())
    return adapter, trainable


def check_train_timesteps(cfg: AdapterTrainConfig, scheduler) -> int:
    """The scheduler's number of timesteps, after checking that ``train_timesteps`` lies inside them."""
    n_t = int(scheduler.config.num_train_timesteps)
    if cfg.train_timesteps is not None and cfg.train_timesteps[1] >= n_t:
        raise BoLIDError(f"train_timesteps {list(cfg.train_timesteps)} reach past the scheduler's last timestep {n_t - 1}: "
                         f"give a range inside [0, {n_t - 1}]")
    return n_t


def init_branch_from_unet(branch: torch.nn.Module, unet: torch.nn.Module) -> None:
    """Give a fresh branch's K/V at each of the 70 sites the UNet's own text K/V weights there (IP-Adapter's init:
    the branch starts by reading its tokens as the UNet reads text)."""
    from ..method.sdxl_layers import SITES
    from .host import attn2_names

    modules = dict(unet.named_modules())
    with torch.no_grad():
        for s, name in zip(SITES, attn2_names(unet)):
            attn, site = modules[name[:-len(".processor")]], branch.attn[s.index]
            for kind in ("k", "v"):
                mine = getattr(site, f"to_{kind}_{site.suffix}").weight
                theirs = getattr(attn, f"to_{kind}").weight
                if mine.shape != theirs.shape:
                    raise BoLIDError(f"site {s.index} ({name}): the UNet's to_{kind} is {tuple(theirs.shape)}, the branch's {tuple(mine.shape)}")
                mine.copy_(theirs.float())


# --- one training step --------------------------------------------------------------------------

@dataclass
class StepContext:
    """What a step needs besides the batch: the models, the module, the config, cached text features."""

    cfg: AdapterTrainConfig
    models: object
    module: torch.nn.Module            # AdapterTrainingModule, possibly DDP-wrapped
    device: torch.device
    prediction_type: str
    autocast: Callable = field(default=lambda: torch.autocast("cpu", enabled=False))
    _clip_text: dict = field(default_factory=dict)

    @property
    def core(self) -> AdapterTrainingModule:
        return getattr(self.module, "module", self.module)

    def clip_text_features(self, captions: list[str]) -> torch.Tensor:
        """CLIP text features (B, E) of the captions (frozen; cached per caption)."""
        clip, tok = self.models.clip_model, self.models.clip_tokenizer
        todo = [c for c in dict.fromkeys(captions) if c not in self._clip_text]
        if todo:
            with torch.no_grad():
                ids = tok(todo, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
                feats = clip.get_text_features(input_ids=ids.input_ids.to(self.device))
                feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
            for c, f in zip(todo, feats.float()):
                self._clip_text[c] = f
        return torch.stack([self._clip_text[c] for c in captions])


def _ref_features(models, cfg, images: torch.Tensor, kind: str) -> torch.Tensor:
    enc = models.image_encoder
    size = int(enc.config.image_size)
    with torch.no_grad():
        out = enc(pixel_values=L.clip_preprocess(images, size).to(next(enc.parameters()).dtype), output_hidden_states=True)
    return (out.hidden_states[-2] if kind == "plus" else out.image_embeds).float()


def reference_features(models, cfg, images: torch.Tensor, kind: str, keep: torch.Tensor) -> torch.Tensor:
    """CLIP features of the reference images, with the rows whose reference is dropped (``keep`` False) set to
    what "no image" is at inference (``bolid_lib.method.reference.encode_reference``, as in ComfyUI_IPAdapter_plus): zero ``image_embeds``
    for a plain adapter, the hidden states of a black image for a plus adapter."""
    ref = _ref_features(models, cfg, images, kind)
    keep = keep.to(ref.device).reshape(-1, *([1] * (ref.ndim - 1))).to(ref.dtype)
    if kind != "plus":
        return ref * keep
    if bool(keep.all()):
        return ref
    black = _ref_features(models, cfg, torch.zeros_like(images[:1]), kind)
    return ref * keep + black * (1 - keep)


def _pose_input(images: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=images.shape[-1] > size)


def compute_losses(ctx: StepContext, batch: dict) -> dict[str, torch.Tensor]:
    """The terms of eq. 14 for one (micro-)batch: {"loss", "l_diff", "l_id", "l_clip"} (scalars, with grad).

    The image-space terms are summed over the rows whose preview is taken (x0 preview: rows whose timestep lies in
    preview_timesteps; shortcut preview: every row) and divided by the batch size, so their sum over processes and
    micro-batches equals that of one big batch.
    """
    cfg, models, dev = ctx.cfg, ctx.models, ctx.device
    images = batch["image"].to(dev)
    b = images.shape[0]
    seeds = batch["seed"]
    keep = D.draw_dropout(seeds, D.Dropout(cfg.dropout_text, cfg.dropout_ref, cfg.dropout_body, cfg.dropout_together))
    with torch.no_grad():
        latents = L.encode_images(models.vae, images)
        captions = [c if k else "" for c, k in zip(batch["caption"], keep["text"].tolist())]
        context, pooled = models.text.encode(captions)
    sched = models.scheduler
    n_t = check_train_timesteps(cfg, sched)
    noise, t, t2 = D.draw_noise(seeds, tuple(latents.shape[1:]), n_t, cfg.preview_timesteps, cfg.train_timesteps)
    noise, t, t2 = noise.to(dev), t.to(dev), t2.to(dev)
    acp = sched.alphas_cumprod.to(dev)
    noisy = sched.add_noise(latents, noise, t)
    ref, body = _branch_inputs(ctx, batch, keep)
    want_images = (cfg.alpha_id > 0 and models.pose_net is not None) or (cfg.beta_clip > 0 and models.clip_model is not None)
    shortcut = want_images and cfg.preview == "shortcut"
    noisy2 = sched.add_noise(latents, noise, t2) if shortcut else None
    with ctx.autocast():
        pred, short = ctx.module(noisy, t, context, pooled, batch["time_ids"].to(dev), ref, body,
                                 noisy2, t2 if shortcut else None)
    target = L.diffusion_target(latents, noise, acp[t], ctx.prediction_type)
    l_diff = L.diffusion_loss(pred, target)
    zero = l_diff.new_zeros(())
    l_id, l_clip = zero, zero
    if want_images:
        if shortcut:
            rows = torch.ones(b, dtype=torch.bool, device=dev)
            x0 = _shortcut_x0(cfg, noisy2, short, t2, acp)
        else:
            lo, hi = cfg.preview_timesteps
            rows = (t >= lo) & (t <= hi)
            x0 = L.predict_x0(noisy, pred, acp[t], ctx.prediction_type)
        idx = rows.nonzero().flatten()
        if idx.numel():
            with ctx.autocast():
                preview = L.decode_latents(models.preview_vae or models.vae, x0[idx])        # (B', 3, H, W)
            if cfg.alpha_id > 0 and models.pose_net is not None:
                l_id = identity_loss(ctx, preview, images[idx]) / b
            if cfg.beta_clip > 0 and models.clip_model is not None:
                l_clip = clip_text_loss(ctx, preview, [batch["caption"][i] for i in idx.tolist()]) / b
    loss = l_diff + cfg.alpha_id * l_id + cfg.beta_clip * l_clip
    return {"loss": loss, "l_diff": l_diff, "l_id": l_id, "l_clip": l_clip}


def _branch_inputs(ctx: StepContext, batch: dict, keep: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """What the adapter's branches read: ref CLIP features (B, T, E) or (B, E), Body-IDs (B, D); dropped rows as at
    inference; None for a branch the adapter lacks."""
    cfg, dev, a = ctx.cfg, ctx.device, ctx.core.adapter
    ref = body = None
    if a.ref is not None:
        ref = reference_features(ctx.models, cfg, batch["ref_image"].to(dev), a.config.ref_kind, keep["ref"])
    if a.body is not None:
        if batch["body"] is None:
            raise BoLIDError("the adapter has a body branch but the data has no Body-IDs")
        body = batch["body"].to(dev).float() * keep["body"].to(dev).reshape(-1, 1).float()
    return ref, body


def _shortcut_x0(cfg: AdapterTrainConfig, noisy2: torch.Tensor, short: torch.Tensor, t2: torch.Tensor,
                 acp: torch.Tensor) -> torch.Tensor:
    """The shortcut UNet's one-step clean latent (B, C, h, w) at its timesteps t2 (LCM boundary scalings for "lcm")."""
    x0 = L.predict_x0(noisy2, short, acp[t2], cfg.shortcut_prediction_type)
    if cfg.shortcut_kind == "lcm":
        c_skip, c_out = L.lcm_boundary(t2)
        x0 = c_skip.reshape(-1, 1, 1, 1) * noisy2.float() + c_out.reshape(-1, 1, 1, 1) * x0
    return x0


def identity_loss(ctx: StepContext, preview: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L_id summed over rows: keypoints of the previews (B', 3, H, W) against those of the target images (B', 3, H, W)
    (no gradient on the target's side)."""
    cfg, pose_net, size = ctx.cfg, ctx.models.pose_net, ctx.cfg.pose_imgsz
    with torch.no_grad():
        dense_t = L.dense_keypoints(pose_net, _pose_input(images, size))
        boxes = L.best_boxes(dense_t)
        kp_t = L.reduce_keypoints(dense_t, cfg.keypoint_decode, cfg.keypoint_temperature, boxes)
    dense_g = L.dense_keypoints(pose_net, _pose_input(preview, size))
    kp_g = L.reduce_keypoints(dense_g, cfg.keypoint_decode, cfg.keypoint_temperature, boxes)
    return L.keypoint_loss(kp_g, kp_t, (size, size), cfg.visibility, reduce=False).sum()


def clip_text_loss(ctx: StepContext, preview: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """L_CLIP summed over rows: previews (B', 3, H, W) against their captions (B')."""
    clip = ctx.models.clip_model
    size = int(clip.config.vision_config.image_size)
    img_f = clip.get_image_features(pixel_values=L.clip_preprocess(preview, size))
    img_f = img_f if isinstance(img_f, torch.Tensor) else img_f.pooler_output
    return L.clip_loss(img_f, ctx.clip_text_features(captions), reduce=False).sum()


# --- checkpoints (safetensors only) -------------------------------------------------------------

def save_checkpoint(folder: Path, step: int, adapter: BoLIDAdapter, optimizer: torch.optim.Optimizer,
                    cfg: AdapterTrainConfig, extra: dict | None = None) -> Path:
    """The shared layout (``loop.save_checkpoint``): adapter.safetensors (BoLID format, loadable by ComfyUI as it
    is), optimizer.safetensors, state.json (step, config)."""
    return loop.save_checkpoint(folder, step, lambda tmp: save_adapter(adapter, tmp / WEIGHTS_FILE), optimizer,
                                {"config": cfg.to_dict(), **(extra or {})})


def load_checkpoint(folder: Path, adapter: BoLIDAdapter, optimizer: torch.optim.Optimizer) -> dict:
    """Restore adapter weights and optimizer state from ``folder``; returns state.json."""
    saved = load_adapter(folder / WEIGHTS_FILE)
    if saved.config != adapter.config:
        raise BoLIDError(f"checkpoint {folder} holds an adapter of another shape ({saved.config}); this run builds {adapter.config}: "
                         "resume with the settings the checkpoint was made with")
    loop.load_weights(adapter, saved.state_dict(), f"checkpoint {folder}")
    opt_state, state = loop.read_checkpoint_state(folder)
    loop.restore_optimizer(optimizer, opt_state)
    return state


def find_checkpoint(output_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint folder to resume from (``loop.CheckpointLayout.resolve``; "latest" looks in output_dir/checkpoints)."""
    return CHECKPOINTS.resolve(resume, Path(output_dir) / "checkpoints")


# --- the run ------------------------------------------------------------------------------------

class Logger:
    """CSV log (always) and TensorBoard (when installed and asked for), main process only."""

    FIELDS = ("step", "loss", "l_diff", "l_id", "l_clip", "lr", "sec_per_step", "samples_per_sec")

    def __init__(self, output_dir: Path, enabled: bool, tensorboard: bool, start: int = 0):
        """start: the step the run starts at; the log keeps the rows up to it (a resume) and nothing else."""
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        path = output_dir / "log.csv"
        kept = []
        if start > 0 and path.exists():
            with open(path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start]
        self.file = open(path, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)
        self.writer.writeheader()
        self.writer.writerows(kept)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: logging to %s only", path)
            else:
                self.tb = SummaryWriter(str(output_dir / "tensorboard"))

    def __call__(self, row: dict) -> None:
        if not self.enabled:
            return
        self.writer.writerow({k: row.get(k, "") for k in self.FIELDS})
        self.file.flush()
        if self.tb is not None:
            for k in ("loss", "l_diff", "l_id", "l_clip", "lr"):
                self.tb.add_scalar(f"train/{k}", row[k], row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def prepare_data(cfg: AdapterTrainConfig, models, need_bodies: bool) -> D.AdapterDataset:
    names, items = D.scan(cfg.data_dir, cfg.default_caption)
    bodies = None
    if need_bodies:
        pose_model = getattr(models, "pose_model", None)
        bodies = D.person_body_ids(names, items, cfg.data_dir, cfg.cache_dir or Path(cfg.data_dir) / ".bolid_cache",
                                   models.body_vae, pose_model, cfg.resolution, cfg.pose_conf)
    log.info("%d images of %d people", len(items), len(names))
    return D.AdapterDataset(items, cfg.resolution, bodies, cfg.ref_source)


def train(cfg: AdapterTrainConfig, progress: Callable[[int, int], None] | None = None,
          models=None) -> dict:
    """Run (or resume) training; returns {"adapter": final file, "step": last step, "history": [per-step dicts]}.

    ``models`` may be given (a ModelSet) to reuse loaded models; otherwise they are loaded from the config.
    """
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum, cpu=cfg.cpu)
    try:
        return _train(cfg, accelerator, progress, models)
    finally:   # also after an error: a later train() in this process (tests, notebooks) may use other settings
        _release_accelerate_state()


def _train(cfg: AdapterTrainConfig, accelerator, progress, models) -> dict:
    from accelerate.utils import set_seed

    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        loop.guard_run_folder(out / "checkpoints", cfg.resume, find_checkpoint(out, cfg.resume),
                              overwrite=cfg.overwrite, outputs=(out / f"{cfg.name}.safetensors", out / "log.csv"))
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)
    dev = accelerator.device
    models, prediction_type = _run_models(cfg, models, dev)
    check_train_timesteps(cfg, models.scheduler)
    adapter, trainable = _run_adapter(cfg, models)
    module = AdapterTrainingModule(adapter, models.unet, models.shortcut_unet).to(dev)
    dataset = prepare_data(cfg, models, adapter.body is not None)
    optimizer = loop.adamw(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = _resume(cfg, out, adapter, optimizer)
    module, optimizer = accelerator.prepare(module, optimizer)

    sampler = D.KeyedSampler(len(dataset), cfg.seed, cfg.batch_size, accelerator.num_processes, accelerator.process_index,
                             cfg.grad_accum, start, cfg.max_steps)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=D.collate,
                                         num_workers=cfg.num_workers)
    ctx = StepContext(cfg, models, module, dev, prediction_type, autocast=accelerator.autocast)
    logger = Logger(out, accelerator.is_main_process, cfg.tensorboard, start)
    history = []
    it = iter(loader)
    step = start
    try:
        while step < cfg.max_steps:
            t0 = time.perf_counter()
            row = optimizer_step(ctx, accelerator, optimizer, trainable, it, step)
            step += 1
            dt = time.perf_counter() - t0
            row.update(step=step, lr=cfg.lr_schedule(step - 1), sec_per_step=dt,
                       samples_per_sec=cfg.batch_size * cfg.grad_accum * accelerator.num_processes / dt)
            history.append(row)
            _report(cfg, row, logger, progress)
            if cfg.save_every and (step % cfg.save_every == 0 or step == cfg.max_steps):
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save_checkpoint(CHECKPOINTS.path(out / "checkpoints", step), step, adapter,
                                    getattr(optimizer, "optimizer", optimizer), cfg)
                    CHECKPOINTS.prune(out / "checkpoints", cfg.keep_checkpoints)
    finally:
        logger.close()
    final = _write_final(cfg, out, adapter, step, accelerator)
    return {"adapter": final, "step": step, "history": history, "adapter_module": adapter}


def _run_models(cfg: AdapterTrainConfig, models, dev: torch.device) -> tuple[object, str]:
    """The run's models (loaded unless given), frozen ones on ``dev``, checked against the objective; and the
    prediction type."""
    from .models import load_models

    models = models if models is not None else load_models(cfg)
    for m in models.frozen_modules().values():
        m.to(dev)
    prediction_type = cfg.prediction_type or models.scheduler.config.prediction_type
    if cfg.alpha_id > 0 and models.pose_net is None:
        raise BoLIDError("alpha_id > 0 needs a pose model (pose_model): set it, or set alpha_id to 0")
    if cfg.beta_clip > 0 and models.clip_model is None:
        raise BoLIDError("beta_clip > 0 needs a CLIP model (clip_model): set it, or set beta_clip to 0")
    if cfg.gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
        if models.shortcut_unet is not None:
            models.shortcut_unet.enable_gradient_checkpointing()
    return models, prediction_type


def _run_adapter(cfg: AdapterTrainConfig, models) -> tuple[BoLIDAdapter, list[torch.nn.Parameter]]:
    """``build_adapter`` with the Body-ID width of the run's VAE, whose fingerprint the adapter file records."""
    body_dim = int(models.body_vae.config.latent_dim) if models.body_vae is not None else None
    if cfg.train_body and body_dim is None:
        raise BoLIDError("training the body branch needs a Body-ID VAE (body_vae)")
    adapter, trainable = build_adapter(cfg, models, body_dim)
    if adapter.body is not None and models.body_vae is not None:
        adapter.body_vae_fingerprint = models.body_vae.fingerprint()   # written into the adapter file's metadata
    return adapter, trainable


def _resume(cfg: AdapterTrainConfig, out: Path, adapter: BoLIDAdapter, optimizer: torch.optim.Optimizer) -> int:
    """The step to start at: 0, or that of the checkpoint ``cfg.resume`` names (weights and optimizer restored)."""
    ckpt = find_checkpoint(out, cfg.resume)
    if ckpt is None:
        return 0
    state = load_checkpoint(ckpt, adapter, optimizer)
    adapter.train()
    log.info("resuming from %s at step %d", ckpt, int(state["step"]))
    return int(state["step"])


def optimizer_step(ctx: StepContext, accelerator, optimizer, trainable: list[torch.nn.Parameter], batches,
                   step: int) -> dict[str, float]:
    """One optimizer step over grad_accum micro-batches from ``batches`` at the learning rate of ``step``;
    returns each term's mean over the micro-batches and processes."""
    cfg = ctx.cfg
    loop.set_lr(optimizer, cfg.lr_schedule(step))
    sums = {"loss": 0.0, "l_diff": 0.0, "l_id": 0.0, "l_clip": 0.0}
    for _ in range(cfg.grad_accum):
        batch = next(batches)
        with accelerator.accumulate(ctx.module):
            terms = compute_losses(ctx, batch)
            accelerator.backward(terms["loss"])
            if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for k in sums:
            sums[k] += float(terms[k].detach()) / cfg.grad_accum
    reduced = accelerator.reduce(torch.tensor([sums[k] for k in sums], device=ctx.device), reduction="mean")
    return dict(zip(sums, reduced.tolist()))


def _report(cfg: AdapterTrainConfig, row: dict, logger: Logger, progress: Callable[[int, int], None] | None) -> None:
    """Refuse a non-finite loss; log the step when due; tell ``progress``."""
    step = row["step"]
    if not math.isfinite(row["loss"]):
        raise BoLIDError(f"the loss is {row['loss']} at step {step}: lower lr, or use bf16 instead of fp16")
    if step % cfg.log_every == 0 or step == cfg.max_steps:
        logger(row)
        log.info("step %d/%d loss %.4f (diff %.4f id %.4f clip %.4f) %.2fs/step", step, cfg.max_steps,
                 row["loss"], row["l_diff"], row["l_id"], row["l_clip"], row["sec_per_step"])
    if progress is not None:
        progress(step, cfg.max_steps)


def _write_final(cfg: AdapterTrainConfig, out: Path, adapter: BoLIDAdapter, step: int, accelerator) -> Path:
    accelerator.wait_for_everyone()
    final = out / f"{cfg.name}.safetensors"
    if accelerator.is_main_process:
        save_adapter(adapter, final, metadata={"bolid.train_steps": str(step)})
        log.info("adapter written to %s (%s)", final, adapter.describe())
    accelerator.wait_for_everyone()
    return final


def _release_accelerate_state() -> None:
    """accelerate keeps one process-wide state (mixed precision, accumulation steps); clear it so that ``train`` can
    be called again in the same process (tests, notebooks) with other settings. The process group is kept."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    result = train(cfg)
    log.info("done at step %d: %s", result["step"], result["adapter"])
    return 0
