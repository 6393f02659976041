"""Pose nodes: load a YOLO pose model, find one person's 17 COCO keypoints per image (paper 4.2)."""

from __future__ import annotations

import random
import string

import torch
from comfy_api.latest import io, ui

from ..bolid_lib.method.body_id import DEFAULT_RECIPE, recipe_of
from ..bolid_lib.method.keypoints import COCO_KEYPOINTS, COCO_SKELETON, PoseBatch, pose_batch_to_pose_keypoint
from ..bolid_lib.method.pose import ON_MISSING, PERSON_POLICIES
from ._comfy import (
    CATEGORY, FOLDER_POSE, BodyVAE, Pose, PoseKeypoint, PoseModel, bchw_to_image, check_model_choice, image_to_bchw,
    list_models, model_path, progress_callback,
)

# Images shown as previews on a node (a batch of 100 photos still runs; only the first ones are shown).
MAX_PREVIEWS = 16
PERSON_CHOICES = [*PERSON_POLICIES, "by_index"]       # the library's policies, and an index into the detections


def preview_ui(images_bhwc: torch.Tensor, cls) -> dict:
    """Save up to MAX_PREVIEWS images to ComfyUI's temp folder; the ``ui`` dict that shows them on the node."""
    return ui.PreviewImage(images_bhwc[:MAX_PREVIEWS], cls=cls).as_dict()


def save_temp_images(images_bhwc: torch.Tensor, prefix: str) -> list[dict]:
    """Save images to the temp folder (not shown as node previews); [{filename, subfolder, type}] for /view."""
    tag = "".join(random.choice(string.ascii_lowercase) for _ in range(6))
    return ui.ImageSaveHelper.save_images(
        images_bhwc, filename_prefix=f"{prefix}_{tag}", folder_type=io.FolderType.temp, cls=None, compress_level=1,
    )


def pose_ui_data(pose: PoseBatch) -> dict:
    """What js/bolid_pose.js needs to draw the keypoints: plain JSON."""
    return {
        "keypoints": [[[round(float(v), 2) for v in p] for p in kp] for kp in pose.keypoints.tolist()],
        "found": [bool(f) for f in pose.found.tolist()],
        "image_size": [int(pose.image_size[0]), int(pose.image_size[1])],
        "skeleton": [list(pair) for pair in COCO_SKELETON],
        "names": list(COCO_KEYPOINTS),
    }


class BoLIDPoseModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDPoseModelLoader",
            display_name="BoLID Pose Model Loader",
            category=CATEGORY,
            description=(
                "Loads an ultralytics YOLO pose model (.pt, e.g. yolo11n-pose.pt) from models/ultralytics/ or its "
                "pose/ subfolder. BoLID needs the 17 COCO body keypoints: detection, segmentation and "
                "classification models are refused."
            ),
            inputs=[
                io.Combo.Input(
                    "model_name", options=list_models(FOLDER_POSE),
                    tooltip="A YOLO pose model file under models/ultralytics/ (for example pose/yolo11n-pose.pt).",
                ),
            ],
            outputs=[PoseModel.Output(display_name="pose_model", tooltip="The loaded YOLO pose model, on ComfyUI's device.")],
        )

    @classmethod
    def validate_inputs(cls, model_name=None) -> bool | str:
        # Naming the combo here makes the host skip its own "Value not in list" for it: the user learns the fix.
        return check_model_choice(FOLDER_POSE, model_name, list_models(FOLDER_POSE))

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        import comfy.model_management

        from ..bolid_lib.method.pose import PoseModel as Model

        model = Model.load(model_path(FOLDER_POSE, model_name), device=comfy.model_management.get_torch_device())
        return io.NodeOutput(model)


class BoLIDPoseKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDPoseKeypoints",
            display_name="BoLID Pose Keypoints",
            category=CATEGORY,
            description=(
                "Finds one person's 17 COCO body keypoints in each image with a YOLO pose model (paper 4.2). "
                "Keypoints under the visibility threshold are zeroed. An image without a person either stops "
                "the run with its index or is skipped (found = 0), so one bad photo does not stop a batch. "
                f"Shows the first {MAX_PREVIEWS} images with their skeletons."
            ),
            inputs=[
                io.Image.Input("image", tooltip="Photos of the person, a batch of any size."),
                PoseModel.Input("pose_model", tooltip="A YOLO pose model from BoLID Pose Model Loader."),
                io.Float.Input("conf", default=DEFAULT_RECIPE.conf, min=0.0, max=1.0, step=0.01,
                               tooltip="Detection confidence threshold: people scored lower are ignored. Not used "
                                       "when body_vae is connected (the VAE's own threshold is)."),
                io.Float.Input("visibility", default=DEFAULT_RECIPE.visibility, min=0.0, max=1.0, step=0.01,
                               tooltip="Keypoints whose confidence is below this are treated as not visible and zeroed. "
                                       "Not used when body_vae is connected (the VAE's own threshold is)."),
                io.Combo.Input("person", options=PERSON_CHOICES, default="largest",
                               tooltip="Which person to keep when several are found: the largest box, the most "
                                       "confident detection, or the one at person_index (by detection score)."),
                io.Int.Input("person_index", default=0, min=0, max=99,
                             tooltip="With person = by_index: 0 is the most confident detection, 1 the next, ..."),
                io.Combo.Input("on_missing", options=list(ON_MISSING), default="skip",
                               tooltip="No person in an image: skip it (found = 0, zero keypoints; the Body-ID "
                                       "ignores it) or stop with an error naming the image index."),
                BodyVAE.Input("body_vae", optional=True,
                              tooltip="Optional: the Body-ID VAE these poses are for. Connected, conf and visibility "
                                      "are the ones it was trained with (recorded in its file), so the Body-ID is the "
                                      "one the VAE expects; leave it out to use the two settings above."),
            ],
            outputs=[
                Pose.Output(display_name="pose", tooltip="Keypoints (B, 17, 3) in pixels + confidence, boxes, found flags."),
                PoseKeypoint.Output(display_name="pose_keypoint",
                                    tooltip="The same poses as OpenPose-18 POSE_KEYPOINT (controlnet_aux format)."),
                io.Image.Output(display_name="skeleton", tooltip="The photos with the chosen person's skeleton drawn."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image, pose_model, conf, visibility, person, person_index, on_missing,
                body_vae=None) -> io.NodeOutput:
        from ..bolid_lib.method.draw import draw_skeleton

        images = image_to_bchw(image)                                             # (B, 3, H, W)
        if body_vae is not None:
            conf, visibility = recipe_of(body_vae).conf, recipe_of(body_vae).visibility
        policy = person_index if person == "by_index" else person
        pose = pose_model.predict(images, conf=conf, visibility=visibility, person=policy, on_missing=on_missing,
                                  progress=progress_callback(images.shape[0]))
        skeleton = bchw_to_image(draw_skeleton(images, pose))
        ui_data = preview_ui(skeleton, cls) | {"bolid_pose": [pose_ui_data(pose)]}
        return io.NodeOutput(pose, pose_batch_to_pose_keypoint(pose), skeleton, ui=ui_data)


NODES = [BoLIDPoseModelLoader, BoLIDPoseKeypoints]

__all__ = ["NODES", "preview_ui", "save_temp_images", "pose_ui_data"]
