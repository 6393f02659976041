"""The trainer's model loading (issue 16): local files and safetensors only, and SDXL from the single-file checkpoint a
ComfyUI user has. A reduced-width checkpoint with SDXL's layout (ComfyUI's key names) is written by this test from
small diffusers / transformers modules, loaded back, and its modules must give the source modules' outputs. CPU only,
no ComfyUI, no network."""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
from pathlib import Path

import pytest
import torch

from bolid_lib.errors import BoLIDError
from bolid_lib.training import models as M
from bolid_lib.training import single_file as SF
from bolid_lib.training.adapter import AdapterTrainConfig
from tools.make_test_models import Canary

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTHS = (32, 64, 128)        # UNet levels (SDXL: 320, 640, 1280); heads of 64 channels as SDXL
L_WIDTH, G_WIDTH, POOLED, TIME = 64, 128, 32, 8
CAPTIONS = ["a person standing on a beach", ""]


# --- small source modules and their ComfyUI single-file layout ------------------------------------

def source_modules(seed: int = 0):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=WIDTHS, transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=tuple(max(c // 64, 1) for c in WIDTHS), cross_attention_dim=L_WIDTH + G_WIDTH,
        norm_num_groups=32, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=TIME, projection_class_embeddings_input_dim=POOLED + 6 * TIME)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32, layers_per_block=2,
                        block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64, scaling_factor=0.13025)
    common = dict(vocab_size=514, max_position_embeddings=77, num_hidden_layers=3, layer_norm_eps=1e-5,
                  bos_token_id=0, eos_token_id=2, pad_token_id=1)
    te1 = CLIPTextModel(CLIPTextConfig(hidden_size=L_WIDTH, intermediate_size=128, num_attention_heads=1,
                                       hidden_act="quick_gelu", projection_dim=L_WIDTH, **common))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=G_WIDTH, intermediate_size=256, num_attention_heads=2,
                                                     hidden_act="gelu", projection_dim=POOLED, **common))
    for m in (unet, vae, te1, te2):
        for p in m.parameters():           # non-trivial norms and biases, so a swapped key shows in the outputs
            p.data.add_(torch.randn_like(p) * 0.02)
        m.eval()
    return unet, vae, te1, te2


RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
          ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))


def unet_to_ldm(sd: dict) -> dict:
    """diffusers SDXL-layout UNet keys -> LDM (ComfyUI) keys (the inverse of diffusers' convert_ldm_unet_checkpoint)."""
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for k, v in sd.items():
        head, _, leaf = k.rpartition(".")
        if head in fixed:
            out[f"{fixed[head]}.{leaf}"] = v
            continue
        parts = k.split(".")
        if parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * j}" if kind == "resnets" else "middle_block.1"
        else:
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if parts[0] == "down_blocks":
                new = {"resnets": f"input_blocks.{3 * i + j + 1}.0", "attentions": f"input_blocks.{3 * i + j + 1}.1",
                       "downsamplers": f"input_blocks.{3 * (i + 1)}.0"}[kind]
                rest = rest.replace("conv.", "op.") if kind == "downsamplers" else rest
            else:
                has_attn = i < 2
                new = {"resnets": f"output_blocks.{3 * i + j}.0", "attentions": f"output_blocks.{3 * i + j}.1",
                       "upsamplers": f"output_blocks.{3 * i + 2}.{2 if has_attn else 1}"}[kind]
        if kind == "resnets":
            for a, b in RESNET:
                rest = re.sub(rf"^{a}\.", f"{b}.", rest)
        out[f"{new}.{rest}"] = v
    return out


def vae_to_ldm(sd: dict) -> dict:
    n = 4
    out = {}
    for k, v in sd.items():
        k2 = (k.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
              .replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2"))
        k2 = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets", r"encoder.down.\1.block", k2)
        k2 = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", k2)
        k2 = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets", lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.block", k2)
        k2 = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0",
                    lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.upsample", k2)
        if "mid_block.attentions.0" in k2:
            k2 = k2.replace("mid_block.attentions.0", "mid.attn_1")
            k2 = (k2.replace("group_norm", "norm").replace("to_q", "q").replace("to_k", "k").replace("to_v", "v")
                  .replace("to_out.0", "proj_out"))
            if v.ndim == 2:
                v = v[:, :, None, None]          # LDM keeps these as 1x1 convolutions
        out[k2] = v
    return out


def clip_l_to_ldm(sd: dict) -> dict:
    return {SF.CLIP_L_PREFIX + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}


def open_clip_to_ldm(sd: dict) -> dict:
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out = {"positional_embedding": sd.pop("embeddings.position_embedding.weight"),
           "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
           "ln_final.weight": sd.pop("final_layer_norm.weight"), "ln_final.bias": sd.pop("final_layer_norm.bias"),
           "text_projection": sd.pop("text_projection.weight").T.contiguous(),
           "logit_scale": torch.tensor(4.6052)}
    sd.pop("embeddings.position_ids", None)
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        p, q = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[q + f"attn.in_proj_{kind}"] = torch.cat([sd.pop(p + f"self_attn.{x}_proj.{kind}") for x in "qkv"])
            out[q + f"attn.out_proj.{kind}"] = sd.pop(p + f"self_attn.out_proj.{kind}")
            out[q + f"ln_1.{kind}"] = sd.pop(p + f"layer_norm1.{kind}")
            out[q + f"ln_2.{kind}"] = sd.pop(p + f"layer_norm2.{kind}")
            out[q + f"mlp.c_fc.{kind}"] = sd.pop(p + f"mlp.fc1.{kind}")
            out[q + f"mlp.c_proj.{kind}"] = sd.pop(p + f"mlp.fc2.{kind}")
    assert not sd, f"unmapped text encoder keys: {sorted(sd)[:5]}"
    return {SF.CLIP_G_PREFIX + k: v for k, v in out.items()}


def checkpoint_state(unet, vae, te1, te2) -> dict:
    sd = {SF.UNET_PREFIX + k: v for k, v in unet_to_ldm(unet.state_dict()).items()}
    sd.update({SF.VAE_PREFIX + k: v for k, v in vae_to_ldm(vae.state_dict()).items()})
    sd.update(clip_l_to_ldm(te1.state_dict()))
    sd.update(open_clip_to_ldm(te2.state_dict()))
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def write_tokenizer(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(M.tiny_tokenizer().get_vocab()), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def sources():
    return source_modules()


@pytest.fixture(scope="module")
def comfy_tree(tmp_path_factory, sources):
    """A ComfyUI-shaped tree: ComfyUI/comfy/sd1_tokenizer/{vocab.json,merges.txt} and
    ComfyUI/models/checkpoints/tiny_sdxl.safetensors (written in float32)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("tree") / "ComfyUI"
    write_tokenizer(root / "comfy" / "sd1_tokenizer")
    ckpt = root / "models" / "checkpoints" / "tiny_sdxl.safetensors"
    ckpt.parent.mkdir(parents=True)
    save_file(checkpoint_state(*sources), str(ckpt))
    return root, ckpt


@pytest.fixture(scope="module")
def loaded(comfy_tree):
    return SF.load_sdxl_checkpoint(comfy_tree[1])


# --- the single-file checkpoint ----------------------------------------------------------------------

def test_unet_from_checkpoint_equals_source(sources, loaded):
    src = sources[0]
    assert dict(loaded.unet.config)["block_out_channels"] == list(WIDTHS)
    assert loaded.unet.config.transformer_layers_per_block == [1, 2, 10]
    assert loaded.unet.config.addition_time_embed_dim == TIME
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([10, 700])
    ctx = torch.randn(2, 7, L_WIDTH + G_WIDTH, generator=g)
    cond = {"text_embeds": torch.randn(2, POOLED, generator=g), "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]] * 2)}
    with torch.no_grad():
        want = src(x, t, encoder_hidden_states=ctx, added_cond_kwargs=cond).sample
        got = loaded.unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=cond).sample
    assert sum(p.numel() for p in loaded.unet.parameters()) == sum(p.numel() for p in src.parameters())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_vae_from_checkpoint_equals_source(sources, loaded):
    src = sources[1]
    assert loaded.vae.config.scaling_factor == SF.SDXL_VAE_SCALING
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.vae.encode(img).latent_dist.mean, src.encode(img).latent_dist.mean,
                                   rtol=0, atol=1e-6)
        z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(loaded.vae.decode(z).sample, src.decode(z).sample, rtol=0, atol=1e-6)


def test_text_encoders_and_tokenizers_from_checkpoint(sources, loaded):
    te1, te2 = sources[2], sources[3]
    tok = M.tiny_tokenizer()
    ids_1 = loaded.tokenizer_1(CAPTIONS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    ids_2 = loaded.tokenizer_2(CAPTIONS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    want = tok(CAPTIONS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ids_1, want)                                    # pads with the end token
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert ids_2[1, 2:].eq(0).all() and ids_2[1, :2].tolist() == want[1, :2].tolist()   # "!" (id 0) after the end
    with torch.no_grad():
        for src, got, ids in ((te1, loaded.text_encoder_1, ids_1), (te2, loaded.text_encoder_2, ids_2)):
            a = src(ids, output_hidden_states=True)
            b = got(ids, output_hidden_states=True)
            torch.testing.assert_close(b.hidden_states[-2], a.hidden_states[-2], rtol=0, atol=1e-6)
            torch.testing.assert_close(b[0], a[0], rtol=0, atol=1e-6)
    text = M.SDXLTextEncoder(loaded.tokenizer_1, loaded.text_encoder_1, loaded.tokenizer_2, loaded.text_encoder_2)
    ctx, pooled = text.encode(CAPTIONS)
    assert ctx.shape == (2, 77, L_WIDTH + G_WIDTH) and pooled.shape == (2, POOLED)
    assert eos == 513 and loaded.prediction_type == "epsilon"


def test_load_models_takes_the_checkpoint(comfy_tree):
    cfg = AdapterTrainConfig(pretrained=str(comfy_tree[1]))
    models = M.load_models(cfg)
    assert models.adapter_widths() == (WIDTHS[1], WIDTHS[2])
    assert models.scheduler.config.prediction_type == "epsilon" and models.scheduler.config.beta_end == 0.012
    assert models.scheduler.config.clip_sample is False
    assert all(not p.requires_grad for m in models.frozen_modules().values() for p in m.parameters())
    # the UNet alone, as the unet / shortcut_unet options take it
    unet = M.load_unet(None, str(comfy_tree[1]))
    assert unet.config.block_out_channels == models.unet.config.block_out_channels


def test_explicit_tokenizer_option(comfy_tree, tmp_path):
    """A checkpoint outside ComfyUI (extra_model_paths): no tokenizer found, the error says where to point it; the
    tokenizer option (sd1_tokenizer folder or the ComfyUI root) fixes it."""
    root, ckpt = comfy_tree
    outside = tmp_path / "elsewhere" / "sdxl.safetensors"
    outside.parent.mkdir()
    os.link(ckpt, outside) if hasattr(os, "link") else outside.write_bytes(ckpt.read_bytes())
    with pytest.raises(BoLIDError, match=r"no CLIP tokenizer found.*tokenizer.*sd1_tokenizer"):
        SF.load_sdxl_checkpoint(outside)
    assert SF.find_tokenizer(outside, str(root)) == root / "comfy" / "sd1_tokenizer"
    assert SF.find_tokenizer(outside, str(root / "comfy" / "sd1_tokenizer")) == root / "comfy" / "sd1_tokenizer"
    with pytest.raises(BoLIDError, match="not a local folder with vocab.json"):
        SF.find_tokenizer(outside, str(tmp_path / "nope"))


def test_refuses_sd15_refiner_and_corrupt_files(comfy_tree, tmp_path):
    from safetensors.torch import save_file

    def z():
        return torch.zeros(2, 2)

    sd15 = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": z(),
               "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": z(),
               "first_stage_model.decoder.conv_in.weight": z()}, str(sd15))
    with pytest.raises(BoLIDError, match=r"Stable Diffusion 1\.x/2\.x checkpoint.*not SDXL"):
        SF.load_sdxl_checkpoint(sd15)
    refiner = tmp_path / "refiner.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": z(),
               "conditioner.embedders.0.model.token_embedding.weight": z()}, str(refiner))
    with pytest.raises(BoLIDError, match="refiner"):
        SF.load_sdxl_checkpoint(refiner)
    unet_only = tmp_path / "unet_only.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": z()}, str(unet_only))
    with pytest.raises(BoLIDError, match=r"not an SDXL base checkpoint.*missing: UNet, CLIP-L"):
        SF.load_sdxl_checkpoint(unet_only)

    data = comfy_tree[1].read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BoLIDError, match="truncated or corrupt"):
        SF.load_sdxl_checkpoint(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 7)
    with pytest.raises(BoLIDError, match="truncated or corrupt"):
        SF.load_sdxl_checkpoint(garbage)
    other = tmp_path / "x.gguf"
    other.write_bytes(b"x")
    with pytest.raises(BoLIDError, match="must be a .safetensors"):
        SF.load_sdxl_checkpoint(other)


# --- local files and safetensors only --------------------------------------------------------------

def write_canary(file: Path, marker: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "wb") as f:
        pickle.dump({"weight": Canary(marker)}, f)


@pytest.fixture()
def no_network(monkeypatch):
    """Any network attempt (DNS lookup, socket connect, a hub download) is recorded and fails loudly; the hub is
    told it is online, so only our own refusal can stop a download."""
    import huggingface_hub
    import huggingface_hub.constants

    calls = []

    def deny(*a, **k):
        calls.append(a[:2])
        raise AssertionError(f"network access attempted: {a[:2]}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", deny)
    monkeypatch.setattr(socket.socket, "connect", deny)
    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, deny)
        monkeypatch.setattr(huggingface_hub.file_download, name, deny, raising=False)
    return calls


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    """A tiny SDXL diffusers folder, saved as safetensors."""
    from diffusers import AutoencoderKL, DDPMScheduler

    folder = tmp_path_factory.mktemp("sdxl")
    cfg = AdapterTrainConfig(tiny=True, branches="ref")
    unet = M.tiny_unet(0)
    te1 = __import__("transformers").CLIPTextModel(M._text_config(768))
    te2 = __import__("transformers").CLIPTextModelWithProjection(M._text_config(1280, M.TINY_POOLED))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8, layers_per_block=1,
                        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)
    for name, m in (("unet", unet), ("vae", vae), ("text_encoder", te1), ("text_encoder_2", te2)):
        m.save_pretrained(str(folder / name), safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        M.tiny_tokenizer().save_pretrained(str(folder / name))
    DDPMScheduler(beta_schedule="scaled_linear").save_pretrained(str(folder / "scheduler"))
    del cfg
    return folder


def test_diffusers_folder_still_loads(sdxl_folder, no_network):
    models = M.load_models(AdapterTrainConfig(pretrained=str(sdxl_folder)))
    assert models.unet.config.cross_attention_dim == 2048 and not no_network


HUB_IDS = {"pretrained": "stabilityai/stable-diffusion-xl-base-1.0", "unet": "latent-consistency/lcm-sdxl",
           "vae": "madebyollin/sdxl-vae-fp16-fix", "preview_vae": "madebyollin/taesdxl",
           "image_encoder": "h94/IP-Adapter", "clip_model": "openai/clip-vit-large-patch14",
           "shortcut_unet": "latent-consistency/lcm-sdxl"}


@pytest.mark.parametrize("field", sorted(HUB_IDS))
def test_hub_ids_are_refused_before_any_download(field, sdxl_folder, no_network):
    kw = {"pretrained": str(sdxl_folder), field: HUB_IDS[field]}
    with pytest.raises(BoLIDError, match=r"not a local file or folder.*never\s+downloads.*huggingface-cli download"):
        M.load_models(AdapterTrainConfig(**kw))
    assert no_network == []


def _copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("where", ["unet", "text_encoder", "vae", "image_encoder", "clip_model"])
def test_pickle_weights_are_refused_never_unpickled(where, sdxl_folder, tmp_path, no_network):
    marker = tmp_path / "UNPICKLED"
    folder = _copy_tree(sdxl_folder, tmp_path / "sdxl")
    kw = {"pretrained": str(folder)}
    if where in ("unet", "text_encoder", "vae"):
        sub = folder / where
        for f in sub.glob("*.safetensors"):
            f.unlink()
        write_canary(sub / ("pytorch_model.bin" if where == "text_encoder" else "diffusion_pytorch_model.bin"), marker)
    else:
        from transformers import CLIPModel, CLIPVisionConfig

        sub = tmp_path / where
        sub.mkdir()
        config = (CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                                   image_size=32, patch_size=8) if where == "image_encoder"
                  else CLIPModel.config_class())
        config.save_pretrained(str(sub))
        write_canary(sub / "pytorch_model.bin", marker)
        M.tiny_tokenizer().save_pretrained(str(sub))
        kw[where] = str(sub)
    with pytest.raises(BoLIDError, match=r"only pickle weights.*refused.*safetensors"):
        M.load_models(AdapterTrainConfig(**kw))
    assert not marker.exists(), "a pickle was unpickled"
    assert no_network == []


def test_pickle_checkpoint_file_is_refused(tmp_path):
    marker = tmp_path / "UNPICKLED"
    for name in ("sdxl.ckpt", "sdxl.pt", "unet.bin"):
        write_canary(tmp_path / name, marker)
        with pytest.raises(BoLIDError, match="pickle file"):
            M.load_models(AdapterTrainConfig(pretrained=str(tmp_path / name)))
        with pytest.raises(BoLIDError, match="pickle file"):
            M.load_unet(None, str(tmp_path / name))
    assert not marker.exists()


def test_real_clip_vocab_from_comfyui(tmp_path):
    """With ComfyUI's own CLIP files (when a ComfyUI tree is at hand; read as files, not imported): the first
    tokenizer pads with <|endoftext|> (49407), the second with "!" (0), both 77 long."""
    root = os.environ.get("COMFYUI_PATH")
    folder = Path(root or "/nonexistent") / "comfy" / "sd1_tokenizer"
    if not (folder / "vocab.json").is_file():
        pytest.skip("no ComfyUI tree (COMFYUI_PATH) with comfy/sd1_tokenizer")
    tok1, tok2 = SF.load_tokenizers(folder)
    a = tok1(["a photo of a cat"], padding="max_length", max_length=77, truncation=True).input_ids[0]
    b = tok2(["a photo of a cat"], padding="max_length", max_length=77, truncation=True).input_ids[0]
    assert a[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and a[7:] == [49407] * 70
    assert b[:7] == a[:7] and b[7:] == [0] * 70
    assert tok1.model_max_length == tok2.model_max_length == 77
