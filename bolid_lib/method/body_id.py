"""What makes a Body-ID from photos, in one place: the recipe (its settings) and the one pipeline that applies it.

A Body-ID VAE learns from photos prepared one way: read at a working size, posed with a detection confidence and a
keypoint visibility threshold, weighted with sigma / sigma mode / alpha (paper 4.1), then cut and resized by the
VAE itself (its config's ``crop`` and ``crop_margin``, stored in its file and applied inside the VAE, so they
cannot differ). A Body-ID built from photos prepared another way is another vector. So:

- ``BodyIDRecipe`` holds those settings, with the pack's defaults (every default elsewhere reads them here);
- the trainer records the recipe in the VAE file (``RECIPE_KEY`` in its metadata), the nodes use the VAE's own
  recipe when the VAE is connected to them, and say so when the settings used differ from it;
- a VAE file written before the recipe was recorded was trained with ``LEGACY_RECIPE`` (the trainer's defaults
  of that time: photos read at full size, the same thresholds and weighting), which is named when such a file is
  used.

Shapes: B images, S the working size, K = 17 keypoints, D the Body-ID width.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Callable

from .. import settings
from ..errors import BoLIDError

RECIPE_KEY = "bolid.body_id_recipe"
SIGMA_MODES = ("relative", "pixels")
MIN_WORKING_SIZE, MAX_WORKING_SIZE = 64, 4096


@dataclass(frozen=True)
class BodyIDRecipe:
    """The settings that turn photos into the views a Body-ID VAE encodes (besides its own crop, see module doc).

    working_size: the photos' long side in pixels, each padded to a square (ComfyUI's Load Photos ``size``); None:
    the photos' own size (what files without a recorded recipe were trained on). conf: the pose detector's
    confidence threshold; visibility: keypoints under it count as not visible (paper 4.2). sigma, sigma_mode,
    alpha: the Gaussian weighting (paper eq. 11-13 and I_w = I (alpha + (1 - alpha) W_norm)); sigma_mode
    "relative" measures sigma as a fraction of the short side, "pixels" in pixels.
    """

    working_size: int | None = 1024
    conf: float = 0.25
    visibility: float = 0.5
    sigma: float = 0.1
    sigma_mode: str = "relative"
    alpha: float = 0.1

    def __post_init__(self) -> None:
        ws = self.working_size
        if ws is not None and (not isinstance(ws, int) or not MIN_WORKING_SIZE <= ws <= MAX_WORKING_SIZE):
            raise BoLIDError(f"working_size must be a whole number from {MIN_WORKING_SIZE} to {MAX_WORKING_SIZE} "
                             f"(or None: the photos' own size); got {ws!r}")
        for name in ("conf", "visibility", "alpha"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise BoLIDError(f"{name} must lie in [0, 1]; got {v!r}")
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma >= 0):
            raise BoLIDError(f"sigma must be a finite number >= 0; got {self.sigma!r}")
        if self.sigma_mode not in SIGMA_MODES:
            raise BoLIDError(f"sigma_mode must be one of {SIGMA_MODES}; got {self.sigma_mode!r}")

    # --- the parts each step reads -------------------------------------------------------------
    @property
    def weighting(self) -> dict:
        """Keyword arguments of ``weighting.apply_weighting``."""
        return {"sigma": self.sigma, "alpha": self.alpha, "sigma_mode": self.sigma_mode}

    @property
    def pose(self) -> dict:
        """Keyword arguments of ``PoseModel.predict``."""
        return {"conf": self.conf, "visibility": self.visibility}

    def with_weighting(self, sigma: float, sigma_mode: str, alpha: float) -> "BodyIDRecipe":
        return replace(self, sigma=float(sigma), sigma_mode=sigma_mode, alpha=float(alpha))

    # --- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return settings.to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "BodyIDRecipe":
        return settings.from_dict(cls, data, unknown="this Body-ID recipe has settings this pack does not know ({}): "
                                                     "update ComfyUI-BoLID")

    @classmethod
    def from_metadata(cls, meta: dict, name: str = "the file") -> "BodyIDRecipe | None":
        """The recipe recorded in a VAE file's metadata, or None where the file records none (an older file)."""
        raw = meta.get(RECIPE_KEY)
        if raw is None:
            return None
        try:
            return cls.from_dict(json.loads(raw))
        except (json.JSONDecodeError, TypeError) as e:
            raise BoLIDError(f"{name} has a malformed Body-ID recipe ({e}): get the file again") from e

    def describe(self) -> str:
        size = "the photos' own size" if self.working_size is None else f"{self.working_size} px"
        return (f"photos at {size}, pose conf {self.conf:g}, visibility {self.visibility:g}, "
                f"sigma {self.sigma:g} ({self.sigma_mode}), alpha {self.alpha:g}")


DEFAULT_RECIPE = BodyIDRecipe()
# What every VAE file without a recorded recipe was trained with: the trainer's defaults until issue 27
# (photos decoded at full size, conf 0.25, visibility 0.5, sigma 0.1 relative, alpha 0.1).
LEGACY_RECIPE = BodyIDRecipe(working_size=None)


def recipe_of(vae) -> BodyIDRecipe:
    """The recipe a Body-ID VAE was trained with: the one its file records, else ``LEGACY_RECIPE``."""
    recipe = getattr(vae, "recipe", None)
    return recipe if recipe is not None else LEGACY_RECIPE


def recipe_note(vae) -> str:
    """One line saying which recipe a VAE carries, naming the old defaults for a file that records none."""
    if getattr(vae, "recipe", None) is None:
        return (f"this Body-ID VAE file records no recipe (written before it was recorded): it was trained with the "
                f"old defaults, {LEGACY_RECIPE.describe()}")
    return f"the Body-ID VAE was trained with {vae.recipe.describe()}"


def mismatches(used: dict, expected: BodyIDRecipe) -> list[str]:
    """The settings in ``used`` (a dict of recipe fields; missing ones are unknown and skipped) that differ from
    ``expected``, each as 'name used (VAE: expected)'."""
    out = []
    for name, value in used.items():
        want = getattr(expected, name)
        if name == "working_size" and want is None:
            continue                                    # trained at the photos' own size: any working size is near
        same = value == want if isinstance(want, (str, type(None))) else math.isclose(float(value), float(want),
                                                                                    rel_tol=1e-6, abs_tol=1e-9)
        if not same:
            out.append(f"{name} {value:g} (VAE: {want:g})" if not isinstance(value, str) else f"{name} {value} (VAE: {want})")
    return out


def mismatch_message(used: dict, vae) -> str | None:
    """What a node shows when the settings it used differ from the VAE's recipe: the differences and the fix."""
    diff = mismatches(used, recipe_of(vae))
    if not diff:
        return None
    return ("these settings differ from those the Body-ID VAE was trained with: " + ", ".join(diff) + ". The Body-ID "
            "is then not the one the VAE would give: connect the Body-ID VAE to BoLID Pose Keypoints and BoLID "
            "Gaussian Weighting (their body_vae input) so they use its settings, or set these to the VAE's values")


# --- the pipeline ---------------------------------------------------------------------------------

def weighted_views(images, pose_model, recipe: BodyIDRecipe, *, progress: Callable[[int, int], None] | None = None):
    """Pose and Gaussian weighting of photos as ``recipe`` says: images (B, 3, S, S) in [0, 1] (already at the
    recipe's working size) -> (weighted (B, 3, S, S), PoseBatch). What the trainer prepares and the nodes do."""
    from .weighting import apply_weighting

    pose = pose_model.predict(images, **recipe.pose, on_missing="skip", progress=progress)
    weighted, _ = apply_weighting(images, pose.keypoints, **recipe.weighting)
    return weighted, pose


def encode_photos(vae, images, pose_model, recipe: BodyIDRecipe | None = None, *, chunk: int = 8):
    """The Body-ID of one person's photos, prepared with ``recipe`` (default: the VAE's own): images (B, 3, S, S)
    in [0, 1] at the recipe's working size -> BodyEmbedding (mean (D,), logvar (D,))."""
    from .body_vae import encode_body

    weighted, pose = weighted_views(images, pose_model, recipe or recipe_of(vae))
    return encode_body(vae, weighted, pose, chunk=chunk)


__all__ = ["RECIPE_KEY", "SIGMA_MODES", "BodyIDRecipe", "DEFAULT_RECIPE", "LEGACY_RECIPE", "recipe_of", "recipe_note",
           "mismatches", "mismatch_message", "weighted_views", "encode_photos"]
