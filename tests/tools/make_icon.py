"""Draw the pack's icon (docs/images/icon.png, 400 x 400) with the pack's own code.

    python tests/tools/make_icon.py [--seed 3] [--out docs/images/icon.png]

A procedural person (bolid_lib.data.synthetic), Gaussian keypoint weighting (paper 4.1) and the skeleton overlay the
pose node draws: what BoLID looks at. pyproject's [tool.comfy] Icon points at the committed file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bolid_lib import synthetic  # noqa: E402
from bolid_lib.method.body_vae import person_crop  # noqa: E402
from bolid_lib.method.draw import draw_skeleton  # noqa: E402
from bolid_lib.method.keypoints import PoseBatch  # noqa: E402
from bolid_lib.method.weighting import apply_weighting  # noqa: E402


def make_icon(seed: int = 3, size: int = 400) -> Image.Image:
    shapes = synthetic.random_shapes(1, seed)
    img, kp = synthetic.render_views(shapes, seed, synthetic.RenderSettings(size=2 * size, pose_range=(0.3, 0.6),
                                                                           min_height=0.6, max_height=0.6))
    img, kp = person_crop(img, kp, size, margin=0.12)                  # the person centred, as the VAE crops
    weighted, _ = apply_weighting(img, kp, sigma=0.12, alpha=0.15)
    pose = PoseBatch(kp, torch.zeros(1, 4), torch.ones(1, dtype=torch.bool), (size, size))
    out = draw_skeleton(weighted, pose, thickness=max(2, size // 100))
    arr = (out[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "icon.png"))
    args = ap.parse_args()
    make_icon(args.seed).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
