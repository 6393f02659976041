"""Photo folder nodes: a folder of one person's photos (any sizes, orientations, JPEG/PNG/WebP/HEIC) as one batch,
or straight to a Body-ID a few photos at a time.

The pack's own loader, so the Body-ID workflow leans on no young core node (LoadImageSetFromFolderNode of
ComfyUI 0.3.64 is gone in 0.33). The work is in bolid_lib.data.photos and bolid_lib.data.body_from_folder.
"""

from __future__ import annotations

import hashlib
import os

from comfy_api.latest import io

import folder_paths

from ..bolid_lib.data import body_from_folder as bff
from ..bolid_lib.data import photos as ph
from ..bolid_lib.errors import BoLIDError
from ..bolid_lib.method import weighting as wt
from ._comfy import CATEGORY, Body, BodyVAE, PoseModel, bchw_to_image, progress_callback
from .body_id import body_ui
from .pose import PERSON_CHOICES, preview_ui


def _input_dir() -> str:
    return folder_paths.get_input_directory()


def _folder_input() -> io.Combo.Input:
    return io.Combo.Input(
        "folder", options=ph.list_photo_folders(_input_dir()),
        tooltip="A folder inside ComfyUI/input/ holding photos of ONE person. Made a new folder? "
                "Press R (refresh) to see it here.",
    )


def _check_folder(folder) -> bool | str:
    # Naming `folder` in validate_inputs makes ComfyUI (0.33 checks combo values itself) leave its check to us, so a
    # folder that is gone or not yet listed gets a message with the fix, not a bare "Value not in list".
    if not isinstance(folder, str):
        return True  # linked from another node: checked when it runs
    try:
        ph.resolve_photo_folder(_input_dir(), folder)
    except BoLIDError as e:
        return str(e)
    return True


def _folder_fingerprint(folder) -> str:
    """Changes when a file in the folder is added, removed or rewritten, so a re-run reads the folder again."""
    try:
        path = ph.resolve_photo_folder(_input_dir(), folder)
        entries = sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(path))
    except (BoLIDError, OSError):
        return ""  # execute says what is wrong
    return hashlib.sha256(repr(entries).encode()).hexdigest()


class BoLIDLoadPhotos(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDLoadPhotos",
            display_name="BoLID Load Photos",
            category=CATEGORY,
            description=(
                "Loads the photos of one person from a folder in ComfyUI/input as one batch, as they come off a "
                "phone or camera: any sizes and orientations, JPEG, PNG, WebP or HEIC, nothing to crop first. "
                "Each photo is turned upright by its EXIF orientation, scaled so its long side is `size` and padded "
                "to size x size (the mask marks its own pixels). Files that are not readable photos (text, "
                "damaged copies, sub-folders) are skipped and named in the report. One photo is decoded at a time. "
                f"For a Body-ID from many photos, {ph.STREAMING_NODE} needs far less memory."
            ),
            inputs=[
                _folder_input(),
                io.Int.Input("size", default=ph.DEFAULT_SIZE, min=ph.MIN_SIZE, max=ph.MAX_SIZE, step=8,
                             tooltip="Working size in pixels: each photo's long side is scaled to this and the "
                                     "photo padded to a size x size square (every photo of the batch the same). "
                                     "The whole batch is held at once (16 MiB a photo at 1024, 4 MiB at 512), and "
                                     "the step-by-step nodes after it keep several copies: for a Body-ID from many "
                                     f"photos use {ph.STREAMING_NODE}, whose memory does not grow with the "
                                     "number of photos. A batch too large for the memory available is refused "
                                     "before anything is loaded."),
                io.Int.Input("max_photos", default=0, min=0, max=100000,
                             tooltip="Load at most this many photos (the first ones by name); 0 loads them all."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="The photos, upright, letterboxed to size x size (B, size, size, 3)."),
                io.Mask.Output(display_name="mask", tooltip="1 on each photo's own pixels, 0 on the padding (B, size, size)."),
                io.String.Output(display_name="report", tooltip="How many photos were loaded, and every file skipped with why."),
            ],
        )

    @classmethod
    def validate_inputs(cls, folder) -> bool | str:
        return _check_folder(folder)

    @classmethod
    def fingerprint_inputs(cls, folder, size, max_photos) -> str:
        return _folder_fingerprint(folder)

    @classmethod
    def execute(cls, folder, size, max_photos) -> io.NodeOutput:
        batch = ph.load_photos(_input_dir(), folder, size, max_photos=max_photos, progress=progress_callback(1))
        report = batch.report()
        return io.NodeOutput(bchw_to_image(batch.images), batch.masks, report, ui={"text": (report,)})


class BoLIDBodyIDFromFolder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="BoLIDBodyIDFromFolder",
            display_name=ph.STREAMING_NODE,
            category=f"{CATEGORY}/Body-ID",
            description=(
                "A folder of one person's photos straight to a Body-ID, a few photos at a time, so memory does not "
                "grow with the number of photos (100 or 1,000 photos need the same). Each step does what BoLID Load "
                "Photos, Pose Keypoints, Gaussian Weighting and Body-ID Encode do one after the other, with the same "
                "settings and the same result; only a small contact sheet of the first weighted photos is kept to "
                "look at. Photos with no person are left out and named; files that are not photos are skipped and "
                "named in the report. Connect the Body-ID to BoLID Save Body-ID."
            ),
            inputs=[
                _folder_input(),
                PoseModel.Input("pose_model", tooltip="A YOLO pose model from BoLID Pose Model Loader."),
                BodyVAE.Input("body_vae", tooltip="The Body-ID VAE (BoLID Body-ID VAE Loader)."),
                io.Int.Input("size", default=ph.DEFAULT_SIZE, min=ph.MIN_SIZE, max=ph.MAX_SIZE, step=8,
                             tooltip="Working size in pixels, as in BoLID Load Photos: each photo's long side is "
                                     "scaled to this and the photo padded to a square. Memory grows with it and "
                                     "with photos_per_step, never with the number of photos."),
                io.Int.Input("max_photos", default=0, min=0, max=100000,
                             tooltip="Read at most this many photos (the first ones by name); 0 reads them all."),
                io.Float.Input("conf", default=0.25, min=0.0, max=1.0, step=0.01,
                               tooltip="Detection confidence threshold of the pose model: people scored lower are ignored."),
                io.Float.Input("visibility", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Keypoints whose confidence is below this are treated as not visible and zeroed."),
                io.Combo.Input("person", options=PERSON_CHOICES, default="largest",
                               tooltip="Which person to keep when several are found: the largest box, the most "
                                       "confident detection, or the one at person_index (by detection score)."),
                io.Int.Input("person_index", default=0, min=0, max=99,
                             tooltip="With person = by_index: 0 is the most confident detection, 1 the next, ..."),
                io.Float.Input("sigma", default=wt.DEFAULT_SIGMA, min=0.0, max=4096.0, step=0.005, round=0.0001,
                               tooltip="Radius of each keypoint's Gaussian (eq. 11), as in BoLID Gaussian Weighting: "
                                       "relative, a fraction of the short side; pixels, in pixels."),
                io.Combo.Input("sigma_mode", options=list(wt.SIGMA_MODES), default=wt.DEFAULT_SIGMA_MODE,
                               tooltip="How sigma is measured: relative to the short side (default) or in pixels."),
                io.Float.Input("alpha", default=wt.DEFAULT_ALPHA, min=0.0, max=1.0, step=0.01,
                               tooltip="Background weight: 0 keeps only the body blobs, 1 leaves the photo unchanged."),
                io.Combo.Input("mode", options=["mean", "sample"], default="mean",
                               tooltip="mean: the deterministic Body-ID (mu), as the paper uses at inference. "
                                       "sample: a draw from the VAE's Gaussian, reproducible with the seed."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the draw in mode 'sample'; ignored in mode 'mean'."),
                io.Int.Input("photos_per_step", default=bff.DEFAULT_PHOTOS_PER_STEP, min=1, max=64,
                             tooltip="Photos decoded, posed, weighted and encoded together. Larger is a little "
                                     "faster (more on a GPU); memory grows with it (about 40 MiB a photo at 1024), "
                                     "not with the number of photos."),
            ],
            outputs=[
                Body.Output(display_name="body", tooltip="The Body-ID: mean and log-variance (D numbers each) and how it was made."),
                io.Image.Output(display_name="preview",
                                tooltip=f"A contact sheet of the first {bff.MAX_THUMBNAILS} weighted photos with a person "
                                        f"({bff.THUMBNAIL_SIDE} px each): small whatever the folder holds."),
                io.String.Output(display_name="report",
                                 tooltip="Photos read and used, those with no person, and every file skipped with why."),
            ],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, folder) -> bool | str:
        return _check_folder(folder)

    @classmethod
    def fingerprint_inputs(cls, folder, **kwargs) -> str:
        return _folder_fingerprint(folder)

    @classmethod
    def execute(cls, folder, pose_model, body_vae, size, max_photos, conf, visibility, person, person_index, sigma,
                sigma_mode, alpha, mode, seed, photos_per_step) -> io.NodeOutput:
        out = bff.body_from_folder(
            _input_dir(), folder, pose_model, body_vae, size=size, max_photos=max_photos, conf=conf,
            visibility=visibility, person=person_index if person == "by_index" else person, sigma=sigma,
            sigma_mode=sigma_mode, alpha=alpha, sample_seed=seed if mode == "sample" else None,
            photos_per_step=photos_per_step, progress=progress_callback(1))
        report = out.report()
        sheet = bchw_to_image(out.sheet[None])                                 # (1, H, W, 3)
        shown = body_ui(out.body)
        ui_data = preview_ui(sheet, cls) | {"text": (report + "\n" + shown["text"][0],), "bolid_body": shown["bolid_body"]}
        return io.NodeOutput(out.body, sheet, report, ui=ui_data)


NODES = [BoLIDLoadPhotos, BoLIDBodyIDFromFolder]

__all__ = ["NODES"]
