"""Gaussian keypoint weighting node (paper 4.1, eq. 11-13), with previews and data for the live preview in js/."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from ..bolid_lib.method import weighting as wt
from ..bolid_lib.method.body_id import SIGMA_MODES, recipe_of
from ..bolid_lib.method.keypoints import PoseBatch
from ._comfy import CATEGORY, BodyVAE, Pose, PoseKeypoint, bchw_to_image, image_to_bchw, progress_callback, tag_weighting
from .pose import MAX_PREVIEWS, preview_ui, save_temp_images

# The browser recomputes the weighting on small copies of the first images (js/bolid_weighting.js).
LIVE_IMAGES = 4
LIVE_LONG_SIDE = 384


def live_preview_data(images: torch.Tensor, pose: PoseBatch, sigma: float, sigma_mode: str, alpha: float) -> dict:
    """What js/bolid_weighting.js needs to redraw I_w when sigma or alpha move, without running the graph.

    images (B, 3, H, W): small copies of the first LIVE_IMAGES are saved to the temp folder; keypoints stay in
    the original pixels and the browser evaluates eq. 11-13 at its preview pixels mapped back to them.
    """
    src = images[:LIVE_IMAGES]
    h, w = src.shape[2:]
    scale = min(1.0, LIVE_LONG_SIDE / max(h, w))
    small = F.interpolate(src, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area") if scale < 1 else src
    return {
        "sources": save_temp_images(bchw_to_image(small), "bolid_weighting_src"),
        "keypoints": [[[round(float(v), 3) for v in p] for p in kp] for kp in pose.keypoints[: len(src)].tolist()],
        "image_size": [int(h), int(w)],
        "preview_size": [int(small.shape[2]), int(small.shape[3])],
        "sigma": float(sigma),
        "sigma_mode": sigma_mode,
        "alpha": float(alpha),
        "min_sigma_px": wt.MIN_SIGMA_PX,
        "widgets": {"sigma": "sigma", "sigma_mode": "sigma_mode", "alpha": "alpha"},
    }


class BoLIDGaussianWeighting(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDGaussianWeighting",
            display_name="BoLID Gaussian Weighting",
            category=CATEGORY,
            description=(
                "Weights each photo by Gaussian blobs around the visible body keypoints (paper eq. 11-13): "
                "I_w = I * (alpha + (1 - alpha) * W_norm). Takes the pose from BoLID Pose Keypoints or an OpenPose "
                "POSE_KEYPOINT (e.g. DWPose); connect exactly one. Once it has run, dragging sigma or alpha "
                "redraws the preview in the browser without running the graph."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The photos the pose belongs to."),
                Pose.Input("pose", optional=True,
                           tooltip="Keypoints from BoLID Pose Keypoints (connect this or pose_keypoint)."),
                PoseKeypoint.Input("pose_keypoint", optional=True,
                                   tooltip="OpenPose-18 POSE_KEYPOINT, e.g. from DWPose (connect this or pose). "
                                           "Pixel or normalised coordinates; the first person of each image."),
                io.Float.Input("sigma", default=wt.DEFAULT_SIGMA, min=0.0, max=4096.0, step=0.005, round=0.0001,
                               tooltip="Radius of each keypoint's Gaussian (eq. 11). relative: a fraction of the "
                                       "image's short side (0.1 = 10%), the same look at any resolution; pixels: "
                                       "in pixels. 0 leaves only the keypoint pixels."),
                io.Combo.Input("sigma_mode", options=list(SIGMA_MODES), default=wt.DEFAULT_SIGMA_MODE,
                               tooltip="How sigma is measured: relative to the short side (default) or in pixels."),
                io.Float.Input("alpha", default=wt.DEFAULT_ALPHA, min=0.0, max=1.0, step=0.01,
                               tooltip="Background weight: 0 keeps only the body blobs, 1 leaves the photo unchanged."),
                BodyVAE.Input("body_vae", optional=True,
                              tooltip="Optional: the Body-ID VAE these photos are for. Connected, sigma, sigma_mode "
                                      "and alpha are the ones it was trained with (recorded in its file), so the "
                                      "Body-ID is the one the VAE expects; leave it out to use the settings above."),
            ],
            outputs=[
                io.Image.Output(display_name="weighted", tooltip="I_w: the photos weighted around the keypoints."),
                io.Mask.Output(display_name="weight_map", tooltip="W_norm (B, H, W) in [0, 1]; 0 where no keypoint is visible."),
                io.Image.Output(display_name="heatmap", tooltip="The photos with W_norm as a colour map over them."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image, sigma, sigma_mode, alpha, pose=None, pose_keypoint=None, body_vae=None) -> io.NodeOutput:
        if body_vae is not None:
            recipe = recipe_of(body_vae)
            sigma, sigma_mode, alpha = recipe.sigma, recipe.sigma_mode, recipe.alpha
        images = image_to_bchw(image)                                             # (B, 3, H, W)
        b, _, h, w = images.shape
        pose = wt.resolve_pose(pose, pose_keypoint, (h, w), b)
        weighted, w_norm = wt.apply_weighting(images, pose.keypoints, sigma, alpha, sigma_mode,
                                              batch_size=16, progress=progress_callback(b))
        heat = bchw_to_image(wt.heatmap_overlay(images[:MAX_PREVIEWS], w_norm[:MAX_PREVIEWS]))
        weighted_image = tag_weighting(bchw_to_image(weighted), sigma=sigma, sigma_mode=sigma_mode, alpha=alpha)
        shown = preview_ui(torch.cat([weighted_image[:MAX_PREVIEWS], heat]), cls)
        ui_data = shown | {"bolid_weighting": [live_preview_data(images, pose, sigma, sigma_mode, alpha)]}
        full_heat = heat if b <= MAX_PREVIEWS else bchw_to_image(wt.heatmap_overlay(images, w_norm))
        return io.NodeOutput(weighted_image, w_norm, full_heat, ui=ui_data)


NODES = [BoLIDGaussianWeighting]
