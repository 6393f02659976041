"""Benchmark: a folder of phone photos to a saved Body-ID through the nodes, with decode alone as the baseline.

    COMFYUI_PATH=/path/to/ComfyUI python tests/benchmarks/bench_folder_to_body_id.py \
        [--photos 25,100] [--size 1024] [--threads 2] [--cache DIR]

The photos are made here once and cached outside the repository (default ~/.cache/bolid-test-assets): phone-
sized (about 12 MP: 4032x3024, 4000x3000, 4080x3072, and 16:9 4032x2268), every other one HEIC (pillow-heif's
HEVC encoder, the rotation stored as the HEIF transform, as phones do) and the rest JPEG (with an EXIF
orientation tag of 1, 3, 6 or 8, so a quarter are stored sideways), showing a procedural person
(bolid_lib.data.synthetic) scaled up with a little sensor-like noise so the files have realistic sizes.

For each count of photos, two fresh child processes on ``--threads`` threads (each peak is its own; memory is
the growth of the resident set's high-water mark during the measured call, tests/memlib.py):

- decode (the baseline): ``bolid_lib.data.photos.load_photos`` on the folder, what BoLID Load Photos runs;
- pipeline: the shipped example workflow ``bolid_build_body_id.json`` converted against the live node registry
  and run by ComfyUI's real executor (in-process, tests/hostlib.py): Load Photos -> Pose Keypoints (random-init
  YOLO11n-pose; conf ~0 so every photo carries a detection) -> Gaussian Weighting -> Body-ID Encode (random
  Body-ID VAE of the default layout) -> Save Body-ID (+ Preview), every node's previews included. One run on
  two photos first, so imports and kernel warm-up are not counted. Stage times are taken between the
  executor's "executing" events.

Memory per photo is shown in units of the working-size image (S x S x 3 float32): the decode baseline should
grow by about one image (+ its mask) per photo and nothing for the full-resolution decode; the pipeline grows
by what its nodes keep per photo (each node's outputs stay cached by ComfyUI until the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from memlib import MMAP_ENV, peak_extra  # noqa: E402

CACHE = Path(os.environ.get("BOLID_TEST_ASSETS", Path.home() / ".cache" / "bolid-test-assets"))
SET_NAME = "phone_photos_v1"
# Stored (width, height) of the phone photos, cycled.
SIZES = [(4032, 3024), (4000, 3000), (4080, 3072), (4032, 2268)]
ORIENTATIONS = [1, 6, 1, 8, 1, 3]  # mostly upright, some sideways (6, 8), one upside down (3)
STAGES = {"BoLIDLoadPhotos": "decode", "BoLIDPoseModelLoader": "pose", "BoLIDPoseKeypoints": "pose",
          "BoLIDGaussianWeighting": "weighting", "BoLIDBodyVAELoader": "encode", "BoLIDBodyEncode": "encode",
          "BoLIDSaveBody": "save", "BoLIDBodyPreview": "save"}


# --- the photos --------------------------------------------------------------------------------------

def _person(index: int, w: int, h: int):
    """An upright w x h RGB photo of a procedural person, with mild noise (uint8 array)."""
    import numpy as np
    import torch
    from PIL import Image

    from bolid_lib.data.synthetic import RenderSettings, random_shapes, render_views

    images, _ = render_views(random_shapes(1, seed=5), seed=100 + index,
                             settings=RenderSettings(size=512, min_height=0.7, max_height=0.9))
    small = Image.fromarray((images[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy())
    side = max(w, h)
    big = small.resize((side, side), Image.Resampling.BICUBIC)
    big = big.crop(((side - w) // 2, (side - h) // 2, (side - w) // 2 + w, (side - h) // 2 + h))
    rng = np.random.default_rng(index)
    arr = np.asarray(big, dtype=np.int16) + rng.normal(0, 4, (h, w, 3)).astype(np.int16)
    return arr.clip(0, 255).astype(np.uint8)


def make_photo(index: int, folder: Path) -> Path:
    import pillow_heif
    from PIL import Image

    w, h = SIZES[index % len(SIZES)]
    orientation = ORIENTATIONS[(index // 2) % len(ORIENTATIONS)]
    upright_w, upright_h = (h, w) if orientation in (6, 8) else (w, h)
    img = Image.fromarray(_person(index, upright_w, upright_h))
    exif = Image.Exif()
    exif[0x0112] = orientation
    if index % 2:  # HEIC: pillow-heif stores the orientation as the HEIF rotation and resets the EXIF tag
        path = folder / f"IMG_{index:04d}.HEIC"
        stored = _store(img, orientation)
        pillow_heif.from_pillow(stored).save(str(path), quality=50, exif=exif.tobytes(),
                                             enc_params={"preset": "ultrafast"})
    else:
        path = folder / f"IMG_{index:04d}.JPG"
        _store(img, orientation).save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path


def _store(upright, orientation: int):
    """The stored pixels of an upright picture, for its EXIF orientation (the inverse of exif_transpose)."""
    from PIL import Image

    inverse = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    t = inverse[orientation]
    return upright if t is None else upright.transpose(t)


def ensure_photos(n: int, cache: Path) -> list[Path]:
    folder = cache / SET_NAME
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    t = time.perf_counter()
    for i in range(n):
        found = [p for p in (folder / f"IMG_{i:04d}.JPG", folder / f"IMG_{i:04d}.HEIC") if p.is_file()]
        paths.append(found[0] if found else make_photo(i, folder))
    if time.perf_counter() - t > 5:
        print(f"(made the photo set in {time.perf_counter() - t:.0f} s; cached in {folder})", flush=True)
    return paths


def fill_input(base: Path, name: str, photos: list[Path]) -> None:
    folder = base / "input" / name
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        try:
            os.link(p, folder / p.name)  # a hard link is a regular file of the folder (links out are refused)
        except OSError:
            shutil.copyfile(p, folder / p.name)


# --- children ------------------------------------------------------------------------------------------

def child_decode(base: Path, name: str, size: int) -> dict:
    from bolid_lib.data import photos as ph

    folder = base / "input" / name
    first = sorted(folder.iterdir())
    ph.decode_photo(first[0], size)                   # warm-up: codecs loaded, allocator primed
    ph.decode_photo(first[1], size)
    t, c = time.perf_counter(), time.process_time()
    batch, extra = peak_extra(lambda: ph.load_photos(base / "input", name, size))
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    formats = {}
    for f in batch.formats:
        formats[f] = formats.get(f, 0) + 1
    return {"seconds": seconds, "cpu": cpu, "peak_extra_bytes": extra, "photos": len(batch.names), "formats": formats,
            "skipped": len(batch.skipped), "batch_bytes": batch.images.numel() * 4 + batch.masks.numel() * 4}


def child_pipeline(base: Path, name: str, size: int) -> dict:
    import asyncio

    import torch

    import hostlib
    from bolid_lib.runner import workflow as wfl
    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, save_body_vae

    comfy = hostlib.boot(base)
    hostlib.save_yolo(comfy.models_dir / "ultralytics" / "pose" / "yolo11n-pose.pt")
    torch.manual_seed(0)
    save_body_vae(BodyVAE(BodyVAEConfig()), comfy.models_dir / "bolid" / "bolid_body_vae.safetensors")
    live = json.loads(json.dumps({n: comfy.object_info(n) for n in comfy.nodes.NODE_CLASS_MAPPINGS}))
    wf = json.loads((REPO / "example_workflows" / "bolid_build_body_id.json").read_text())

    def prompt_for(folder: str) -> dict:
        prompt = wfl.ui_to_api(wf, live)
        for entry in prompt.values():
            if entry["class_type"] == "BoLIDLoadPhotos":
                entry["inputs"].update(folder=folder, size=size)
            if entry["class_type"] == "BoLIDPoseKeypoints":
                entry["inputs"].update(conf=0.0001, visibility=0.0)
        return prompt

    events: list[tuple[float, float, str | None]] = []  # (wall, CPU seconds of this process, node id)
    send = comfy.server.send_sync

    def timed_send(event, data, sid=None):
        if event == "executing":
            events.append((time.perf_counter(), time.process_time(), data.get("node") if isinstance(data, dict) else None))
        send(event, data, sid)

    comfy.server.send_sync = timed_send

    def run(prompt: dict, pid: str) -> None:
        comfy.executor.reset()
        ok, err, outputs, node_errors = asyncio.run(comfy.execution.validate_prompt(pid, prompt, None))[:4]
        if not ok:
            raise RuntimeError(json.dumps({"error": err, "node_errors": node_errors}, default=str)[:3000])
        with torch.inference_mode():
            comfy.executor.execute(prompt, pid, {"client_id": "bench"}, outputs)
        if not comfy.executor.success:
            raise RuntimeError(str(comfy.executor.status_messages)[-3000:])

    run(prompt_for("warmup"), "warmup")
    bodies = comfy.models_dir / "bolid" / "bodies"
    before = set(bodies.glob("*.safetensors"))
    prompt = prompt_for(name)
    events.clear()
    t, c = time.perf_counter(), time.process_time()
    _, extra = peak_extra(lambda: run(prompt, "measured"))
    end, cpu_end = time.perf_counter(), time.process_time()
    seconds, cpu = end - t, cpu_end - c
    stages: dict[str, float] = {}
    stages_cpu: dict[str, float] = {}
    nodes: dict[str, float] = {}
    marks = [m for m in events if m[2] is not None] + [(end, cpu_end, None)]
    for (t0, c0, node), (t1, c1, _) in zip(marks, marks[1:]):
        kind = prompt[node]["class_type"]
        nodes[kind] = nodes.get(kind, 0.0) + (t1 - t0)
        stage = STAGES.get(kind, "other")
        stages[stage] = stages.get(stage, 0.0) + (t1 - t0)
        stages_cpu[stage] = stages_cpu.get(stage, 0.0) + (c1 - c0)
    saved = sorted(set(bodies.glob("*.safetensors")) - before)
    return {"seconds": seconds, "cpu": cpu, "peak_extra_bytes": extra, "stages": stages, "stages_cpu": stages_cpu,
            "nodes": nodes,
            "saved": [p.name for p in saved]}


def _child(kind: str, base: Path, name: str, size: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    try:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    except (AttributeError, OSError):
        pass
    return child_decode(base, name, size) if kind == "decode" else child_pipeline(base, name, size)


def spawn(kind: str, base: Path, name: str, size: int, threads: int) -> dict:
    env = {**os.environ, **MMAP_ENV, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--base", str(base), "--folder", name,
                          "--size", str(size), "--threads", str(threads)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", default="25,100", help="counts of photos to run, comma-separated (default 25,100)")
    p.add_argument("--size", type=int, default=1024, help="BoLID Load Photos' working size (default 1024, the node's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--child", choices=["decode", "pipeline"])
    p.add_argument("--base", type=Path)
    p.add_argument("--folder")
    a = p.parse_args()
    if a.child:
        print(json.dumps(_child(a.child, a.base, a.folder, a.size, a.threads)))
        return 0
    counts = [int(c) for c in a.photos.split(",")]
    photos = ensure_photos(max(counts), a.cache)
    mib = 1024 ** 2
    photo_bytes = a.size * a.size * 3 * 4
    mask_bytes = a.size * a.size * 4
    results = {}
    with tempfile.TemporaryDirectory(prefix="bolid_bench_folder_") as tmp:
        base = Path(tmp)
        fill_input(base, "warmup", photos[:2])
        for n in counts:
            fill_input(base, f"person_{n}", photos[:n])
            results[n] = {"decode": spawn("decode", base, f"person_{n}", a.size, a.threads),
                          "pipeline": spawn("pipeline", base, f"person_{n}", a.size, a.threads)}
    files = sum(p.stat().st_size for p in photos[:max(counts)])
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"(machine load average at the end: {load[0]:.1f} over 1 min, {load[2]:.1f} over 15 min, {os.cpu_count()} CPUs; "
          "CPU seconds are the steadier measure on a shared machine)")
    print(f"Folder -> saved Body-ID through the nodes, shipped workflow bolid_build_body_id.json, working size {a.size}, "
          f"{a.threads} thread(s); photos: {max(counts)} phone-sized ({files / max(counts) / 1e6:.1f} MB a file on average), "
          f"JPEG with EXIF orientation and HEIC, 4 sizes")
    print(f"  working-size bytes per photo: image {photo_bytes / mib:.1f} MiB + mask {mask_bytes / mib:.1f} MiB; "
          f"a full-resolution 12 MP photo decoded is {4032 * 3024 * 3 / mib:.1f} MiB (uint8)")
    for n, r in results.items():
        d, pl = r["decode"], r["pipeline"]
        order = ["decode", "pose", "weighting", "encode", "save", "other"]
        shares = ", ".join(f"{s} {pl['stages'][s]:.1f} s ({100 * pl['stages'][s] / pl['seconds']:.0f}%; "
                           f"CPU {pl['stages_cpu'][s]:.1f} s)" for s in order if s in pl["stages"])
        print(f"\n  {n} photos ({', '.join(f'{v} {k}' for k, v in sorted(d['formats'].items()))}):")
        print(f"    decode alone (baseline): {d['seconds']:6.1f} s wall, {d['cpu']:6.1f} s CPU ({1000 * d['seconds'] / n:.0f} ms a photo), "
              f"peak +{d['peak_extra_bytes'] / mib:7.1f} MiB = {d['peak_extra_bytes'] / n / photo_bytes:.2f} working-size "
              f"images a photo (the batch itself: {d['batch_bytes'] / mib:.0f} MiB)")
        print(f"    whole pipeline:          {pl['seconds']:6.1f} s wall, {pl['cpu']:6.1f} s CPU (x{pl['seconds'] / d['seconds']:.2f} decode alone; "
              f"target <= 60 s), peak +{pl['peak_extra_bytes'] / mib:7.1f} MiB = "
              f"{pl['peak_extra_bytes'] / n / photo_bytes:.2f} working-size images a photo")
        print(f"    stages: {shares}")
        print("    nodes: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(pl["nodes"].items(), key=lambda kv: -kv[1])))
        print(f"    saved: {', '.join(pl['saved'])}")
    if len(counts) >= 2:
        lo, hi = counts[0], counts[-1]
        for kind in ("decode", "pipeline"):
            grow = (results[hi][kind]["peak_extra_bytes"] - results[lo][kind]["peak_extra_bytes"]) / (hi - lo)
            print(f"\n  {kind}: peak growth from {lo} to {hi} photos = {grow / mib:.1f} MiB a photo = "
                  f"{grow / photo_bytes:.2f} working-size images (image + mask = {(photo_bytes + mask_bytes) / photo_bytes:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
