"""Test-only ComfyUI nodes for the reliability tier: sources of tiny models and odd tensors, and a sink.

Never shipped with the pack. The catalogue registers them in the in-process ComfyUI's
``nodes.NODE_CLASS_MAPPINGS`` for the duration of its tests; the soak test loads this file as a second
custom-node package of the temporary server. Every class name starts with ``TestOnlyBoLID`` so a stray one is
obvious in a workflow.

Why they exist: a full-size SDXL checkpoint is 6.9 GB and peaks near 19 GiB when loaded, far too heavy to run
dozens of times; a reduced-width SDXL UNet of the real 70-site layout (``hostlib.build_sdxl_model``) goes in as a
MODEL through a node instead. LoadImage always gives 3-channel images, so 1-channel and empty batches come from
a node too.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

# Models built once per process; the in-process catalogue replaces SDXL with the session fixture.
_CACHE: dict = {}


def shallow_clip_vision_config(kind: str) -> str:
    """A CLIP vision JSON config with the real widths of ViT-H / ViT-bigG but 3 layers (cheap, same feature dims)."""
    import comfy.clip_vision

    src = {"h": "clip_vision_config_h.json", "bigg": "clip_vision_config_g.json"}[kind]
    with open(os.path.join(os.path.dirname(comfy.clip_vision.__file__), src)) as f:
        cfg = json.load(f)
    cfg["num_hidden_layers"] = 3
    cfg["intermediate_size"] = 256
    path = os.path.join(tempfile.gettempdir(), f"bolid_testonly_clip_vision_{kind}_{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def build_clip_vision(kind: str):
    import comfy.clip_vision
    import hostlib

    cv = comfy.clip_vision.ClipVisionModel(shallow_clip_vision_config(kind))
    hostlib.fill_random_(cv.model, seed=1)
    return cv


def sd15_unet_config(model_channels: int = 32) -> dict:
    """SD1.5's unet_config (comfy/model_detection.py) with a reduced width: context 768, 16 attn2 sites."""
    import torch

    return {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "dtype": torch.float32, "in_channels": 4,
            "model_channels": model_channels, "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
            "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
            "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            "use_temporal_attention": False, "use_temporal_resblock": False}


def build_sd15_model(seed: int = 0):
    """A ModelPatcher around a real ComfyUI SD1.5 BaseModel of reduced width, random weights, on CPU."""
    import torch
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models
    import hostlib

    mc = comfy.supported_models.SD15(sd15_unet_config())
    mc.unet_config["num_heads"] = 8
    mc.unet_config["num_head_channels"] = -1
    mc.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.BaseModel(mc, device=torch.device("cpu"))
    hostlib.fill_random_(model.diffusion_model, seed=seed)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def sdxl_model():
    if "sdxl" not in _CACHE:
        import hostlib

        _CACHE["sdxl"] = hostlib.build_sdxl_model(model_channels=32, head_channels=8, seed=0)
    return _CACHE["sdxl"]


class TestOnlyBoLIDSDXLModel:
    """A reduced-width SDXL-layout MODEL (the 70 real attn2 sites), random weights."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "run"
    CATEGORY = "testing/bolid"

    def run(self):
        return (sdxl_model(),)


class TestOnlyBoLIDSD15Model:
    """A reduced-width SD1.5-layout MODEL (context 768): what BoLID Apply must refuse."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "run"
    CATEGORY = "testing/bolid"

    def run(self):
        if "sd15" not in _CACHE:
            _CACHE["sd15"] = build_sd15_model()
        return (_CACHE["sd15"],)


class TestOnlyBoLIDClipVision:
    """A 3-layer CLIP vision model with the feature widths of ViT-H (1024 / 1280) or ViT-bigG (1280 / 1664)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (["h", "bigg"],)}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "run"
    CATEGORY = "testing/bolid"

    def run(self, kind):
        key = f"clip_{kind}"
        if key not in _CACHE:
            _CACHE[key] = build_clip_vision(kind)
        return (_CACHE[key],)


class TestOnlyBoLIDConditioning:
    """SDXL conditioning (positive, negative) of a few tokens for a 64x64 image."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    FUNCTION = "run"
    CATEGORY = "testing/bolid"

    def run(self, seed):
        import hostlib

        return hostlib.sdxl_conditioning(seed=seed, width=64, height=64, tokens=2)


class TestOnlyBoLIDImageChannels:
    """An IMAGE with 1 (grey), 3 or 4 (RGBA) channels, or an empty batch (batch = 0)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "channels": ("INT", {"default": 3, "min": 1, "max": 4}),
                             "batch": ("INT", {"default": -1, "min": -1, "max": 64})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "testing/bolid"

    def run(self, image, channels, batch):
        import torch

        if channels == 1:
            image = image[..., :3].mean(dim=-1, keepdim=True)
        elif channels == 4:
            image = torch.cat([image[..., :3], torch.ones_like(image[..., :1])], dim=-1)
        elif channels == 2:
            image = image[..., :2]
        if batch >= 0:
            image = image[:batch]
        return (image,)


class TestOnlyBoLIDPoseKeypointJSON:
    """A POSE_KEYPOINT (controlnet_aux format) from a JSON string, e.g. with keypoints outside the image."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pose_json": ("STRING", {"default": "[]", "multiline": True})}}

    RETURN_TYPES = ("POSE_KEYPOINT",)
    FUNCTION = "run"
    CATEGORY = "testing/bolid"

    def run(self, pose_json):
        return (json.loads(pose_json),)


class TestOnlyBoLIDLatentStats:
    """Sink: shows the shape of a LATENT and whether it is finite (so a sampler runs without a VAE)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing/bolid"

    def run(self, samples):
        import torch

        x = samples["samples"]
        return {"ui": {"text": [json.dumps({"shape": list(x.shape), "finite": bool(torch.isfinite(x).all()),
                                            "mean": float(x.float().mean())})]}}


def combo_probe_node():
    """A V3 node with one combo (options "a", "b"), for asking a host whether it checks V3 combo values itself.

    Built on demand (the V3 API is imported inside a booted ComfyUI only); not in NODE_CLASS_MAPPINGS.
    """
    from comfy_api.latest import io

    class TestOnlyBoLIDComboProbe(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(node_id="TestOnlyBoLIDComboProbe", category="testing/bolid",
                             inputs=[io.Combo.Input("choice", options=["a", "b"], tooltip="a or b")],
                             outputs=[io.String.Output()])

        @classmethod
        def execute(cls, choice) -> io.NodeOutput:
            return io.NodeOutput(choice)

    return TestOnlyBoLIDComboProbe


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (
    TestOnlyBoLIDSDXLModel, TestOnlyBoLIDSD15Model, TestOnlyBoLIDClipVision, TestOnlyBoLIDConditioning,
    TestOnlyBoLIDImageChannels, TestOnlyBoLIDPoseKeypointJSON, TestOnlyBoLIDLatentStats)}
NODE_DISPLAY_NAME_MAPPINGS = {k: k for k in NODE_CLASS_MAPPINGS}
