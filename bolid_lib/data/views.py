"""The Body-ID VAE's training views: photos of many people prepared as a Body-ID recipe says, cached per person.

A ``ViewSet`` holds every prepared view (weighted, cut and resized by the VAE's own ``prepare_views``, uint8) with
its keypoints, pose weight and person, and the recipe (``method.body_id.BodyIDRecipe``) it was prepared with; the
trainer records that recipe in the VAE file, so the nodes prepare photos the same way.

Sources: tensors (``make_viewset``), procedural people with exact keypoints (``synthetic_viewset``), or a folder
with one sub-folder of photos per person (``folder_viewset``): each photo is read by the one photo reader
(``data.photos``, upright and letterboxed at the recipe's working size, as Load Photos reads it), posed and
weighted (``method.body_id.weighted_views``), and each person's views are cached as .safetensors, so no later
epoch or run calls the pose model again.

Legend: N views in the set, P persons, R the VAE's input side, L limbs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .. import files
from ..errors import BoLIDError
from ..method.body_id import DEFAULT_RECIPE, BodyIDRecipe, weighted_views
from ..method.body_vae import NUM_LIMBS, BodyVAEConfig, limb_ratios_from_keypoints, prepare_views, view_weights
from . import photos

log = logging.getLogger("bolid")

CACHE_FORMAT = "bolid.body_vae_cache"


@dataclass
class ViewSet:
    """Prepared training views: views (N, 3, R, R) uint8 weighted images, keypoints (N, 17, 3) px at R,
    weights (N,), person (N,) long, limbs (P, L) float (NaN where unknown), names (P,); recipe: how they were
    prepared (None: not known)."""

    views: torch.Tensor
    keypoints: torch.Tensor
    weights: torch.Tensor
    person: torch.Tensor
    limbs: torch.Tensor
    names: list[str]
    recipe: BodyIDRecipe | None = None

    def __post_init__(self) -> None:
        n = self.views.shape[0]
        if self.keypoints.shape != (n, 17, 3) or self.weights.shape != (n,) or self.person.shape != (n,):
            raise BoLIDError("a ViewSet needs views (N,3,R,R), keypoints (N,17,3), weights (N,), person (N,)")
        self.person = self.person.long()
        counts = torch.bincount(self.person, minlength=len(self.names))
        self.by_person = [torch.nonzero(self.person == p).flatten() for p in range(len(self.names))]
        self.trainable = [p for p in range(len(self.names)) if int(counts[p]) >= 2]
        if not self.trainable:
            raise BoLIDError("training needs people with at least 2 usable views each (one to encode, one to reconstruct); "
                             f"got view counts {counts.tolist()}: add photos, or check that the pose model finds the people")

    @property
    def size(self) -> int:
        return self.views.shape[-1]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _recipe(recipe: BodyIDRecipe | None, **given) -> BodyIDRecipe:
    """``recipe`` (default the pack's) with the settings given one by one (not None) put in."""
    return replace(recipe or DEFAULT_RECIPE, **{k: v for k, v in given.items() if v is not None})


def make_viewset(images: torch.Tensor, keypoints: torch.Tensor, person: torch.Tensor, vae_cfg: BodyVAEConfig,
                 names: list[str] | None = None, *, sigma: float | None = None, alpha: float | None = None,
                 recipe: BodyIDRecipe | None = None, chunk: int = 256) -> ViewSet:
    """Weight (paper 4.1), prepare as the VAE does (crop/letterbox to R) and pack raw views:
    images (N, 3, H, W) at their own size, keypoints (N, 17, 3) px (known: no pose model runs). The weighting is
    ``recipe``'s (default the pack's), with sigma / alpha overriding it where given."""
    from ..method.weighting import apply_weighting

    # Images handed in are used at their own size: without a recipe saying otherwise, none is recorded.
    recipe = _recipe(recipe, sigma=sigma, alpha=alpha) if recipe is not None else \
        replace(_recipe(None, sigma=sigma, alpha=alpha), working_size=None)
    views, kps = [], []
    for s in range(0, images.shape[0], chunk):
        w, _ = apply_weighting(images[s:s + chunk].float(), keypoints[s:s + chunk], **recipe.weighting)
        v, k = prepare_views(w, keypoints[s:s + chunk], vae_cfg)
        views.append(to_uint8(v))
        kps.append(k)
    kp = torch.cat(kps)
    person = person.long()
    n_persons = int(person.max()) + 1
    limbs = torch.stack([limb_ratios_from_keypoints(kp[person == p]) if (person == p).any()
                         else torch.full((NUM_LIMBS,), float("nan")) for p in range(n_persons)])
    return ViewSet(torch.cat(views), kp, view_weights(kp), person, limbs,
                   names or [f"person_{p:04d}" for p in range(n_persons)], recipe)


def synthetic_viewset(n_persons: int, views_per_person: int, vae_cfg: BodyVAEConfig, seed: int, *, pose_range=(0.0, 1.0),
                      render_size: int | None = None, shapes: torch.Tensor | None = None, sigma: float | None = None,
                      alpha: float | None = None, recipe: BodyIDRecipe | None = None) -> ViewSet:
    """Procedural people (bolid_lib.data.synthetic) with exact keypoints: no pose model needed."""
    from . import synthetic

    shapes = synthetic.random_shapes(n_persons, seed) if shapes is None else shapes
    data = synthetic.make_views(shapes, views_per_person, seed + 1,
                                synthetic.RenderSettings(size=render_size or vae_cfg.input_size, pose_range=tuple(pose_range)))
    return make_viewset(data.images, data.keypoints, data.person, vae_cfg, sigma=sigma, alpha=alpha, recipe=recipe)


# --- folders of photos -------------------------------------------------------------------------------

def folder_viewset(data_dir: str | os.PathLike, pose_model_path: str, vae_cfg: BodyVAEConfig, *, cache_dir: str | os.PathLike | None = None,
                   recipe: BodyIDRecipe | None = None, sigma: float | None = None, alpha: float | None = None,
                   conf: float | None = None, visibility: float | None = None, working_size: int | None = None,
                   device: str = "cpu", progress: Callable[[int, int], None] | None = None) -> ViewSet:
    """Pose + weighting over DIR/<person>/<photos> as ``recipe`` says (default the pack's; the keyword settings
    override it), caching each person's prepared views on disk.

    A person's cache is reused when its file list (names, sizes, mtimes), the pose model file and the settings are
    unchanged; otherwise that person is prepared again. Files that are not readable photos are skipped (logged).
    """
    from ..method.pose import PoseModel

    recipe = _recipe(recipe, sigma=sigma, alpha=alpha, conf=conf, visibility=visibility, working_size=working_size)
    root = Path(data_dir)
    if not root.is_dir():
        raise BoLIDError(f"--data {root} is not a folder: give a folder with one sub-folder of photos per person")
    people = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not people:
        raise BoLIDError(f"{root} has no sub-folders: put each person's photos in a folder of their own (DIR/alice/*.jpg)")
    cache = Path(cache_dir) if cache_dir else root / ".bolid_cache"
    cache.mkdir(parents=True, exist_ok=True)
    pm_stat = os.stat(pose_model_path)
    settings = json.dumps({"size": vae_cfg.input_size, "crop": vae_cfg.crop, "crop_margin": vae_cfg.crop_margin,
                           "recipe": recipe.to_dict(),
                           "pose_model": [os.path.abspath(pose_model_path), pm_stat.st_size, pm_stat.st_mtime_ns]},
                          sort_keys=True)
    model = None                                      # the pose model, loaded when a person's cache is stale
    views, kps, owner, names = [], [], [], []
    for i, person_dir in enumerate(people):
        entries, _ = photos.list_entries(person_dir)
        listing = [(rel, p.stat().st_size, p.stat().st_mtime_ns) for rel, p in entries]
        key = hashlib.sha256((settings + json.dumps(listing)).encode()).hexdigest()[:24]
        cache_file = cache / f"{person_dir.name}.safetensors"
        got = _cached_views(cache_file, key)
        if got is None:
            if model is None:
                model = PoseModel.load(pose_model_path, device)
            got = _prepare_person([p for _, p in entries], model, vae_cfg, recipe)
            files.save_safetensors_atomic({"views": got[0], "keypoints": got[1]}, cache_file, fmt=CACHE_FORMAT, version=1,
                                          metadata={"bolid.cache_key": key})
        if got[0].shape[0]:
            views.append(got[0])
            kps.append(got[1])
            owner.append(torch.full((got[0].shape[0],), len(names), dtype=torch.long))
            names.append(person_dir.name)
        if progress is not None:
            progress(i + 1, len(people))
    if not views:
        raise BoLIDError(f"the pose model found nobody in the photos under {root}: check the photos or lower --conf")
    kp = torch.cat(kps)
    person = torch.cat(owner)
    limbs = torch.stack([limb_ratios_from_keypoints(kp[person == p]) for p in range(len(names))])
    return ViewSet(torch.cat(views), kp, view_weights(kp), person, limbs, names, recipe)


def _cached_views(cache_file: Path, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(views, keypoints) of a person's cache file when it was made with ``key``; else None."""
    if not cache_file.is_file():
        return None
    tensors, meta = files.read_safetensors(cache_file)
    if meta.get(files.FORMAT_KEY) == CACHE_FORMAT and meta.get("bolid.cache_key") == key:
        return tensors["views"], tensors["keypoints"]
    return None


def read_recipe_photo(path: Path, recipe: BodyIDRecipe) -> torch.Tensor:
    """One photo as the recipe reads it: (3, S, S) letterboxed at its working size, or (3, H, W) at the photo's own
    size when it has none. Raises BoLIDError when the file is not a readable photo."""
    if recipe.working_size is None:
        return photos.read_image(path)
    return photos.read_letterboxed(path, recipe.working_size)


def _prepare_person(paths: list[Path], model, vae_cfg: BodyVAEConfig, recipe: BodyIDRecipe
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Views (V, 3, R, R) uint8 and keypoints (V, 17, 3) of the photos where the pose model finds a person."""
    pv, pk = [], []
    for f in paths:
        try:
            img = read_recipe_photo(f, recipe)[None]                    # (1, 3, S, S)
        except BoLIDError as e:
            log.info("%s skipped: %s", f, e)
            continue
        weighted, pose = weighted_views(img, model, recipe)
        if not bool(pose.found[0]):
            log.info("no person found in %s: skipped", f)
            continue
        v, k = prepare_views(weighted, pose.keypoints, vae_cfg)
        pv.append(to_uint8(v))
        pk.append(k)
    size = vae_cfg.input_size
    if not pv:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, 17, 3)
    return torch.cat(pv), torch.cat(pk)


__all__ = ["ViewSet", "CACHE_FORMAT", "to_uint8", "make_viewset", "synthetic_viewset", "folder_viewset",
           "read_recipe_photo"]
