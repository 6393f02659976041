"""Body-ID nodes: load the Body-ID VAE, encode weighted views into a Body-ID, save/load/blend/preview it."""

from __future__ import annotations

import logging
import os

from comfy_api.latest import io

from ..bolid_lib.method import body_id as recipe_lib
from ..bolid_lib.method import body_vae as vae_lib
from ..bolid_lib.method import body_vae_files
from ..bolid_lib.method import embedding as emb_lib
from ..bolid_lib.errors import BoLIDError
from ..bolid_lib.files import resolve_inside
from ._comfy import (
    CATEGORY, FOLDER_BODIES, FOLDER_BOLID, BODIES_SUBFOLDER, Body, BodyVAE, Pose, check_model_choice, image_to_bchw,
    list_models, model_path, progress_callback, weighting_of, writable_folder,
)


log = logging.getLogger("bolid")


def vae_choices() -> list[str]:
    """Body-ID VAE files: models/bolid without its bodies/ sub-folder (saved Body-IDs have a loader of their own)."""
    return list_models(FOLDER_BOLID, exclude_prefix=f"{BODIES_SUBFOLDER}/")

SUBCATEGORY = f"{CATEGORY}/Body-ID"
MAX_BODIES = 4


def body_ui(body: emb_lib.BodyEmbedding) -> dict:
    """ui payload: readable text and plain JSON for js (norm, views, confidence, which VAE)."""
    m = body.meta
    data = {
        "dim": body.dim, "norm": round(body.norm(), 4), "views_used": int(m["views_used"]),
        "views_skipped": int(m["views_skipped"]), "mean_confidence": round(float(m["mean_confidence"]), 4),
        "vae_fingerprint": str(m["vae_fingerprint"]), "source": str(m["source"]),
    }
    return {"text": (body.summary(),), "bolid_body": [data]}


class BoLIDBodyVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDBodyVAELoader",
            display_name="BoLID Body-ID VAE Loader",
            category=SUBCATEGORY,
            description=("Loads a Body-ID VAE (.safetensors written by 'python -m bolid_lib.training body-vae') from "
                         "models/bolid/. It turns weighted photos of a person into a Body-ID (paper 4.2). "
                         "A file of another kind is refused with a note on what it is."),
            inputs=[io.Combo.Input("vae_name", options=vae_choices(),
                                   tooltip="A Body-ID VAE file in models/bolid/.")],
            outputs=[BodyVAE.Output(display_name="body_vae", tooltip="The Body-ID VAE, with its config and fingerprint.")],
        )

    @classmethod
    def validate_inputs(cls, vae_name=None) -> bool | str:
        # Naming the combo here makes the host skip its own "Value not in list" for it: the user learns the fix.
        return check_model_choice(FOLDER_BOLID, vae_name, vae_choices())

    @classmethod
    def execute(cls, vae_name: str) -> io.NodeOutput:
        import comfy.model_management

        model = body_vae_files.load_body_vae(model_path(FOLDER_BOLID, vae_name), device=comfy.model_management.get_torch_device())
        return io.NodeOutput(model)


class BoLIDBodyEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDBodyEncode",
            display_name="BoLID Body-ID Encode",
            category=SUBCATEGORY,
            description=("Encodes weighted photos of ONE person into a Body-ID (c_body, paper 4.2). Views are pooled by "
                         "their pose confidence, a few at a time, so 100 photos need no more memory than 10. Photos in "
                         "which no person was found are skipped and counted; if none has a person, the node stops "
                         "with an error."),
            inputs=[
                io.Image.Input("views", tooltip="Gaussian-weighted photos of one person (from BoLID Gaussian Weighting)."),
                Pose.Input("pose", tooltip="The poses found on these same photos (BoLID Pose Keypoints)."),
                BodyVAE.Input("body_vae", tooltip="The Body-ID VAE (BoLID Body-ID VAE Loader)."),
                io.Combo.Input("mode", options=["mean", "sample"], default="mean",
                               tooltip="mean: the deterministic Body-ID (mu), as the paper uses at inference. "
                                       "sample: a draw from the VAE's Gaussian, reproducible with the seed."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the draw in mode 'sample'; ignored in mode 'mean'."),
                io.Int.Input("views_per_chunk", default=8, min=1, max=256,
                             tooltip="Views encoded at once. Larger is faster on a GPU; memory grows with it, not with "
                                     "the number of views."),
            ],
            outputs=[Body.Output(display_name="body", tooltip="The Body-ID: mean and log-variance (D numbers each) and how it was made.")],
        )

    @classmethod
    def execute(cls, views, pose, body_vae, mode, seed, views_per_chunk) -> io.NodeOutput:
        notes = recipe_notes(views, pose, body_vae)
        images = image_to_bchw(views)                                           # (V, 3, H, W)
        body = vae_lib.encode_body(body_vae, images, pose, sample_seed=seed if mode == "sample" else None,
                                   chunk=views_per_chunk, progress=progress_callback(images.shape[0]))
        shown = body_ui(body)
        if notes:
            shown["text"] = ("\n".join([*shown["text"], *notes]),)
        return io.NodeOutput(body, ui=shown)


def recipe_notes(views, pose, body_vae) -> list[str]:
    """What the Encode node says about how the views were made against the VAE's recipe: a mismatch (logged as a
    warning too), weighting it cannot know, and the old defaults of a VAE file that records none."""
    used = {k: pose.meta[k] for k in ("conf", "visibility") if k in pose.meta}
    weighting = weighting_of(views)
    if weighting is not None:
        used.update(weighting)
    notes = []
    if getattr(body_vae, "recipe", None) is None:
        notes.append(recipe_lib.recipe_note(body_vae))
    mismatch = recipe_lib.mismatch_message(used, body_vae)
    if mismatch:
        log.warning("BoLID Body-ID Encode: %s", mismatch)
        notes.append("WARNING: " + mismatch)
    # The working size changes a Body-ID a little (the VAE cuts each person out at its own input size), so a photo
    # size other than the VAE's is said, not warned about: 512 is the advice for many photos.
    trained_at = recipe_lib.recipe_of(body_vae).working_size
    if weighting is not None and trained_at is not None and views.shape[1] == views.shape[2] != trained_at:
        notes.append(f"photos at {int(views.shape[1])} px (Load Photos' size); the VAE learned from photos at "
                     f"{trained_at} px: the Body-ID is near the one at {trained_at}, not equal to it")
    if weighting is None:
        notes.append("the weighting of these views is not known (they did not come straight from BoLID Gaussian "
                     f"Weighting): the VAE expects {recipe_lib.recipe_of(body_vae).describe()}")
    return notes


class BoLIDSaveBody(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDSaveBody",
            display_name="BoLID Save Body-ID",
            category=SUBCATEGORY,
            description=("Saves a Body-ID as a small .safetensors in models/bolid/bodies/, for text-only generation "
                         "later. A name never writes outside that folder, and an existing file is never overwritten."),
            inputs=[
                Body.Input("body", tooltip="The Body-ID to save."),
                io.String.Input("name", default="body", tooltip="File name, e.g. 'alice' or 'team/alice' (a sub-folder). "
                                                                 "'.safetensors' is added."),
                io.Combo.Input("if_exists", options=list(emb_lib.ON_EXISTS), default="increment",
                               tooltip="increment: save as name_00001 (and so on) beside the existing file. "
                                       "refuse: stop with an error."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, name, **kwargs) -> bool | str:
        if not isinstance(name, str):
            return True  # linked from another node: checked when it runs
        try:
            resolve_inside(writable_folder(FOLDER_BODIES), name, suffix=".safetensors")
        except BoLIDError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, body, name, if_exists) -> io.NodeOutput:
        folder = writable_folder(FOLDER_BODIES)
        path = emb_lib.save_body_in(body, folder, name, on_exists=if_exists)
        rel = os.path.relpath(path, folder).replace(os.sep, "/")
        return io.NodeOutput(ui={"text": (f"saved {rel} in {folder}\n{body.summary()}",), "bolid_saved": [rel]})


class BoLIDLoadBody(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDLoadBody",
            display_name="BoLID Load Body-ID",
            category=SUBCATEGORY,
            description="Loads a saved Body-ID from models/bolid/bodies/. Runs again when the file changes on disk.",
            inputs=[io.Combo.Input("body_name", options=list_models(FOLDER_BODIES),
                                   tooltip="A Body-ID saved by BoLID Save Body-ID.")],
            outputs=[Body.Output(display_name="body", tooltip="The loaded Body-ID.")],
        )

    @classmethod
    def validate_inputs(cls, body_name=None) -> bool | str:
        # Naming the combo here makes the host skip its own "Value not in list" for it: the user learns the fix.
        return check_model_choice(FOLDER_BODIES, body_name, list_models(FOLDER_BODIES))

    @classmethod
    def fingerprint_inputs(cls, body_name) -> str:
        path = model_path(FOLDER_BODIES, body_name)
        st = os.stat(path)
        return f"{st.st_mtime_ns}:{st.st_size}"

    @classmethod
    def execute(cls, body_name) -> io.NodeOutput:
        body = emb_lib.load_body(model_path(FOLDER_BODIES, body_name))
        return io.NodeOutput(body, ui=body_ui(body))


class BoLIDBlendBodies(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        bodies = [Body.Input(f"body_{i}", optional=i > 2, tooltip=f"Body-ID {i}" + (" (optional)." if i > 2 else "."))
                  for i in range(1, MAX_BODIES + 1)]
        weights = [io.Float.Input(f"weight_{i}", default=1.0, min=0.0, max=100.0, step=0.05,
                                  tooltip=f"Weight of body_{i} in mode weighted_mean (normalised to sum 1).")
                   for i in range(1, MAX_BODIES + 1)]
        return io.Schema(
            node_id="BoLIDBlendBodies",
            display_name="BoLID Blend Body-IDs",
            category=SUBCATEGORY,
            description=("Mixes Body-IDs of the same Body-ID VAE: a weighted mean of 2-4 of them, or a spherical "
                         "interpolation from body_1 to body_2 (slerp, t from 0 to 1)."),
            inputs=[*bodies[:2], io.Combo.Input("mode", options=["weighted_mean", "slerp"], default="weighted_mean",
                                                tooltip="weighted_mean of all connected Body-IDs, or slerp between body_1 and body_2."),
                    io.Float.Input("t", default=0.5, min=0.0, max=1.0, step=0.01,
                                   tooltip="slerp position: 0 gives body_1, 1 gives body_2."),
                    *weights, *bodies[2:]],
            outputs=[Body.Output(display_name="body", tooltip="The blended Body-ID.")],
        )

    @classmethod
    def execute(cls, body_1, body_2, mode, t, weight_1, weight_2, weight_3, weight_4, body_3=None, body_4=None) -> io.NodeOutput:
        if mode == "slerp":
            body = emb_lib.slerp(body_1, body_2, t)
        else:
            pairs = [(b, w) for b, w in ((body_1, weight_1), (body_2, weight_2), (body_3, weight_3), (body_4, weight_4)) if b is not None]
            body = emb_lib.blend([b for b, _ in pairs], [w for _, w in pairs])
        return io.NodeOutput(body, ui=body_ui(body))


class BoLIDBodyPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDBodyPreview",
            display_name="BoLID Body-ID Preview",
            category=SUBCATEGORY,
            description="Shows a Body-ID's size, norm, views used and skipped, mean pose confidence and the VAE that made it.",
            inputs=[Body.Input("body", tooltip="The Body-ID to describe.")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, body) -> io.NodeOutput:
        return io.NodeOutput(ui=body_ui(body))


NODES = [BoLIDBodyVAELoader, BoLIDBodyEncode, BoLIDSaveBody, BoLIDLoadBody, BoLIDBlendBodies, BoLIDBodyPreview]

__all__ = ["NODES", "body_ui"]
