"""Training loops of the world's own models: the text-only base (UNet + text encoder), the classifiers and the
keypoint regressor. Each saves a safetensors checkpoint it resumes from (the Body-ID VAE and the adapter are trained
by the pack's own trainers, see ``world_proof``).

Legend: B batch, S image side, h latent side.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...files import read_format, read_safetensors, save_safetensors_atomic
from ...training import loop
from . import nets
from .text import WorldTextEncoder, vocab_for

log = logging.getLogger("bolid")
FORMAT = "bolid.world_checkpoint"


def save_state(path: Path, modules: dict[str, nn.Module], config: dict | None = None,
               extra: dict[str, torch.Tensor] | None = None) -> None:
    """Modules' weights under ``name.`` prefixes (plus ``extra`` tensors), ``config`` in the metadata."""
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items() for k, v in m.state_dict().items()}
    tensors.update({k: v.cpu().contiguous() for k, v in (extra or {}).items()})
    save_safetensors_atomic(tensors, path, fmt=FORMAT, version=1, config=config or {}, overwrite=True)


def load_state(path: Path, modules: dict[str, nn.Module]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Load ``modules`` from a ``save_state`` file; returns (config, all tensors)."""
    tensors, meta = read_safetensors(path)
    _, config = read_format(meta, path, fmt=FORMAT, max_version=1)
    for name, m in modules.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    return config, tensors


class Ema:
    """Exponential moving average of modules' parameters (decay warmed up as (1 + n) / (10 + n), capped): what a
    short diffusion training samples best from."""

    def __init__(self, modules: dict[str, nn.Module], decay: float):
        self.decay = decay
        self.copies = {name: copy.deepcopy(m).eval().requires_grad_(False) for name, m in modules.items()}
        self.sources = modules

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for name, m in self.sources.items():
            for pe, p in zip(self.copies[name].parameters(), m.parameters()):
                pe.lerp_(p.detach(), 1 - d)


def min_snr_weight(acp: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma loss weight for a v-prediction loss (Hang et al. 2023): min(SNR, gamma) / (SNR + 1)."""
    snr = acp / (1 - acp)
    return snr.clamp(max=gamma) / (snr + 1)


def base_schedule(cfg) -> loop.Schedule:
    """The base's learning rate per step: cfg.base_warmup warm-up steps (100 by default), then constant, or a cosine
    to 5% at cfg.base_steps (a base resumed with more steps picks the curve up where the new total puts it)."""
    cosine = cfg.base_lr_decay == "cosine"
    return loop.Schedule(cfg.base_lr, warmup=cfg.base_warmup, decay=cfg.base_lr_decay, total=cfg.base_steps,
                         min_ratio=0.05 if cosine else 1.0)


def train_base(latents: torch.Tensor, captions: list[str], size: int, cfg, ckpt: Path) -> tuple[nn.Module, WorldTextEncoder, dict]:
    """The text-only base: UNet + text encoder from scratch (v-prediction, min-SNR-5 weights, EMA of the weights)
    on (latent, its prompt), 10% empty prompts (classifier-free guidance). latents (N, 4, h, h), captions (N,).
    Stops at cfg.base_steps or cfg.base_seconds; returns the EMA models, on cfg.device. The batches are
    drawn on the CPU (one seed draws them alike on every device) and moved there."""
    dev = torch.device(cfg.device)
    unet = nets.build_unet(cfg.model_channels, cfg.head_channels, seed=cfg.seed).to(dev)
    text = WorldTextEncoder(vocab=vocab_for(cfg.palette)).to(dev)
    ema = Ema({"unet": unet, "text": text}, cfg.base_ema)
    nets.share_context_projections(unet)
    nets.share_context_projections(ema.copies["unet"])
    sched = nets.scheduler()
    params = list(unet.parameters()) + list(text.parameters())
    opt = loop.adamw(params, lr=cfg.base_lr, weight_decay=0.0)
    step, spent = 0, 0.0
    if ckpt.is_file():
        meta = _load_base(ckpt, unet, text, ema, opt)
        step, spent = int(meta["step"]), float(meta.get("seconds", 0.0))
        log.info("base: resumed at step %d", step)
    acp = sched.alphas_cumprod.to(dev)
    schedule = base_schedule(cfg)
    g = torch.Generator().manual_seed(cfg.seed * 7 + step)
    t0 = time.time() - spent
    unet.train()
    losses = []
    while step < cfg.base_steps and time.time() - t0 < cfg.base_seconds:
        idx = torch.randint(0, latents.shape[0], (cfg.base_batch,), generator=g)
        x0 = latents[idx]
        caps = [captions[int(i)] if float(u) >= 0.1 else "" for i, u in zip(idx, torch.rand(len(idx), generator=g))]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (len(idx),), generator=g)
        x0, noise, t = x0.to(dev), noise.to(dev), t.to(dev)
        a = acp[t].reshape(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        ctx, pooled = text.encode_unique(caps)
        pred = unet(noisy, t, encoder_hidden_states=ctx,
                    added_cond_kwargs={"text_embeds": pooled, "time_ids": nets.time_ids(size, len(idx)).to(dev)}).sample
        err = (pred - (a.sqrt() * noise - (1 - a).sqrt() * x0)).pow(2).mean(dim=(1, 2, 3))  # v-prediction (nets.PREDICTION)
        loss = (err * min_snr_weight(acp[t])).mean()
        loop.set_lr(opt, schedule(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        step += 1
        losses.append(float(err.detach().mean()))
        if step % 50 == 0:
            log.info("base step %d v-loss %.4f (%.0f s)", step, sum(losses[-50:]) / len(losses[-50:]), time.time() - t0)
        if step % cfg.checkpoint_every == 0:
            _save_base(ckpt, unet, text, ema, opt, step, time.time() - t0)
    _save_base(ckpt, unet, text, ema, opt, step, time.time() - t0)
    unet, text = ema.copies["unet"], ema.copies["text"]
    return unet, text, {"base_steps": step, "base_seconds": time.time() - t0,
                        "base_final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])) if losses else None}


def _save_base(path: Path, unet, text, ema: Ema, opt, step: int, seconds: float) -> None:
    """The EMA weights as ``unet.`` / ``text.`` (what the later stages and ComfyUI load), the trained ones as
    ``train_unet.`` / ``train_text.`` and the optimizer state in the trainers' scheme (``training.loop``), to resume."""
    extra, info = loop.flatten_optimizer(opt)
    extra.update({f"train_unet.{k}": v.detach() for k, v in unet.state_dict().items()})
    extra.update({f"train_text.{k}": v.detach() for k, v in text.state_dict().items()})
    save_state(path, {"unet": ema.copies["unet"], "text": ema.copies["text"]},
               {"step": step, "seconds": seconds, "optimizer": info}, extra)


def _load_base(path: Path, unet, text, ema: Ema, opt) -> dict:
    config, tensors = load_state(path, {"unet": ema.copies["unet"], "text": ema.copies["text"],
                                        "train_unet": unet, "train_text": text})
    if "optimizer" in config:
        loop.restore_optimizer(opt, loop.unflatten_optimizer(tensors, config["optimizer"]))
    return config


def train_supervised(model: nn.Module, batch_fn, loss_fn, steps: int, lr: float, name: str,
                     device: str | torch.device = "cpu") -> nn.Module:
    """AdamW with cosine decay on ``batch_fn(step) -> (inputs, targets)`` (fresh renders every step: no view is
    seen twice, so the evaluators cannot memorise views), on ``device`` (the batches are drawn on the CPU)."""
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = loop.Schedule(lr, decay="cosine", total=steps, min_ratio=0.0)
    model.train()
    for step in range(steps):
        x, y = (v.to(device) for v in batch_fn(step))
        loop.set_lr(opt, schedule(step))
        loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            log.info("%s step %d loss %.4f", name, step + 1, loss.item())
    return model.eval().requires_grad_(False)


def ce_loss(model, x, y):
    return F.cross_entropy(model(x), y)


def mse_loss(model, x, y):
    return F.mse_loss(model(x), y)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The model's outputs (B, ...) on the CPU, computed on its device in chunks."""
    dev = next(model.parameters()).device
    return torch.cat([model(images[i:i + chunk].to(dev)).cpu() for i in range(0, images.shape[0], chunk)])


def keypoint_loss(model, x, kp):
    pred = model.keypoints(x)
    s = x.shape[-1]
    return F.smooth_l1_loss(pred[..., :2] / s, kp[..., :2] / s, beta=0.02) + \
        F.binary_cross_entropy_with_logits(pred[..., 2], (kp[..., 2] > 0).float())


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, chunk: int = 256) -> float:
    return float((predict(model, images, chunk).argmax(1) == labels).float().mean())
