"""Evaluation inside a graph: body fidelity of generated images against a reference.

So an artist can compare λ settings without leaving ComfyUI: connect the generated batch, the reference
(its image, or its BOLID_POSE) and a pose model; read the mean distance (FLOAT, e.g. into a plot or a
text node) and a per-image table shown as the node's text output.
"""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..bolid_lib.evaluation import metrics
from ..bolid_lib.errors import BoLIDError
from ._comfy import CATEGORY, Pose, PoseModel, image_to_bchw


class BoLIDBodyFidelity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDBodyFidelity",
            display_name="BoLID Body Fidelity",
            category=f"{CATEGORY}/evaluation",
            description=(
                "How closely the bodies in generated images follow a reference: for each image, the mean distance "
                "between its 17 body keypoints and the reference's (keypoints visible in both), divided by the "
                "reference body's size. 0 is the same pose; lower is closer. The paper's L_id as a metric."
            ),
            inputs=[
                io.Image.Input("images", tooltip="Generated images to measure (a batch)."),
                PoseModel.Input("pose_model", tooltip="A YOLO pose model (BoLID Load Pose Model)."),
                io.Image.Input("reference_image", optional=True,
                               tooltip="The reference photo: one image for the whole batch, or one per image. "
                                       "Connect this or reference_pose."),
                Pose.Input("reference_pose", optional=True,
                           tooltip="The reference's pose (BOLID_POSE), instead of its image."),
                io.Float.Input("conf", default=0.25, min=0.0, max=1.0, step=0.01,
                               tooltip="Person detection threshold of the pose model."),
                io.Float.Input("visibility", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Keypoints below this confidence count as not visible and are not compared."),
            ],
            outputs=[
                io.Float.Output(display_name="mean_distance",
                                tooltip="Mean body distance over the images where a person was found (NaN if none)."),
                io.String.Output(display_name="table", tooltip="The per-image distances as a text table."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, pose_model, conf, visibility, reference_image=None, reference_pose=None) -> io.NodeOutput:
        if (reference_image is None) == (reference_pose is None):
            raise BoLIDError("connect exactly one of reference_image and reference_pose "
                             f"(now: {'both' if reference_image is not None else 'neither'})")
        reference = image_to_bchw(reference_image) if reference_image is not None else reference_pose
        distances, _, _ = metrics.body_fidelity(pose_model, image_to_bchw(images), reference,
                                                conf=conf, visibility=visibility)
        mean, table = metrics.body_fidelity_table(distances)
        return io.NodeOutput(mean, table, ui=ui.PreviewText(table))


NODES = [BoLIDBodyFidelity]
