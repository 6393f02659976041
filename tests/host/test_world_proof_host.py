"""The whole method in a world we control, sampled by ComfyUI's real executor with the pack's own nodes.

A small seeded version of ``bolid_lib.experiments.world_proof`` (``TEST`` preset: 4 people, one palette for every
view) is trained here from scratch: the evaluators on ground-truth renders, the text-only base (reduced-width SDXL
layout, 70 sites), the Body-ID VAE and the adapter's body branch with the pack's trainers. Then ComfyUI samples it:
the base's weights loaded into ComfyUI's own SDXL model class (mapped with ComfyUI's diffusers key table), BoLID Load
Adapter, BoLID Load Body-ID, BoLID Apply, KSampler (euler, normal), and the world's latent map as the decoder. The
world's text encoder and decoder enter the graph as two small test nodes (this world has no CLIP or VAE files). An
identity classifier trained on ground-truth renders only names the person in every generated image: far above
chance with the body branch on (at least twice chance, and 25 points above the branch off), near chance with it off
(at most 1.6 times chance), and the prompt sets the pose either way (at least 80%).

``test_in_process_sampler_is_comfyuis_executor`` (random weights, seconds) shows that the in-process sampler the full
run evaluates with (``world.sample.Sampler``) gives ComfyUI's executor's latents (to ~3e-6).

Training takes most of the trained test's time (figures in the README); its files are kept in
~/.cache/bolid-test-assets (keyed by the preset and the source of every module that trains or samples it,
``tests/worldcache.py``), so a second run, and the second host of a CI run, only samples. BOLID_WORLD_FRESH=1 trains afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import worldcache

pytestmark = [pytest.mark.host, pytest.mark.slow]

def cache_dir() -> Path:
    """Where the trained test world is kept between runs (outside the repo), keyed by the TEST preset and the source
    of every module that trains or samples it (``worldcache``): any change to either trains afresh.
    BOLID_WORLD_FRESH=1 always trains afresh."""
    from bolid_lib.experiments.world_proof import TEST

    return worldcache.cache_dir(TEST)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The TEST world, trained with torch's threads (both cores of the CI machine), or loaded from the cache."""
    from bolid_lib.experiments.world_proof import TEST, World, WorldConfig

    out = tmp_path_factory.mktemp("world") if os.environ.get("BOLID_WORLD_FRESH") == "1" else cache_dir()
    w = World(WorldConfig(**TEST), out)
    w.timed("evaluators", w.stage_evaluators)
    w.timed("base", w.stage_base)
    w.timed("body_vae", w.stage_body_vae)
    w.adapter = w.timed("adapter", lambda: w.stage_adapter(w.cfg.alpha_id, "world_adapter"))
    w.figures.setdefault("training_threads", torch.get_num_threads())
    w.save_figures()
    return w


def comfy_sdxl(model_channels: int, head_channels: int):
    """ComfyUI's SDXL BaseModel of reduced widths with v-prediction (ModelType.V_PREDICTION), as a ModelPatcher."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models
    import hostlib

    mc = comfy.supported_models.SDXL(hostlib.sdxl_unet_config(model_channels, head_channels))
    mc.unet_config["num_head_channels"] = head_channels
    mc.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.SDXL(mc, model_type=comfy.model_base.ModelType.V_PREDICTION, device=torch.device("cpu"))
    model.diffusion_model.to(torch.float32)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def comfy_base(world):
    """The world's trained base as ComfyUI's own SDXL model (comfy.model_base.SDXL), every weight mapped."""
    import comfy.utils
    import hostlib

    cfg = world.cfg
    patcher = comfy_sdxl(cfg.model_channels, cfg.head_channels)
    mapping = comfy.utils.unet_to_diffusers(hostlib.sdxl_unet_config(cfg.model_channels, cfg.head_channels))
    src, dst = world.unet.state_dict(), patcher.model.diffusion_model.state_dict()
    copied = set()
    with torch.no_grad():
        for dk, ck in mapping.items():
            if dk in src:
                assert dst[ck].shape == src[dk].shape, (dk, ck)
                dst[ck].copy_(src[dk])
                copied.add(ck)
    assert copied == set(dst), f"ComfyUI weights left unmapped: {sorted(set(dst) - copied)[:5]}"
    return patcher


class Holder:
    """What the test nodes hand to ComfyUI and receive back."""

    model = None
    text = None
    latent_map = None
    size = 32
    images: dict[str, torch.Tensor] = {}
    latents: dict[str, torch.Tensor] = {}


class WorldModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "test"

    def load(self):
        return (Holder.model,)


class WorldTextEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "test"

    def encode(self, text):
        ctx, pooled = Holder.text.encode([text])
        return ([[ctx, {"pooled_output": pooled, "width": Holder.size, "height": Holder.size}]],)


class WorldDecode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "tag": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "decode"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def decode(self, samples, tag):
        from bolid_lib.experiments.world.latent import to_image

        # KSampler hands out latents in the VAE's units (ComfyUI's SDXL latent format divides the model's by its
        # scale factor, 0.13025); the world's map has scale factor 1, so the model's units are the map's.
        lat = Holder.model.model.process_latent_in(samples["samples"].float())
        Holder.latents[tag] = lat.clone()
        Holder.images[tag] = to_image(lat, Holder.latent_map)
        return {}


@contextlib.contextmanager
def nodes_for(world):
    """The test nodes serve ``world``'s base (as ComfyUI's SDXL), text encoder and latent map while the block runs."""
    from bolid_lib.experiments.world.text import TrainerText

    import nodes

    Holder.model = comfy_base(world)
    Holder.text = TrainerText(world.text)
    Holder.latent_map = world.latent_map
    Holder.size = world.cfg.size
    added = {"WorldTestModel": WorldModel, "WorldTestTextEncode": WorldTextEncode, "WorldTestDecode": WorldDecode}
    nodes.NODE_CLASS_MAPPINGS.update(added)
    try:
        yield
    finally:
        for k in added:
            nodes.NODE_CLASS_MAPPINGS.pop(k, None)


@pytest.fixture(scope="module")
def world_nodes(comfy, world):
    with nodes_for(world):
        yield


def place_files(comfy, world) -> tuple[str, list[str]]:
    """The trained adapter into models/bolid, one saved Body-ID per identity into models/bolid/bodies."""
    from bolid_lib.method.embedding import save_body
    from bolid_lib.experiments.world import bodyid
    from bolid_lib.experiments.world.adapter_run import _gallery_views

    src = world.out / "world_adapter" / "world_adapter.safetensors"
    dst = comfy.models_dir / "bolid" / "world_proof_adapter.safetensors"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    names = []
    for i in range(world.cfg.ids):
        name = f"world_proof_person_{i:02d}.safetensors"
        save_body(bodyid.embedding(world.body_vae, world.gallery[i], _gallery_views(world.cfg)),
                  comfy.models_dir / "bolid" / "bodies" / name, overwrite=True)
        names.append(name)
    return dst.name, names


def graph_head(world, adapter_name: str, batch: int) -> dict:
    """The nodes every world graph starts with: the base, the adapter, the empty prompt, an empty latent."""
    side = world.cfg.size // 2 * 8                 # EmptyLatentImage takes pixels of an 8x VAE: latent side = size / 2
    return {"model": {"class_type": "WorldTestModel", "inputs": {}},
            "adapter": {"class_type": "BoLIDAdapterLoader", "inputs": {"adapter_name": adapter_name}},
            "neg": {"class_type": "WorldTestTextEncode", "inputs": {"text": ""}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": side, "height": side, "batch_size": batch}}}


def add_apply(p: dict, i: int, body_name: str, lam: float) -> str:
    """BoLID Load Body-ID of person i (once) and BoLID Apply at lambda_body ``lam``; returns the Apply node's id."""
    p.setdefault(f"body{i}", {"class_type": "BoLIDLoadBody", "inputs": {"body_name": body_name}})
    apply = f"apply{i}_{lam}"
    p[apply] = {"class_type": "BoLIDApply", "inputs": {
        "model": ["model", 0], "adapter": ["adapter", 0], "body": [f"body{i}", 0], "lambda_ref": 0.0,
        "lambda_body": lam, "start_at": 0.0, "end_at": 1.0}}
    return apply


def build_prompt(world, adapter_name: str, body_names: list[str], lambdas: tuple[float, ...], seed: int) -> dict:
    """One KSampler per (identity, pose, lambda_body), each a batch of ``eval_seeds`` latents."""
    from bolid_lib.experiments.world.render import POSES
    from bolid_lib.experiments.world.text import prompt_for

    cfg = world.cfg
    p = graph_head(world, adapter_name, cfg.eval_seeds)
    for k in range(len(POSES)):
        p[f"pos{k}"] = {"class_type": "WorldTestTextEncode", "inputs": {"text": prompt_for(k)}}
    for i, name in enumerate(body_names):
        for lam in lambdas:
            apply = add_apply(p, i, name, lam)
            for k in range(len(POSES)):
                tag = f"{i}:{k}:{lam}"
                p[f"ks{tag}"] = {"class_type": "KSampler", "inputs": {
                    "model": [apply, 0], "positive": [f"pos{k}", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
                    "seed": seed + 97 * i + k, "steps": cfg.sample_steps, "cfg": cfg.cfg_scale, "sampler_name": "euler",
                    "scheduler": "normal", "denoise": 1.0}}
                p[f"dec{tag}"] = {"class_type": "WorldTestDecode", "inputs": {"samples": [f"ks{tag}", 0], "tag": tag}}
    return p


def build_prompt_v2(world, adapter_name: str, body_names: list[str], lambdas: tuple[float, ...]) -> dict:
    """World v2: one KSampler per (person, scene, lambda_body), a scene being a prompt that names the pose and the
    clothes and a seed, the same for every person (``evaluate.scenes``): the swap test's pairs."""
    from bolid_lib.experiments.world.evaluate import scenes
    from bolid_lib.experiments.world.text import prompt_for

    cfg = world.cfg
    sc = scenes(world)
    p = graph_head(world, adapter_name, 1)
    for j, (pose, top, bottom, _) in enumerate(sc):
        p[f"pos{j}"] = {"class_type": "WorldTestTextEncode", "inputs": {"text": prompt_for(pose, top, bottom)}}
    for i, name in enumerate(body_names):
        for lam in lambdas:
            apply = add_apply(p, i, name, lam)
            for j, scene in enumerate(sc):
                tag = f"{i}:{j}:{lam}"
                p[f"ks{tag}"] = {"class_type": "KSampler", "inputs": {
                    "model": [apply, 0], "positive": [f"pos{j}", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
                    "seed": scene[3], "steps": cfg.sample_steps, "cfg": cfg.cfg_scale, "sampler_name": "euler",
                    "scheduler": "normal", "denoise": 1.0}}
                p[f"dec{tag}"] = {"class_type": "WorldTestDecode", "inputs": {"samples": [f"ks{tag}", 0], "tag": tag}}
    return p


def scores_v2(world, lam: float) -> dict:
    """World v2: the judges (``evaluate.judge_scenes``) on the executor's samples of each group at lambda_body."""
    from bolid_lib.experiments.world.evaluate import judge_scenes, scenes

    n_s = len(scenes(world))
    out = {}
    for name, ids in (("held_out_ids", world.held_ids), ("adapter_ids", world.train_ids)):
        if ids:
            images = torch.cat([Holder.images[f"{i}:{j}:{lam}"] for i in ids for j in range(n_s)])
            out[name] = judge_scenes(world, images, ids)
    return out


def scores(world, lam: float) -> tuple[Fraction, Fraction]:
    """(identity top-1, pose accuracy) of the executor's samples at lambda_body, as exact fractions of the samples."""
    from bolid_lib.experiments.world.render import POSES

    hit_id, hit_pose, n = 0, 0, 0
    for i in range(world.cfg.ids):
        for k in range(len(POSES)):
            img = Holder.images[f"{i}:{k}:{lam}"]
            with torch.no_grad():
                hit_id += int((world.id_clf(img).argmax(1) == i).sum())
                hit_pose += int((world.pose_clf(img).argmax(1) == k).sum())
            n += img.shape[0]
    return Fraction(hit_id, n), Fraction(hit_pose, n)


def save_samples(world, path: Path) -> None:
    """Rows: identities; columns: a ground-truth view, then per prompt the first sample at lambda_body 0 and 1."""
    from PIL import Image

    from bolid_lib.experiments.world.render import POSES

    gt = world.views(1, 8)["images"]
    rows = []
    for i in range(world.cfg.ids):
        cells = [gt[i]] + [Holder.images[f"{i}:{k}:{lam}"][0] for k in range(len(POSES)) for lam in (0.0, 1.0)]
        rows.append(torch.cat(cells, dim=2))
    arr = (torch.cat(rows, dim=1).permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    img = Image.fromarray(arr)
    img.resize((img.width * 3, img.height * 3), Image.NEAREST).save(path)


@contextlib.contextmanager
def one_torch_thread():
    """Sampling small batches through ComfyUI: one torch thread (OpenMP spinning on 2 shared cores is slower). Not
    conftest's module-wide ``one_thread``: the ``world`` fixture trains with torch's own count, whose bits (and
    figures, in the README) depend on it, and only the sampling here switches to one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_generated_people_carry_the_body_id_they_are_given(world, comfy, world_nodes):
    if world.cfg.v2:
        return check_world_v2(world, comfy)
    with one_torch_thread():
        adapter_name, bodies = place_files(comfy, world)
        Holder.images.clear()
        result = comfy.run(build_prompt(world, adapter_name, bodies, (0.0, 1.0), seed=world.cfg.seed))
        assert result.ok, result.error_text()
    chance = Fraction(1, world.cfg.ids)
    clf = world.figures["classifiers"]
    id_on, pose_on = scores(world, 1.0)
    id_off, pose_off = scores(world, 0.0)
    seconds = world.figures.get("seconds", {})
    print(f"\nworld proof through ComfyUI: classifiers on ground truth {clf}; identity top-1 lambda_body=1 {float(id_on):.3f}, "
          f"lambda_body=0 {float(id_off):.3f} (chance {float(chance):.2f}); pose accuracy {float(pose_on):.3f} / "
          f"{float(pose_off):.3f}; training "
          f"{sum(seconds.values()):.0f} s {seconds} on {world.figures.get('training_threads')} thread(s)")
    (world.out / "comfy_figures.json").write_text(json.dumps(
        {"classifiers": clf, "identity_top1": {"1.0": float(id_on), "0.0": float(id_off)},
         "pose_accuracy": {"1.0": float(pose_on), "0.0": float(pose_off)},
         "n_per_lambda": world.cfg.ids * 3 * world.cfg.eval_seeds, "training_seconds": seconds,
         "training_threads": world.figures.get("training_threads")}, indent=1))
    save_samples(world, world.out / "comfy_samples.png")
    assert clf["identity_top1_held_out_renders"] >= 0.9, "the identity classifier must know the world's people"
    # far above chance with the branch on, near chance without it, and the prompt still sets the pose (exact
    # fractions of the samples: 12 more hits of 48 is 25 points, not a float a hair short of it)
    assert id_on >= 2 * chance and id_on >= id_off + Fraction(1, 4), (id_on, id_off)
    assert id_off <= Fraction(8, 5) * chance, id_off
    assert pose_on >= Fraction(4, 5) and pose_off >= Fraction(4, 5), (pose_on, pose_off)


@pytest.fixture(scope="module")
def random_world():
    """A world of random weights (no training): the base, the text encoder, an adapter with a body branch whose
    weights are all random (so the branch changes the output), and a Body-ID."""
    from types import SimpleNamespace

    from bolid_lib.experiments.world import nets
    from bolid_lib.experiments.world.latent import PatchLatentMap
    from bolid_lib.experiments.world.text import WorldTextEncoder
    from bolid_lib.experiments.world_proof import TEST, WorldConfig
    from bolid_lib.method.adapter import AdapterConfig, BoLIDAdapter

    cfg = WorldConfig(**TEST)
    torch.manual_seed(0)
    unet, text = nets.build_unet(cfg.model_channels, cfg.head_channels), WorldTextEncoder()
    nets.share_context_projections(unet)
    adapter = BoLIDAdapter(AdapterConfig(context_dim=2048, widths=(2 * cfg.model_channels, 4 * cfg.model_channels),
                                         body_dim=cfg.body_dim, body_tokens=4, body_hidden=256))
    with torch.no_grad():
        for m in (unet, text, adapter):
            for prm in m.parameters():
                prm.add_(0.05 * torch.randn_like(prm))     # zero-initialised outputs would hide a mismatch
    for m in (unet, text, adapter):
        m.eval().requires_grad_(False)
    return SimpleNamespace(cfg=cfg, unet=unet, text=text, adapter=adapter, latent_map=PatchLatentMap(),
                           body=torch.randn(cfg.body_dim))


def random_world_graph(comfy, w, prompt: str, side: int) -> dict:
    """The random world's adapter and Body-ID saved where the pack's loaders look, and the graph's shared nodes."""
    from bolid_lib.method.adapter import save_adapter
    from bolid_lib.method.embedding import BodyEmbedding, save_body

    save_adapter(w.adapter, comfy.models_dir / "bolid" / "world_random_adapter.safetensors")
    save_body(BodyEmbedding(w.body, torch.zeros_like(w.body), {"views_used": 1}),
              comfy.models_dir / "bolid" / "bodies" / "world_random_body.safetensors", overwrite=True)
    return {"model": {"class_type": "WorldTestModel", "inputs": {}},
            "adapter": {"class_type": "BoLIDAdapterLoader", "inputs": {"adapter_name": "world_random_adapter.safetensors"}},
            "body": {"class_type": "BoLIDLoadBody", "inputs": {"body_name": "world_random_body.safetensors"}},
            "pos": {"class_type": "WorldTestTextEncode", "inputs": {"text": prompt}},
            "neg": {"class_type": "WorldTestTextEncode", "inputs": {"text": ""}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": side, "height": side, "batch_size": 1}}}


@contextlib.contextmanager
def executor_then_sampler(comfy, w, graph: dict):
    """Runs ``graph`` through ComfyUI's executor (decoded latents into ``Holder.latents``) and yields the in-process
    sampler of the same world; one torch thread throughout."""
    from bolid_lib.experiments.world import nets
    from bolid_lib.experiments.world.sample import Sampler
    from bolid_lib.experiments.world.text import TrainerText

    with one_torch_thread():
        Holder.latents.clear()
        with nodes_for(w):
            result = comfy.run(graph)
        assert result.ok, result.error_text()
        yield Sampler(w.unet, TrainerText(w.text), nets.scheduler(), w.cfg.size, w.adapter)


def test_in_process_sampler_is_comfyuis_executor(comfy, random_world):
    """The full run evaluates in-process (``world.sample.Sampler``) for speed; this shows that sampler gives what
    ComfyUI's executor gives with the pack's nodes (BoLID Load Adapter, BoLID Load Body-ID, BoLID Apply, KSampler
    euler/normal, CFG), at lambda_body 0, 0.5 and 1, so its figures are ComfyUI's."""
    from bolid_lib.experiments.world.text import prompt_for

    w = random_world
    steps, cfg_scale, seed, side = 6, 3.0, 1234, w.cfg.size // 2 * 8
    lambdas = (0.0, 0.5, 1.0)
    p = random_world_graph(comfy, w, prompt_for(2), side)
    for lam in lambdas:
        p[f"apply{lam}"] = {"class_type": "BoLIDApply", "inputs": {
            "model": ["model", 0], "adapter": ["adapter", 0], "body": ["body", 0], "lambda_ref": 0.0,
            "lambda_body": lam, "start_at": 0.0, "end_at": 1.0}}
        p[f"ks{lam}"] = {"class_type": "KSampler", "inputs": {
            "model": [f"apply{lam}", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": steps, "cfg": cfg_scale, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
        p[f"dec{lam}"] = {"class_type": "WorldTestDecode", "inputs": {"samples": [f"ks{lam}", 0], "tag": f"r{lam}"}}
    with executor_then_sampler(comfy, w, p) as sampler:
        ours = {lam: sampler([prompt_for(2)], [seed], w.body[None], lam, steps, cfg_scale) for lam in lambdas}
    for lam in lambdas:
        theirs = Holder.latents[f"r{lam}"]
        assert theirs.shape == ours[lam].shape == (1, 4, w.cfg.size // 2, w.cfg.size // 2)
        err = float((theirs - ours[lam]).abs().max() / theirs.abs().max())
        print(f"lambda_body {lam}: ComfyUI vs in-process max relative difference {err:.2e}")
        assert err < 1e-3, (lam, err)
    # the body branch really acts here, so the agreement above covers it
    assert float((ours[1.0] - ours[0.0]).abs().max() / ours[0.0].abs().max()) > 0.05


def test_in_process_body_guidance_is_comfyuis_dual_cfg_guider(comfy, random_world):
    """``--body-guidance`` (a scale of its own for the body branch) is ComfyUI's DualCFGGuider with the prompt as both
    cond1 and cond2: through the executor (BoLID Apply, DualCFGGuider, SamplerCustomAdvanced) it gives the in-process
    sampler's latents; with the guidance equal to the CFG it is KSampler's CFG; and it changes the picture."""
    from bolid_lib.experiments.world.text import prompt_for

    w = random_world
    steps, cfg_scale, guidance, seed, side = 6, 3.0, 6.0, 1234, w.cfg.size // 2 * 8
    p = {**random_world_graph(comfy, w, prompt_for(1), side),
         "apply": {"class_type": "BoLIDApply", "inputs": {"model": ["model", 0], "adapter": ["adapter", 0],
                                                          "body": ["body", 0], "lambda_ref": 0.0, "lambda_body": 1.0,
                                                          "start_at": 0.0, "end_at": 1.0}},
         "guider": {"class_type": "DualCFGGuider", "inputs": {"model": ["apply", 0], "cond1": ["pos", 0], "cond2": ["pos", 0],
                                                              "negative": ["neg", 0], "cfg_conds": guidance,
                                                              "cfg_cond2_negative": cfg_scale, "style": "regular"}},
         "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
         "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
         "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["apply", 0], "scheduler": "normal",
                                                               "steps": steps, "denoise": 1.0}},
         "sample": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0],
                                                                      "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
                                                                      "latent_image": ["latent", 0]}},
         "dec": {"class_type": "WorldTestDecode", "inputs": {"samples": ["sample", 0], "tag": "dual"}}}
    with executor_then_sampler(comfy, w, p) as sampler:
        run = lambda **kw: sampler([prompt_for(1)], [seed], w.body[None], 1.0, steps, cfg_scale, **kw)  # noqa: E731
        ours, plain_cfg, same_scale = run(body_guidance=guidance), run(), run(body_guidance=cfg_scale)
    theirs = Holder.latents["dual"]
    err = float((theirs - ours).abs().max() / theirs.abs().max())
    print(f"body guidance {guidance}: ComfyUI's DualCFGGuider vs in-process max relative difference {err:.2e}")
    assert err < 1e-3, err
    assert float((same_scale - plain_cfg).abs().max() / plain_cfg.abs().max()) < 1e-4
    assert float((ours - plain_cfg).abs().max() / plain_cfg.abs().max()) > 0.05


def check_world_v2(world, comfy) -> None:
    """World v2 through ComfyUI's executor: people the adapter never saw get their body from their Body-ID (top-1
    among the zero-shot group and the swap test, each beyond its interval from chance), at lambda_body 0 the swap
    test holds 50% within its interval, and the prompt sets the pose and both colours with the branch off and on."""
    with one_torch_thread():
        adapter_name, bodies = place_files(comfy, world)
        Holder.images.clear()
        result = comfy.run(build_prompt_v2(world, adapter_name, bodies, (0.0, 1.0)))
        assert result.ok, result.error_text()
    on, off = scores_v2(world, 1.0), scores_v2(world, 0.0)
    (world.out / "comfy_figures.json").write_text(json.dumps({"1.0": on, "0.0": off,
                                                              "classifiers": world.figures["classifiers"]}, indent=1))
    print(f"\nworld v2 through ComfyUI: lambda_body 1 {on}; lambda_body 0 {off}")
    z_on, z_off = on["held_out_ids"], off["held_out_ids"]
    assert z_on["identity_ci95"][0] > z_on["chance"], z_on            # zero-shot top-1 beyond its interval from chance
    assert z_on["swap_ci95"][0] > 0.5, z_on                           # and the swap test beyond 50%
    assert z_off["swap_ci95"][0] <= 0.5 <= z_off["swap_ci95"][1], z_off
    for d in (z_on, z_off):
        for k in ("pose_accuracy", "top_colour_accuracy", "bottom_colour_accuracy"):
            assert d[k] >= 0.8, (k, d)
