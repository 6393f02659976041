"""The world of the whole-method proof (bolid_lib.experiments.world_proof): its pieces behave as documented.
The end-to-end run through ComfyUI's executor is tests/host/test_world_proof_host.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bolid_lib.experiments.world import nets, render
from bolid_lib.experiments.world.latent import PatchLatentMap, projection, round_trip, to_image, to_latent
from bolid_lib.experiments.world.sample import normal_sigmas, sigma_at, sigma_table, timestep_of
from bolid_lib.experiments.world.text import TOKENS, TrainerText, WorldTextEncoder, prompt_for
from bolid_lib.errors import BoLIDError
from bolid_lib.experiments.world_proof import V1
from bolid_lib.training import losses as L


def test_render_sets_the_pose_class_and_keeps_identity_in_shape():
    shapes = render.pick_identities(3, 0)
    pose = torch.tensor([0, 1, 2])
    img, kp = render.render(shapes, pose, seed=1)
    again, _ = render.render(shapes, pose, seed=1)
    assert img.shape == (3, 3, 32, 32) and kp.shape == (3, 17, 3) and torch.equal(img, again)
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    # wrists relative to the shoulders: below for "down", level for "out", above for "up" (image y points down)
    lift = (kp[:, 5:7, 1] - kp[:, 9:11, 1]).mean(1)
    assert lift[0] < -3 and abs(float(lift[1])) < 3 and lift[2] > 3
    assert float(kp[..., 0].min()) >= 0 and float(kp[..., :2].max()) <= 32


def test_a_fixed_palette_keeps_everything_but_the_colours():
    shapes = render.pick_identities(3, 0)
    pose = torch.tensor([0, 1, 2])
    rnd, kp = render.render(shapes, pose, seed=4)
    fixed, kp_fixed = render.render(shapes, pose, seed=4, settings=render.WorldRender(palette="fixed"))
    assert torch.equal(kp, kp_fixed)                       # the same people in the same poses and places
    corner = fixed[:, :, 0, 0]                             # background's top row: the palette's bg_a, plus pixel noise
    assert (corner - torch.tensor(render.FIXED["bg_a"])).abs().max() < 0.1
    assert (rnd[:, :, 0, 0] - torch.tensor(render.FIXED["bg_a"])).abs().max() > 0.1
    with pytest.raises(BoLIDError, match="'random' or 'fixed'"):
        render.render(shapes, pose, seed=4, settings=render.WorldRender(palette="pastel"))


def test_pick_identities_spreads_people_apart():
    chosen = render.pick_identities(6, 0)
    lo = torch.tensor([q[1] for q in render.syn.SHAPE_PARAMS])
    hi = torch.tensor([q[2] for q in render.syn.SHAPE_PARAMS])
    spread = lambda s: torch.pdist((s - lo) / (hi - lo)).min()
    assert spread(chosen) > spread(render.syn.random_shapes(6, 0))


def test_latent_map_is_orthonormal_and_exact_on_its_range():
    p = projection()
    torch.testing.assert_close(p @ p.t(), torch.eye(4))
    m = PatchLatentMap()
    z = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(m.encode(m.decode(z).sample).latents, z, atol=1e-5, rtol=0)
    img = torch.rand(2, 3, 16, 16)
    assert to_latent(img, m).shape == (2, 4, 8, 8)
    once = m.decode(m.encode(img).latents).sample
    torch.testing.assert_close(m.decode(m.encode(once).latents).sample, once, atol=1e-5, rtol=0)   # a projection
    assert round_trip(img, m).shape == img.shape
    flat = torch.rand(1, 3, 1, 1).expand(1, 3, 16, 16)                               # colour-constant images pass unchanged
    torch.testing.assert_close(to_image(to_latent(flat, m), m), flat, atol=1e-5, rtol=0)


def test_latent_map_plays_the_vae_in_the_trainers_encode_and_decode():
    m = PatchLatentMap()
    img = torch.rand(2, 3, 16, 16)
    z = L.encode_images(m, img)
    torch.testing.assert_close(z, to_latent(img, m))
    torch.testing.assert_close(L.decode_latents(m, z), to_image(z, m))


def test_text_encoder_gives_sdxl_shapes_and_refuses_unknown_words():
    enc = WorldTextEncoder()
    ctx, pooled = enc([prompt_for(0), prompt_for(2), ""])
    assert ctx.shape == (3, TOKENS, 2048) and pooled.shape == (3, 1280)
    assert not torch.allclose(ctx[0], ctx[1])
    c2, p2 = enc.encode_unique([prompt_for(0), "", prompt_for(0)])
    torch.testing.assert_close(c2[0], ctx[0])
    torch.testing.assert_close(c2[2], ctx[0])
    torch.testing.assert_close(p2[1], pooled[2])
    with pytest.raises(BoLIDError, match="knows the words"):
        enc(["a cat"])
    text = TrainerText(enc)
    c3, _ = text.encode([prompt_for(1)])
    assert not c3.requires_grad


def test_shared_context_projection_equals_the_plain_linear_with_gradients():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5)
    ref = torch.nn.Linear(6, 5)
    ref.load_state_dict(lin.state_dict())
    import types
    lin.forward = types.MethodType(nets._dedup_linear, lin)
    lin._context_rows = nets._ContextRows()
    base = torch.randn(2, 3, 6)
    x = base[torch.tensor([0, 1, 0, 0])].clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    w = torch.randn(4, 3, 5)
    (lin(x) * w).sum().backward()
    (ref(x2) * w).sum().backward()
    torch.testing.assert_close(lin(x), ref(x2))
    torch.testing.assert_close(lin.weight.grad, ref.weight.grad)
    torch.testing.assert_close(lin.bias.grad, ref.bias.grad)
    # a group of equal rows gets its gradient once (on its first row): the sum over the group is the plain one's
    torch.testing.assert_close(x.grad[0] + x.grad[2] + x.grad[3], x2.grad[0] + x2.grad[2] + x2.grad[3])
    assert lin._context_rows.rows.shape[0] == 6          # 2 distinct batch rows x 3 tokens


def test_keypoint_net_reads_as_a_yolo_pose_model_to_the_identity_loss():
    net = nets.KeypointNet(32).eval()
    img = torch.rand(2, 3, 32, 32, requires_grad=True)
    dense = L.dense_keypoints(net, img)
    kp = L.reduce_keypoints(dense, "soft")
    assert kp.shape == (2, 17, 3)
    torch.testing.assert_close(kp[..., :2], net.keypoints(img)[..., :2])
    L.keypoint_loss(kp, kp.detach() + 1.0, (32, 32), visibility=0.0).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_sampler_schedule_is_comfyuis_discrete_sdxl_schedule():
    table = sigma_table(nets.scheduler())
    assert abs(float(table[0]) - 0.0292) < 1e-3 and abs(float(table[-1]) - 14.6146) < 1e-3   # SDXL's sigma_min / max
    t = torch.tensor([0.0, 10.0, 999.0])
    torch.testing.assert_close(timestep_of(table, sigma_at(table, t)), t.long())
    s = normal_sigmas(table, 5)
    assert s.shape == (6,) and float(s[-1]) == 0 and bool((s[:-1].diff() < 0).all())


@pytest.mark.slow
def test_world_unet_has_the_70_sdxl_sites():
    from bolid_lib.training.host import attn2_names

    unet = nets.build_unet(32, 8)
    assert len(attn2_names(unet)) == 70
    assert nets.share_context_projections(unet) == 140
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(1, 77, 2048).expand(2, 77, 2048)
    with torch.no_grad():
        out = unet(x, torch.tensor([10, 500]), encoder_hidden_states=ctx,
                   added_cond_kwargs={"text_embeds": torch.randn(2, 1280), "time_ids": nets.time_ids(16, 2)}).sample
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.slow
def test_shared_context_projections_are_exact_in_value_and_gradient():
    """The dedup of context rows changes no output and no gradient (of the UNet's weights and of the context)."""
    from bolid_lib.experiments.world.text import WorldTextEncoder, prompt_for

    torch.manual_seed(0)
    text = WorldTextEncoder()
    caps = [prompt_for(0), "", prompt_for(2), prompt_for(0)]
    runs = []
    for share in (False, True):
        unet = nets.build_unet(32, 8, seed=3)
        if share:
            nets.share_context_projections(unet)
        text.zero_grad()
        ctx, pooled = text.encode_unique(caps)
        out = unet(torch.ones(4, 4, 8, 8), torch.tensor([10, 500, 900, 10]), encoder_hidden_states=ctx,
                   added_cond_kwargs={"text_embeds": pooled, "time_ids": nets.time_ids(16, 4)}).sample
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        k = next(m for n, m in unet.named_modules() if n.endswith("attn2")).to_k
        runs.append((out.detach(), k.weight.grad.clone(), text.words.weight.grad.clone()))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the padding rows after the first end token are alike: a prompt has few distinct rows
    ctx, _ = text.encode_unique([prompt_for(1)])
    assert torch.unique(ctx[0].detach(), dim=0).shape[0] == len(prompt_for(1).split()) + 3   # + start, end, padding


def test_sampler_reads_v_as_the_trainer_defines_it():
    """Sampler.denoised (ComfyUI's V_PREDICTION formula) gives the x0 the trainer's predict_x0 gives for v."""
    from types import SimpleNamespace

    from bolid_lib.experiments.world.sample import Sampler

    v = torch.randn(2, 4, 4, 4)
    seen = {}

    def unet(x_in, t, encoder_hidden_states, added_cond_kwargs):
        seen["x_in"], seen["t"] = x_in, t
        return SimpleNamespace(sample=v)

    sched = nets.scheduler()
    assert sched.config.prediction_type == "v_prediction"
    sampler = Sampler(unet, None, sched, 8)
    t = 400
    sigma = float(sigma_table(sched)[t])
    x = torch.randn(2, 4, 4, 4)
    d = sampler.denoised(x, sigma, torch.zeros(2, 77, 2048), torch.zeros(2, 1280))
    assert int(seen["t"][0]) == t
    acp = sched.alphas_cumprod[torch.tensor([t, t])]
    torch.testing.assert_close(d, L.predict_x0(seen["x_in"], v, acp, "v_prediction"), atol=1e-4, rtol=1e-4)


def test_wilson_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    from bolid_lib.experiments.world.evaluate import wilson

    for k, n in ((13, 24), (50, 100), (0, 96), (96, 96), (3, 7)):
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        assert wilson(k, n) == pytest.approx([ci.low, ci.high], abs=1e-4), (k, n)


def test_evaluation_runs_end_to_end_on_an_untrained_world(tmp_path):
    """The evaluation stage's plumbing (every mode, the figures, the plot and the grid) on random weights."""
    from bolid_lib.experiments.world import evaluate
    from bolid_lib.experiments.world_proof import World, WorldConfig
    from bolid_lib.method.adapter import AdapterConfig, BoLIDAdapter

    torch.manual_seed(0)
    cfg = WorldConfig(**V1 | dict(ids=3, held_out=1, eval_seeds=1, sample_steps=2, lambdas=(0.0, 1.0), body_dim=8))
    w = World(cfg, tmp_path)
    w.id_clf, w.pose_clf = nets.Classifier(3, 32).eval(), nets.Classifier(3, 32).eval()
    w.unet, w.text = nets.build_unet(32, 8).eval(), WorldTextEncoder().eval()
    w.real_test = round_trip(w.views(4, 2)["images"], w.latent_map)
    w.gallery = torch.randn(3, 8)
    w.single = torch.randn(3 * 3, 8)
    adapter = BoLIDAdapter(AdapterConfig(widths=(64, 128), body_dim=8, body_tokens=2, body_hidden=16)).eval()
    with torch.no_grad():
        for prm in adapter.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    w.figures["classifiers"] = {}
    evaluate.run_all(w, adapter, "main")
    evaluate.figures_out(w)
    res = w.figures["main"]
    assert set(res["lambda_sweep"]) == {"0.0", "1.0"}
    one = res["lambda_sweep"]["1.0"]["adapter_ids"]
    assert one["n"] == 2 * 3 and 0 <= one["identity_ci95"][0] <= one["identity_top1"] <= one["identity_ci95"][1] <= 1
    assert res["image_referenced"]["held_out_ids"]["n"] == 3
    assert 1 <= one["identities_predicted"] <= 3 and 1 / 3 <= one["most_predicted_share"] <= 1
    assert set(res["quality"]) == {"ground_truth_renders", "base_alone", "lambda_0.0", "lambda_1.0"}
    assert res["base_alone_vs_lambda_0_max_abs_diff"] < 1e-4     # lambda_body 0 is the base (another attention kernel)
    assert (tmp_path / "world_lambda_sweep.png").is_file() and (tmp_path / "world_samples.png").is_file()
    evaluate.run_all(w, adapter, "ablation", lambdas=(1.0,))          # the alpha_id = 0 ablation's call
    assert set(w.figures["ablation"]["lambda_sweep"]) == {"1.0"} and "quality" not in w.figures["ablation"]
    from bolid_lib.experiments.world.report import markdown

    w.figures["classifiers"] = {"identity_top1_held_out_renders": 0.5, "pose_accuracy_held_out_renders": 0.9}
    w.save_figures()
    table = markdown([tmp_path, tmp_path]).splitlines()
    assert table[0] == "| | seed 0 | seed 0 |" and len(table) == 2 + 3 + 3 * 2 + 2 + 4
    assert any(line.startswith("| λ_body 1: identity top-1, adapter ids") and line.count("(n=6)") == 2 for line in table)


def test_a_world_with_no_held_out_people_evaluates_and_a_world_with_no_adapter_people_is_refused(tmp_path):
    """The in-suite preset holds no one out (``TEST``, held_out = 0): the one command's evaluation runs on it with no
    held-out group (it once failed on an empty batch after 10 minutes of training); holding out every person is
    refused before anything is trained, with the fix."""
    from bolid_lib.experiments.world import evaluate
    from bolid_lib.experiments.world_proof import World, WorldConfig, build_parser, config_from_args
    from bolid_lib.method.adapter import AdapterConfig, BoLIDAdapter

    torch.manual_seed(0)
    w = World(WorldConfig(**V1 | dict(ids=2, held_out=0, eval_seeds=1, sample_steps=1, lambdas=(0.0, 1.0), body_dim=8)), tmp_path)
    w.id_clf, w.pose_clf = nets.Classifier(2, 32).eval(), nets.Classifier(3, 32).eval()
    w.unet, w.text = nets.build_unet(32, 8).eval(), WorldTextEncoder().eval()
    w.real_test = round_trip(w.views(4, 2)["images"], w.latent_map)
    w.gallery, w.single = torch.randn(2, 8), torch.randn(2 * 3, 8)
    adapter = BoLIDAdapter(AdapterConfig(widths=(64, 128), body_dim=8, body_tokens=2, body_hidden=16)).eval()
    evaluate.run_all(w, adapter, "main")
    evaluate.figures_out(w)
    res = w.figures["main"]
    assert set(res["lambda_sweep"]["1.0"]) == {"adapter_ids"} and res["lambda_sweep"]["1.0"]["adapter_ids"]["n"] == 6
    assert set(res["image_referenced"]) == {"adapter_ids"}
    assert res["base_alone_vs_lambda_0_max_abs_diff"] < 1e-4
    assert (tmp_path / "world_lambda_sweep.png").is_file()
    with pytest.raises(BoLIDError, match="--held-out between 0 and 3"):
        WorldConfig(ids=4, held_out=4)
    with pytest.raises(BoLIDError, match="holds out 4"):
        config_from_args(build_parser().parse_args(["--out", "x", "--ids", "4", "--held-out", "4"]))
    with pytest.raises(BoLIDError, match="holds out 20"):
        config_from_args(build_parser().parse_args(["--out", "x", "--ids", "4"]))      # default held_out is 20
    assert config_from_args(build_parser().parse_args(["--out", "x", "--ids", "4", "--held-out", "1"])).held_out == 1


def test_a_device_that_is_not_here_is_refused_before_training_and_the_cpu_run_keeps_the_trainer_on_the_cpu(
        tmp_path, monkeypatch):
    """--device: an unknown device, or CUDA on a machine without one, is refused when the World is built, with the
    fix; the default (cpu) asks the adapter trainer for accelerate's CPU, so a run on a GPU machine stays where its
    other networks are."""
    from bolid_lib.experiments import world_proof
    from bolid_lib.experiments.world import adapter_run
    from bolid_lib.experiments.world_proof import World, WorldConfig, build_parser, config_from_args

    with pytest.raises(BoLIDError, match="--device tpu9 cannot be used here.*use --device cpu"):
        World(WorldConfig(ids=2, held_out=0, device="tpu9"), tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(BoLIDError, match="--device cuda cannot be used here"):
            World(config_from_args(build_parser().parse_args(["--out", "x", "--device", "cuda"])), tmp_path)
    assert World(WorldConfig(ids=2, held_out=0), tmp_path).device == torch.device("cpu")
    seen = {}

    def fake_train(tcfg, models):
        seen["cpu"] = tcfg.cpu
        raise RuntimeError("stop here")

    monkeypatch.setattr(adapter_run, "train", fake_train)
    monkeypatch.setattr(adapter_run, "write_data", lambda world, folder: folder)
    w = World(WorldConfig(ids=2, held_out=0), tmp_path)
    w.unet, w.text, w.kp_net, w.body_vae = None, WorldTextEncoder(), None, None
    with pytest.raises(RuntimeError, match="stop here"):
        adapter_run.train_adapter(w, 0.0, "a")
    assert seen == {"cpu": True}
    assert world_proof.usable_device("cpu") == torch.device("cpu")


def test_a_resumed_run_keeps_its_figures_and_adds_up_training_seconds(tmp_path):
    from bolid_lib.experiments.world_proof import World, WorldConfig

    cfg = WorldConfig(ids=3, held_out=1, adapter_extra_ids=0)
    w = World(cfg, tmp_path)
    w.figures["vae_final_loss"] = 0.5
    w.figures["seconds"] = {"base": 100.0, "evaluation": 50.0}
    w.save_figures()
    again = World(cfg, tmp_path)
    assert again.figures["vae_final_loss"] == 0.5                      # measured by the earlier call, kept
    again.timed("base", lambda: None)
    again.timed("evaluation", lambda: None, accumulate=False)
    assert 100.0 <= again.figures["seconds"]["base"] < 101 and again.figures["seconds"]["evaluation"] < 1
    other = World(WorldConfig(ids=4, held_out=1, adapter_extra_ids=0), tmp_path)             # another config: nothing carried over
    assert "vae_final_loss" not in other.figures


def test_adapter_levers_are_flags_of_the_one_command():
    from bolid_lib.experiments.world_proof import WorldConfig, build_parser, config_from_args

    args = build_parser().parse_args(["--seed", "1", "--out", "x", "--adapter-lr-decay", "cosine", "--adapter-timesteps",
                                      "150", "850", "--adapter-init", "unet", "--adapter-tokens", "8",
                                      "--sample-steps", "32", "--cfg-scale", "4.5", "--adapter-extra-ids", "200",
                                      "--palette", "fixed"])
    cfg = config_from_args(args)
    assert (cfg.seed, cfg.adapter_lr_decay, cfg.adapter_timesteps, cfg.adapter_init, cfg.adapter_tokens) == \
        (1, "cosine", (150, 850), "unet", 8)
    assert (cfg.sample_steps, cfg.cfg_scale, cfg.adapter_extra_ids, cfg.palette) == (32, 4.5, 200, "fixed")
    assert config_from_args(build_parser().parse_args(["--out", "x"])) == WorldConfig()


def test_base_lr_can_anneal_and_defaults_to_constant():
    from bolid_lib.errors import BoLIDError
    from bolid_lib.experiments.world.fit import base_schedule
    from bolid_lib.experiments.world_proof import WorldConfig, build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--out", "x", "--base-steps", "6500", "--base-lr-decay", "cosine"]))
    s = base_schedule(cfg)
    assert s(0) == cfg.base_lr / 100 and s(99) == cfg.base_lr
    assert abs(s(6500) - 0.05 * cfg.base_lr) < 1e-12 and cfg.base_lr * 0.3 < s(4000) < cfg.base_lr * 0.45
    assert s(4000) < s(3000) < s(100)
    default = base_schedule(WorldConfig(base_steps=6500))
    assert default(6500) == default(100) == WorldConfig().base_lr
    short = base_schedule(WorldConfig(base_warmup=20))             # the warm-up is the config's (100 by default)
    assert short(19) == WorldConfig().base_lr > default(19)
    with pytest.raises(BoLIDError, match="'constant' or 'cosine'"):
        base_schedule(WorldConfig(base_lr_decay="linear"))


def test_extra_adapter_people_stay_away_from_the_world_and_get_their_own_body_ids(tmp_path):
    """--adapter-extra-ids: more people for the adapter only. None is near a world person (else it could stand in
    for a held-out one); each is written with its own Body-ID from other views; the judged people are unchanged."""
    from bolid_lib.data import synthetic as syn
    from bolid_lib.experiments.world.adapter_run import write_data
    from bolid_lib.experiments.world.bodyid import vae_config
    from bolid_lib.experiments.world_proof import World, WorldConfig
    from bolid_lib.method.body_vae import BodyVAE
    from bolid_lib.method.embedding import load_body

    cfg = WorldConfig(**V1 | dict(ids=5, held_out=1, adapter_extra_ids=6, adapter_extra_views=2, adapter_views=3,
                                      gallery_views=2, body_dim=8))
    w = World(cfg, tmp_path)
    plain = World(WorldConfig(**V1 | dict(ids=5, held_out=1)), tmp_path / "plain")
    assert torch.equal(w.shapes[:5], plain.shapes) and w.shapes.shape[0] == 11 and w.extra_ids == list(range(5, 11))
    lo = torch.tensor([q[1] for q in syn.SHAPE_PARAMS])
    hi = torch.tensor([q[2] for q in syn.SHAPE_PARAMS])
    u = (w.shapes - lo) / (hi - lo)
    within = torch.cdist(u[:5], u[:5]) + torch.eye(5) * 1e9
    assert torch.cdist(u[5:], u[:5]).min() > within.min() / 2
    assert w.views(1, 0)["person"].tolist() == [0, 1, 2, 3, 4]          # figures and classifiers: the world's 5 only
    torch.manual_seed(0)
    w.body_vae = BodyVAE(vae_config(cfg)).eval()
    w.gallery = torch.randn(5, 8)
    folder = write_data(w, tmp_path / "data")
    people = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert people == [f"person_{i:02d}" for i in list(range(4)) + list(range(5, 11))]   # held-out person 4 absent
    assert len(list((folder / "person_07").glob("*.png"))) == 2 and len(list((folder / "person_00").glob("*.png"))) == 3
    extra = [load_body(folder / f"person_{i:02d}" / "body.safetensors").mean for i in range(5, 11)]
    assert all(torch.isfinite(e).all() for e in extra) and not torch.allclose(extra[0], extra[1])
    assert torch.allclose(load_body(folder / "person_01" / "body.safetensors").mean, w.gallery[1])


def test_probe_finds_an_identity_the_images_carry_and_not_one_they_do_not(tmp_path, monkeypatch):
    """The diagnostic probe: fitted on half the seeds, tested on the other half. Images whose colour is their
    identity give a probe near 100%; images that ignore the identity give a probe near chance."""
    from bolid_lib.experiments.world import evaluate
    from bolid_lib.experiments.world_proof import World, WorldConfig, build_parser

    torch.manual_seed(0)
    w = World(WorldConfig(**V1 | dict(ids=5, held_out=1, body_dim=8)), tmp_path)
    w.id_clf = nets.Classifier(5, 32).eval()
    w.unet, w.text = nets.build_unet(32, 8).eval(), WorldTextEncoder().eval()
    w.gallery = torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 8)    # the Body-ID says who it is

    def carries(world, sampler, rows, body, lam, chunk=24):
        g = torch.Generator().manual_seed(len(rows))
        colour = torch.stack([body[:, 0] / 4, 1 - body[:, 0] / 4, (body[:, 0] % 2)], 1)
        return (colour[:, :, None, None] + 0.05 * torch.randn(len(rows), 3, 32, 32, generator=g)).clamp(0, 1)

    def ignores(world, sampler, rows, body, lam, chunk=24):
        return torch.rand(len(rows), 3, 32, 32, generator=torch.Generator().manual_seed(1))

    monkeypatch.setattr(evaluate, "generate", carries)
    got = evaluate.probe(w, None, lambdas=(1.5,), seeds=4, probe_steps=200)
    assert got["n"] == 4 * 3 * 4 and got["chance_among_adapter_ids"] == 0.25
    assert got["1.5"]["linear_probe_top1"] >= 0.95
    monkeypatch.setattr(evaluate, "generate", ignores)
    assert evaluate.probe(w, None, lambdas=(1.5,), seeds=4, probe_steps=200)["1.5"]["linear_probe_top1"] <= 0.5
    assert build_parser().parse_args(["--out", "x", "--probe", "6"]).probe == 6


@pytest.mark.slow
def test_one_seed_trains_the_same_world_bit_for_bit(tmp_path):
    """Every trained part (evaluators, base, Body-ID VAE, adapter) comes out bit-identical from two runs of one seed in
    one process, whatever the global RNG holds before each (torch seeds it at random at start-up, so a module built
    before the run seeds it differs per process: the evaluators did, and the same command gave other figures)."""
    import hashlib

    from bolid_lib.experiments.world_proof import World, WorldConfig

    cfg = WorldConfig(**V1 | dict(ids=2, held_out=0, palette="fixed", classifier_steps=3, base_views=4, base_steps=2, base_batch=2,
                      base_warmup=1, vae_views=4, vae_steps=2, gallery_views=2, body_dim=8, adapter_views=2,
                      adapter_steps=2, adapter_batch=2, eval_seeds=1, checkpoint_every=1000))

    def fingerprint(out, rng_seed):
        torch.manual_seed(rng_seed)                                    # another global RNG state before each run
        w = World(cfg, out)
        w.stage_evaluators()
        w.stage_base()
        w.stage_body_vae()
        adapter = w.stage_adapter(cfg.alpha_id, "adapter")
        h = hashlib.sha256()
        for m in (w.id_clf, w.pose_clf, w.kp_net, w.unet, w.text, w.body_vae, adapter):
            for k, v in sorted(m.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().float().contiguous().numpy().tobytes())
        h.update(w.gallery.numpy().tobytes())
        return h.hexdigest()

    assert fingerprint(tmp_path / "a", 1) == fingerprint(tmp_path / "b", 2)


# --- world v2: the prompt names the clothes, the Body-ID shapes the person -----------------------------------------

def test_named_palette_paints_the_colours_the_prompt_names_and_nothing_else_varies():
    """World v2: the top and the bottom take the named colours (with a small jitter), the background and the skin are
    the same in every view; the old palettes draw the same people in the same places."""
    from bolid_lib.experiments.world.text import VOCAB, VOCAB_V2

    shapes = render.pick_identities(4, 0)
    pose = torch.tensor([0, 1, 2, 0])
    top, bottom = torch.tensor([0, 1, 2, 3]), torch.tensor([3, 2, 1, 0])
    named = render.WorldRender(palette="named")
    img, kp = render.render(shapes, pose, seed=4, settings=named, colours=(top, bottom))
    _, kp_rnd = render.render(shapes, pose, seed=4)
    assert torch.equal(kp, kp_rnd)
    table = torch.tensor(list(render.COLOURS.values()))
    for i in range(4):
        chest = ((kp[i, 5, :2] + kp[i, 12, :2]) / 2).round().long()           # between a shoulder and the other hip
        knee = kp[i, 13, :2].round().long()
        assert (img[i, :, chest[1], chest[0]] - table[top[i]]).abs().max() < 0.15, i
        assert (img[i, :, knee[1], knee[0]] - table[bottom[i]]).abs().max() < 0.15, i
    assert (img[:, :, 0, 0] - torch.tensor(render.FIXED["bg_a"])).abs().max() < 0.1
    with pytest.raises(BoLIDError, match="colours=\\(top, bottom\\)"):
        render.render(shapes, pose, seed=4, settings=named)
    assert prompt_for(2, 0, 3) == "a person arms up red top yellow bottom" and prompt_for(2) == "a person arms up"
    WorldTextEncoder(vocab=VOCAB_V2).token_ids(prompt_for(2, 0, 3))
    with pytest.raises(BoLIDError, match="knows the words"):
        WorldTextEncoder(vocab=VOCAB).token_ids(prompt_for(2, 0, 3))


def test_world_v2_trains_the_adapter_on_many_people_with_body_ids_in_unnamed_colours(tmp_path):
    """World v2's adapter data: the adapter's judged people and many extra ones, every caption naming the pose and
    the clothes painted in the view, the Body-IDs from other views in unnamed colours; the zero-shot people absent.
    The Body-ID VAE's views come from the same people (never a zero-shot one)."""
    from bolid_lib.experiments.world.adapter_run import write_data
    from bolid_lib.experiments.world.bodyid import vae_config
    from bolid_lib.experiments.world_proof import World, WorldConfig
    from bolid_lib.method.body_vae import BodyVAE

    cfg = WorldConfig(ids=4, held_out=2, adapter_extra_ids=5, adapter_extra_views=2, adapter_views=3, ref_views=2,
                      body_dim=8)
    w = World(cfg, tmp_path)
    assert w.train_ids == [0, 1] and w.held_ids == [2, 3] and w.extra_ids == list(range(4, 9))
    assert w.ref_settings.palette == "random" and w.settings.palette == "named"
    v = w.views(2, 0, ref=False)
    caps = w.captions(v)
    assert all(c.split()[3] == render.POSES[int(p)] for c, p in zip(caps, v["pose"]))
    assert all(render.COLOUR_NAMES[int(t)] in c and render.COLOUR_NAMES[int(b)] in c
               for c, t, b in zip(caps, v["top"], v["bottom"]))
    torch.manual_seed(0)
    w.body_vae = BodyVAE(vae_config(cfg)).eval()
    w.gallery = torch.randn(4, 8)
    folder = write_data(w, tmp_path / "data")
    people = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert people == [f"person_{i:04d}" for i in [0, 1] + list(range(4, 9))]          # zero-shot 2 and 3 absent
    text = (folder / "person_0000").glob("*.txt")
    assert all(len(t.read_text().split()) == 8 for t in text)                         # pose + two named colours


def test_swap_test_is_half_by_construction_when_the_body_id_changes_nothing(tmp_path):
    """At lambda_body 0 every person's image of a scene is the same image, so of each pair exactly one lands nearer
    its own person: the swap test is 50% whatever the judge; a judge that reads the person off the image gives
    100% when each image shows its own person."""
    from bolid_lib.experiments.world import evaluate
    from bolid_lib.experiments.world_proof import World, WorldConfig

    torch.manual_seed(0)
    w = World(WorldConfig(ids=6, held_out=3, adapter_extra_ids=0, eval_seeds=2), tmp_path)
    w.id_clf, w.pose_clf = nets.Classifier(6, 32).eval(), nets.Classifier(3, 32).eval()
    w.top_clf, w.bottom_clf = nets.Classifier(4, 32).eval(), nets.Classifier(4, 32).eval()
    w.shape_reg = nets.Classifier(12, 32).eval()
    n_s = len(evaluate.scenes(w))
    assert n_s == 6 and len({s[3] for s in evaluate.scenes(w)}) == 6
    same = torch.rand(n_s, 3, 32, 32).repeat(3, 1, 1, 1)                              # person-major, scene-minor
    got = evaluate.judge_scenes(w, same, w.held_ids)
    assert got["swap_test"] == 0.5 and got["swap_test_shape"] == 0.5
    assert got["swap_pairs"] == 3 * n_s and got["n"] == 3 * n_s and got["chance"] == 1 / 3
    assert got["swap_ci95"][0] <= 0.5 <= got["swap_ci95"][1]

    class Reads(torch.nn.Module):                                                     # logit = -|mean - person's code|
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return -(x.mean((1, 2, 3))[:, None] - torch.arange(6) / 6).abs()

    w.id_clf = Reads()
    own = torch.cat([torch.full((n_s, 3, 32, 32), i / 6) for i in w.held_ids])
    got = evaluate.judge_scenes(w, own, w.held_ids)
    assert got["swap_test"] == 1.0 and got["identity_top1"] == 1.0


def test_a_stage_made_with_other_settings_is_refused_and_not_silently_reused(tmp_path):
    """Running a changed flag into an existing --out once kept the old judge, base and data; now the stage whose
    settings changed is refused with the fix, and settings no stage depends on (sampling, lambdas) are free."""
    from bolid_lib.experiments.world_proof import World, WorldConfig, stage_key

    cfg = WorldConfig(ids=4, held_out=2, adapter_extra_ids=0)
    World(cfg, tmp_path).check_stage("base")
    World(WorldConfig(ids=4, held_out=2, adapter_extra_ids=0, sample_steps=3, lambdas=(1.0,), base_steps=9000),
          tmp_path).check_stage("base")                                  # more steps train the base further
    with pytest.raises(BoLIDError, match="base stage made with other settings.*base_lr: 0.0008 there, 0.001 now.*new --out"):
        World(WorldConfig(ids=4, held_out=2, adapter_extra_ids=0, base_lr=1e-3), tmp_path).check_stage("base")
    assert stage_key(cfg, "adapter")["dropout_together"] == 0.05 and "lambdas" not in stage_key(cfg, "adapter")
    with pytest.raises(BoLIDError, match="adapter stage"):
        w = World(WorldConfig(ids=4, held_out=2, adapter_extra_ids=0, adapter_tokens=8), tmp_path)
        w.check_stage("adapter")
        World(cfg, tmp_path).check_stage("adapter")


def test_the_in_suite_worlds_cache_key_covers_the_trainers_and_the_method(tmp_path):
    """A change in training/ or method/ (not only in experiments/world*) trains the in-suite world afresh; the
    headless runner, which no stage imports, does not."""
    import shutil

    import bolid_lib
    import worldcache
    from bolid_lib.experiments.world_proof import TEST

    root = tmp_path / "bolid_lib"
    shutil.copytree(Path(bolid_lib.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    before = worldcache.key(TEST, root)
    names = {str(f.relative_to(root)) for f in worldcache.source_files(root)}
    assert {"training/adapter.py", "training/loop.py", "method/attention.py", "method/adapter.py",
            "experiments/world_proof.py", "experiments/world/fit.py", "data/synthetic.py"} <= names
    for rel in ("training/loop.py", "method/attention.py"):
        f = root / rel
        f.write_text(f.read_text() + "\n# changed\n")
        assert worldcache.key(TEST, root) != before, rel
        before = worldcache.key(TEST, root)
    f = root / "runner" / "headless.py"
    f.write_text(f.read_text() + "\n# changed\n")
    assert worldcache.key(TEST, root) == before
    assert worldcache.key({**TEST, "base_steps": 1}, root) != before


def test_top1_among_a_group_judges_only_that_groups_images_among_that_group():
    from bolid_lib.experiments.world import evaluate

    class Knows(torch.nn.Module):                 # a judge that is right about everyone
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 6).float()

    labels = torch.arange(6).repeat(2)
    images = labels.float()[:, None, None, None].expand(12, 3, 4, 4)
    assert evaluate.top1_among(Knows(), images, labels, [1, 3, 5]) == 1.0
    assert evaluate.top1_among(Knows(), images, labels, [0, 2]) == 1.0


def test_world_v2_evaluation_runs_end_to_end_on_an_untrained_world(tmp_path):
    """World v2's evaluation plumbing on random weights: both groups at each lambda_body with the swap test, the
    image-referenced mode, FID / IS, the plot, the grid and the report's rows."""
    from bolid_lib.experiments.world import evaluate
    from bolid_lib.experiments.world.report import markdown
    from bolid_lib.experiments.world.text import VOCAB_V2
    from bolid_lib.experiments.world_proof import World, WorldConfig
    from bolid_lib.method.adapter import AdapterConfig, BoLIDAdapter

    torch.manual_seed(0)
    w = World(WorldConfig(ids=4, held_out=2, adapter_extra_ids=0, eval_seeds=1, sample_steps=1, lambdas=(0.0, 1.0),
                          body_dim=8), tmp_path)
    w.id_clf, w.pose_clf = nets.Classifier(4, 32).eval(), nets.Classifier(3, 32).eval()
    w.top_clf, w.bottom_clf, w.shape_reg = (nets.Classifier(n, 32).eval() for n in (4, 4, 12))
    w.unet, w.text = nets.build_unet(32, 8).eval(), WorldTextEncoder(vocab=VOCAB_V2).eval()
    w.real_test = round_trip(w.views(2, 2)["images"], w.latent_map)
    w.gallery, w.single = torch.randn(4, 8), torch.randn(4 * 3, 8)
    adapter = BoLIDAdapter(AdapterConfig(widths=(64, 128), body_dim=8, body_tokens=2, body_hidden=16)).eval()
    with torch.no_grad():
        for prm in adapter.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    w.figures["classifiers"] = {"identity_top1_held_out_renders": 0.5, "pose_accuracy_held_out_renders": 0.9}
    evaluate.run_all(w, adapter, "main")
    evaluate.figures_out(w)
    res = w.figures["main"]
    zero = res["lambda_sweep"]["0.0"]["held_out_ids"]
    assert zero["swap_test"] == 0.5 and zero["n"] == 2 * 3 and zero["swap_pairs"] == 3
    one = res["lambda_sweep"]["1.0"]["adapter_ids"]
    assert 0 <= one["identity_ci95"][0] <= one["identity_top1"] <= one["identity_ci95"][1] <= 1
    assert set(res["image_referenced"]) == {"held_out_ids", "adapter_ids"}
    assert res["base_alone_vs_lambda_0_max_abs_diff"] < 1e-4
    assert (tmp_path / "world_lambda_sweep.png").is_file() and (tmp_path / "world_samples.png").is_file()
    w.figures["config"]["base_views"], w.figures["adapter_steps"] = 2, 0
    w.save_figures()
    table = markdown([tmp_path])
    assert "λ_body 1, zero-shot people: swap test [95% CI]" in table and "prompt control, pose / top / bottom" in table


def test_the_worlds_body_id_vae_continues_from_its_newest_checkpoint(tmp_path):
    """A world stopped while training its Body-ID VAE (checkpoints written, no final file) continues from the
    newest checkpoint of the trainers' one layout (issue 27), not from step 0."""
    from bolid_lib.experiments.world import bodyid
    from bolid_lib.experiments.world_proof import WorldConfig
    from bolid_lib.training import loop

    views = render.views(render.pick_identities(3, seed=0), 4, seed=1)
    first = WorldConfig(ids=3, held_out=1, adapter_extra_ids=0, vae_steps=2, checkpoint_every=2, vae_seconds=600.0)
    _, figures = bodyid.train_vae(views, first, tmp_path)
    assert figures["vae_steps"] == 2
    (tmp_path / "body_vae.safetensors").unlink()                          # stopped before the final file
    assert [p.name for p in loop.CHECKPOINTS.all(tmp_path / "vae_checkpoints")] == ["step_0000002"]
    more = WorldConfig(**{**first.__dict__, "vae_steps": 4})
    _, figures = bodyid.train_vae(views, more, tmp_path)
    assert figures["vae_steps"] == 2                                      # steps 3 and 4 only
    assert loop.CHECKPOINTS.latest(tmp_path / "vae_checkpoints").name == "step_0000004"
    assert (tmp_path / "body_vae.safetensors").is_file()
