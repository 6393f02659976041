"""The adapter's body branch, trained by the pack's adapter trainer (``training.adapter.train``) on the world.

The world is written as the trainer's data folder (one folder per person: PNG views, their prompts as captions, and
``body.safetensors``: the person's Body-ID from ``gallery_views`` *other* views), and the trainer gets the world's
frozen models as its ``ModelSet``: the base UNet, the latent map in the VAE's place, the text encoder in SDXL's
two encoders' place, the keypoint regressor in YOLO's place (L_id), the Body-ID VAE (its fingerprint goes into the
adapter file). L_CLIP is off: there is no CLIP model of this world (beta_clip = 0).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ...method.embedding import save_body
from ...training.adapter import AdapterTrainConfig, train
from ...training.models import ModelSet
from . import bodyid, nets
from .text import TrainerText

log = logging.getLogger("bolid")


def write_data(world, folder: Path) -> Path:
    """The trainer's data folder for the adapter's identities (written once)."""
    from PIL import Image

    done = folder / ".complete"
    if done.is_file():
        return folder
    cfg = world.cfg
    v = world.views(cfg.adapter_views, 7, world.train_ids)
    bodies = {pid: bodyid.embedding(world.body_vae, world.gallery[pid], _gallery_views(cfg)) for pid in world.train_ids}
    if world.extra_ids:                     # more people, their Body-IDs from other views, as for the world's
        x = world.views(cfg.adapter_extra_views, 17, world.extra_ids)
        v = {k: torch.cat([v[k], x[k]]) for k in v if k != "keypoints"}
        n = _gallery_views(cfg)
        g = world.views(n, 18, world.extra_ids, ref=True)
        means = bodyid.encode_groups(world.body_vae, g["images"], g["keypoints"], n)
        bodies.update({pid: bodyid.embedding(world.body_vae, m, n) for pid, m in zip(world.extra_ids, means)})
    captions = world.captions(v)
    width = 4 if cfg.v2 else 2
    for i in range(v["images"].shape[0]):
        pid = int(v["person"][i])
        d = folder / f"person_{pid:0{width}d}"
        d.mkdir(parents=True, exist_ok=True)
        arr = (v["images"][i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(d / f"view_{i:05d}.png")
        (d / f"view_{i:05d}.txt").write_text(captions[i], encoding="utf-8")
    for pid, body in bodies.items():
        save_body(body, folder / f"person_{pid:0{width}d}" / "body.safetensors", overwrite=True)
    done.write_text("ok")
    return folder


def _gallery_views(cfg) -> int:
    """How many views a Body-ID is encoded from: world v2's ``ref_views`` (in colours no prompt names)."""
    return cfg.ref_views if cfg.v2 else cfg.gallery_views


def model_set(world, alpha_id: float) -> ModelSet:
    return ModelSet(unet=world.unet, scheduler=nets.scheduler(), vae=world.latent_map, text=TrainerText(world.text),
                    pose_net=world.kp_net if alpha_id > 0 else None, body_vae=world.body_vae)


def train_adapter(world, alpha_id: float, name: str):
    """Train (or resume, or load when finished) the body branch; returns the BoLIDAdapter (eval mode)."""
    cfg = world.cfg
    data = write_data(world, world.out / (f"adapter_data_x{cfg.adapter_extra_ids}" if world.extra_ids else "adapter_data"))
    tcfg = AdapterTrainConfig(
        data_dir=str(data), output_dir=str(world.out / name), name=name, resolution=cfg.size, branches="body",
        body_tokens=cfg.adapter_tokens, body_hidden=cfg.adapter_hidden, body_init=cfg.adapter_init,
        alpha_id=alpha_id, beta_clip=0.0, pose_imgsz=32 * max(1, cfg.size // 32),
        preview_timesteps=(0, 600), dropout_text=cfg.dropout_text, dropout_body=cfg.dropout_body,
        dropout_together=cfg.dropout_together, seed=cfg.seed, batch_size=cfg.adapter_batch,
        max_steps=cfg.adapter_steps, lr=cfg.adapter_lr, lr_decay=cfg.adapter_lr_decay,
        train_timesteps=cfg.adapter_timesteps, warmup_steps=20, save_every=cfg.checkpoint_every,
        log_every=25, resume="latest", tensorboard=False, cpu=torch.device(cfg.device).type == "cpu")
    result = train(tcfg, models=model_set(world, alpha_id))
    hist = result["history"]
    world.figures[f"{name}_steps"] = result["step"]
    if hist:
        tail = hist[-min(50, len(hist)):]
        world.figures[f"{name}_final_l_diff"] = sum(h["l_diff"] for h in tail) / len(tail)
        world.figures[f"{name}_final_l_id"] = sum(h["l_id"] for h in tail) / len(tail)
    return result["adapter_module"].eval().requires_grad_(False)
