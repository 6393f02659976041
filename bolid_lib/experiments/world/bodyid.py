"""The world's Body-IDs: the Body-ID VAE trained by the pack's trainer on the world's views (as in body_id_proof),
and the Body-IDs of its people computed through ``BodyVAE.encode_views`` (the node's path)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...method.body_vae import BodyVAE, BodyVAEConfig, load_body_vae, save_body_vae
from ...method.embedding import BodyEmbedding
from ...training.body_vae import TrainConfig, make_viewset, train_body_vae
from ...method.body_id import recipe_of
from ...method.weighting import apply_weighting


def vae_config(cfg) -> BodyVAEConfig:
    return BodyVAEConfig(input_size=cfg.size, latent_dim=cfg.body_dim, widths=(16, 32, 64), feature_dim=128,
                         beta=0.02)


def train_vae(views: dict, cfg, folder: Path) -> tuple[BodyVAE, dict]:
    """Train (or load) the Body-ID VAE on ``views`` (render.views output) with the trainer's defaults."""
    final = folder / "body_vae.safetensors"
    if final.is_file():
        return load_body_vae(final).to(cfg.device).eval(), {"vae_steps": None}
    vcfg = vae_config(cfg)
    person = torch.unique(views["person"], return_inverse=True)[1]    # contiguous (world v2's people skip the judged ones)
    data = make_viewset(views["images"], views["keypoints"], person, vcfg)
    tcfg = TrainConfig(steps=cfg.vae_steps, batch_persons=min(16, int(person.max()) + 1), lr=2e-3,
                       warmup=min(50, cfg.vae_steps // 10 + 1), seed=cfg.seed, log_every=100,
                       checkpoint_every=cfg.checkpoint_every)
    # "latest": this folder is the world's own; a stopped run continues from its newest checkpoint.
    model, history = train_body_vae(vcfg, tcfg, data, checkpoint_dir=folder / "vae_checkpoints",
                                    resume="latest", time_limit_s=cfg.vae_seconds, device=cfg.device)
    save_body_vae(model, final)
    return model.eval(), {"vae_steps": len(history), "vae_final_loss": history[-1]["loss"] if history else None}


@torch.no_grad()
def encode_groups(model: BodyVAE, images: torch.Tensor, keypoints: torch.Tensor, group: int) -> torch.Tensor:
    """Body-ID means of consecutive groups of ``group`` views: (B, 3, S, S), (B, 17, 3) -> (B / group, D), on the
    CPU (the model may be on another device); the views weighted as the VAE learned them (its recipe)."""
    w, _ = apply_weighting(images, keypoints, **recipe_of(model).weighting)
    dev = next(model.parameters()).device
    return torch.stack([model.encode_views(w[i:i + group].to(dev), keypoints[i:i + group].to(dev))[0].cpu()
                        for i in range(0, images.shape[0], group)])


def embedding(model: BodyVAE, mean: torch.Tensor, views: int) -> BodyEmbedding:
    return BodyEmbedding(mean, torch.zeros_like(mean), {"vae_fingerprint": model.fingerprint(), "views_used": views})
