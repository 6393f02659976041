"""Which folder each loader's file goes in, and where users get the files the example workflows name.

Two tables, kept apart on purpose:

* ``LOADER_FOLDERS``: (node type, input name) -> ComfyUI folder key (``folder_paths`` name), for the
  core loaders and this pack's loaders. The BoLID keys are the ones ``nodes/_comfy.py`` registers
  ("bolid" = models/bolid, "bolid_bodies" = models/bolid/bodies, "ultralytics" = models/ultralytics).
* ``KNOWN_FILES``: file name -> where to download it (or how to make it) and its size, for the
  missing-models checklist and the README's model table.

Facts about public files (repositories, sizes) are as of late 2025; sizes are approximate.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- folders -----------------------------------------------------------------------------------

LOADER_FOLDERS: dict[tuple[str, str], str] = {
    # ComfyUI core
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "config_name"): "configs",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("unCLIPCheckpointLoader", "ckpt_name"): "checkpoints",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("GLIGENLoader", "gligen_name"): "gligen",
    ("HypernetworkLoader", "hypernetwork_name"): "hypernetworks",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
    ("LoadImage", "image"): "input",
    ("LoadImageMask", "image"): "input",
    # folders of photos inside ComfyUI/input (the value names a sub-folder, not a file)
    ("BoLIDLoadPhotos", "folder"): "input",
    ("BoLIDBodyIDFromFolder", "folder"): "input",
    ("LoadImageSetFromFolderNode", "folder"): "input",
    ("LoadImageDataSetFromFolder", "folder"): "input",
    # IPAdapter_plus (cubiq/ComfyUI_IPAdapter_plus), for the stacking example
    ("IPAdapterModelLoader", "ipadapter_file"): "ipadapter",
    # this pack (nodes/*.py; folder keys from nodes/_comfy.py)
    ("BoLIDPoseModelLoader", "model_name"): "ultralytics",
    ("BoLIDAdapterLoader", "adapter_name"): "bolid",
    ("BoLIDBodyVAELoader", "vae_name"): "bolid",
    ("BoLIDLoadBody", "body_name"): "bolid_bodies",
}

# Where a folder key lives under ComfyUI/ by default (for messages when the server cannot say).
DEFAULT_FOLDER_PATHS: dict[str, str] = {
    "checkpoints": "models/checkpoints", "configs": "models/configs", "vae": "models/vae", "loras": "models/loras",
    "text_encoders": "models/text_encoders", "diffusion_models": "models/diffusion_models",
    "clip_vision": "models/clip_vision", "controlnet": "models/controlnet", "style_models": "models/style_models",
    "gligen": "models/gligen", "hypernetworks": "models/hypernetworks", "upscale_models": "models/upscale_models",
    "photomaker": "models/photomaker", "ipadapter": "models/ipadapter", "input": "input",
    "ultralytics": "models/ultralytics", "bolid": "models/bolid", "bolid_bodies": "models/bolid/bodies",
}


# Loaders whose one combo lists files of several folders, telling them apart by a prefix on the value
# (nodes/adapter.py: "[ipadapter] name" is models/ipadapter/name).
PREFIXED_FOLDERS: dict[tuple[str, str], dict[str, str]] = {
    ("BoLIDAdapterLoader", "adapter_name"): {"[ipadapter] ": "ipadapter"},
}


def folder_for_input(node_type: str, input_name: str) -> str | None:
    """ComfyUI folder key of a loader input, or None when the input does not name a model file."""
    return LOADER_FOLDERS.get((node_type, input_name))


def resolve_file(node_type: str, input_name: str, value: str) -> tuple[str, str] | None:
    """``(folder key, file name inside it)`` of a loader input's value, None when not a known loader input."""
    for prefix, folder in PREFIXED_FOLDERS.get((node_type, input_name), {}).items():
        if value.startswith(prefix):
            return folder, value[len(prefix):]
    folder = folder_for_input(node_type, input_name)
    return None if folder is None else (folder, value)


# --- files -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelFile:
    """A file users can get: ``source`` says where (a repository and path, or a command), ``size`` is
    approximate and human readable."""

    name: str
    folder: str
    source: str
    size: str
    note: str = ""


_TRAIN = "no public weights yet: train your own with `python -m bolid_lib.training {}` (see the README)"

KNOWN_FILES: dict[str, ModelFile] = {f.name: f for f in (
    ModelFile("sd_xl_base_1.0.safetensors", "checkpoints",
              "Hugging Face stabilityai/stable-diffusion-xl-base-1.0 (file sd_xl_base_1.0.safetensors)", "6.9 GB",
              "SDXL base; BoLID adapters are trained for SDXL, not SD1.5"),
    ModelFile("sdxl_lightning_4step.safetensors", "checkpoints",
              "Hugging Face ByteDance/SDXL-Lightning (file sdxl_lightning_4step.safetensors)", "6.9 GB",
              "4 steps, sampler euler, scheduler sgm_uniform, CFG 1"),
    ModelFile("sdxl_lightning_4step_lora.safetensors", "loras",
              "Hugging Face ByteDance/SDXL-Lightning (file sdxl_lightning_4step_lora.safetensors)", "0.4 GB",
              "LoRA form of SDXL-Lightning 4-step, for use over sd_xl_base_1.0"),
    ModelFile("clip_vision_h.safetensors", "clip_vision",
              "Hugging Face Comfy-Org/Wan_2.1_ComfyUI_repackaged (split_files/clip_vision/clip_vision_h.safetensors); "
              "ComfyUI-Manager: 'CLIPVision model (IP-Adapter) CLIP-ViT-H-14-laion2B-s32B-b79K'", "1.3-2.5 GB",
              "the OpenCLIP ViT-H/14 image encoder (1024-dim embeds); not the bigG one"),
    ModelFile("CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "clip_vision",
              "Hugging Face h94/IP-Adapter (models/image_encoder/model.safetensors, renamed); or ComfyUI-Manager "
              "> Model Manager > 'CLIPVision model (IP-Adapter) CLIP-ViT-H-14-laion2B-s32B-b79K'", "2.5 GB",
              "the same ViT-H/14 image encoder as clip_vision_h.safetensors"),
    ModelFile("yolo11n-pose.pt", "ultralytics",
              "GitHub ultralytics/assets releases (v8.3.0/yolo11n-pose.pt); put it in models/ultralytics/pose/",
              "6 MB", "COCO-17 keypoint pose model (AGPL-3.0, Ultralytics)"),
    ModelFile("ip-adapter_sdxl_vit-h.safetensors", "ipadapter",
              "Hugging Face h94/IP-Adapter (sdxl_models/ip-adapter_sdxl_vit-h.safetensors)", "0.7 GB",
              "for the IPAdapter_plus stacking example; needs the ViT-H CLIP vision model"),
    ModelFile("bolid_adapter_sdxl.safetensors", "bolid", _TRAIN.format("adapter"), "~0.1-0.4 GB",
              "the BoLID adapter (body + image branches) for SDXL"),
    ModelFile("bolid_body_vae.safetensors", "bolid", _TRAIN.format("body-vae"), "~10-50 MB",
              "the Body-ID VAE that turns pose-weighted features into a body embedding"),
)}


def describe_file(name: str) -> ModelFile | None:
    """What the catalogue knows about a file name (also when it sits in a sub-folder, e.g. pose/x.pt)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return KNOWN_FILES.get(name) or KNOWN_FILES.get(base)


def where_to_get(name: str, folder: str | None) -> str:
    """One line for the checklist: the known source, or a hint by folder when the file is unknown."""
    known = describe_file(name)
    if known is not None:
        return f"{known.source} ({known.size})"
    if folder == "bolid":
        return "a BoLID file: " + _TRAIN.format("adapter|body-vae")
    if folder == "ultralytics":
        pose = KNOWN_FILES["yolo11n-pose.pt"]
        return f"an ultralytics YOLO pose model (17 COCO keypoints), e.g. yolo11n-pose.pt: {pose.source} ({pose.size})"
    if folder == "ipadapter":
        ip = KNOWN_FILES["ip-adapter_sdxl_vit-h.safetensors"]
        return f"an IP-Adapter SDXL .safetensors, e.g. ip-adapter_sdxl_vit-h.safetensors: {ip.source} ({ip.size})"
    if folder == "bolid_bodies":
        return "a saved Body-ID: build it with the example workflow bolid_build_body_id.json"
    if folder == "input":
        if "." not in name.replace("\\", "/").rsplit("/", 1)[-1]:
            return "your own photos: make this folder inside ComfyUI's input folder and copy photos of one person into it"
        return "your own image: copy it into ComfyUI's input folder (or upload it in the Load Image node)"
    return "not in this pack's catalogue: see where the workflow's author got it"


__all__ = ["LOADER_FOLDERS", "PREFIXED_FOLDERS", "DEFAULT_FOLDER_PATHS", "KNOWN_FILES", "ModelFile",
           "folder_for_input", "resolve_file",
           "describe_file", "where_to_get"]
