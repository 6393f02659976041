"""Train the Body-ID VAE: ``python -m bolid_lib.training body-vae --data DIR`` (or ``--synthetic N``).

DIR holds one folder per person (the paper's "grouped by unique user IDs"). The trainer runs the pose
model and the Gaussian weighting itself, once, as a Body-ID recipe says (``method.body_id``; the view sets are in
``data.views``), caches the prepared views per person, and records the recipe in the VAE file, so ComfyUI's
nodes prepare photos the way the VAE learned them.

Objective per step, for each of P sampled people (DESIGN.md "Body-ID VAE"):
  z ~ q(z | a random subset of their views)     (confidence-weighted pooling, reparameterised)
  L = MSE(decoder(z, pose of OTHER views), those views) + beta * KL(q || N(0, I)) + limb_weight * limb MSE
      + contrast_weight * InfoNCE(Body-IDs of two disjoint view subsets of each person)
      + view_contrast_weight * InfoNCE(each single view's Body-ID, the other subset's Body-ID)
with each context view's image branch dropped with probability image_dropout (see TrainConfig).
Reconstructing views the encoder did not see is what makes z an identity rather than a summary; the identity
terms make Body-IDs of one person, from any views or from one, land near each other (training/README.md).

Every step draws its randomness from a generator seeded by (seed, step, rank), so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have.

Several GPUs: ``accelerate launch -m bolid_lib.training body-vae ...`` or ``torchrun ... -m bolid_lib.training
body-vae ...``: when accelerate is importable the model and optimiser go through its Accelerator (DDP);
each process draws different people (its rank enters the seed).

Legend: N views in the set, P persons per step, R side, D latent width, L limbs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .. import files
from . import loop
from .losses import contrast_loss, view_contrast_loss  # noqa: F401 (re-exported: their home until issue 27)
from ..data.views import CACHE_FORMAT, ViewSet, folder_viewset, make_viewset, synthetic_viewset, to_uint8  # noqa: F401 (re-exported: the view sets' old home)
from ..method.body_id import DEFAULT_RECIPE, SIGMA_MODES, BodyIDRecipe
from ..method.body_vae import BodyVAE, BodyVAEConfig
from ..method.body_vae_files import load_body_vae, save_body_vae
from ..errors import BoLIDError

log = logging.getLogger("bolid")

WEIGHTS_FILE = "body_vae.safetensors"    # in each checkpoint folder (loop.CHECKPOINTS)
CHECKPOINTS = loop.CHECKPOINTS
# The old layout (one file per checkpoint, step_NNNNNNNN.safetensors): still read when named as the resume.
LEGACY_CHECKPOINT_FORMAT = "bolid.body_vae_checkpoint"
LEGACY_CHECKPOINT_VERSION = 2        # 2: loop's optim.<id>.<name> scalars; 1: bare <id>.<name>


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the model's sizes are in BodyVAEConfig)."""

    steps: int = 20000
    batch_persons: int = 16
    context_views: tuple[int, int] = (1, 4)   # min, max views pooled into z per person and step
    target_views: int = 2                     # other views reconstructed from z
    lr: float = 1e-3
    warmup: int = 200
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3                 # newest checkpoints kept in checkpoint_dir (0: keep all)
    log_every: int = 50
    # Cross-view identity term: a second, disjoint subset of each person's views is pooled into its own Body-ID,
    # and the two Body-IDs of a person must be nearer (Euclidean, as they are compared at retrieval) than those
    # of the other people in the step (a supervised InfoNCE over squared distances / contrast_temperature).
    # Reconstruction alone rewards z for what helps redraw pixels (mostly colour and silhouette, which the
    # decoder's pose input already half gives away), and KL only shrinks z; neither asks that two view sets of
    # one person land close together, which is what a Body-ID is used for. 0 turns the term off.
    contrast_weight: float = 1.0
    contrast_temperature: float = 1.0
    # Per-view identity term: each context view's own Body-ID (that view alone, as in the image-referenced mode)
    # must be nearer to the Body-ID of its person's other view subset than to other people's (InfoNCE, same
    # temperature). It asks every single view to carry the identity on its own, so the pooled Body-ID is a mean
    # of per-view evidence rather than something only a particular mix of poses produces. Needs contrast_weight > 0
    # (it uses the second subset); 0 turns it off.
    view_contrast_weight: float = 1.0
    # Image-branch dropout: each context view's convolutional feature (image + heat maps) is dropped with this
    # probability, leaving that view's keypoint geometry alone. The convolutions see the whole pose, so what they
    # learn is tied to the training poses; in poses never seen in training their feature drifts, and without
    # dropout it can outvote the pose-free segment lengths. Dropping it half of the time makes the geometry carry
    # the identity by itself and the image add to it (on the proof's held-out poses, 4 views: 83.5% -> 95%).
    image_dropout: float = 0.5
    # Limb foreshortening of the context views' keypoints (see foreshorten_limbs): each limb bone is,
    # with this probability, turned out of the image plane by an angle up to foreshorten_max_deg. 0 turns it off.
    foreshorten_prob: float = 0.5
    foreshorten_max_deg: float = 60.0

    @property
    def lr_schedule(self) -> loop.Schedule:
        """Linear warm-up over warmup steps, then cosine decay to min_lr_ratio·lr at the last step."""
        return loop.Schedule(self.lr, self.warmup, "cosine", self.steps, self.min_lr_ratio)


# --- the loop ----------------------------------------------------------------------------------------

def sample_batch(data: ViewSet, cfg: TrainConfig, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw P people; for each, a context subset of its views and other views as targets.

    With the cross-view term on (contrast_weight > 0) each person also gets a second context subset, disjoint
    from the first, pooled into slot P + i (slot i holds the first): ``slots`` is then 2P, else P.
    """
    pool = data.trainable
    p = cfg.batch_persons
    pairs = cfg.contrast_weight > 0
    order = torch.randperm(len(pool), generator=g)
    picks = [pool[int(order[i % len(pool)])] for i in range(p)]
    ctx, ctx_owner, tgt, tgt_owner = [], [], [], []
    pair, pair_owner = [], []
    lo, hi = cfg.context_views
    for slot, person in enumerate(picks):
        idx = data.by_person[person]
        perm = idx[torch.randperm(idx.numel(), generator=g)]
        k = int(torch.randint(lo, hi + 1, (1,), generator=g))
        k = max(1, min(k, perm.numel() - 1))
        m = max(1, min(cfg.target_views, perm.numel() - k))
        ctx.append(perm[:k])
        tgt.append(perm[k:k + m])
        ctx_owner.append(torch.full((k,), slot))
        tgt_owner.append(torch.full((m,), slot))
        if pairs:
            # Second subset: views after the targets where there are enough, else the targets' own views
            # (never the first subset's: the two Body-IDs must come from different views).
            rest = perm[k + m:] if perm.numel() - k - m >= hi else perm[k:]
            kb = int(torch.randint(lo, hi + 1, (1,), generator=g))
            kb = max(1, min(kb, rest.numel()))
            pair.append(rest[:kb])
            pair_owner.append(torch.full((kb,), p + slot))
    ctx_i, tgt_i = torch.cat(ctx + pair), torch.cat(tgt)
    ctx_kp = data.keypoints[ctx_i]
    if cfg.foreshorten_prob > 0:
        ctx_kp = foreshorten_limbs(ctx_kp, g, cfg.foreshorten_prob, cfg.foreshorten_max_deg)
    keep = (torch.rand(ctx_i.numel(), generator=g) >= cfg.image_dropout).float()
    return {
        "ctx_image_keep": keep,
        "ctx_views": data.views[ctx_i].float() / 255.0, "ctx_keypoints": ctx_kp,
        "ctx_weights": data.weights[ctx_i], "ctx_owner": torch.cat(ctx_owner + pair_owner),
        "tgt_views": data.views[tgt_i].float() / 255.0, "tgt_keypoints": data.keypoints[tgt_i],
        "tgt_owner": torch.cat(tgt_owner), "limbs": data.limbs[torch.tensor(picks * (2 if pairs else 1))],
        "person": torch.tensor(picks), "slots": torch.tensor(p * (2 if pairs else 1)),
    }


# Limb chains (COCO indices), parent joint first: a bone's out-of-plane turn moves every joint after it.
LIMB_CHAINS: tuple[tuple[int, ...], ...] = ((5, 7, 9), (6, 8, 10), (11, 13, 15), (12, 14, 16))


def foreshorten_limbs(keypoints: torch.Tensor, g: torch.Generator, prob: float, max_deg: float) -> torch.Tensor:
    """Keypoints of the same body with limb bones turned towards or away from the camera.

    keypoints (V, 17, 3) px. Under (near-)orthographic projection a bone turned out of the image plane by theta,
    in the plane of its 2D direction and the view axis, keeps its 2D direction and shrinks to cos(theta) of its
    2D length; the joints below it move with it. Each bone of ``LIMB_CHAINS`` gets such a turn with
    probability ``prob``, theta uniform in [0, max_deg]: a valid projection of the same skeleton in another
    pose. Why: a limb's 2D length relative to the torso is the strongest cue of its true length in poses where
    limbs hang in the image plane, and a Body-ID that trusts it mistakes a person whose limbs point at the
    camera (more articulated poses than those of the training photos) for a person with short limbs.
    Training applies it to the context views' keypoints (heat maps and keypoint branch); the image is left as
    it is, so the encoder also learns not to take a limb's length from the keypoints alone.
    """
    kp = keypoints.float().clone()
    v = kp.shape[0]
    vis = kp[..., 2] > 0
    for chain in LIMB_CHAINS:
        for i in range(len(chain) - 1):
            parent, child = chain[i], chain[i + 1]
            theta = torch.rand(v, generator=g) * math.radians(max_deg)
            turn = torch.rand(v, generator=g) < prob
            c = torch.where(turn & vis[:, parent] & vis[:, child], torch.cos(theta), torch.ones(v))
            delta = (c - 1)[:, None] * (kp[:, child, :2] - kp[:, parent, :2])        # (V, 2)
            for j in chain[i + 1:]:
                kp[:, j, :2] += delta * vis[:, j, None]
    return kp


def compute_loss(model, batch: dict, vae_cfg: BodyVAEConfig, n_persons: int, noise: torch.Tensor, device,
                 train_cfg: TrainConfig | None = None) -> tuple[torch.Tensor, dict]:
    """The loss of one batch of ``sample_batch``; noise (slots, D). n_persons: P (the batch's slots may be 2P)."""
    slots = int(batch.get("slots", n_persons))
    paired = train_cfg is not None and train_cfg.contrast_weight > 0 and slots == 2 * n_persons
    per_view = paired and train_cfg.view_contrast_weight > 0
    out = model(batch["ctx_views"].to(device), batch["ctx_keypoints"], batch["ctx_weights"], batch["ctx_owner"], slots,
                batch["tgt_keypoints"], batch["tgt_owner"], noise.to(device), per_view,
                batch.get("ctx_image_keep"))
    recon = F.mse_loss(out["recon"], batch["tgt_views"].to(device))
    mean, logvar = out["mean"], out["logvar"]
    kl = (-0.5 * (1 + logvar - mean.square() - logvar.exp())).mean()
    loss = recon + vae_cfg.beta * kl
    parts = {"recon": float(recon.detach()), "kl": float(kl.detach())}
    if "limbs" in out:
        target = batch["limbs"].to(device)
        known = torch.isfinite(target)
        limb = F.mse_loss(out["limbs"][known], target[known]) if bool(known.any()) else out["limbs"].sum() * 0
        loss = loss + vae_cfg.limb_weight * limb
        parts["limb"] = float(limb.detach())
    if paired:
        con = contrast_loss(mean[:n_persons], mean[n_persons:], batch["person"], train_cfg.contrast_temperature)
        loss = loss + train_cfg.contrast_weight * con
        parts["contrast"] = float(con.detach())
    if per_view:
        vcon = view_contrast_loss(out["view_mean"], batch["ctx_owner"].to(mean.device), mean, batch["person"].to(mean.device),
                                  train_cfg.contrast_temperature)
        loss = loss + train_cfg.view_contrast_weight * vcon
        parts["view_contrast"] = float(vcon.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts


def save_checkpoint(folder: str | os.PathLike, model: BodyVAE, opt: torch.optim.Optimizer, step: int,
                    train_cfg: TrainConfig) -> Path:
    """The shared layout (``loop.save_checkpoint``): body_vae.safetensors (the VAE file with its recipe, loadable
    by ComfyUI's BoLID Body-ID VAE Loader as it is), optimizer.safetensors, state.json (step, train settings)."""
    return loop.save_checkpoint(folder, step, lambda tmp: save_body_vae(model, tmp / WEIGHTS_FILE), opt,
                                {"train": loop.config_to_dict(train_cfg)})


def load_checkpoint(path: str | os.PathLike) -> tuple[BodyVAE, dict, dict]:
    """(model, optimizer state dict, state.json with 'step') from a checkpoint folder, the newest in a folder of
    them, or a single-file checkpoint of the old layout (``step_NNNNNNNN.safetensors``, before issue 27)."""
    p = Path(path)
    if p.is_file():
        return _load_legacy_checkpoint(p)
    folder = CHECKPOINTS.resolve(p, None)
    model = load_body_vae(folder / WEIGHTS_FILE)
    opt_state, state = loop.read_checkpoint_state(folder)
    return model, opt_state, state


def _load_legacy_checkpoint(path: Path) -> tuple[BodyVAE, dict, dict]:
    tensors, meta = files.read_safetensors(path)
    if meta.get(files.FORMAT_KEY) != LEGACY_CHECKPOINT_FORMAT:
        raise BoLIDError(f"{path.name} is not a Body-ID VAE training checkpoint: it looks like {files.describe_safetensors(path)}")
    _, config = files.read_format(meta, path, fmt=LEGACY_CHECKPOINT_FORMAT, max_version=LEGACY_CHECKPOINT_VERSION)
    model = BodyVAE(BodyVAEConfig.from_dict(config))
    loop.load_weights(model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, path.name)
    info = json.loads(meta["bolid.train_state"])
    return model, loop.unflatten_optimizer(tensors, info["optimizer"]), info


def _accelerator(use: bool):
    if not use:
        return None
    try:
        from accelerate import Accelerator
    except ImportError as e:
        raise BoLIDError("--accelerate needs the 'accelerate' package: pip install accelerate") from e
    return Accelerator()


def train_body_vae(vae_cfg: BodyVAEConfig, train_cfg: TrainConfig, data: ViewSet, *, model: BodyVAE | None = None,
                   checkpoint_dir: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu", accelerator=None,
                   progress: Callable[[int, int], None] | None = None,
                   time_limit_s: float | None = None, overwrite: bool = False) -> tuple[BodyVAE, list[dict]]:
    """Train (or continue training) a Body-ID VAE on ``data``; returns the model and per-step loss parts.

    resume: a checkpoint (a step_* folder, or an old single file), or a folder of them ("latest": the newest in
    checkpoint_dir, if any); training continues at its
    step with its optimiser state.
    accelerator: an accelerate.Accelerator (DDP on several processes); None runs on ``device``.
    time_limit_s: stop (and checkpoint) after the step that crosses this wall time.
    A checkpoint_dir holding another run's checkpoints is refused unless this run resumes one of them or
    ``overwrite`` (loop.guard_run_folder).
    """
    if checkpoint_dir is not None and (accelerator is None or accelerator.is_main_process):
        loop.guard_run_folder(checkpoint_dir, resume, _resume_path(resume, checkpoint_dir),
                              overwrite=overwrite)
    if data.size != vae_cfg.input_size:
        raise BoLIDError(f"the prepared views are {data.size} px but the VAE's input_size is {vae_cfg.input_size}: prepare them at that size")
    model, opt_state, start = _resume(vae_cfg, train_cfg, model, resume, checkpoint_dir)
    if data.recipe is not None:
        model.recipe = data.recipe        # how its views were prepared: save_body_vae records it in the file
    rank = 0
    if accelerator is not None:
        device = accelerator.device
        rank = accelerator.process_index
    model = model.to(device).train()
    opt = loop.adamw(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    if opt_state is not None:
        loop.restore_optimizer(opt, opt_state)
    wrapped = model
    if accelerator is not None:
        wrapped, opt = accelerator.prepare(model, opt)
    history: list[dict] = []
    t0 = time.time()
    main_process = accelerator is None or accelerator.is_main_process
    for step in range(start, train_cfg.steps):
        parts = train_step(wrapped, opt, data, vae_cfg, train_cfg, step, rank, device, accelerator)
        history.append(parts)
        done = step + 1
        if main_process:
            _report(train_cfg, parts, time.time() - t0, progress)
        out_of_time = time_limit_s is not None and time.time() - t0 > time_limit_s
        if checkpoint_dir is not None and main_process and (done % train_cfg.checkpoint_every == 0 or done == train_cfg.steps or out_of_time):
            save_checkpoint(CHECKPOINTS.path(checkpoint_dir, done), _unwrap(model, accelerator), opt, done, train_cfg)
            CHECKPOINTS.prune(checkpoint_dir, train_cfg.keep_checkpoints)
        if out_of_time:
            log.info("time limit of %.0f s reached after step %d", time_limit_s, done)
            break
    return _unwrap(model, accelerator).eval(), history


def _resume_path(resume, checkpoint_dir) -> Path | None:
    """The checkpoint ``resume`` names: an old single-file one as it is, else ``CHECKPOINTS.resolve``."""
    if resume and str(resume) != "latest" and Path(resume).is_file():
        return Path(resume)
    return CHECKPOINTS.resolve(resume, checkpoint_dir)


def _resume(vae_cfg: BodyVAEConfig, train_cfg: TrainConfig, model: BodyVAE | None, resume, checkpoint_dir
            ) -> tuple[BodyVAE, dict | None, int]:
    """(model, optimizer state or None, first step): the checkpoint's that ``resume`` names, else ``model`` or a
    fresh seeded one at step 0."""
    path = _resume_path(resume, checkpoint_dir)
    if path is not None:
        model, opt_state, info = load_checkpoint(path)
        if model.config != vae_cfg:
            raise BoLIDError(f"the checkpoint's VAE config {model.config} differs from the requested {vae_cfg}: resume with the same sizes")
        log.info("resuming from step %d", int(info["step"]))
        return model, opt_state, int(info["step"])
    if model is None:
        torch.manual_seed(train_cfg.seed)  # a fresh model's initialisation is part of the seeded run
        model = BodyVAE(vae_cfg)
    return model, None, 0


def train_step(model, opt, data: ViewSet, vae_cfg: BodyVAEConfig, train_cfg: TrainConfig, step: int, rank: int, device,
               accelerator=None) -> dict:
    """One optimiser step at ``step`` (its batch and noise drawn from a generator seeded by (seed, step, rank));
    returns the loss parts with "step". model: the (possibly accelerate-wrapped) module the optimiser steps."""
    g = torch.Generator().manual_seed(train_cfg.seed * 1_000_003 + step * 101 + rank)
    batch = sample_batch(data, train_cfg, g)
    noise = torch.randn(int(batch["slots"]), vae_cfg.latent_dim, generator=g)
    loop.set_lr(opt, train_cfg.lr_schedule(step))
    loss, parts = compute_loss(model, batch, vae_cfg, train_cfg.batch_persons, noise, device, train_cfg)
    opt.zero_grad(set_to_none=True)
    if accelerator is not None:
        accelerator.backward(loss)
        if train_cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
    else:
        loss.backward()
        if train_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
    opt.step()
    if not all(math.isfinite(v) for v in parts.values()):
        raise BoLIDError(f"the loss became NaN/inf at step {step} ({parts}): lower --lr or resume from an earlier checkpoint")
    parts["step"] = step
    return parts


def _report(train_cfg: TrainConfig, parts: dict, seconds: float, progress: Callable[[int, int], None] | None) -> None:
    """Log the step when due; tell ``progress``."""
    step = parts["step"]
    done = step + 1
    if done % train_cfg.log_every == 0 or done == train_cfg.steps:
        log.info("step %d/%d loss %.4f recon %.4f kl %.3f%s%s lr %.2e (%.1f s)", done, train_cfg.steps, parts["loss"],
                 parts["recon"], parts["kl"], f" limb {parts['limb']:.4f}" if "limb" in parts else "",
                 (f" contrast {parts['contrast']:.3f}" if "contrast" in parts else "")
                 + (f" view {parts['view_contrast']:.3f}" if "view_contrast" in parts else ""), train_cfg.lr_schedule(step),
                 seconds)
    if progress is not None:
        progress(done, train_cfg.steps)


def _unwrap(model, accelerator):
    return accelerator.unwrap_model(model) if accelerator is not None else model


# --- command line ------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder with one sub-folder of photos per person")
    src.add_argument("--synthetic", type=int, metavar="N", help="train on N procedural identities instead (no pose model needed)")
    parser.add_argument("--pose-model", help="YOLO pose .pt for --data (e.g. models/ultralytics/pose/yolo11x-pose.pt)")
    parser.add_argument("--cache", help="cache folder for prepared views (default DIR/.bolid_cache)")
    parser.add_argument("--views-per-person", type=int, default=64, help="with --synthetic: views rendered per identity")
    parser.add_argument("--out", required=True, help="output folder: checkpoints and the final body_vae.safetensors")
    parser.add_argument("--resume", help="checkpoint (a step_* folder) or folder of them to continue from ('latest': the newest in OUT/checkpoints)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an OUT that holds another run, deleting its checkpoints and body_vae.safetensors")
    parser.add_argument("--input-size", type=int, default=BodyVAEConfig.input_size)
    parser.add_argument("--latent-dim", type=int, default=BodyVAEConfig.latent_dim)
    parser.add_argument("--widths", default=",".join(map(str, BodyVAEConfig.widths)), help="encoder stage widths, comma separated")
    parser.add_argument("--feature-dim", type=int, default=BodyVAEConfig.feature_dim)
    parser.add_argument("--beta", type=float, default=BodyVAEConfig.beta)
    parser.add_argument("--no-limb-head", action="store_true", help="train without the limb-ratio head")
    parser.add_argument("--no-keypoint-branch", action="store_true", help="no MLP over keypoint geometry (image + heat maps only)")
    parser.add_argument("--tail-pool", type=float, default=BodyVAEConfig.tail_pool,
                        help="kappa of the soft maximum over views of the segment ratios (0: off)")
    parser.add_argument("--crop", choices=["person", "image"], default="person",
                        help="person: a square around the keypoints; image: the whole image letterboxed")
    # The Body-ID recipe (method/body_id.py): recorded in the VAE file, used by the nodes.
    parser.add_argument("--working-size", type=int, default=DEFAULT_RECIPE.working_size,
                        help="with --data: each photo's long side in pixels, padded to a square (Load Photos' size)")
    parser.add_argument("--sigma", type=float, default=DEFAULT_RECIPE.sigma, help="weighting sigma (paper eq. 11), see --sigma-mode")
    parser.add_argument("--sigma-mode", choices=SIGMA_MODES, default=DEFAULT_RECIPE.sigma_mode,
                        help="relative: sigma is a fraction of the short side; pixels: in pixels")
    parser.add_argument("--alpha", type=float, default=DEFAULT_RECIPE.alpha, help="weighting alpha (paper 4.1)")
    parser.add_argument("--conf", type=float, default=DEFAULT_RECIPE.conf, help="pose detection confidence")
    parser.add_argument("--visibility", type=float, default=DEFAULT_RECIPE.visibility, help="keypoint visibility threshold")
    loop.add_config_flags(parser, TrainConfig, skip=("context_views",))
    parser.add_argument("--context-views", default="1,4", help="min,max views pooled into z per person and step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--accelerate", action="store_true",
                        help="use accelerate's Accelerator (implied when launched by accelerate launch / torchrun with WORLD_SIZE > 1)")


def main(args: argparse.Namespace) -> int:
    vae_cfg = BodyVAEConfig(input_size=args.input_size, latent_dim=args.latent_dim,
                            widths=tuple(int(w) for w in args.widths.split(",")), feature_dim=args.feature_dim,
                            beta=args.beta, limb_head=not args.no_limb_head, crop=args.crop,
                            keypoint_branch=not args.no_keypoint_branch, tail_pool=args.tail_pool)
    lo, hi = (int(x) for x in args.context_views.split(","))
    train_cfg = loop.config_from_dict(TrainConfig, {**loop.flag_values(args, TrainConfig), "context_views": (lo, hi)}, "flags")
    accelerator = _accelerator(args.accelerate or int(os.environ.get("WORLD_SIZE", "1")) > 1)
    device = accelerator.device if accelerator is not None else args.device
    recipe = BodyIDRecipe(working_size=args.working_size, conf=args.conf, visibility=args.visibility,
                          sigma=args.sigma, sigma_mode=args.sigma_mode, alpha=args.alpha)
    if args.synthetic:
        # rendered at the VAE's input size with exact keypoints: no working size, no pose model
        data = synthetic_viewset(args.synthetic, args.views_per_person, vae_cfg, train_cfg.seed,
                                 recipe=dataclasses.replace(recipe, working_size=None))
    else:
        if not args.pose_model:
            raise BoLIDError("--data needs --pose-model PATH (a YOLO pose .pt); or use --synthetic N")
        data = folder_viewset(args.data, args.pose_model, vae_cfg, cache_dir=args.cache, recipe=recipe, device=str(device))
    log.info("%d views of %d people (%d trainable)", data.views.shape[0], len(data.names), len(data.trainable))
    out = Path(args.out)
    final = out / "body_vae.safetensors"
    if final.exists() and not args.resume and not args.overwrite:
        raise BoLIDError(f"{out} holds another run's {final.name}: resume it (--resume latest), choose another --out, "
                         "or --overwrite")
    model, _ = train_body_vae(vae_cfg, train_cfg, data, checkpoint_dir=out / "checkpoints", resume=args.resume,
                              device=device, accelerator=accelerator, overwrite=args.overwrite)
    if accelerator is None or accelerator.is_main_process:
        path = save_body_vae(model, out / "body_vae.safetensors")
        log.info("saved %s (fingerprint %s)", path, model.fingerprint())
    return 0
