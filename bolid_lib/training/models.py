"""The frozen models the adapter trainer needs, loaded from local files or built tiny and random for tests.

Real runs read local files only (nothing is downloaded) and safetensors only (a hub id, or a folder with only
``.bin`` / pickle weights, is refused before any library sees it): an SDXL diffusers folder (``unet/``, ``vae/``,
``text_encoder/``, ``text_encoder_2/``, ``tokenizer/``, ``tokenizer_2/``, ``scheduler/``) or the single-file SDXL
checkpoint a ComfyUI user has in ``models/checkpoints/`` (``single_file``: UNet, VAE and text encoders from the one
file, tokenizers from ComfyUI's own CLIP files); optionally a UNet folder or ``.safetensors`` file; a preview VAE folder (AutoencoderTiny such as taesdxl, or an AutoencoderKL); a
CLIP vision encoder with projection (for the ref branch); a CLIP model folder (for L_CLIP); a YOLO pose ``.pt``
(loaded through ``bolid_lib.method.pose``); a Body-ID VAE file (``bolid_lib.method.body_vae``).

``tiny_models`` builds the same classes with tiny random configs (context width 2048 kept, as in SDXL), so the
whole trainer runs in seconds on a CPU without a single weight file.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import BoLIDError
from ..files import PICKLE_SUFFIXES
from ..method.sdxl_layers import CONTEXT_DIM

log = logging.getLogger("bolid")

TINY_BLOCKS = (16, 32, 64)          # widths of the tiny UNet's three levels; adapter widths = (32, 64)
TINY_HEAD_DIM = 8
TINY_POOLED = 32
TINY_TIME_EMBED = 8


@dataclass
class ModelSet:
    """Frozen models of one training run (all in eval mode, requires_grad False). Optional ones may be None."""

    unet: nn.Module
    scheduler: object
    vae: nn.Module
    text: "SDXLTextEncoder"
    preview_vae: nn.Module | None = None
    image_encoder: nn.Module | None = None
    clip_model: nn.Module | None = None
    clip_tokenizer: object = None
    pose_net: nn.Module | None = None
    pose_model: object = None                # bolid_lib.method.pose.PoseModel (Body-IDs); pose_net is a private copy of its net
    body_vae: nn.Module | None = None
    shortcut_unet: nn.Module | None = None

    def frozen_modules(self) -> dict[str, nn.Module]:
        out = {"unet": self.unet, "vae": self.vae, "text_encoder": self.text.encoder_1, "text_encoder_2": self.text.encoder_2}
        for name in ("preview_vae", "image_encoder", "clip_model", "pose_net", "body_vae", "shortcut_unet"):
            m = getattr(self, name)
            if m is not None:
                out[name] = m
        return out

    def adapter_widths(self) -> tuple[int, int]:
        """(width of the 640-level sites, width of the 1280-level sites) of this UNet."""
        ch = tuple(self.unet.config.block_out_channels)
        return (int(ch[1]), int(ch[2]))


def freeze(module: nn.Module | None) -> nn.Module | None:
    if module is not None:
        module.eval().requires_grad_(False)
    return module


class SDXLTextEncoder:
    """SDXL's two text encoders: captions -> context (B, 77, 2048) and pooled (B, P), as SDXL's pipeline encodes.

    context = concat(penultimate hidden states of CLIP-L, of OpenCLIP-bigG); pooled = bigG's projected embedding.
    """

    def __init__(self, tokenizer_1, encoder_1, tokenizer_2, encoder_2):
        self.tokenizer_1, self.encoder_1 = tokenizer_1, freeze(encoder_1)
        self.tokenizer_2, self.encoder_2 = tokenizer_2, freeze(encoder_2)

    def to(self, device) -> "SDXLTextEncoder":
        self.encoder_1.to(device)
        self.encoder_2.to(device)
        return self

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.encoder_1.parameters()).device
        hidden = []
        pooled = None
        for tok, enc in ((self.tokenizer_1, self.encoder_1), (self.tokenizer_2, self.encoder_2)):
            ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(device)
            out = enc(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0] if out[0].ndim == 2 else pooled      # CLIPTextModelWithProjection: text_embeds
        return torch.cat(hidden, dim=-1).float(), pooled.float()


# --- loading real models ------------------------------------------------------------------------
#
# Local files and safetensors only: every from_pretrained gets local_files_only=True and use_safetensors=True, and a
# path is checked before any library sees it, so that a hub id is refused before a download is tried and a folder
# with only pickle weights (pytorch_model.bin, diffusion_pytorch_model.bin, ...) is refused before anything is
# unpickled.

LOCAL_ONLY = dict(local_files_only=True)
SAFE_ONLY = dict(local_files_only=True, use_safetensors=True)


def local_folder(path: str | Path | None, what: str, subfolder: str | None = None, weights: bool = True) -> Path:
    """``path`` as a local folder (``subfolder`` inside it must exist too); with ``weights``, one holding
    ``.safetensors`` weights. Raises BoLIDError saying the fix otherwise: nothing is downloaded or unpickled."""
    if not path:
        raise BoLIDError(f"{what}: no path given")
    p = Path(path).expanduser()
    if not p.exists():
        raise BoLIDError(
            f"{what}: {str(path)!r} is not a local file or folder. The trainer reads local files only and never "
            "downloads: if this is a Hugging Face id, download the safetensors release yourself (e.g. "
            f"`huggingface-cli download {path} --include '*.safetensors' '*.json' '*.txt' --local-dir DIR`) and "
            "give DIR")
    if not p.is_dir():
        raise BoLIDError(f"{what}: {p} must be a folder (a diffusers / transformers model folder with config.json "
                         "and .safetensors weights)")
    d = p / subfolder if subfolder else p
    if not d.is_dir():
        raise BoLIDError(f"{what}: {p} has no {subfolder}/ folder (expected a diffusers SDXL folder)")
    if weights:
        files = [f for f in d.iterdir() if f.is_file()]
        if not any(f.name.endswith(".safetensors") for f in files):
            pickles = sorted(f.name for f in files if f.suffix.lower() in PICKLE_SUFFIXES)
            if pickles:
                raise BoLIDError(
                    f"{what}: {d} holds only pickle weights ({', '.join(pickles)}); loading a pickle can run "
                    "arbitrary code, so they are refused. Use the model's .safetensors release, or convert once in "
                    "an environment you trust (load it and save_pretrained(DIR, safe_serialization=True)).")
            raise BoLIDError(f"{what}: no .safetensors weights in {d}")
    return p


def _from_pretrained(cls, path: Path, what: str, **kw):
    try:
        return cls.from_pretrained(str(path), **kw)
    except (OSError, ValueError) as e:      # e.g. a variant-only folder (*.fp16.safetensors), a broken config
        raise BoLIDError(f"{what}: cannot load {path} as {cls.__name__} from local safetensors files: {e}") from None


def _class_name(path: Path) -> str | None:
    cfg = path / "config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("_class_name")
    return None


def _is_file_path(path: str | None) -> bool:
    return bool(path) and (Path(path).is_file() or Path(path).suffix.lower() in (".safetensors", *PICKLE_SUFFIXES))


def load_vae(path: str) -> nn.Module:
    """A diffusers AutoencoderKL or AutoencoderTiny folder (the kind read from its config), or an LDM VAE
    ``.safetensors`` file (ComfyUI's ``models/vae``, SDXL's scaling)."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    if _is_file_path(path):
        from . import single_file

        return freeze(single_file.load_vae_file(path))
    p = local_folder(path, "VAE")
    cls = AutoencoderTiny if _class_name(p) == "AutoencoderTiny" else AutoencoderKL
    return freeze(_from_pretrained(cls, p, "VAE", **SAFE_ONLY))


def load_unet(pretrained: str | None, unet: str | None = None) -> nn.Module:
    """SDXL UNet from ``unet`` (a diffusers folder, or a ``.safetensors`` file: a ComfyUI checkpoint or UNet-only
    file in LDM layout, configured from its shapes, or a diffusers-layout file configured by the ``pretrained``
    folder), else from ``pretrained`` (``pretrained/unet``, or the UNet of a single-file checkpoint)."""
    from diffusers import UNet2DConditionModel

    from . import single_file

    src = unet or pretrained
    if not src:
        raise BoLIDError("no SDXL model given: set pretrained (a local SDXL diffusers folder or an SDXL .safetensors "
                         "checkpoint) or tiny: true for a smoke run")
    if _is_file_path(src):
        model = single_file.load_unet_file(src)             # refuses pickles and corrupt files
        if model is not None:
            return freeze(model)
        if not pretrained or not Path(pretrained).is_dir():
            raise BoLIDError(f"{Path(src).name} is a UNet file in diffusers' layout: it needs the SDXL diffusers "
                             "folder for its config (set pretrained to a local folder)")
        local_folder(pretrained, "pretrained", "unet", weights=False)
        return freeze(UNet2DConditionModel.from_single_file(str(src), config=str(pretrained), subfolder="unet",
                                                            local_files_only=True))
    if unet:
        return freeze(_from_pretrained(UNet2DConditionModel, local_folder(unet, "unet"), "unet", **SAFE_ONLY))
    p = local_folder(pretrained, "pretrained", "unet")
    return freeze(_from_pretrained(UNet2DConditionModel, p, "pretrained UNet", subfolder="unet", **SAFE_ONLY))


def sdxl_scheduler(prediction_type: str = "epsilon"):
    """SDXL base's noise schedule (its scheduler_config.json), for a single-file checkpoint that carries none."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type=prediction_type, clip_sample=False, sample_max_value=1.0,
                         steps_offset=1, timestep_spacing="leading")


def load_models(cfg) -> ModelSet:
    """The frozen models named by an ``AdapterTrainConfig`` (local files only, safetensors only)."""
    if cfg.tiny:
        return tiny_models(cfg)
    from diffusers import DDPMScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    pre = cfg.pretrained
    if not pre:
        raise BoLIDError("pretrained must be a local SDXL diffusers folder (unet/, vae/, text_encoder*/, tokenizer*/, "
                         "scheduler/) or an SDXL .safetensors checkpoint (ComfyUI's models/checkpoints/)")
    if _is_file_path(pre):
        from . import single_file

        sf = single_file.load_sdxl_checkpoint(pre, getattr(cfg, "tokenizer", None), unet=not cfg.unet,
                                              vae=not cfg.vae)
        text = SDXLTextEncoder(sf.tokenizer_1, sf.text_encoder_1, sf.tokenizer_2, sf.text_encoder_2)
        models = ModelSet(unet=load_unet(pre, cfg.unet) if cfg.unet else freeze(sf.unet),
                          scheduler=sdxl_scheduler(sf.prediction_type),
                          vae=load_vae(cfg.vae) if cfg.vae else freeze(sf.vae), text=text)
    else:
        p = local_folder(pre, "pretrained", weights=False)
        for sub in ("text_encoder", "text_encoder_2"):
            local_folder(p, "pretrained", sub)
        tok = getattr(cfg, "tokenizer", None)
        if tok:
            from . import single_file

            tok_1, tok_2 = single_file.load_tokenizers(single_file.find_tokenizer(pre, tok))
        else:
            tok_1 = CLIPTokenizer.from_pretrained(str(local_folder(p, "pretrained", "tokenizer", weights=False)),
                                                  subfolder="tokenizer", **LOCAL_ONLY)
            tok_2 = CLIPTokenizer.from_pretrained(str(local_folder(p, "pretrained", "tokenizer_2", weights=False)),
                                                  subfolder="tokenizer_2", **LOCAL_ONLY)
        text = SDXLTextEncoder(tok_1, _from_pretrained(CLIPTextModel, p, "text_encoder", subfolder="text_encoder", **SAFE_ONLY),
                               tok_2, _from_pretrained(CLIPTextModelWithProjection, p, "text_encoder_2",
                                                       subfolder="text_encoder_2", **SAFE_ONLY))
        local_folder(p, "pretrained", "scheduler", weights=False)
        scheduler = DDPMScheduler.from_pretrained(str(p), subfolder="scheduler", **LOCAL_ONLY)
        models = ModelSet(unet=load_unet(pre, cfg.unet), scheduler=scheduler,
                          vae=load_vae(cfg.vae or str(local_folder(p, "pretrained", "vae", weights=False) / "vae")),
                          text=text)
    if cfg.preview_vae:
        models.preview_vae = load_vae(cfg.preview_vae)
    if cfg.image_encoder:
        from transformers import CLIPVisionModelWithProjection
        models.image_encoder = freeze(_from_pretrained(CLIPVisionModelWithProjection,
                                                       local_folder(cfg.image_encoder, "image_encoder"),
                                                       "image_encoder", **SAFE_ONLY))
    if cfg.clip_model:
        from transformers import CLIPModel
        clip_dir = local_folder(cfg.clip_model, "clip_model")
        models.clip_model = freeze(_from_pretrained(CLIPModel, clip_dir, "clip_model", **SAFE_ONLY))
        models.clip_tokenizer = CLIPTokenizer.from_pretrained(str(clip_dir), **LOCAL_ONLY)
    if cfg.pose_model:
        from ..method.pose import PoseModel
        models.pose_model = PoseModel.load(cfg.pose_model)
        # a private copy: ultralytics fuses Conv+BN in place when it predicts; the loss keeps the unfused net
        models.pose_net = freeze(copy.deepcopy(models.pose_model.yolo.model))
    if cfg.body_vae:
        from ..method.body_vae_files import load_body_vae
        models.body_vae = freeze(load_body_vae(cfg.body_vae))
    if cfg.shortcut_unet:
        models.shortcut_unet = load_unet(pre, cfg.shortcut_unet)
    return models


# --- tiny random models of the real classes (tests, smoke runs) ---------------------------------

def tiny_tokenizer():
    """A real ``CLIPTokenizer`` over a tiny byte-level vocabulary (514 ids: 256 bytes, the same with ``</w>``,
    start and end of text; no merges)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _text_config(hidden: int, projection: int = 16):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=514, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=projection,
                          bos_token_id=512, eos_token_id=513, pad_token_id=513)


def tiny_unet(seed: int = 0, cross_attention_dim: int = CONTEXT_DIM, blocks: tuple[int, int, int] = TINY_BLOCKS,
              norm_groups: int = 8) -> nn.Module:
    """A diffusers UNet2DConditionModel with SDXL's layout (70 attn2 sites, text_time conditioning), tiny widths.

    blocks: widths of the three levels (SDXL: 320, 640, 1280); heads of TINY_HEAD_DIM channels.
    """
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return freeze(UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=tuple(blocks), transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=tuple(c // TINY_HEAD_DIM for c in blocks),        # diffusers' legacy name: heads
        cross_attention_dim=cross_attention_dim, norm_num_groups=norm_groups, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=TINY_TIME_EMBED,
        projection_class_embeddings_input_dim=TINY_POOLED + 6 * TINY_TIME_EMBED,
    ))


def calibrate_batchnorm(net: nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics from one batch (B, 3, H, W), then put ``net`` in eval mode.

    A freshly initialised YOLO has running mean 0 / variance 1, which makes its output all but independent of the
    input (differences of ~1e-5 px); measured statistics make the random network respond to its input, so the
    identity loss has a gradient worth testing.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    net.train()
    with torch.no_grad():
        net(images)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()


def tiny_models(cfg) -> ModelSet:
    """Tiny random models of the real classes, seeded by ``cfg.seed``; everything the config asks for."""
    from diffusers import AutoencoderKL, AutoencoderTiny, DDPMScheduler
    from transformers import (CLIPConfig, CLIPModel, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    seed = int(cfg.seed)
    tok = tiny_tokenizer()
    unet = tiny_unet(seed)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              prediction_type=cfg.prediction_type or "epsilon")
    torch.manual_seed(seed + 1)
    vae = freeze(AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8, layers_per_block=1,
                               block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                               up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64, scaling_factor=0.13025))
    torch.manual_seed(seed + 2)
    te1 = CLIPTextModel(_text_config(768))
    te2 = CLIPTextModelWithProjection(_text_config(1280, TINY_POOLED))
    models = ModelSet(unet=unet, scheduler=scheduler, vae=vae, text=SDXLTextEncoder(tok, te1, tok, te2))
    torch.manual_seed(seed + 3)
    models.preview_vae = freeze(AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                                                num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4))
    torch.manual_seed(seed + 4)
    vision = CLIPVisionConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    models.image_encoder = freeze(CLIPVisionModelWithProjection(vision))
    torch.manual_seed(seed + 5)
    clip_cfg = CLIPConfig(text_config=_text_config(32).to_dict(),
                          vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, image_size=32, patch_size=8),
                          projection_dim=16)
    models.clip_model = freeze(CLIPModel(clip_cfg))
    models.clip_tokenizer = tok
    torch.manual_seed(seed + 6)
    from ultralytics import YOLO

    from ..method.pose import PoseModel
    yolo = YOLO("yolo11n-pose.yaml", verbose=False)
    calibrate_batchnorm(yolo.model, torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(seed)))
    models.pose_model = PoseModel(yolo, "yolo11n-pose (random)")
    models.pose_net = freeze(copy.deepcopy(yolo.model))
    if cfg.branches in ("body", "both"):
        from ..method.body_vae import BodyVAE, BodyVAEConfig
        torch.manual_seed(seed + 7)
        models.body_vae = freeze(BodyVAE(BodyVAEConfig(input_size=32, latent_dim=16, widths=(8, 8), feature_dim=16,
                                                       pool_size=2, groups=8)))
    if cfg.preview == "shortcut":
        models.shortcut_unet = tiny_unet(seed + 8)
    return models
