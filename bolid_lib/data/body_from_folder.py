"""A folder of one person's photos to a Body-ID in memory that does not grow with the number of photos.

The step-by-step path (load every photo, find every pose, weight every photo, encode) holds the whole batch at
each stage, and ComfyUI keeps every stage's outputs: about ten working-size copies of each photo (100 photos at
1024 px: +11.7 GiB, tests/benchmarks/bench_folder_to_body_id.py). Here the same stages run on a few photos at a
time and only the Body-ID VAE's running sums (``method.body_vae.ViewPool``) and a few small thumbnails are kept between
steps:

    photos.iter_photos (one decode at a time) -> letterbox to S x S (photos.letterbox_into, as BoLID Load Photos)
    -> pose.PoseModel.predict -> weighting.apply_weighting (eq. 11-13) -> ViewPool.add (confidence-weighted sum)

Every stage is the library function the step-by-step nodes call, on the same pixels, so the Body-ID equals theirs
within float tolerance (the pose network and the encoder see other batch compositions, nothing else differs).

Legend: G photos in a step, S working size, K = 17 keypoints, D latent width, T thumbnail side.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from . import photos as ph
from ..errors import BoLIDError
from ..method.body_id import mismatches, recipe_of
from ..method.body_vae import BodyVAE, ViewPool, body_embedding, no_person_error
from ..method.weighting import DEFAULT_ALPHA, DEFAULT_SIGMA, DEFAULT_SIGMA_MODE, apply_weighting

log = logging.getLogger("bolid")
DEFAULT_PHOTOS_PER_STEP = 8
MAX_THUMBNAILS = 8
THUMBNAIL_SIDE = 192


@dataclass
class FolderBody:
    """What ``body_from_folder`` gives: the Body-ID, a contact sheet of the first weighted photos, and a report.

    body: a BodyEmbedding; sheet (3, H, W) float32 in [0, 1], at most ``MAX_THUMBNAILS`` thumbnails of side
    ``THUMBNAIL_SIDE`` (bounded whatever the folder holds); names of the photos read, in order; no_person: the
    photos in which no person was found (skipped by the Body-ID); skipped: entries that gave no photo.
    """

    body: object
    sheet: torch.Tensor
    folder: str
    size: int
    names: list[str] = field(default_factory=list)
    no_person: list[str] = field(default_factory=list)
    skipped: list[ph.Skipped] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)
    mismatch: str | None = None          # the settings used that differ from the Body-ID VAE's recipe, with the fix

    def report(self, max_names: int = 30) -> str:
        """What a user reads: photos read and used, those without a person, and every entry skipped with why."""
        n, used = len(self.names), len(self.names) - len(self.no_person)
        kinds = ", ".join(f"{c} {k}" for k, c in sorted(self.formats.items()))
        lines = [f"WARNING: {self.mismatch}"] if self.mismatch else []
        lines += [f"read {n} photo{'s' * (n != 1)} from {self.folder} ({kinds}) at a long side of {self.size} px, a few at "
                  f"a time; the Body-ID pools {used} of them"]
        if self.no_person:
            shown = ", ".join(self.no_person[:max_names]) + (" ..." if len(self.no_person) > max_names else "")
            lines.append(f"no person found in {len(self.no_person)} (left out of the Body-ID): {shown}")
        lines += ph.skipped_lines(self.skipped, max_names)
        return "\n".join(lines)


def _thumbnail(image: torch.Tensor, side: int) -> torch.Tensor:
    """(3, H, W) -> (3, T, T): scaled (area) so the long side is T, then centred on black."""
    _, h, w = image.shape
    scale = side / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    small = F.interpolate(image[None].float(), size=(th, tw), mode="area")[0].clamp(0, 1)
    out = torch.zeros(3, side, side)
    top, left = (side - th) // 2, (side - tw) // 2
    out[:, top:top + th, left:left + tw] = small.cpu()
    return out


def contact_sheet(thumbnails: list[torch.Tensor], columns: int = 4) -> torch.Tensor:
    """Thumbnails (3, T, T) side by side in rows of ``columns`` -> (3, rows * T, columns' * T); black if none."""
    if not thumbnails:
        return torch.zeros(3, THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    t = thumbnails[0].shape[-1]
    cols = min(columns, len(thumbnails))
    rows = math.ceil(len(thumbnails) / cols)
    sheet = torch.zeros(3, rows * t, cols * t)
    for i, th in enumerate(thumbnails):
        r, c = divmod(i, cols)
        sheet[:, r * t:(r + 1) * t, c * t:(c + 1) * t] = th
    return sheet


def body_from_folder(
    base,
    folder: str,
    pose_model,
    body_vae: BodyVAE,
    *,
    size: int = ph.DEFAULT_SIZE,
    max_photos: int = 0,
    conf: float = 0.25,
    visibility: float = 0.5,
    person="largest",
    sigma: float = DEFAULT_SIGMA,
    sigma_mode: str = DEFAULT_SIGMA_MODE,
    alpha: float = DEFAULT_ALPHA,
    sample_seed: int | None = None,
    photos_per_step: int = DEFAULT_PHOTOS_PER_STEP,
    thumbnails: int = MAX_THUMBNAILS,
    progress: Callable[[int, int], None] | None = None,
) -> FolderBody:
    """The Body-ID of the person in ``base/folder``, reading ``photos_per_step`` photos at a time.

    Photos are read as BoLID Load Photos reads them (sorted by name, upright, long side ``size``, letterboxed
    to size x size); each step finds the poses (``pose_model``: a ``pose.PoseModel``; conf, visibility, person as
    in its ``predict``), weights the photos (sigma, sigma_mode, alpha: eq. 11-13) and adds them to the Body-ID
    VAE's running pool. A photo with no person is left out and named; files that are not photos are skipped and
    named. Memory: ``photos_per_step`` working-size photos and their weighted copies, whatever the folder holds.
    progress(done, total) after each file read, total = files in the folder (or max_photos).
    """
    if not isinstance(photos_per_step, int) or photos_per_step < 1:
        raise BoLIDError(f"photos_per_step must be a whole number >= 1; got {photos_per_step!r}")
    if not isinstance(max_photos, int) or max_photos < 0:
        raise BoLIDError(f"max_photos must be 0 (all) or a positive whole number; got {max_photos!r}")
    path = ph.resolve_photo_folder(base, folder)
    files, _ = ph.list_entries(path)
    file_names = {rel for rel, _ in files}
    total = min(len(files), max_photos) if max_photos else len(files)
    result = FolderBody(body=None, sheet=torch.zeros(0), folder=folder.strip().replace("\\", "/"), size=size)
    pool = ViewPool(body_vae)
    group: list[ph.Photo] = []
    # One step's working tensors, allocated once and reused: (G, S, S, 3) as BoLID Load Photos lays out its batch.
    images = torch.empty(photos_per_step, size, size, 3)
    masks = torch.empty(photos_per_step, size, size)
    thumbs: list[torch.Tensor] = []
    conf_sum = 0.0

    def step() -> None:
        nonlocal conf_sum
        g = len(group)
        for i, photo in enumerate(group):
            ph.letterbox_into(images[i], masks[i], photo)
        # NCHW-contiguous, as the step-by-step nodes hand their images to the library (image_to_bchw).
        batch = images[:g].permute(0, 3, 1, 2).contiguous()                   # (G, 3, S, S)
        pose = pose_model.predict(batch, conf=conf, visibility=visibility, person=person, on_missing="skip",
                                  batch_size=g)
        weighted, _ = apply_weighting(batch, pose.keypoints, sigma, alpha, sigma_mode)   # (G, 3, S, S)
        del batch
        weights = pose.view_confidence().float() * pose.found.float()         # (G,) no person: weight 0
        pool.add(weighted, pose.keypoints, weights)
        conf_sum += float(weights[weights > 0].double().sum())
        for i, photo in enumerate(group):
            if float(weights[i]) <= 0:
                result.no_person.append(photo.name)
            elif len(thumbs) < thumbnails:
                thumbs.append(_thumbnail(weighted[i], THUMBNAIL_SIDE))
        group.clear()

    done = 0
    for item in ph.iter_photos(path, size, max_photos=max_photos):
        if isinstance(item, ph.Skipped):
            result.skipped.append(item)
            done += item.name in file_names  # a file that is no photo; listed sub-folders and links were never counted
        else:
            group.append(item)
            result.names.append(item.name)
            result.formats[item.format] = result.formats.get(item.format, 0) + 1
            done += 1
            if len(group) == photos_per_step:
                step()
        if progress is not None:
            progress(min(done, total), total)
    if group:
        step()
    del images, masks
    result.skipped.sort(key=lambda s: s.name)
    if not result.names:
        raise ph.no_photo_error(path, result.skipped)
    if pool.views == 0:
        raise no_person_error(len(result.names))
    mean, logvar = pool.result()
    result.body = body_embedding(body_vae, mean, logvar, views_used=pool.views,
                                 views_skipped=len(result.names) - pool.views,
                                 mean_confidence=conf_sum / pool.views, sample_seed=sample_seed)
    result.sheet = contact_sheet(thumbs)
    diff = mismatches({"working_size": size, "conf": conf, "visibility": visibility, "sigma": sigma,
                       "sigma_mode": sigma_mode, "alpha": alpha}, recipe_of(body_vae))
    if diff:            # one truth for what makes a Body-ID (issue 27): a difference is said, never silent
        result.mismatch = ("these settings differ from those the Body-ID VAE was trained with: " + ", ".join(diff)
                           + ". The Body-ID is then not the one the VAE would give: set them to the VAE's values")
        log.warning("BoLID Body-ID From Folder: %s", result.mismatch)
    return result


__all__ = ["FolderBody", "body_from_folder", "contact_sheet", "DEFAULT_PHOTOS_PER_STEP", "MAX_THUMBNAILS",
           "THUMBNAIL_SIDE"]
