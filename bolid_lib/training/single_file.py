"""SDXL from the single ``.safetensors`` checkpoint a ComfyUI user already has (``models/checkpoints/``).

The file holds the UNet (``model.diffusion_model.*``), CLIP-L (``conditioner.embedders.0.transformer.*``),
OpenCLIP-bigG (``conditioner.embedders.1.model.*``) and the VAE (``first_stage_model.*``). They become the diffusers /
transformers modules the trainer uses (``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``,
``CLIPTextModelWithProjection``) with:

- configs written here, every size read from the tensors' shapes (the full file gives SDXL's own numbers; a
  reduced-width file with SDXL's layout loads too), nothing fetched: diffusers' ``from_single_file`` would look its
  configs up on the Hub, so it is not used;
- keys converted by diffusers' own functions (``diffusers.loaders.single_file_utils``);
- tokenizers from CLIP's BPE files (``vocab.json``, ``merges.txt``), which ship inside ComfyUI
  (``comfy/sd1_tokenizer/``): found by walking up from the checkpoint's path to the ComfyUI root, or named by the
  ``tokenizer`` option (needed when the checkpoint lives outside ComfyUI, e.g. in an ``extra_model_paths`` folder).

Only files are read; ComfyUI is never imported. Only ``.safetensors`` is accepted (a ``.ckpt`` is a pickle).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import BoLIDError
from ..files import PICKLE_SUFFIXES

UNET_PREFIX = "model.diffusion_model."
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
CLIP_G_PREFIX = "conditioner.embedders.1.model."
VAE_PREFIX = "first_stage_model."

SDXL_HEAD_DIM = 64                 # ComfyUI's and diffusers' SDXL: num_head_channels 64 (5, 10, 20 heads)
CLIP_HEAD_DIM = 64                 # CLIP-L 768/12, bigG 1280/20
SDXL_VAE_SCALING = 0.13025
SDXL_TIME_EMBED = 256              # addition_time_embed_dim of SDXL base (6 size/crop numbers x 256)
TOKENIZER_FILES = ("vocab.json", "merges.txt")

TOKENIZER_HELP = ("set the models option tokenizer to a folder holding CLIP's vocab.json and merges.txt: ComfyUI's "
                  "comfy/sd1_tokenizer (or the ComfyUI folder itself), or the tokenizer/ folder of an SDXL diffusers "
                  "folder")


# --- the file ------------------------------------------------------------------------------------

class Checkpoint:
    """A single-file checkpoint opened lazily: names and shapes at once, tensors on demand."""

    def __init__(self, path: str | Path):
        p = Path(path)
        if not p.is_file():
            raise BoLIDError(f"checkpoint not found: {p}")
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise BoLIDError(f"{p.name} is a pickle file ({p.suffix}): loading it can run arbitrary code, so it is "
                             "refused. Use the .safetensors release of the model, or convert it once in an isolated "
                             "environment you trust.")
        if p.suffix.lower() != ".safetensors":
            raise BoLIDError(f"{p.name}: a single-file checkpoint must be a .safetensors file")
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                self.shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
                self.metadata = f.metadata() or {}
        except Exception as e:  # safetensors raises its own error types for a bad header / short file
            raise BoLIDError(f"{p} is not a readable safetensors file ({type(e).__name__}: {e}); it is truncated or "
                             "corrupt: copy or download it again") from None
        self.path = p

    def keys(self, prefix: str = "") -> list[str]:
        return [k for k in self.shapes if k.startswith(prefix)]

    def has(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.shapes)

    def tensors(self, prefix: str, dtype: torch.dtype | None = torch.float32) -> dict[str, torch.Tensor]:
        """Every tensor whose name starts with ``prefix`` (names kept whole), floating ones cast to ``dtype``."""
        from safetensors import safe_open

        out = {}
        try:
            with safe_open(str(self.path), framework="pt") as f:
                for k in self.keys(prefix):
                    t = f.get_tensor(k)
                    out[k] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
        except Exception as e:
            raise BoLIDError(f"{self.path}: reading {prefix}* failed ({type(e).__name__}: {e}); the file is corrupt: "
                             "copy or download it again") from None
        return out


def check_sdxl(ck: Checkpoint) -> None:
    """Refuse anything but an SDXL base checkpoint in ComfyUI's (= Stability's) single-file layout."""
    name = ck.path.name
    if ck.has("cond_stage_model."):
        raise BoLIDError(f"{name} is a Stable Diffusion 1.x/2.x checkpoint (cond_stage_model.*), not SDXL: the BoLID "
                         "adapter is trained on SDXL base; use an SDXL checkpoint")
    if ck.has("conditioner.embedders.0.model.") and not ck.has(CLIP_G_PREFIX):
        raise BoLIDError(f"{name} is an SDXL refiner checkpoint (one OpenCLIP text encoder); the adapter is trained on "
                         "SDXL base: use an SDXL base checkpoint")
    need = {"UNet": UNET_PREFIX + "label_emb.0.0.weight",
            "CLIP-L text encoder": CLIP_L_PREFIX + "text_model.embeddings.token_embedding.weight",
            "OpenCLIP-bigG text encoder": CLIP_G_PREFIX + "text_projection",
            "VAE": VAE_PREFIX + "decoder.conv_in.weight"}
    missing = [what for what, k in need.items() if k not in ck.shapes]
    if missing:
        raise BoLIDError(f"{name} is not an SDXL base checkpoint with UNet, both text encoders and VAE in one file "
                         f"(missing: {', '.join(missing)}); give an SDXL base checkpoint (.safetensors) as ComfyUI's "
                         "Load Checkpoint uses it, or a local SDXL diffusers folder")
    width = _clip_width(ck, CLIP_L_PREFIX + "text_model.") + _clip_width(ck, CLIP_G_PREFIX)
    k2 = next((k for k in ck.keys(UNET_PREFIX) if k.endswith("attn2.to_k.weight")), None)
    if k2 is None or ck.shapes[k2][1] != width:
        raise BoLIDError(f"{name}: the UNet's cross-attention width does not match its two text encoders ({width}); "
                         "not an SDXL base checkpoint")


def _clip_width(ck: Checkpoint, prefix: str) -> int:
    return int(ck.shapes[prefix + ("embeddings.token_embedding.weight" if prefix.endswith("text_model.")
                                   else "token_embedding.weight")][1])


# --- configs from shapes -------------------------------------------------------------------------

def _ids(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def unet_config(shapes: dict[str, tuple], pooled_dim: int | None = None, head_dim: int = SDXL_HEAD_DIM) -> dict:
    """diffusers ``UNet2DConditionModel`` config of an SDXL-layout LDM UNet (keys without ``model.diffusion_model.``).

    SDXL base: levels of (320, 640, 1280), 2 resnets per level, transformer depths (1, 2, 10) on the last two
    levels, linear projections, context 2048, text_time conditioning (adm 2816 = pooled 1280 + 6 x 256).
    """
    keys = list(shapes)
    try:
        n_in = len(_ids(keys, r"input_blocks\.(\d+)\."))
        ops = [i for i in range(n_in) if f"input_blocks.{i}.0.op.weight" in shapes]
        levels = len(ops) + 1
        per_level = (n_in - 1 - len(ops)) // levels
        firsts = [1 + lv * (per_level + 1) for lv in range(levels)]
        widths = [int(shapes[f"input_blocks.{i}.0.out_layers.3.weight"][0]) for i in firsts]
        depths = [len(_ids(keys, rf"input_blocks\.{i}\.1\.transformer_blocks\.(\d+)\.")) for i in firsts]
        attn = [d > 0 for d in depths]
        mid_depth = len(_ids(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\."))
        k2 = next(k for k in keys if k.endswith("attn2.to_k.weight"))
        context = int(shapes[k2][1])
        adm = int(shapes["label_emb.0.0.weight"][1])
        proj_in = next(k for k in keys if k.endswith(".proj_in.weight"))
        linear = len(shapes[proj_in]) == 2
    except (KeyError, StopIteration, ValueError) as e:
        raise BoLIDError(f"not an SDXL-layout UNet (cannot read {e} from its tensors)") from None
    if n_in != 1 + levels * per_level + len(ops) or mid_depth != depths[-1]:
        raise BoLIDError(f"not an SDXL-layout UNet: {n_in} input blocks, {levels} levels, mid depth {mid_depth}")
    if int(shapes["time_embed.0.weight"][0]) != 4 * widths[0]:
        raise BoLIDError("not an SDXL-layout UNet: time embedding width is not 4 x the first level's width")
    if any(a and w % head_dim for a, w in zip(attn, widths)):
        raise BoLIDError(f"UNet widths {widths} are not multiples of SDXL's head width {head_dim}")
    time_dim = SDXL_TIME_EMBED if pooled_dim is None else (adm - pooled_dim) // 6
    if time_dim <= 0 or (pooled_dim is not None and pooled_dim + 6 * time_dim != adm):
        raise BoLIDError(f"UNet conditioning width {adm} does not fit a pooled text embedding of {pooled_dim} plus six "
                         "size/crop embeddings (SDXL: 1280 + 6 x 256 = 2816)")
    return {
        "sample_size": 128,
        "in_channels": int(shapes["input_blocks.0.0.weight"][1]),
        "out_channels": int(shapes["out.2.weight"][0]),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "block_out_channels": widths,
        "layers_per_block": per_level,
        "transformer_layers_per_block": [max(d, 1) for d in depths],
        "attention_head_dim": [max(w // head_dim, 1) for w in widths],       # diffusers' legacy name: heads
        "cross_attention_dim": context,
        "use_linear_projection": linear,
        "norm_num_groups": 32,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": time_dim,
        "projection_class_embeddings_input_dim": adm,
    }


def vae_config(shapes: dict[str, tuple]) -> dict:
    """diffusers ``AutoencoderKL`` config of an LDM VAE (keys without ``first_stage_model.``); SDXL's scaling."""
    keys = list(shapes)
    try:
        levels = _ids(keys, r"encoder\.down\.(\d+)\.")
        per_level = len(_ids(keys, r"encoder\.down\.0\.block\.(\d+)\."))
        widths = [int(shapes[f"encoder.down.{i}.block.{per_level - 1}.conv2.weight"][0]) for i in levels]
        config = {
            "in_channels": int(shapes["encoder.conv_in.weight"][1]),
            "out_channels": int(shapes["decoder.conv_out.weight"][0]),
            "down_block_types": ["DownEncoderBlock2D"] * len(widths),
            "up_block_types": ["UpDecoderBlock2D"] * len(widths),
            "block_out_channels": widths,
            "layers_per_block": per_level,
            "latent_channels": int(shapes["decoder.conv_in.weight"][1]),
            "norm_num_groups": 32,
            "sample_size": 1024,
            "scaling_factor": SDXL_VAE_SCALING,
            "force_upcast": True,
        }
    except KeyError as e:
        raise BoLIDError(f"not an LDM VAE (missing {e})") from None
    return config


def clip_config(shapes: dict[str, tuple], prefix: str, open_clip: bool):
    """transformers ``CLIPTextConfig`` of CLIP-L (``text_model.*`` keys) or of OpenCLIP (bigG, ``transformer.*``)."""
    from transformers import CLIPTextConfig

    keys = list(shapes)
    try:
        if open_clip:
            vocab, hidden = shapes[prefix + "token_embedding.weight"]
            positions = shapes[prefix + "positional_embedding"][0]
            layers = len(_ids(keys, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\."))
            inter = shapes[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0]
            projection = shapes[prefix + "text_projection"][1]
        else:
            p = prefix + "text_model."
            vocab, hidden = shapes[p + "embeddings.token_embedding.weight"]
            positions = shapes[p + "embeddings.position_embedding.weight"][0]
            layers = len(_ids(keys, re.escape(p) + r"encoder\.layers\.(\d+)\."))
            inter = shapes[p + "encoder.layers.0.mlp.fc1.weight"][0]
            projection = hidden
    except KeyError as e:
        raise BoLIDError(f"text encoder tensors missing ({e})") from None
    # ids as in SDXL's diffusers configs: eos_token_id 2 selects the pooled token by argmax (the end token has the
    # highest id in CLIP's vocabulary), as ComfyUI does
    return CLIPTextConfig(vocab_size=int(vocab), hidden_size=int(hidden), intermediate_size=int(inter),
                          num_hidden_layers=layers, num_attention_heads=int(hidden) // CLIP_HEAD_DIM,
                          max_position_embeddings=int(positions), projection_dim=int(projection),
                          hidden_act="gelu" if open_clip else "quick_gelu", layer_norm_eps=1e-5,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1)


# --- building modules ----------------------------------------------------------------------------

def _fill(model: nn.Module, state: dict[str, torch.Tensor], what: str, name: str) -> nn.Module:
    """Load a converted state dict into ``model`` (parameters on the meta device) with every key accounted for."""
    expected = model.state_dict()
    if any(k.startswith("text_model.") for k in state) and not any(k.startswith("text_model.") for k in expected):
        state = {k.removeprefix("text_model."): v for k, v in state.items()}   # transformers' flattened CLIPTextModel
    state = {k: v for k, v in state.items() if k in expected or not k.endswith(("position_ids", "logit_scale"))}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BoLIDError(f"{name}: the {what} does not have the expected layout (missing {missing[:4]}"
                         f"{'...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                         f"{'...' if len(unexpected) > 4 else ''}); is it an SDXL base checkpoint?")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise BoLIDError(f"{name}: the {what}'s tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, expected "
                         f"{tuple(expected[bad[0]].shape)}")
    model.load_state_dict(state, strict=True, assign=True)
    for n, b in model.named_buffers():       # non-persistent buffers stay real under init_empty_weights
        if b.device.type == "meta":
            raise BoLIDError(f"{name}: {what} buffer {n} was not initialised")
    return model.eval().requires_grad_(False)


def _empty():
    from accelerate import init_empty_weights

    return init_empty_weights(include_buffers=False)


def _strip(d: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in d.items()}


def _convert_and_build(ck: Checkpoint, prefix: str, canonical: str, config: dict, convert, cls, what: str,
                       dtype: torch.dtype) -> nn.Module:
    """The ``prefix`` tensors as ``canonical`` keys (the prefix diffusers' converter reads), converted to diffusers'
    names and assigned to ``cls(**config)`` built on the meta device."""
    raw = ck.tensors(prefix, dtype)
    if prefix != canonical:
        raw = {canonical + k[len(prefix):]: v for k, v in raw.items()}
    state = convert(raw, config)
    del raw
    with _empty():
        model = cls(**config)
    return _fill(model, state, what, ck.path.name)


def _shapes(ck: Checkpoint, prefix: str) -> dict[str, tuple]:
    return {k[len(prefix):]: s for k, s in ck.shapes.items() if k.startswith(prefix)}


def build_unet(ck: Checkpoint, prefix: str = UNET_PREFIX, pooled_dim: int | None = None,
               dtype: torch.dtype = torch.float32, head_dim: int = SDXL_HEAD_DIM) -> nn.Module:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = unet_config(_shapes(ck, prefix), pooled_dim, head_dim)
    return _convert_and_build(ck, prefix, UNET_PREFIX, config, convert_ldm_unet_checkpoint, UNet2DConditionModel,
                              "UNet", dtype)


def build_vae(ck: Checkpoint, dtype: torch.dtype = torch.float32, prefix: str = VAE_PREFIX) -> nn.Module:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    return _convert_and_build(ck, prefix, VAE_PREFIX, vae_config(_shapes(ck, prefix)), convert_ldm_vae_checkpoint,
                              AutoencoderKL, "VAE", dtype)


def build_text_encoders(ck: Checkpoint, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, nn.Module]:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cfg_l = clip_config(ck.shapes, CLIP_L_PREFIX, open_clip=False)
    with _empty():
        te1 = CLIPTextModel(cfg_l)
    te1 = _fill(te1, convert_ldm_clip_checkpoint(ck.tensors(CLIP_L_PREFIX, dtype)), "CLIP-L text encoder", ck.path.name)
    cfg_g = clip_config(ck.shapes, CLIP_G_PREFIX, open_clip=True)
    with _empty():
        te2 = CLIPTextModelWithProjection(cfg_g)
    state = convert_open_clip_checkpoint(te2, ck.tensors(CLIP_G_PREFIX, dtype), prefix=CLIP_G_PREFIX)
    te2 = _fill(te2, state, "OpenCLIP-bigG text encoder", ck.path.name)
    return te1, te2


# --- tokenizers ----------------------------------------------------------------------------------

def _tokenizer_dir(folder: Path) -> Path | None:
    for cand in (folder, folder / "comfy" / "sd1_tokenizer", folder / "tokenizer"):
        if all((cand / f).is_file() for f in TOKENIZER_FILES):
            return cand
    return None


def find_tokenizer(checkpoint: str | Path, tokenizer: str | None = None) -> Path:
    """The folder with CLIP's ``vocab.json`` and ``merges.txt``: ``tokenizer`` when given, else ComfyUI's
    ``comfy/sd1_tokenizer`` found by walking up from the checkpoint (…/ComfyUI/models/checkpoints/x.safetensors)."""
    if tokenizer:
        t = Path(tokenizer).expanduser()
        found = _tokenizer_dir(t) if t.is_dir() else None
        if found is None:
            raise BoLIDError(f"tokenizer {tokenizer!r} is not a local folder with {' and '.join(TOKENIZER_FILES)} "
                             f"(nor a ComfyUI folder with comfy/sd1_tokenizer/): {TOKENIZER_HELP}")
        return found
    p = Path(checkpoint).expanduser().absolute()
    seen = []
    for start in (p, p.resolve()):
        for parent in start.parents:
            if parent in seen:
                continue
            seen.append(parent)
            cand = parent / "comfy" / "sd1_tokenizer"
            if all((cand / f).is_file() for f in TOKENIZER_FILES):
                return cand
    raise BoLIDError(f"no CLIP tokenizer found for {p.name}: a single-file checkpoint holds none, and no ComfyUI "
                     f"folder (with comfy/sd1_tokenizer/vocab.json) lies above {p.parent}; {TOKENIZER_HELP}")


def load_tokenizers(folder: str | Path):
    """SDXL's two tokenizers from one CLIP BPE folder: the first pads with the end token, the second with "!"
    (id 0), as diffusers' SDXL tokenizer_2 and ComfyUI's SDXLClipGTokenizer (pad_with_end=False) do."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = [ln for ln in (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
              if ln.strip() and not ln.startswith("#version")]
    merges = [tuple(ln.split()) for ln in merges]
    for tok in ("<|startoftext|>", "<|endoftext|>", "!"):
        if tok not in vocab:
            raise BoLIDError(f"{folder}/vocab.json is not CLIP's vocabulary (no {tok!r})")

    def make(pad):
        return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad, model_max_length=77)

    return make("<|endoftext|>"), make("!")


# --- everything ----------------------------------------------------------------------------------

@dataclass
class SDXLSingleFile:
    unet: nn.Module | None
    vae: nn.Module | None
    text_encoder_1: nn.Module
    text_encoder_2: nn.Module
    tokenizer_1: object
    tokenizer_2: object
    prediction_type: str


def load_sdxl_checkpoint(path: str | Path, tokenizer: str | None = None, *, unet: bool = True, vae: bool = True,
                         dtype: torch.dtype = torch.float32) -> SDXLSingleFile:
    """UNet, VAE, both text encoders and both tokenizers of an SDXL base single-file checkpoint (``unet=False`` /
    ``vae=False`` skip those when the config gives them separately)."""
    ck = Checkpoint(path)
    check_sdxl(ck)
    tok_dir = find_tokenizer(ck.path, tokenizer)      # before the slow part: a missing tokenizer fails at once
    tok1, tok2 = load_tokenizers(tok_dir)
    if len(tok1) > _clip_vocab(ck):
        raise BoLIDError(f"the tokenizer in {tok_dir} has {len(tok1)} tokens but the checkpoint's text encoders "
                         f"{_clip_vocab(ck)}; {TOKENIZER_HELP}")
    te1, te2 = build_text_encoders(ck, dtype)
    pooled = int(te2.config.projection_dim)
    return SDXLSingleFile(
        unet=build_unet(ck, pooled_dim=pooled, dtype=dtype) if unet else None,
        vae=build_vae(ck, dtype) if vae else None,
        text_encoder_1=te1, text_encoder_2=te2, tokenizer_1=tok1, tokenizer_2=tok2,
        prediction_type="v_prediction" if "v_pred" in ck.shapes else "epsilon")


def _clip_vocab(ck: Checkpoint) -> int:
    return int(ck.shapes[CLIP_L_PREFIX + "text_model.embeddings.token_embedding.weight"][0])


def load_unet_file(path: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module | None:
    """An SDXL-layout UNet from a ``.safetensors`` file in LDM layout: a full checkpoint (``model.diffusion_model.*``)
    or a UNet-only file as in ComfyUI's ``models/unet`` (``input_blocks.*``). None when the file has another layout
    (e.g. diffusers' key names)."""
    ck = Checkpoint(path)
    if ck.has(UNET_PREFIX):
        pooled = None
        if CLIP_G_PREFIX + "text_projection" in ck.shapes:
            pooled = int(ck.shapes[CLIP_G_PREFIX + "text_projection"][1])
        return build_unet(ck, UNET_PREFIX, pooled, dtype)
    if "input_blocks.0.0.weight" in ck.shapes:
        return build_unet(ck, "", None, dtype)
    return None


def load_vae_file(path: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """An LDM-layout VAE from a ``.safetensors`` file: ComfyUI's ``models/vae`` (``encoder.*``, ``decoder.*``) or
    the VAE of a full checkpoint (``first_stage_model.*``)."""
    ck = Checkpoint(path)
    if ck.has(VAE_PREFIX + "decoder."):
        return build_vae(ck, dtype)
    if "decoder.conv_in.weight" in ck.shapes and "encoder.down.0.block.0.conv1.weight" in ck.shapes:
        return build_vae(ck, dtype, prefix="")
    raise BoLIDError(f"{ck.path.name} is not a VAE in LDM layout (encoder.down.*, decoder.up.*): give an SDXL VAE "
                     ".safetensors as ComfyUI's models/vae holds, or a diffusers VAE folder")
