"""Adapter training (issue 7) on tiny random models of the real classes: diffusers UNet2DConditionModel with SDXL's
70 attn2 sites and 2048-wide context, AutoencoderKL + AutoencoderTiny, CLIPModel, CLIP vision, YOLO11n-pose, the
Body-ID VAE. CPU only."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from bolid_lib.method.adapter import load_adapter
from bolid_lib.errors import BoLIDError
from bolid_lib.training import dataset as D
from bolid_lib.training import losses as L
from bolid_lib.training.adapter import (AdapterTrainConfig, StepContext, add_arguments, build_adapter, compute_losses,
                                        config_from_args, prepare_data, train)
from bolid_lib.training.host import AdapterTrainingModule
from bolid_lib.training.models import tiny_models


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return D.write_synthetic_dataset(tmp_path_factory.mktemp("data"), people=2, views=2, size=64, seed=0)


def make_cfg(data_dir, out, **kw) -> AdapterTrainConfig:
    base = dict(data_dir=str(data_dir), output_dir=str(out), tiny=True, resolution=64, batch_size=2, max_steps=1,
                pose_imgsz=64, pose_conf=1e-6, visibility=0.0, preview_timesteps=(0, 999), lr=1e-3,
                alpha_id=1e-3, beta_clip=0.5, save_every=0, log_every=1, tensorboard=False)
    base.update(kw)
    return AdapterTrainConfig(**base)


@pytest.fixture(scope="module")
def models(data_dir, tmp_path_factory):
    return tiny_models(make_cfg(data_dir, tmp_path_factory.mktemp("m")))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_cpu_setting_reaches_accelerate(models, data_dir, tmp_path, monkeypatch):
    """``cpu: true`` (flag --cpu) is accelerate's cpu=True: a run stays on the CPU on a machine with a GPU. Here
    (no GPU) the recorded argument is what shows it; the run itself still trains."""
    import accelerate

    from bolid_lib.training import adapter as A

    seen = []
    real = accelerate.Accelerator

    def recording(*args, **kw):
        seen.append(kw.get("cpu"))
        return real(*args, **kw)

    monkeypatch.setattr(accelerate, "Accelerator", recording)
    assert AdapterTrainConfig(data_dir="x").cpu is False
    A.train(make_cfg(data_dir, tmp_path / "cpu", cpu=True), models=models)
    A.train(make_cfg(data_dir, tmp_path / "any"), models=models)
    assert seen == [True, False]


def test_one_step_changes_only_adapter(models, data_dir, tmp_path):
    cfg = make_cfg(data_dir, tmp_path)
    frozen = {name: snapshot(m) for name, m in models.frozen_modules().items()}
    before, _ = build_adapter(cfg, models, 16)           # the same seeded initialisation train() makes
    before = snapshot(before)
    result = train(cfg, models=models)
    after = result["adapter_module"].state_dict()
    for name, m in models.frozen_modules().items():
        assert not any(p.requires_grad for p in m.parameters()), name
        now = m.state_dict()
        assert set(now) == set(frozen[name])
        changed = [k for k in now if not torch.equal(now[k], frozen[name][k])]
        assert not changed, f"{name} changed: {changed[:3]}"
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    # every trained weight matrix moves (AdamW moves each parameter with a non-zero gradient by ~lr)
    for branch in ("ref.", "body."):
        assert any(k.startswith(branch + "attn.") for k in moved), branch
        assert any(k.startswith(branch) and "proj" in k for k in moved), branch


def test_only_trained_branch_moves(models, data_dir, tmp_path):
    cfg = make_cfg(data_dir, tmp_path, branches="body", init_adapter=None)
    with pytest.raises(BoLIDError, match="ref"):
        # an adapter with a body branch only cannot take a ref image; ask for ref training without an encoder
        build_adapter(dataclasses.replace(cfg, branches="ref"), dataclasses.replace(models, image_encoder=None), 16)
    adapter, trainable = build_adapter(cfg, models, 16)
    assert adapter.ref is None and adapter.body is not None
    assert {id(p) for p in trainable} == {id(p) for p in adapter.body.parameters()}


@pytest.fixture(scope="module")
def step_setup(models, data_dir, tmp_path_factory):
    cfg = make_cfg(data_dir, tmp_path_factory.mktemp("s"), dropout_text=0.0, dropout_ref=0.0, dropout_body=0.0, dropout_together=0.0,
                   alpha_id=1.0, beta_clip=1.0)
    adapter, trainable = build_adapter(cfg, models, 16)
    module = AdapterTrainingModule(adapter, models.unet)
    ds = prepare_data(cfg, models, True)
    batch = D.collate([ds[(i, 1000 + i)] for i in range(2)])
    ctx = StepContext(cfg, models, module, torch.device("cpu"), "epsilon")
    return cfg, adapter, trainable, ctx, batch


def test_gradients_reach_adapter_from_each_term(step_setup):
    cfg, adapter, trainable, ctx, batch = step_setup
    terms = compute_losses(ctx, batch)
    ref_params = list(adapter.ref.parameters())
    body_params = list(adapter.body.parameters())
    for name in ("l_diff", "l_id", "l_clip"):
        assert terms[name].requires_grad and float(terms[name].detach()) > 0, name
        grads = torch.autograd.grad(terms[name], ref_params + body_params, retain_graph=True, allow_unused=True)
        g_ref = sum(float(g.abs().sum()) for g in grads[:len(ref_params)] if g is not None)
        g_body = sum(float(g.abs().sum()) for g in grads[len(ref_params):] if g is not None)
        assert math.isfinite(g_ref) and math.isfinite(g_body), name
        assert g_ref > 0 and g_body > 0, f"{name}: ref {g_ref} body {g_body}"


def test_no_image_terms_without_weights(step_setup):
    cfg, adapter, trainable, ctx, batch = step_setup
    ctx0 = dataclasses.replace(ctx, cfg=dataclasses.replace(cfg, alpha_id=0.0, beta_clip=0.0))
    terms = compute_losses(ctx0, batch)
    assert float(terms["l_id"]) == 0 and float(terms["l_clip"]) == 0
    assert torch.equal(terms["loss"], terms["l_diff"])


@pytest.mark.slow
def test_thirty_steps_lower_total_loss(models, data_dir, tmp_path):
    # the random pose net puts joints hundreds of pixels apart: a small α_id keeps the three terms comparable
    cfg = make_cfg(data_dir, tmp_path, dropout_text=0.0, dropout_ref=0.0, dropout_body=0.0, dropout_together=0.0, alpha_id=1e-5, beta_clip=0.5)
    adapter, trainable = build_adapter(cfg, models, 16)
    module = AdapterTrainingModule(adapter, models.unet)
    ds = prepare_data(cfg, models, True)
    batch = D.collate([ds[(i, 7 + i)] for i in range(2)])          # fixed images, noise and timesteps
    ctx = StepContext(cfg, models, module, torch.device("cpu"), "epsilon")
    opt = torch.optim.Adam(trainable, lr=3e-3)
    losses = []
    for _ in range(30):
        terms = compute_losses(ctx, batch)
        losses.append({k: float(v.detach()) for k, v in terms.items()})
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    first, last = losses[0]["loss"], losses[-1]["loss"]
    assert last < 0.9 * first, [(round(x["l_diff"], 4), round(x["l_id"], 1), round(x["l_clip"], 4)) for x in losses]


@pytest.mark.slow
def test_identity_term_changes_what_is_learned(models, data_dir, tmp_path):
    """With α_id large enough to count, training lowers L_id on a fixed batch, well below where L_diff alone
    leaves it. The random pose net puts joints many image widths apart (L_id ≈ 7e3), so α_id = 0.1 makes
    α_id·L_id dominate L_diff (≈ 1); keypoint_temperature 1 smooths its soft-argmax over near-random objectness."""

    def run(alpha_id: float) -> tuple[float, float]:
        cfg = make_cfg(data_dir, tmp_path, dropout_text=0.0, dropout_ref=0.0, dropout_body=0.0, dropout_together=0.0, alpha_id=alpha_id,
                       beta_clip=0.0, keypoint_temperature=1.0)
        adapter, trainable = build_adapter(cfg, models, 16)          # the same seeded initialisation for both runs
        module = AdapterTrainingModule(adapter, models.unet)
        ds = prepare_data(cfg, models, True)
        batch = D.collate([ds[(i, 7 + i)] for i in range(2)])       # fixed images, noise and timesteps
        ctx = StepContext(cfg, models, module, torch.device("cpu"), "epsilon")
        probe = StepContext(dataclasses.replace(cfg, alpha_id=1.0), models, module, torch.device("cpu"), "epsilon")

        def l_id() -> float:                                          # measured whatever the run's α_id
            with torch.no_grad():
                return float(compute_losses(probe, batch)["l_id"])

        before = l_id()
        opt = torch.optim.Adam(trainable, lr=3e-3)
        for _ in range(12):
            terms = compute_losses(ctx, batch)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
        return before, l_id()

    start, with_id = run(0.1)
    start0, without = run(0.0)
    assert start == start0
    # measured: 7054 -> 6260 with α_id = 0.1, 7054 -> 6913 with α_id = 0
    assert with_id < 0.92 * start, (start, with_id, without)
    assert with_id < 0.95 * without, (start, with_id, without)


def test_written_file_loads_and_resume_repeats(models, data_dir, tmp_path):
    full = train(make_cfg(data_dir, tmp_path / "full", max_steps=4), models=models)
    part = train(make_cfg(data_dir, tmp_path / "part", max_steps=2, save_every=1, keep_checkpoints=1), models=models)
    assert (tmp_path / "part" / "checkpoints" / "step_0000002" / "optimizer.safetensors").is_file()
    assert [p.name for p in (tmp_path / "part" / "checkpoints").iterdir()] == ["step_0000002"]   # step 1 pruned
    rest = train(make_cfg(data_dir, tmp_path / "part", max_steps=4, resume="latest"), models=models)
    assert [h["step"] for h in rest["history"]] == [3, 4]
    for a, b in zip(full["history"][2:], rest["history"]):
        for k in ("loss", "l_diff", "l_id", "l_clip"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (a["step"], k)
    # the written adapter loads with the adapter loader, equal to the trained one
    loaded = load_adapter(rest["adapter"])
    assert loaded.config == rest["adapter_module"].config
    sd_a, sd_b = full["adapter_module"].state_dict(), loaded.state_dict()
    assert set(sd_a) == set(sd_b)
    for k in sd_a:
        torch.testing.assert_close(sd_b[k], sd_a[k], rtol=1e-5, atol=1e-6)
    assert part["step"] == 2 and rest["step"] == 4
    if loaded.body is not None:   # the file records which Body-ID VAE the body branch was trained on
        assert loaded.body_vae_fingerprint == models.body_vae.fingerprint() != ""
    log = (tmp_path / "part" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss,l_diff,l_id,l_clip") and len(log) == 5
    # a checkpoint from before the shared key scheme (optimizer.safetensors version 1, state.<id>.<name>) resumes alike
    import shutil

    from bolid_lib import files

    old = shutil.copytree(tmp_path / "part" / "checkpoints" / "step_0000002", tmp_path / "old" / "step_0000002")
    tensors, meta = files.read_safetensors(old / "optimizer.safetensors")
    assert meta[files.VERSION_KEY] == "2" and all(k.startswith("optim.") for k in tensors)
    info = json.loads(meta[files.CONFIG_KEY])
    info["scalars"] = {"state." + k[len("optim."):]: v for k, v in info["scalars"].items()}
    files.save_safetensors_atomic({"state." + k[len("optim."):]: v for k, v in tensors.items()}, old / "optimizer.safetensors",
                                  fmt="bolid.optimizer", version=1, config=info)
    again = train(make_cfg(data_dir, tmp_path / "again", max_steps=4, resume=str(old)), models=models)
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in rest["history"]]
    sd_c = again["adapter_module"].state_dict()
    assert all(torch.equal(sd_c[k], rest["adapter_module"].state_dict()[k]) for k in sd_c)


def test_config_file_and_flags(tmp_path, data_dir):
    import argparse

    (tmp_path / "c.yaml").write_text(f"data_dir: {data_dir}\nalpha_id: 0.3\npreview_timesteps: [10, 500]\ntiny: true\n")
    (tmp_path / "c.toml").write_text(f'data_dir = "{data_dir}"\nbeta_clip = 0.2\n')
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--config", str(tmp_path / "c.yaml"), "--beta-clip", "0.7", "--preview-timesteps", "5", "9"]))
    assert (cfg.alpha_id, cfg.beta_clip, cfg.preview_timesteps, cfg.tiny) == (0.3, 0.7, (5, 9), True)
    assert config_from_args(p.parse_args(["--config", str(tmp_path / "c.toml")])).beta_clip == 0.2
    (tmp_path / "bad.json").write_text('{"alpha": 1}')
    with pytest.raises(BoLIDError, match="unknown settings"):
        config_from_args(p.parse_args(["--config", str(tmp_path / "bad.json")]))
    with pytest.raises(BoLIDError, match="preview"):
        make_cfg(data_dir, tmp_path, preview="lookahead")


def test_condition_dropout_is_independent_and_keyed():
    seeds = torch.tensor([D.sample_seed(0, p) for p in range(4000)])
    keep = D.draw_dropout(seeds, D.Dropout(0.05, 0.05, 0.05))
    for k in ("text", "ref", "body"):
        rate = 1 - keep[k].float().mean().item()
        assert 0.03 < rate < 0.07, (k, rate)
    both = (~keep["text"] & ~keep["body"]).float().mean().item()
    assert both < 0.01                                            # independent: about 0.05², not 0.05
    again = D.draw_dropout(seeds[:10], D.Dropout(0.05, 0.05, 0.05))
    assert all(torch.equal(again[k], keep[k][:10]) for k in keep)


def test_condition_dropout_trains_the_unconditional_row_as_ip_adapter_does():
    """5% text alone, 5% body alone and 5% both together: the all-dropped row (CFG's unconditional one) is trained
    about 5% of the time (independent draws alone give 0.25%); together = 0 keeps the old draws exactly."""
    seeds = torch.tensor([D.sample_seed(0, p) for p in range(4000)])
    keep = D.draw_dropout(seeds, D.Dropout(0.05, 0.05, 0.05, together=0.05))
    none_kept = (~keep["text"] & ~keep["ref"] & ~keep["body"]).float().mean().item()
    assert 0.035 < none_kept < 0.07, none_kept
    text_only = (~keep["text"] & keep["body"]).float().mean().item()
    assert 0.03 < text_only < 0.07, text_only
    old = D.draw_dropout(seeds, D.Dropout(0.05, 0.05, 0.05))
    zero = D.draw_dropout(seeds, D.Dropout(0.05, 0.05, 0.05, together=0.0))
    assert all(torch.equal(old[k], zero[k]) for k in old)
    assert AdapterTrainConfig.__dataclass_fields__["dropout_together"].default == 0.05


def test_training_timesteps_stay_in_their_range_and_default_is_unchanged():
    seeds = torch.tensor([D.sample_seed(0, p) for p in range(400)])
    _, t_all, _ = D.draw_noise(seeds, (4, 2, 2), 1000, (0, 700))
    n2, t_full, p2 = D.draw_noise(seeds, (4, 2, 2), 1000, (0, 700), (0, 999))
    assert torch.equal(t_all, t_full)                            # the whole range draws what the default draws
    noise, t, preview = D.draw_noise(seeds, (4, 2, 2), 1000, (0, 700), (150, 850))
    assert int(t.min()) >= 150 and int(t.max()) <= 850 and int(t.max()) - int(t.min()) > 600
    assert torch.equal(noise, n2) and torch.equal(preview, p2)   # only the timesteps move
    assert int(t_all.min()) < 150 and int(t_all.max()) > 850
    with pytest.raises(BoLIDError, match="train_timesteps"):
        AdapterTrainConfig(train_timesteps=(600, 100))


def test_training_timesteps_past_the_schedule_are_refused(models, data_dir, tmp_path):
    with pytest.raises(BoLIDError, match="past the scheduler's last timestep 999"):
        train(make_cfg(data_dir, tmp_path / "o", train_timesteps=(100, 1000)), models=models)
    # the refused run left nothing behind that stops the next one, with other accelerate settings, in this process
    result = train(make_cfg(data_dir, tmp_path / "p", mixed_precision="bf16", save_every=0), models=models)
    assert result["step"] == 1


def test_body_branch_can_start_from_the_unets_text_projections(models, data_dir, tmp_path):
    from bolid_lib.method.sdxl_layers import SITES
    from bolid_lib.training.host import attn2_names

    names = [n[:-len(".processor")] for n in attn2_names(models.unet)]
    mods = dict(models.unet.named_modules())
    copied, _ = build_adapter(make_cfg(data_dir, tmp_path / "a", branches="body", body_init="unet"), models, 16)
    fresh, _ = build_adapter(make_cfg(data_dir, tmp_path / "b", branches="body"), models, 16)
    for s, name in zip(SITES, names):
        for kind in ("k", "v"):
            unet_w = getattr(mods[name], f"to_{kind}").weight
            assert torch.equal(getattr(copied.body.attn[s.index], f"to_{kind}_body").weight, unet_w), (s.index, kind)
            assert not torch.equal(getattr(fresh.body.attn[s.index], f"to_{kind}_body").weight, unet_w)
    assert copied.body.attn[0].to_k_body.weight.data_ptr() != mods[names[0]].to_k.weight.data_ptr()   # copies, not views
    with pytest.raises(BoLIDError, match="body_init"):
        AdapterTrainConfig(body_init="text")


def test_keyed_sampler_splits_global_batch():
    one = D.KeyedSampler(10, 3, batch_size=4, world=1, rank=0, accumulation=1, start_step=0, max_steps=3)
    two = [D.KeyedSampler(10, 3, batch_size=2, world=2, rank=r, accumulation=1, start_step=0, max_steps=3) for r in (0, 1)]
    acc = D.KeyedSampler(10, 3, batch_size=1, world=2, rank=0, accumulation=2, start_step=0, max_steps=3)
    a = list(one)
    r0, r1 = list(two[0]), list(two[1])
    for s in range(3):
        assert sorted(a[4 * s:4 * s + 4]) == sorted(r0[2 * s:2 * s + 2] + r1[2 * s:2 * s + 2])
    assert set(list(acc)) <= set(a)
    resumed = list(D.KeyedSampler(10, 3, batch_size=4, world=1, rank=0, accumulation=1, start_step=1, max_steps=3))
    assert resumed == a[4:]


def test_losses_formulas():
    torch.manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    acp = torch.tensor([0.9, 0.5, 0.1])
    a = acp.reshape(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    torch.testing.assert_close(L.predict_x0(xt, eps, acp, "epsilon"), x0, atol=1e-5, rtol=1e-5)
    v = L.diffusion_target(x0, eps, acp, "v_prediction")
    torch.testing.assert_close(L.predict_x0(xt, v, acp, "v_prediction"), x0, atol=1e-5, rtol=1e-5)
    kp = torch.rand(2, 17, 3) * 64
    kp[..., 2] = 1.0
    moved = kp.clone()
    moved[0, 3, 0] += 6.4                                          # one joint off by a tenth of the width
    assert float(L.keypoint_loss(moved, kp, (64, 64))) == pytest.approx(0.01 / 2, rel=1e-4)
    kp_hidden = kp.clone()
    kp_hidden[0, 3, 2] = 0.0                                       # invisible in the target: masked
    assert float(L.keypoint_loss(moved, kp_hidden, (64, 64))) == 0.0
    f = torch.randn(2, 8)
    assert float(L.clip_loss(f, f)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.clip_loss(f, -f)) == pytest.approx(2.0, abs=1e-6)


def test_soft_and_box_keypoint_decode_agree_on_a_sharp_peak():
    b, a = 2, 5
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 1, 1], [5, 5, 6, 6]]).T
    boxes = boxes[None].expand(b, 4, a)
    scores = torch.full((b, a), 0.01)
    scores[:, 2] = 0.99
    kps = torch.randn(b, 17, 3, a, requires_grad=True)
    dense = L.DenseKeypoints(boxes, scores, kps)
    soft = L.reduce_keypoints(dense, "soft", temperature=0.05)
    box = L.reduce_keypoints(dense, "target_box", target_boxes=torch.tensor([[39.0, 39, 51, 51]] * b))
    torch.testing.assert_close(soft, kps[..., 2].detach(), atol=1e-3, rtol=0)
    torch.testing.assert_close(box, kps[..., 2])
    box.sum().backward()
    assert kps.grad[..., 2].abs().sum() > 0 and kps.grad[..., :2].abs().sum() == 0


def test_dense_keypoints_differentiable_no_nms(models):
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    dense = L.dense_keypoints(models.pose_net, x)
    assert dense.keypoints.shape[:3] == (2, 17, 3) and dense.scores.shape == (2, dense.keypoints.shape[-1])
    kp = L.reduce_keypoints(dense, "soft")
    kp[..., :2].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_gradient_checkpointing_same_gradients_and_bf16_step(step_setup, models, data_dir, tmp_path):
    cfg, adapter, trainable, ctx, batch = step_setup

    def grads():
        before = ctx.core.tokens.calls
        terms = compute_losses(ctx, batch)
        g = torch.autograd.grad(terms["loss"], trainable)
        return g, ctx.core.tokens.calls - before

    plain, calls_plain = grads()
    models.unet.enable_gradient_checkpointing()
    try:
        ckpt, calls_ckpt = grads()
    finally:
        models.unet.disable_gradient_checkpointing()
    assert calls_plain == 70 and calls_ckpt == 140      # checkpointing recomputes every site in the backward pass
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    result = train(make_cfg(data_dir, tmp_path, mixed_precision="bf16", gradient_checkpointing=True), models=models)
    models.unet.disable_gradient_checkpointing()
    assert math.isfinite(result["history"][0]["loss"]) and result["history"][0]["l_diff"] > 0


def test_ref_branch_starts_from_an_ip_adapter_file(models, data_dir, tmp_path):
    from safetensors.torch import save_file

    from bolid_lib.method.adapter import AdapterConfig, BoLIDAdapter, bolid_ref_state_to_ip_adapter

    torch.manual_seed(5)
    src = BoLIDAdapter(AdapterConfig(widths=models.adapter_widths(), ref_kind="plain", ref_tokens=4, clip_embed_dim=32,
                                     body_dim=None))
    ip = {k: v.contiguous() for k, v in bolid_ref_state_to_ip_adapter(src).items()}
    assert any(k.startswith("ip_adapter.139.") for k in ip)                   # the public file's key layout
    path = tmp_path / "ip-adapter_sdxl_tiny.safetensors"
    save_file(ip, str(path))
    for branches, ref_trained in (("body", False), ("both", True)):
        cfg = make_cfg(data_dir, tmp_path, branches=branches, init_adapter=str(path))
        adapter, trainable = build_adapter(cfg, models, 16)
        assert adapter.ref is not None and adapter.body is not None
        for k, v in src.ref.state_dict().items():
            assert torch.equal(adapter.ref.state_dict()[k], v), k
        ids = {id(p) for p in trainable}
        assert all((id(p) in ids) == ref_trained for p in adapter.ref.parameters())
        assert all(id(p) in ids for p in adapter.body.parameters())
    wrong = dataclasses.replace(models, image_encoder=None)
    with pytest.raises(BoLIDError, match="CLIP vision"):
        build_adapter(make_cfg(data_dir, tmp_path, init_adapter=str(path)), wrong, 16)


def test_gradient_accumulation_equals_big_batch(models, data_dir, tmp_path):
    big = train(make_cfg(data_dir, tmp_path / "big", batch_size=2, grad_accum=1, max_steps=1, lr=1e-4), models=models)
    acc = train(make_cfg(data_dir, tmp_path / "acc", batch_size=1, grad_accum=2, max_steps=1, lr=1e-4), models=models)
    for k in ("loss", "l_diff", "l_id", "l_clip"):
        assert acc["history"][0][k] == pytest.approx(big["history"][0][k], rel=1e-5), k
    a, b = big["adapter_module"].state_dict(), acc["adapter_module"].state_dict()
    init, _ = build_adapter(make_cfg(data_dir, tmp_path), models, 16)
    init = init.state_dict()
    da = torch.cat([(a[k] - init[k]).flatten() for k in a])
    db = torch.cat([(b[k] - init[k]).flatten() for k in a])
    assert float(da.norm()) > 0
    # AdamW's first step is lr·sign-like (g / |g|), so float-level differences of tiny gradients show; see test_ddp
    assert float((da - db).norm()) < 5e-3 * float(da.norm())


def test_dropped_reference_is_what_inference_calls_no_image(models, data_dir, tmp_path):
    """A dropped reference trains the branch on what BoLID Apply gives the unconditional rows (as
    ComfyUI_IPAdapter_plus does): zero image_embeds for a plain adapter, the hidden states of a black image for a
    plus adapter; kept rows are their own features."""
    from bolid_lib.training.adapter import _ref_features, reference_features

    cfg = make_cfg(data_dir, tmp_path)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([True, False, True])
    black = _ref_features(models, cfg, torch.zeros(1, 3, 64, 64), "plus")[0]
    got = reference_features(models, cfg, images, "plus", keep)
    own = _ref_features(models, cfg, images, "plus")
    torch.testing.assert_close(got[0], own[0])
    torch.testing.assert_close(got[2], own[2])
    torch.testing.assert_close(got[1], black)
    assert black.abs().max() > 0                                       # not the zero tensor of a plain adapter
    plain = reference_features(models, cfg, images, "plain", keep)
    assert torch.equal(plain[1], torch.zeros_like(plain[1]))
    torch.testing.assert_close(plain[0], _ref_features(models, cfg, images, "plain")[0])
