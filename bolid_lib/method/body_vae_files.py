"""The Body-ID VAE's file: weights, config, format version, fingerprint and the Body-ID recipe it was trained with
(``body_id.BodyIDRecipe``), one .safetensors."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .. import files
from ..errors import BoLIDError
from .body_id import RECIPE_KEY, BodyIDRecipe
from .body_vae import BodyVAE
from .body_vae_config import BodyVAEConfig

FORMAT = "bolid.body_vae"
# 2: the keypoint branch reads the longer of each left/right twin and the Body-ID the tail-pooled segment ratios
# (tail_pool): a version-1 file's tensors no longer fit the model, so it is refused by version, with the fix.
VERSION = 2
FINGERPRINT_KEY = "bolid.fingerprint"



def save_body_vae(model: BodyVAE, path: str | os.PathLike, *, overwrite: bool = True,
                  recipe: BodyIDRecipe | None = None) -> Path:
    """Write the VAE as one .safetensors: weights, config, format version and the Body-ID recipe it was trained
    with (``recipe``, default the model's own) in the metadata."""
    recipe = recipe if recipe is not None else model.recipe
    metadata = {FINGERPRINT_KEY: model.fingerprint(refresh=True)}
    if recipe is not None:
        metadata[RECIPE_KEY] = recipe.to_json()
    return files.save_safetensors_atomic(
        dict(model.state_dict()), path, fmt=FORMAT, version=VERSION, config=model.config.to_dict(),
        metadata=metadata, overwrite=overwrite)


def load_body_vae(path: str | os.PathLike, device: str | torch.device = "cpu") -> BodyVAE:
    """Read a Body-ID VAE file; refuse a file of another kind, saying what it looks like."""
    path = Path(path)
    tensors, meta = files.read_safetensors(path)
    if meta.get(files.FORMAT_KEY) != FORMAT:
        raise BoLIDError(f"{path.name} is not a Body-ID VAE file ({FORMAT}): it looks like {files.describe_safetensors(path)}; "
                         f"pick a file written by 'python -m bolid_lib.training body-vae'")
    version, config = files.read_format(meta, path, fmt=FORMAT, max_version=VERSION)
    if version < VERSION:
        raise BoLIDError(f"{path.name} is a Body-ID VAE of format version {version}, written by an older ComfyUI-BoLID whose "
                         f"keypoint branch this version (format {VERSION}) changed, so its weights no longer fit: train it again "
                         "with 'python -m bolid_lib.training body-vae' (Body-IDs it made still load; encode the photos again "
                         "with the new VAE to use them with adapters trained on it)")
    try:
        cfg = BodyVAEConfig.from_dict(config)
    except TypeError as e:
        raise BoLIDError(f"{path.name} has a malformed Body-ID VAE config ({e}): get the file again") from e
    model = BodyVAE(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise BoLIDError(f"{path.name} does not match its own config: {len(missing)} missing tensors {missing[:3]}, "
                         f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of wrong shape {wrong[:3]}; the file is damaged: get it again")
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise BoLIDError(f"{path.name} has NaN or infinite weights in {bad[:3]}: the training diverged; use an earlier checkpoint")
    model.load_state_dict(tensors, strict=True)
    model.recipe = BodyIDRecipe.from_metadata(meta, path.name)
    return model.to(device).eval()


__all__ = ["FORMAT", "VERSION", "FINGERPRINT_KEY", "save_body_vae", "load_body_vae"]
