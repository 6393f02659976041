"""What is trained is what runs, inside ComfyUI's real SDXL UNet code: the diffusers training host and ComfyUI's UNet
hold the same weights at the same sites, and at each of the 70 sites the BoLID patch that ComfyUI calls (through the
pack's apply_bolid, ComfyUI's optimized_attention, a real UNet forward) gives what the training processor gives on
the same q, k, v with the same adapter weights."""

from __future__ import annotations

import importlib

import pytest
import torch

import hostlib
from bolid_lib.method.adapter import AdapterConfig, BoLIDAdapter
from bolid_lib.method.sdxl_layers import NUM_SITES, SITES, find_attn2
from bolid_lib.training.host import BoLIDAttnProcessor, BranchTokens
from bolid_lib.training.models import TINY_HEAD_DIM, tiny_unet

pytestmark = [pytest.mark.host, pytest.mark.usefixtures("one_thread")]   # one reduction order, and speed on 2 cores

# ComfyUI's UNet normalises with 32 groups, so its smallest SDXL layout has model_channels 32
BLOCKS = (32, 64, 128)




class Recorder:
    """Wraps the patch ComfyUI installed at one site and records (q, k, v, out) of each call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, q, k, v, extra_options):
        out = self.fn(q, k, v, extra_options)
        self.calls.append((q.detach().clone(), k.detach().clone(), v.detach().clone(), out.detach().clone(),
                           extra_options["n_heads"]))
        return out


def test_training_host_matches_comfy_unet(comfy, pack):
    comfy_utils = importlib.import_module("comfy.utils")
    # the same UNet weights in both hosts, mapped with ComfyUI's own diffusers <-> ComfyUI key table
    dunet = tiny_unet(seed=0, blocks=BLOCKS, norm_groups=32)
    patcher = hostlib.build_sdxl_model(model_channels=BLOCKS[0], head_channels=TINY_HEAD_DIM, seed=0)
    cunet = patcher.model.diffusion_model
    mapping = comfy_utils.unet_to_diffusers(hostlib.sdxl_unet_config(BLOCKS[0], TINY_HEAD_DIM))
    dsd, csd = dunet.state_dict(), cunet.state_dict()
    with torch.no_grad():
        for dk, ck in mapping.items():
            if dk in dsd and ck in csd and dsd[dk].shape == csd[ck].shape:
                csd[ck].copy_(dsd[dk])
    dmods = dict(dunet.named_modules())
    for s in SITES:       # canonical site i is the same layer in both hosts
        c, d = find_attn2(cunet, s), dmods[s.diffusers]
        for name in ("to_q", "to_k", "to_v"):
            assert torch.equal(getattr(c, name).weight, getattr(d, name).weight), (s.key, s.diffusers, name)
        assert c.heads == d.heads

    # the same adapter weights: one copy from the pack ComfyUI loaded, one from the training side
    kw = dict(widths=(BLOCKS[1], BLOCKS[2]), ref_kind="plain", ref_tokens=4, clip_embed_dim=32,
              body_dim=16, body_tokens=3, body_hidden=32)
    torch.manual_seed(3)
    comfy_adapter = pack.adapter.BoLIDAdapter(pack.adapter.AdapterConfig(**kw)).eval()
    train_adapter = BoLIDAdapter(AdapterConfig(**kw)).eval()
    train_adapter.load_state_dict(comfy_adapter.state_dict())
    ref, body = torch.randn(1, 32), torch.randn(1, 16)

    model = pack.nodes.apply_bolid(patcher, comfy_adapter, pack.patch.PatchSettings(lambda_ref=0.8, lambda_body=1.2),
                                   ref_features=ref, c_body=body)
    replaces = model.model_options["transformer_options"]["patches_replace"]["attn2"]
    recorders = {}
    for s in SITES:
        recorders[s.index] = Recorder(replaces[s.key])
        replaces[s.key] = recorders[s.index]
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        cunet(x, timesteps=torch.tensor([500.0]), context=torch.randn(1, 77, 2048), y=torch.randn(1, 2816),
              transformer_options=model.model_options["transformer_options"])
    assert all(len(r.calls) == 1 for r in recorders.values()), "every one of the 70 sites is called once"

    with torch.no_grad():
        tokens = BranchTokens(ref=train_adapter.ref_tokens(ref), body=train_adapter.body_tokens(body),
                              lambda_ref=0.8, lambda_body=1.2)
    checked = 0
    for s in SITES:
        q, k, v, out, heads = recorders[s.index].calls[0]
        with torch.no_grad():
            host = BoLIDAttnProcessor(s.index, train_adapter, tokens).attend(q, k, v, heads)
        torch.testing.assert_close(host, out, rtol=1e-4, atol=1e-5, msg=lambda m, s=s: f"site {s.key}: {m}")
        checked += 1
    assert checked == NUM_SITES


def test_trained_file_loads_in_the_comfy_loader_and_applies(comfy, pack, sdxl_small, tmp_path):
    """A file written by the trainer (one step, body branch, a UNet of sdxl_small's widths) loads through the
    BoLIDAdapterLoader node as it is and patches ComfyUI's SDXL UNet."""
    import dataclasses

    from bolid_lib.training.adapter import AdapterTrainConfig, train
    from bolid_lib.training.dataset import write_synthetic_dataset
    from bolid_lib.training.models import tiny_models

    data = write_synthetic_dataset(tmp_path / "data", people=1, views=2, size=64)
    cfg = AdapterTrainConfig(data_dir=str(data), output_dir=str(tmp_path / "run"), tiny=True, resolution=64,
                             batch_size=1, max_steps=1, branches="body", body_hidden=32, alpha_id=0.0,
                             beta_clip=0.0, pose_conf=1e-6, save_every=0, tensorboard=False, name="trained_tiny")
    models = tiny_models(cfg)
    models = dataclasses.replace(models, unet=tiny_unet(seed=0, blocks=BLOCKS, norm_groups=32))
    result = train(cfg, models=models)
    dst = comfy.models_dir / "bolid" / "trained_tiny.safetensors"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(result["adapter"].read_bytes())
    choice = next(c for c in pack.nodes.adapter_choices() if "trained_tiny" in c)
    adapter = comfy.node("BoLIDAdapterLoader").execute(adapter_name=choice).result[0]
    assert adapter.config.body_dim == 16 and adapter.ref is None
    body = result["adapter_module"].state_dict()
    for k, v in adapter.state_dict().items():
        assert torch.equal(v, body[k]), k
    model = pack.nodes.apply_bolid(sdxl_small, adapter, pack.patch.PatchSettings(lambda_body=1.0),
                                   c_body=torch.randn(1, 16))
    unet = sdxl_small.model.diffusion_model
    args = dict(x=torch.randn(1, 4, 8, 8), timesteps=torch.tensor([500.0]), context=torch.randn(1, 77, 2048),
                y=torch.randn(1, 2816))
    with torch.no_grad():
        plain = unet(**args, transformer_options={})
        patched = unet(**args, transformer_options=model.model_options["transformer_options"])
    assert not torch.allclose(plain, patched)
