"""Sampling the world's base, with or without the adapter's body branch, in-process.

The same sampler as ComfyUI's KSampler with ``euler`` / ``normal`` on an SDXL (v-prediction, scaled-linear discrete
schedule): sigmas at timesteps spaced evenly from 999 to 0, the model fed x / sqrt(sigma^2 + 1), classifier-free
guidance over a [cond, uncond] batch, and the uncond rows given a zero Body-ID (what the ComfyUI patch does). With
``body_guidance`` g it is ComfyUI's DualCFGGuider instead (positive: prompt + Body-ID, middle: the same prompt,
negative: empty; cfg_conds g, cfg_cond2_negative = cfg): denoised = d_neg + cfg (d_mid - d_neg) + g (d_pos - d_mid),
the middle and negative rows given the zero Body-ID (BoLID Apply marks both as negatives); g = cfg is plain CFG. The
UNet is diffusers' with the trainer's BoLID processors on its 70 sites (the processors' outputs equal the ComfyUI
patch's, tests/unit/test_training_parity.py). ``tests/host/test_world_proof_host.py`` samples the same models through
ComfyUI's executor.
"""

from __future__ import annotations

import torch

from ...training.host import BranchTokens, install_processors
from . import nets


def sigma_table(sched) -> torch.Tensor:
    acp = sched.alphas_cumprod.double()
    return ((1 - acp) / acp).sqrt().float()


def sigma_at(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ComfyUI's ModelSamplingDiscrete.sigma: log-sigma interpolated between integer timesteps."""
    lo = t.floor().long().clamp(0, len(table) - 1)
    hi = (lo + 1).clamp(max=len(table) - 1)
    w = t - lo.float()
    return ((1 - w) * table[lo].log() + w * table[hi].log()).exp()


def timestep_of(table: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """ComfyUI's ModelSamplingDiscrete.timestep: the nearest integer timestep in log-sigma."""
    return (sigma.log()[:, None] - table.log()[None]).abs().argmin(dim=1)


def normal_sigmas(table: torch.Tensor, steps: int) -> torch.Tensor:
    t = torch.linspace(len(table) - 1, 0, steps)
    return torch.cat([sigma_at(table, t), torch.zeros(1)])


class Sampler:
    """Euler + CFG over the world's UNet; the adapter's body branch is on when ``body`` rows are given."""

    def __init__(self, unet, text, sched, size: int, adapter=None):
        self.unet, self.text, self.size = unet, text, size
        self.table = sigma_table(sched)
        self.tokens = BranchTokens()
        self.adapter = adapter
        if adapter is not None:
            install_processors(unet, adapter, self.tokens)

    @torch.no_grad()
    def denoised(self, x: torch.Tensor, sigma: float, ctx: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """ComfyUI's V_PREDICTION.calculate_denoised: x sigma_d^2 / (sigma^2 + sigma_d^2) - v sigma sigma_d / sqrt(...)
        with sigma_d = 1, the model fed x / sqrt(sigma^2 + 1)."""
        s = torch.full((x.shape[0],), float(sigma))
        t = timestep_of(self.table, s).to(x.device)
        c = (s ** 2 + 1).reshape(-1, 1, 1, 1).to(x.device)
        v = self.unet(x / c.sqrt(), t, encoder_hidden_states=ctx,
                      added_cond_kwargs={"text_embeds": pooled,
                                         "time_ids": nets.time_ids(self.size, x.shape[0]).to(x.device)}).sample
        return x / c - v * float(sigma) / c.sqrt()

    @torch.no_grad()
    def __call__(self, captions: list[str], seeds: list[int], body: torch.Tensor | None = None, lambda_body: float = 1.0,
                 steps: int = 16, cfg: float = 3.0, latent_side: int | None = None,
                 body_guidance: float | None = None) -> torch.Tensor:
        """captions, seeds (B each), body (B, D) Body-ID means or None -> latents (B, 4, h, h); body_guidance: the
        scale of (prompt + Body-ID) against the prompt alone, ComfyUI's DualCFGGuider (None: KSampler's CFG).
        Runs on the UNet's device from noise drawn on the CPU (ComfyUI's too), and returns the latents on the CPU."""
        b = len(captions)
        h = latent_side or self.size // 2
        dev = next(self.unet.parameters()).device
        x = torch.stack([torch.randn(4, h, h, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(dev)
        sigmas = normal_sigmas(self.table, steps)
        x = x * (1 + sigmas[0] ** 2).sqrt()
        dual = body_guidance is not None and body is not None
        parts = 3 if dual else 2                       # rows: [prompt + body, (prompt,) empty]
        ctx, pooled = self.text.encode(list(captions) * (parts - 1) + [""] * b)
        self.tokens.lambda_body = float(lambda_body)
        if self.adapter is not None and body is not None and lambda_body != 0:
            body = body.to(dev)
            zero = torch.zeros_like(body.float())
            self.tokens.body = self.adapter.body_tokens(torch.cat([body.float()] + [zero] * (parts - 1)))
        else:
            self.tokens.body = None
        for i in range(steps):
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            d = self.denoised(torch.cat([x] * parts), s, ctx, pooled)
            if dual:
                neg, mid = d[2 * b:], d[b:2 * b]
                denoised = neg + (mid - neg) * cfg + (d[:b] - mid) * body_guidance
            else:
                denoised = d[b:] + cfg * (d[:b] - d[b:])
            x = x + (x - denoised) / s * (s_next - s)
        self.tokens.clear()
        return x.cpu()
