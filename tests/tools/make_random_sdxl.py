"""Write a full-size SDXL checkpoint with random weights that ComfyUI's CheckpointLoaderSimple detects as SDXL.

    COMFYUI_PATH=/work/ComfyUI python tests/tools/make_random_sdxl.py OUT.safetensors [--seed 0]

UNet (SDXL widths and depths: detection needs model_channels 320, context 2048, adm 2816), both CLIP text
encoders (L and bigG) and the SDXL VAE, all built from ComfyUI's own configs, filled with small random
numbers (ComfyUI's layers skip initialisation), keys laid out by ``state_dict_for_saving`` as
CheckpointSave writes them, stored in float16 (about 6.9 GB). The file is written tensor by tensor, so
the process peaks near the model's own size (~7 GiB) instead of twice it. Takes a few minutes on 2 cores.
Keep the file outside the repository (the host tests use /work/cache/ by default).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

DTYPES = {"float16": "F16", "float32": "F32", "bfloat16": "BF16", "int64": "I64", "int32": "I32"}


def write_safetensors_streaming(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """The safetensors layout (8-byte header length, JSON header, raw little-endian data), one tensor at a
    time, so that no second copy of the whole state dict is made."""
    import torch

    header, offset, order = {}, 0, sorted(tensors)
    for k in order:
        t = tensors[k]
        n = t.numel() * t.element_size()
        header[k] = {"dtype": DTYPES[str(t.dtype).replace("torch.", "")], "shape": list(t.shape),
                     "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for k in order:
            t = tensors[k].detach().contiguous().cpu()
            f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    os.replace(tmp, path)


def build_state_dict(seed: int = 0) -> dict:
    import hostlib

    root, why = hostlib.find_comfyui()
    if root is None:
        raise SystemExit(why)
    sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = True
    import torch
    import comfy.ldm.models.autoencoder
    import comfy.model_base
    import comfy.sd
    import comfy.supported_models

    cfg = hostlib.sdxl_unet_config(model_channels=320, head_channels=64)
    cfg["dtype"] = torch.float16
    mc = comfy.supported_models.SDXL(cfg)
    mc.unet_config["num_head_channels"] = 64
    mc.set_inference_dtype(torch.float16, None)
    model = comfy.model_base.SDXL(mc, device=torch.device("cpu"))
    hostlib.fill_random_(model.diffusion_model, seed=seed)

    clip = comfy.sd.CLIP(mc.clip_target(), model_options={"dtype": torch.float16})
    hostlib.fill_random_(clip.cond_stage_model, seed=seed + 1)

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    hostlib.fill_random_(vae, seed=seed + 2)

    sd = model.state_dict_for_saving(clip.get_sd(), vae.state_dict(), None)
    return {k: (v.to(torch.float16) if v.is_floating_point() else v) for k, v in sd.items()}


def check_detected_as_sdxl(path: Path) -> str:
    """Detect the model type from the file's keys and shapes as CheckpointLoaderSimple does (no weights read)."""
    import torch
    from safetensors import safe_open

    import comfy.model_detection

    with safe_open(str(path), "pt") as f:
        meta = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    mc = comfy.model_detection.model_config_from_unet(meta, "model.diffusion_model.")
    return type(mc).__name__ if mc is not None else "None"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    sd = build_state_dict(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors_streaming(sd, args.out, {"bolid.note": "random weights, for tests only"})
    del sd
    kind = check_detected_as_sdxl(args.out)
    size = args.out.stat().st_size / 1e9
    print(f"wrote {args.out} ({size:.2f} GB) in {time.monotonic() - t0:.0f} s; ComfyUI detects it as {kind}")
    return 0 if kind == "SDXL" else 1


if __name__ == "__main__":
    raise SystemExit(main())
