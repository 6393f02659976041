"""Images per second of ``bolid_lib.data.prepare.prepare`` with 1 and 2 workers, in the same run.

    python tests/benchmarks/bench_prepare.py [--images 24] [--size 1200x1000] [--no-yolo]

Builds a tree of JPEG photos (4 persons; sizes above the paper's 1000 px minimum) in a temp folder, then
times ``prepare`` twice per setting: decoding/hashing only (person filter off), and with a random-init
YOLO11n-pose counting persons at 640 px in the main process (the shape of a real run; its weights do not
matter for the time). Prints images/s and the ratio against 1 worker. Spawning worker processes is part
of the measured time, as it is for a user.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bolid_lib import data as D  # noqa: E402


def build(src: Path, n: int, w: int, h: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        # smooth picture plus noise: JPEG sizes like photos' (a few hundred kB), not like flat colour
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (w + h))], -1)
        img = (base + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)
        p = src / f"person{i % 4}" / f"img{i:03d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p, quality=90)


def timed(src: Path, out: Path, workers: int, counter) -> float:
    config = D.PrepareConfig(min_side=1000, workers=workers, person_filter=counter is not None)
    t = time.perf_counter()
    report = D.prepare(src, out, config=config, count_persons=counter)
    dt = time.perf_counter() - t
    assert report.counts["files"] > 0
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", default="1200x1000")
    ap.add_argument("--no-yolo", action="store_true")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build(tmp / "src", args.images, w, h)
        settings = [("decode+hash", None)]
        if not args.no_yolo:
            import hostlib

            pt = hostlib.save_yolo(tmp / "yolo11n-pose.pt")
            settings.append(("with YOLO count", D.yolo_person_counter(pt, conf=0.5)))
        import os

        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
        print(f"prepare on {args.images} JPEG images of {w}x{h}; {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}" + (", Linux autogroup on (all processes of this session share one CPU "
                                             "slice: extra workers gain only on an idle machine)"
                                             if autogroup.exists() and autogroup.read_text().strip() == "1" else ""))
        for label, counter in settings:
            timed(tmp / "src", tmp / f"warm_{label}", 1, counter)  # warm caches and the model once
            base = None
            for workers in (1, 2):
                dt = timed(tmp / "src", tmp / f"out_{label}_{workers}", workers, counter)
                ips = args.images / dt
                base = base or ips
                print(f"  {label:16s} workers={workers}: {ips:6.2f} images/s ({dt:5.2f} s)  x{ips / base:.2f} vs 1 worker")


if __name__ == "__main__":
    main()
