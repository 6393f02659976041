"""Photo loading node: a folder of one person's photos (any sizes, orientations, JPEG/PNG/WebP/HEIC) as one batch.

The pack's own loader, so the Body-ID workflow leans on no young core node (LoadImageSetFromFolderNode of
ComfyUI 0.3.64 is gone in 0.33). The work is in bolid_lib.data.photos.
"""

from __future__ import annotations

import hashlib
import os

from comfy_api.latest import io

import folder_paths

from ..bolid_lib.data import photos as ph
from ..bolid_lib.errors import BoLIDError
from ._comfy import CATEGORY, bchw_to_image, progress_callback


def _input_dir() -> str:
    return folder_paths.get_input_directory()


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
                "damaged copies, sub-folders) are skipped and named in the report. One photo is decoded at a time."
            ),
            inputs=[
                io.Combo.Input(
                    "folder", options=ph.list_photo_folders(_input_dir()),
                    tooltip="A folder inside ComfyUI/input/ holding photos of ONE person. Made a new folder? "
                            "Press R (refresh) to see it here.",
                ),
                io.Int.Input("size", default=ph.DEFAULT_SIZE, min=ph.MIN_SIZE, max=ph.MAX_SIZE, step=8,
                             tooltip="Working size in pixels: each photo's long side is scaled to this and the "
                                     "photo padded to a size x size square (every photo of the batch the same). "
                                     "For 50-100 photos use 512: the graph keeps about 10 working copies of each "
                                     "photo (100 photos: about 3 GiB at 512, 12 GiB at 1024)."),
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
        # Naming `folder` here makes ComfyUI (0.33 checks combo values itself) leave its check to us, so a folder
        # that is gone or not yet listed gets a message with the fix, not a bare "Value not in list".
        if not isinstance(folder, str):
            return True  # linked from another node: checked when it runs
        try:
            ph.resolve_photo_folder(_input_dir(), folder)
        except BoLIDError as e:
            return str(e)
        return True

    @classmethod
    def fingerprint_inputs(cls, folder, size, max_photos) -> str:
        """Changes when a file in the folder is added, removed or rewritten, so a re-run reads the folder again."""
        try:
            path = ph.resolve_photo_folder(_input_dir(), folder)
            entries = sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(path))
        except (BoLIDError, OSError):
            return ""  # execute says what is wrong
        return hashlib.sha256(repr(entries).encode()).hexdigest()

    @classmethod
    def execute(cls, folder, size, max_photos) -> io.NodeOutput:
        batch = ph.load_photos(_input_dir(), folder, size, max_photos=max_photos, progress=progress_callback(1))
        report = batch.report()
        return io.NodeOutput(bchw_to_image(batch.images), batch.masks, report, ui={"text": (report,)})


NODES = [BoLIDLoadPhotos]

__all__ = ["NODES"]
