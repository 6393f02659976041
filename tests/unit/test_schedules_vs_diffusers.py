"""The trainer's diffusion arithmetic (bolid_lib.training.losses) against diffusers' schedulers, the reference.

Checked against diffusers' own code, never against a copy of our formulas:

- ``lcm_boundary`` (the LCM shortcut preview's c_skip, c_out) against ``LCMScheduler.get_scalings_for_boundary_
  condition_discrete`` at every one of the 1000 training timesteps, and the whole shortcut preview
  ``c_skip·x_t + c_out·predict_x0`` against ``LCMScheduler.step(...).denoised``;
- ``diffusion_target`` (v) against ``DDPMScheduler.get_velocity``, ε against the noise ``add_noise`` used;
- ``predict_x0`` (ε and v) against ``DDPMScheduler.step(...).pred_original_sample``;

all on SDXL's training schedule (scaled_linear, β from 0.00085 to 0.012, 1000 steps), with ᾱ_t taken from the
scheduler as the trainer takes it (``sched.alphas_cumprod[t]``, bolid_lib/training/adapter.py).

Precision: ``diffusion_target`` keeps the dtype of its input, so it is compared in float64 (to 1e-12).
``predict_x0`` and ``lcm_boundary`` compute in float32 by design (``.float()``), so they are held to a bound
of a few float32 roundings of the terms involved; any error in a formula (a swapped √ᾱ and √(1−ᾱ), a missing
timestep scaling) is orders of magnitude above it. The references run in float64: diffusers' schedulers keep
ᾱ in a float32 buffer, which is converted to float64 on a private copy of the scheduler before ``step``.
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is in the dev extra (pip install -e .[dev])")
from diffusers import DDPMScheduler, LCMScheduler  # noqa: E402

from bolid_lib.errors import BoLIDError  # noqa: E402
from bolid_lib.training import losses as L  # noqa: E402

SDXL = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
T = 1000
EPS32 = float(torch.finfo(torch.float32).eps)


def _ddpm(prediction_type: str) -> DDPMScheduler:
    # clip_sample off as in SDXL's scheduler config (DDPMScheduler's default clamps x0 to [-1, 1]).
    return DDPMScheduler(**SDXL, prediction_type=prediction_type, clip_sample=False)


def _pair(seed: int, shape=(T, 4, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def test_the_schedule_is_sdxls_scaled_linear():
    """What the comparisons below stand on: diffusers' ᾱ for these settings is SDXL's schedule, β_t =
    (√0.00085 + t/999·(√0.012 − √0.00085))², ᾱ_t = Π(1 − β) (float32 buffer against the float64 closed form)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2
    want = torch.cumprod(1 - betas, 0)
    got = _ddpm("v_prediction").alphas_cumprod
    assert got.dtype == torch.float32 and got.shape == (T,)
    torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=0)
    torch.testing.assert_close(LCMScheduler(**SDXL).alphas_cumprod, got, rtol=0, atol=0)
    assert abs(want[0].item() - (1 - 0.00085)) < 1e-15 and 0.004 < want[-1].item() < 0.005


# --- LCM boundary condition ------------------------------------------------------------------------

def test_lcm_boundary_equals_lcm_scheduler_at_every_timestep():
    sched = LCMScheduler(**SDXL)
    assert sched.config.timestep_scaling == 10.0          # diffusers' default, LCM's training script's too
    t = torch.arange(T)
    c_skip, c_out = L.lcm_boundary(t)
    assert c_skip.shape == c_out.shape == (T,)
    want = [sched.get_scalings_for_boundary_condition_discrete(int(i)) for i in range(T)]   # python floats (float64)
    want_skip = torch.tensor([w[0] for w in want], dtype=torch.float64)
    want_out = torch.tensor([w[1] for w in want], dtype=torch.float64)
    torch.testing.assert_close(c_skip.double(), want_skip, rtol=4 * EPS32, atol=0)
    torch.testing.assert_close(c_out.double(), want_out, rtol=4 * EPS32, atol=0)
    # the boundary condition itself: at t = 0 the consistency function is the identity (c_skip 1, c_out 0)
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0


@pytest.mark.parametrize("scaling", [1.0, 10.0, 50.0])
def test_lcm_boundary_timestep_scaling_follows_the_scheduler(scaling):
    sched = LCMScheduler(**SDXL, timestep_scaling=scaling)
    t = torch.tensor([0, 1, 3, 19, 250, 999])
    c_skip, c_out = L.lcm_boundary(t, timestep_scaling=scaling)
    for i, step in enumerate(t.tolist()):
        s, o = sched.get_scalings_for_boundary_condition_discrete(step)
        assert c_skip[i].item() == pytest.approx(s, rel=4 * EPS32, abs=0)
        assert c_out[i].item() == pytest.approx(o, rel=4 * EPS32, abs=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_lcm_shortcut_preview_equals_lcm_scheduler_step(prediction_type):
    """The trainer's shortcut preview (adapter.py: ``c_skip·x_t + c_out·predict_x0(x_t, pred, ᾱ_t)``) is the
    ``denoised`` of diffusers' LCMScheduler.step at the same timestep, over a whole LCM schedule."""
    sched = LCMScheduler(**SDXL, prediction_type=prediction_type)
    sched.set_timesteps(8)
    acp32 = sched.alphas_cumprod.clone()
    sched.alphas_cumprod = sched.alphas_cumprod.double()   # the reference in float64 (same float32 ᾱ values)
    timesteps = [int(t) for t in sched.timesteps]
    assert len(timesteps) == 8 and timesteps[0] == 999
    x, pred = _pair(1, (len(timesteps), 4, 8, 8))
    g = torch.Generator().manual_seed(2)
    for i, t in enumerate(timesteps):
        want = sched.step(pred[i:i + 1], t, x[i:i + 1], generator=g).denoised
        tt = torch.tensor([t])
        c_skip, c_out = L.lcm_boundary(tt)
        x0 = L.predict_x0(x[i:i + 1], pred[i:i + 1], acp32[tt], prediction_type)
        got = c_skip.reshape(-1, 1, 1, 1) * x[i:i + 1].float() + c_out.reshape(-1, 1, 1, 1) * x0
        a = acp32[t].double()
        # float32 roundings of x_t, the prediction and the product, amplified by 1/√ᾱ for ε
        scale = (x[i].abs() + pred[i].abs()) / (a.sqrt() if prediction_type == "epsilon" else 1)
        err = (got.double() - want)[0].abs()
        assert (err <= 16 * EPS32 * scale).all(), (t, float((err / scale).max() / EPS32))


# --- v-prediction and ε: the training target and the x0 preview --------------------------------------

def test_v_target_equals_ddpm_get_velocity_at_every_timestep():
    sched = _ddpm("v_prediction")
    x0, noise = _pair(3)
    t = torch.arange(T)
    want = sched.get_velocity(x0, noise, t)                       # diffusers casts ᾱ to the sample's float64
    got = L.diffusion_target(x0, noise, sched.alphas_cumprod[t], "v_prediction")
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # and it is not ε: a target that ignored the prediction type would equal the noise
    assert (got - noise).abs().amax().item() > 0.5


def test_epsilon_target_is_the_noise_add_noise_used():
    sched = _ddpm("epsilon")
    x0, noise = _pair(4)
    t = torch.arange(T)
    got = L.diffusion_target(x0, noise, sched.alphas_cumprod[t], "epsilon")
    assert torch.equal(got, noise)
    # x_t as the trainer makes it (sched.add_noise) is √ᾱ·x0 + √(1−ᾱ)·ε, what the ε target assumes
    noisy = sched.add_noise(x0, noise, t)
    a = sched.alphas_cumprod.double()[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(noisy, a.sqrt() * x0 + (1 - a).sqrt() * noise, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_x0_equals_ddpm_step_pred_original_sample(prediction_type):
    sched = _ddpm(prediction_type)
    acp32 = sched.alphas_cumprod.clone()
    sched.alphas_cumprod = sched.alphas_cumprod.double()   # the reference in float64 (same float32 ᾱ values)
    x, pred = _pair(5)
    g = torch.Generator().manual_seed(6)
    want = torch.cat([sched.step(pred[t:t + 1], t, x[t:t + 1], generator=g).pred_original_sample for t in range(T)])
    t = torch.arange(T)
    got = L.predict_x0(x, pred, acp32[t], prediction_type)
    assert got.dtype == torch.float32 and got.shape == x.shape
    a = acp32.double().reshape(-1, 1, 1, 1)
    scale = (x.abs() + pred.abs()) / (a.sqrt() if prediction_type == "epsilon" else 1)
    err = (got.double() - want).abs()
    worst = float((err / scale).max() / EPS32)
    assert worst <= 8, f"predict_x0 ({prediction_type}) departs from diffusers by {worst:.1f} float32 roundings"


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_a_perfect_prediction_gives_back_the_clean_latent(prediction_type):
    """With the exact target (ε, or diffusers' velocity) at the x_t diffusers' add_noise made, the preview is x0:
    the target and the preview are the same parametrisation at every timestep."""
    sched = _ddpm(prediction_type)
    x0, noise = _pair(7)
    t = torch.arange(T)
    noisy = sched.add_noise(x0, noise, t)
    target = noise if prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)
    got = L.predict_x0(noisy, target, sched.alphas_cumprod[t], prediction_type)
    a = sched.alphas_cumprod.double().reshape(-1, 1, 1, 1)
    scale = (noisy.abs() + target.abs()) / (a.sqrt() if prediction_type == "epsilon" else 1)
    assert ((got.double() - x0).abs() <= 8 * EPS32 * scale).all()


def test_sample_prediction_is_refused_not_treated_as_epsilon():
    x, p = _pair(8, (2, 4, 8, 8))
    a = torch.tensor([0.5, 0.25])
    with pytest.raises(BoLIDError, match="prediction_type"):
        L.diffusion_target(x, p, a, "sample")
    with pytest.raises(BoLIDError, match="prediction_type"):
        L.predict_x0(x, p, a, "sample")
