"""Issue 27, faults 2 and 4: one photo reader for every path (a phone's EXIF-rotated portrait arrives upright in
each), and one vetted loader for every ultralytics ``.pt`` (the data-prep watermark filter included; its canary test is
tests/unit/test_pose.py::test_refuses_a_pickle_that_would_run_code)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


LIB = Path(__file__).resolve().parents[2] / "bolid_lib"
UPRIGHT_W, UPRIGHT_H = 40, 60            # a portrait: red top half, blue bottom half


@pytest.fixture
def phone_photo(tmp_path) -> Path:
    """A JPEG stored landscape (60 x 40 pixels) with EXIF orientation 6, as phones save portraits."""
    up = np.zeros((UPRIGHT_H, UPRIGHT_W, 3), np.uint8)
    up[: UPRIGHT_H // 2] = (220, 30, 30)
    up[UPRIGHT_H // 2:] = (30, 30, 220)
    stored = Image.fromarray(up).rotate(90, expand=True)          # exif_transpose of orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "person" / "IMG_0001.jpg"
    path.parent.mkdir()
    stored.save(path, quality=95, exif=exif.tobytes())
    assert Image.open(path).size == (UPRIGHT_H, UPRIGHT_W)
    return path


def assert_upright(chw: torch.Tensor, what: str, width: int | None = None) -> None:
    """(3, H, W) in [0, 1] (or uint8 HWC via numpy): red on top, blue at the bottom of the photo's own columns."""
    x = chw.float()
    if x.max() > 1.5:
        x = x / 255
    w = width or x.shape[-1]
    top, bottom = x[:, : x.shape[1] // 4, :w].mean((1, 2)), x[:, -x.shape[1] // 4 :, :w].mean((1, 2))
    assert top[0] > 0.6 and top[2] < 0.4 and bottom[2] > 0.6 and bottom[0] < 0.4, (what, top, bottom)


def test_every_path_reads_the_phone_portrait_upright(phone_photo, tmp_path):
    from bolid_lib.data import photos
    from bolid_lib.data.prepare import inspect_file
    from bolid_lib.data.views import read_recipe_photo
    from bolid_lib.evaluation.evaluate import read_image as eval_read
    from bolid_lib.method.body_id import BodyIDRecipe
    from bolid_lib.training.dataset import load_image

    x = photos.read_image(phone_photo)
    assert x.shape == (3, UPRIGHT_H, UPRIGHT_W)
    assert_upright(x, "photos.read_image")
    batch = photos.load_photos(tmp_path, "person", 64)                                    # Load Photos
    assert batch.source_sizes == [(UPRIGHT_W, UPRIGHT_H)]
    assert_upright(batch.images[0], "load_photos", width=round(64 * UPRIGHT_W / UPRIGHT_H))
    img, (oh, ow, _, _) = load_image(phone_photo, 32)                                    # adapter trainer
    assert (oh, ow) == (UPRIGHT_H, UPRIGHT_W)
    assert_upright(img, "training.dataset.load_image")
    v = read_recipe_photo(phone_photo, BodyIDRecipe(working_size=64))                   # Body-ID VAE trainer
    assert_upright(v, "data.views.read_recipe_photo", width=round(64 * UPRIGHT_W / UPRIGHT_H))
    assert_upright(eval_read(phone_photo), "evaluation.read_image")                      # evaluation
    info = inspect_file(str(phone_photo), "person/IMG_0001.jpg", "person", min_side=16, imgsz=64)   # preparation
    assert info.status == "ok", info.detail
    assert_upright(torch.from_numpy(info.thumb).permute(2, 0, 1), "prepare.inspect_file",
                   width=round(64 * UPRIGHT_W / UPRIGHT_H))


def test_no_image_is_opened_outside_the_photo_reader():
    """Image.open, exif_transpose and the like appear in data/photos.py only."""
    found = []
    for path in LIB.rglob("*.py"):
        if path == LIB / "data" / "photos.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("open", "exif_transpose") and \
                    isinstance(node.value, ast.Name) and node.value.id in ("Image", "ImageOps", "PIL"):
                found.append(f"{path.relative_to(LIB)}:{node.lineno}")
    assert found == [], found


def test_a_yolo_is_built_from_a_pt_only_in_the_vetted_loader():
    """``YOLO(`` on a path appears once in the library: in method.pose.load_yolo (models.py builds from a yaml)."""
    calls = []
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "YOLO":
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Constant) and str(arg.value).endswith(".yaml")):
                    calls.append(f"{path.relative_to(LIB)}:{node.lineno}")
    assert len(calls) == 1 and calls[0].startswith("method/pose.py"), calls
