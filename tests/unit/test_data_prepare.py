"""``prepare`` on a generated tree with known contents: each file kept or dropped for the right reason,
the source byte-identical afterwards.

The person counter here is a real function reading the decoded, letterboxed pixels the pipeline hands it
(it counts bright vertical bars, which is how the generated pictures draw people), because a random-weight
YOLO cannot recognise anyone. The YOLO path itself is tested separately on a random-init pose model,
only for "loads, runs on the batches, returns one count per image".
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bolid_lib.data import prepare as D
from bolid_lib.errors import BoLIDError


def figure_image(w: int, h: int, persons: int, *, watermark: bool = False, seed: int = 0) -> Image.Image:
    """Dark picture with one bright vertical bar per person; a red corner square as a 'watermark'."""
    rng = np.random.default_rng(seed)
    a = np.full((h, w, 3), 20, np.uint8) + rng.integers(0, 15, (h, w, 3), dtype=np.uint8)
    for i in range(persons):
        x0 = int(w * (0.1 + 0.8 * i / max(persons, 1)))
        a[int(h * 0.2):int(h * 0.8), x0:x0 + max(2, w // 10)] = 250
    if watermark:
        a[: h // 6, w - w // 6:] = (255, 0, 0)
    return Image.fromarray(a)


def count_bars(images: torch.Tensor) -> list[int]:
    """images (B, 3, S, S) float [0, 1]: runs of columns holding a bright pixel (the 'persons')."""
    bright = (images.min(1).values > 200 / 255).any(1)          # (B, S) per column
    counts = []
    for col in bright.int():
        edges = torch.diff(torch.cat([torch.zeros(1, dtype=torch.int32), col]))
        counts.append(int((edges == 1).sum()))
    return counts


def red_corner(images: torch.Tensor) -> list[bool]:
    red = (images[:, 0] > 0.8) & (images[:, 1] < 0.2) & (images[:, 2] < 0.2)
    return [bool(r.sum() > 20) for r in red]


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


# file -> (bytes, expected reason or None when kept)
def build_tree(root: Path) -> dict[str, str | None]:
    a1 = _png(figure_image(100, 80, 1, seed=1))
    a2 = _png(figure_image(90, 120, 1, seed=2))
    good_jpeg = _jpeg(figure_image(200, 160, 1, seed=3))
    files = {
        "alice/a1.png": (a1, None),
        "alice/a2.png": (a2, None),
        "alice/a2_copy.png": (a2, "duplicate"),
        "alice/small.png": (_png(figure_image(60, 40, 1, seed=4)), "too_small"),
        "alice/group.png": (_png(figure_image(100, 100, 2, seed=5)), "several_persons"),
        "alice/crowd.png": (_png(figure_image(120, 100, 3, seed=6)), "several_persons"),
        "alice/empty.png": (_png(figure_image(100, 100, 0, seed=7)), "no_person"),
        "bob/b1.jpg": (good_jpeg, None),
        "bob/sub/b2.png": (_png(figure_image(64, 200, 1, seed=8)), None),
        "bob/broken.jpg": (_jpeg(figure_image(300, 300, 1, seed=9))[:2500], "corrupt"),
        "bob/notes.txt": (b"shot list: front, side, back\n", "not_image"),
        "bob/fake.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not_image"),
        "bob/a1_again.png": (a1, "duplicate"),
        "carol/wm.png": (_png(figure_image(100, 100, 1, watermark=True, seed=10)), "watermark"),
        "carol/c1.png": (_png(figure_image(128, 128, 1, seed=11)), None),
        "readme.txt": (b"photos by person\n", "outside_person_folder"),
    }
    for rel, (content, _) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
    return {rel: reason for rel, (_, reason) in files.items()}


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file's SHA-256 and mode, every folder: what 'byte-identical' means."""
    out = {}
    for dirpath, dirs, names in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = ("dir", 0)
        for n in names:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = (hashlib.sha256(Path(p).read_bytes()).hexdigest(), os.stat(p).st_mode)
    return out


def run_prepare(tmp_path, workers=1, **kw):
    src = tmp_path / "src"
    expected = build_tree(src)
    before = snapshot(src)
    config = D.PrepareConfig(min_side=64, workers=workers, imgsz=128, batch_size=3, **kw)
    seen = []
    report = D.prepare(src, tmp_path / "out", config=config, count_persons=count_bars, detect_watermark=red_corner,
                       progress=lambda d, t: seen.append((d, t)))
    assert snapshot(src) == before, "the source tree changed"
    return src, expected, report, seen


def test_prepare_keeps_and_drops_exactly_the_right_files(tmp_path):
    src, expected, report, seen = run_prepare(tmp_path)
    got = {k["file"]: None for k in report.kept} | {d["file"]: d["reason"] for d in report.dropped}
    assert got == expected
    out = tmp_path / "out"
    # kept files are byte copies at the same relative path, grouped by person
    for rel, reason in expected.items():
        assert (out / rel).exists() == (reason is None), rel
        if reason is None:
            assert (out / rel).read_bytes() == (src / rel).read_bytes()
            assert (out / rel).stat().st_ino != (src / rel).stat().st_ino  # a copy, not a link
    details = {d["file"]: d["detail"] for d in report.dropped}
    assert details["alice/a2_copy.png"] == "same bytes as alice/a2.png"
    assert details["bob/a1_again.png"] == "same bytes as alice/a1.png"
    assert details["alice/crowd.png"] == "3 persons detected"
    assert "60x40" in details["alice/small.png"]
    assert seen[-1] == (len(expected), len(expected))
    # the reports on disk say the same
    j = json.loads((out / D.REPORT_JSON).read_text())
    assert j["counts"]["kept"] == 5 and j["counts"]["duplicate"] == 2 and j["counts"]["files"] == len(expected)
    md = (out / D.REPORT_MD).read_text()
    assert "| `bob/broken.jpg` | corrupt |" in md and "| alice | 2 |" in md


def test_prepare_result_does_not_depend_on_workers(tmp_path):
    _, _, one, _ = run_prepare(tmp_path / "one", workers=1)
    _, _, two, _ = run_prepare(tmp_path / "two", workers=2)
    strip = lambda r: (r.kept, r.dropped)  # noqa: E731
    assert json.dumps(strip(one)) == json.dumps(strip(two))


def test_near_duplicates_opt_in(tmp_path):
    src = tmp_path / "src"
    a = np.full((100, 100, 3), 20, np.uint8)
    a[..., 1] = np.linspace(20, 180, 100).astype(np.uint8)[None, :]   # smooth structure for the hash
    a[20:80, 30:40] = 250                                              # one person
    base = Image.fromarray(a)
    (src / "ann").mkdir(parents=True)
    base.save(src / "ann" / "a.png")
    base.save(src / "ann" / "b.jpg", quality=80)            # same picture, other bytes
    base.transpose(Image.FLIP_LEFT_RIGHT).save(src / "ann" / "c.png")  # another picture
    cfg = dict(min_side=64, imgsz=64)
    exact = D.prepare(src, tmp_path / "o1", config=D.PrepareConfig(**cfg), count_persons=count_bars)
    assert len(exact.kept) == 3
    near = D.prepare(src, tmp_path / "o2", config=D.PrepareConfig(near_duplicate_bits=6, **cfg), count_persons=count_bars)
    assert [d["reason"] for d in near.dropped] == ["near_duplicate"] and near.dropped[0]["file"] == "ann/b.jpg"
    assert {k["file"] for k in near.kept} == {"ann/a.png", "ann/c.png"}


def test_prepare_refusals(tmp_path):
    src = tmp_path / "src"
    build_tree(src)
    with pytest.raises(BoLIDError, match="needs a person detector"):
        D.prepare(src, tmp_path / "out")
    with pytest.raises(BoLIDError, match="outside the source"):
        D.prepare(src, src / "clean", count_persons=count_bars)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BoLIDError, match="not empty"):
        D.prepare(src, tmp_path / "full", count_persons=count_bars)
    with pytest.raises(BoLIDError, match="source folder not found"):
        D.prepare(tmp_path / "absent", tmp_path / "o", count_persons=count_bars)
    with pytest.raises(BoLIDError, match="multiple of 32"):
        D.prepare(src, tmp_path / "o", config=D.PrepareConfig(imgsz=100), count_persons=count_bars)
    with pytest.raises(BoLIDError, match="answers"):
        D.prepare(src, tmp_path / "o3", config=D.PrepareConfig(min_side=64, imgsz=64),
                  count_persons=lambda imgs: [1])


def test_cli_errors_and_no_person_filter(tmp_path):
    src = tmp_path / "src"
    expected = build_tree(src)
    assert D.main(["prepare", "--src", str(src), "--out", str(tmp_path / "o")]) == 2          # no --pose
    assert D.main(["prepare", "--src", str(src), "--out", str(tmp_path / "o"), "--pose", str(tmp_path / "none.pt")]) == 2
    assert D.main(["prepare", "--src", str(src), "--out", str(tmp_path / "o"), "--no-person-filter",
                   "--watermark", str(tmp_path / "none.pt")]) == 2
    assert D.main(["prepare", "--src", str(src), "--out", str(tmp_path / "o"), "--min-side", "64",
                   "--imgsz", "64", "--workers", "1", "--no-person-filter"]) == 0
    report = json.loads((tmp_path / "o" / D.REPORT_JSON).read_text())
    kept = {k["file"] for k in report["kept"]}
    # without the person filter, only the person-count drops come back (the watermark filter is off too)
    assert kept == {r for r, why in expected.items() if why in (None, "no_person", "several_persons", "watermark")}


def test_yolo_person_counter_runs_on_a_random_pose_model(yolo_pose_pt):
    """Random weights detect nothing meaningful: this only shows the real YOLO path loads, runs on a
    letterboxed batch and returns one count per image."""
    count = D.yolo_person_counter(yolo_pose_pt, conf=0.001)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    counts = count(images)
    assert len(counts) == 3 and all(isinstance(c, int) and c >= 0 for c in counts)


def test_yolo_watermark_detector_refuses_a_pose_model(yolo_pose_pt, yolo_detect_pt):
    with pytest.raises(BoLIDError, match="needs a detection model"):
        D.yolo_watermark_detector(yolo_pose_pt)
    detect = D.yolo_watermark_detector(yolo_detect_pt, conf=0.5)
    marks = detect(torch.rand(2, 3, 64, 64))
    assert len(marks) == 2 and all(isinstance(m, bool) for m in marks)


def test_cli_with_a_random_yolo_and_two_workers(tmp_path, yolo_pose_pt):
    """The whole CLI path with the real YOLO counter and worker processes. A random model's person counts
    are arbitrary, so only the person-stage files are allowed any of kept / no_person / several_persons;
    every other file must get exactly its reason."""
    src = tmp_path / "src"
    expected = build_tree(src)
    before = snapshot(src)
    rc = D.main(["prepare", "--src", str(src), "--out", str(tmp_path / "o"), "--min-side", "64", "--imgsz", "64",
                 "--workers", "2", "--pose", str(yolo_pose_pt), "--person-conf", "0.5"])
    assert rc == 0 and snapshot(src) == before
    report = json.loads((tmp_path / "o" / D.REPORT_JSON).read_text())
    got = {k["file"]: None for k in report["kept"]} | {d["file"]: d["reason"] for d in report["dropped"]}
    person_stage = {None, "no_person", "several_persons", "watermark"}
    for rel, reason in expected.items():
        if reason in person_stage:
            assert got[rel] in {None, "no_person", "several_persons"}, rel
        else:
            assert got[rel] == reason, rel


def test_unreadable_files_are_reported_with_ultralytics_patch_active(tmp_path):
    """Importing ultralytics replaces PIL.Image.open for the whole process: on a file Pillow cannot identify it
    imports pi_heif (pip-installing it at run time when online, raising ImportError offline). With pi-heif a
    requirement of the pack, a non-image and a corrupt image still come out as plain "not an image" drops,
    in the same process where ultralytics was imported (as in ComfyUI, where the pose nodes import it)."""
    import PIL.Image
    import ultralytics.utils.patches  # noqa: F401  (applies the patch)

    assert PIL.Image.open.__module__ == "ultralytics.utils.patches", "the patch this test guards against is gone"
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "cut.png").write_bytes(_png(figure_image(64, 64, 1))[:30])
    for name in ("notes.txt", "cut.png"):
        info = D.inspect_file(str(tmp_path / name), name, "p", min_side=16, imgsz=32)
        assert info.status == "not_image", (name, info.status, info.detail)
