"""Issue 27, fault 1: one truth for what makes a Body-ID. The settings have one home (method.body_id), every
default reads it, the trainer records the recipe in the VAE file, and a file without one names the old defaults."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import load_file, save_file

from bolid_lib.errors import BoLIDError
from bolid_lib.method.body_id import (DEFAULT_RECIPE, LEGACY_RECIPE, RECIPE_KEY, BodyIDRecipe, mismatch_message,
                                      recipe_note, recipe_of)
from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, load_body_vae, save_body_vae

TINY = BodyVAEConfig(input_size=32, latent_dim=8, widths=(8, 16), feature_dim=16)


def test_the_trainer_and_the_library_default_to_the_same_recipe():
    """The trainer's command line, the weighting, the pose model and the photo reader take their defaults from one
    recipe (before issue 27 the weighting said alpha 0.2 and the trainer 0.1)."""
    from bolid_lib.data import photos
    from bolid_lib.method import weighting
    from bolid_lib.training.body_vae import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--synthetic", "2", "--out", "x"])
    assert (args.sigma, args.alpha, args.conf, args.visibility) == \
           (DEFAULT_RECIPE.sigma, DEFAULT_RECIPE.alpha, DEFAULT_RECIPE.conf, DEFAULT_RECIPE.visibility)
    assert (weighting.DEFAULT_SIGMA, weighting.DEFAULT_SIGMA_MODE, weighting.DEFAULT_ALPHA) == \
           (args.sigma, args.sigma_mode, args.alpha)
    assert photos.DEFAULT_SIZE == args.working_size == DEFAULT_RECIPE.working_size


def test_recipe_round_trips_through_the_vae_file(tmp_path):
    torch.manual_seed(0)
    vae = BodyVAE(TINY)
    vae.recipe = BodyIDRecipe(working_size=512, conf=0.3, visibility=0.4, sigma=12.0, sigma_mode="pixels", alpha=0.25)
    back = load_body_vae(save_body_vae(vae, tmp_path / "v.safetensors"))
    assert back.recipe == vae.recipe and recipe_of(back) == vae.recipe
    assert back.fingerprint() == vae.fingerprint()        # the recipe is metadata: Body-IDs keep their VAE's id


def test_a_file_without_a_recipe_loads_and_names_the_old_defaults(tmp_path):
    torch.manual_seed(0)
    path = save_body_vae(BodyVAE(TINY), tmp_path / "old.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    assert RECIPE_KEY not in meta                          # a model never given a recipe writes none
    old = load_body_vae(path)
    assert old.recipe is None and recipe_of(old) == LEGACY_RECIPE
    assert "old defaults" in recipe_note(old) and "alpha 0.1" in recipe_note(old)
    # A file written by the trainer before issue 27 is the same: strip the key from a new one.
    vae = BodyVAE(TINY)
    vae.recipe = DEFAULT_RECIPE
    new = save_body_vae(vae, tmp_path / "new.safetensors")
    with safe_open(str(new), "pt") as f:
        meta = dict(f.metadata())
    meta.pop(RECIPE_KEY)
    save_file(load_file(str(new)), str(tmp_path / "stripped.safetensors"), metadata=meta)
    assert load_body_vae(tmp_path / "stripped.safetensors").recipe is None


def test_the_trainer_records_its_recipe(tmp_path):
    from bolid_lib.training.cli import main

    rc = main(["body-vae", "--synthetic", "3", "--views-per-person", "3", "--steps", "1", "--batch-persons", "2",
               "--input-size", "32", "--latent-dim", "8", "--widths", "8,16", "--feature-dim", "16", "--warmup", "1",
               "--alpha", "0.3", "--sigma", "0.05", "--device", "cpu", "--out", str(tmp_path)])
    assert rc == 0
    vae = load_body_vae(tmp_path / "body_vae.safetensors")
    # Synthetic views are rendered at the VAE's size with exact keypoints: no working size.
    assert vae.recipe == BodyIDRecipe(working_size=None, sigma=0.05, alpha=0.3)


def test_a_mismatch_names_each_setting_and_the_fix():
    vae = BodyVAE(TINY)
    vae.recipe = BodyIDRecipe(alpha=0.35, sigma=0.07)
    msg = mismatch_message({"sigma": 0.1, "sigma_mode": "relative", "alpha": 0.35, "conf": 0.25}, vae)
    assert "sigma 0.1 (VAE: 0.07)" in msg and "alpha" not in msg.split(":")[1] and "body_vae input" in msg
    assert mismatch_message({"alpha": 0.35, "sigma": 0.07, "working_size": 1024}, vae) is None
    # A VAE of the old files: any working size is accepted (it was trained at the photos' own size).
    assert mismatch_message({"working_size": 512, "alpha": 0.1}, BodyVAE(TINY)) is None


@pytest.mark.parametrize("bad", [dict(alpha=1.5), dict(sigma=-1.0), dict(sigma_mode="cm"), dict(working_size=10)])
def test_bad_recipes_are_refused(bad):
    with pytest.raises(BoLIDError):
        BodyIDRecipe(**bad)
