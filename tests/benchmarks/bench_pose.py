"""Pose keypoints: the node's library path versus ultralytics ``predict`` on the same batch, in the same run.

    python tests/benchmarks/bench_pose.py [--images 16] [--size 640] [--repeats 5] [--device cpu|cuda] [--conf 1e-4]

A random-init YOLO11n-pose built offline (its weights do not change the work; conf 1e-4 makes every image
carry detections, so NMS and person selection do real work). Both paths get the same (B, 3, S, S) float
tensor in [0, 1]. Timed, interleaved, median of the repeats after one warm-up each:

- baseline: ``YOLO.predict(batch, conf=..., verbose=False)``: the least a user of ultralytics would call;
- library:  ``PoseModel.predict(batch, conf=...)``: what BoLIDPoseKeypoints runs (letterbox check,
            chunking, person choice, visibility threshold, PoseBatch); target ratio <= 1.05;
- library's own work alone: the range check and person selection timed by themselves (what the library
            adds around the same predict call; a steady estimate of the ratio on a busy shared CPU, where two
            runs of the same predict already differ by several per cent);
- node extras: skeleton drawing and the POSE_KEYPOINT conversion the node adds for its other outputs
            (reported on their own and as the whole node's ratio; the PNG previews ComfyUI saves are not timed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bolid_lib.method.draw import draw_skeleton  # noqa: E402
from bolid_lib.method.keypoints import pose_batch_to_pose_keypoint  # noqa: E402
from bolid_lib.method.pose import PoseModel, select_people  # noqa: E402


def timed(fn, sync):
    """(wall seconds, CPU seconds of this process, result). On a shared CPU the CPU time is the steadier
    measure of the work done; on a GPU the wall time is the one that matters."""
    sync()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    sync()
    return time.perf_counter() - t, time.process_time() - c, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--conf", type=float, default=1e-4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "yolo11n-pose-random.pt"
        YOLO("yolo11n-pose.yaml").save(str(path))
        model = PoseModel.load(str(path), device=args.device)
    device = model.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    batch = torch.rand(args.images, 3, args.size, args.size, generator=g).to(device)

    def baseline():
        return model.yolo.predict(batch, conf=args.conf, verbose=False, device=device)

    def library():
        return model.predict(batch, conf=args.conf, batch_size=args.images, imgsz=args.size)

    cpu_batch = batch.cpu()
    results = baseline()  # warm-up: ultralytics builds its predictor and fuses the model on the first call

    def added():
        """Only what the library adds around the same predict call: range check and person selection."""
        ok = bool(batch.amin() >= 0) and bool(batch.amax() <= 1)
        return ok, select_people(results, policy="largest", visibility=0.5)
    pose = library()
    extras_fn = lambda: (draw_skeleton(cpu_batch, pose), pose_batch_to_pose_keypoint(pose))  # noqa: E731
    extras_fn()
    times = {k: [] for k in ("baseline", "library", "extras", "added")}

    def record(name, fn):
        wall, cpu, out = timed(fn, sync)
        times[name].append((wall, cpu))
        return out

    for r in range(args.repeats):
        # Alternate the order so that drift in the machine's load (a shared CPU) falls on both sides.
        if r % 2 == 0:
            record("baseline", baseline)
        pose = record("library", library)
        if r % 2 == 1:
            record("baseline", baseline)
        record("extras", extras_fn)
        record("added", added)
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    found = int(pose.found.sum())
    print(f"device {device}, {args.images} images {args.size}x{args.size}, conf {args.conf}, "
          f"{args.repeats} repeats (median), persons found {found}/{args.images}, torch threads {torch.get_num_threads()}")
    print(f"{'':34s}{'wall ms':>10s}{'ratio':>8s}{'CPU ms':>11s}{'ratio':>8s}")
    for label, key in (("ultralytics predict (baseline)", "baseline"), ("PoseModel.predict (library)", "library"),
                       ("skeleton + POSE_KEYPOINT", "extras"), ("library's own work alone", "added")):
        print(f"{label:34s}{wall[key] * 1e3:10.1f}{wall[key] / wall['baseline']:8.3f}"
              f"{cpu[key] * 1e3:11.1f}{cpu[key] / cpu['baseline']:8.3f}")
    print(f"{'node compute (library + extras)':34s}{'':10s}{(wall['library'] + wall['extras']) / wall['baseline']:8.3f}"
          f"{'':11s}{(cpu['library'] + cpu['extras']) / cpu['baseline']:8.3f}")
    print(f"{'baseline + library own work':34s}{'':10s}{1 + wall['added'] / wall['baseline']:8.3f}"
          f"{'':11s}{1 + cpu['added'] / cpu['baseline']:8.3f}   (steady estimate of the library ratio)")
    print("target: library / baseline <= 1.05")

if __name__ == "__main__":
    main()
