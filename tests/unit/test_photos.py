"""bolid_lib.data.photos: a folder of photos as people have them -> one letterboxed batch (no ComfyUI).

Photos are made here: a landscape picture with a red marker in its stored top-left corner, saved with an EXIF
orientation, tells by where the marker lands whether the photo was really turned upright. HEIC files are
written with pillow-heif's HEVC encoder (pi-heif, which the pack reads them with, cannot encode HEVC).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bolid_lib.data import photos as P
from bolid_lib.errors import BoLIDError

REPO = Path(__file__).resolve().parents[2]
RED = (255, 0, 0)
BLUE = 100


def marked(w: int, h: int) -> Image.Image:
    """(w x h) RGB: blue-ish everywhere, a red block in the stored top-left corner (a fifth of each side)."""
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 2] = BLUE
    a[: h // 5, : w // 5] = RED
    return Image.fromarray(a)


def exif_with(orientation: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def save(img: Image.Image, path: Path, orientation: int = 1, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix.lower()]
    extra = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if orientation != 1:
        extra["exif"] = exif_with(orientation)
    img.save(path, fmt, **extra, **kw)
    return path


def save_heic(img: Image.Image, path: Path, orientation: int = 1) -> Path:
    pillow_heif = pytest.importorskip("pillow_heif", reason="writing HEIC needs pillow-heif (the dev extra)")
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"exif": exif_with(orientation)} if orientation != 1 else {}
    pillow_heif.from_pillow(img).save(str(path), quality=90, **kw)
    return path


def red_corner(image_hwc: np.ndarray) -> str:
    """Which corner of an upright image holds the red marker: 'tl', 'tr', 'bl' or 'br'."""
    h, w = image_hwc.shape[:2]
    corners = {"tl": image_hwc[: h // 10, : w // 10], "tr": image_hwc[: h // 10, -(w // 10):],
               "bl": image_hwc[-(h // 10):, : w // 10], "br": image_hwc[-(h // 10):, -(w // 10):]}
    red = {k: float(v[..., 0].astype(float).mean() - v[..., 2].astype(float).mean()) for k, v in corners.items()}
    best = max(red, key=red.get)
    assert red[best] > 100, red
    return best


# EXIF orientation -> where the stored top-left corner is once the photo is upright, and whether sides swap.
# 3: rotated 180; 6: turn 90 clockwise to view; 8: turn 90 counter-clockwise; 2: mirrored left-right.
ORIENTATIONS = {1: ("tl", False), 2: ("tr", False), 3: ("br", False), 6: ("tr", True), 8: ("bl", True)}


# --- orientation and formats ---------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_turns_the_photo_upright(tmp_path, suffix, orientation):
    path = save(marked(400, 300), tmp_path / f"p{suffix}", orientation)
    photo = P.decode_photo(path, 200)
    corner, swapped = ORIENTATIONS[orientation]
    assert photo.image.shape == ((200, 150, 3) if swapped else (150, 200, 3))
    assert photo.source_size == ((300, 400) if swapped else (400, 300))   # (W, H) of the upright original
    assert red_corner(photo.image) == corner


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_heic_decodes_upright(tmp_path, orientation):
    path = save_heic(marked(320, 240), tmp_path / "phone.HEIC", orientation)
    photo = P.decode_photo(path, 160)
    corner, swapped = ORIENTATIONS[orientation]
    assert photo.format == "HEIF"
    assert photo.image.shape == ((160, 120, 3) if swapped else (120, 160, 3))
    assert red_corner(photo.image) == corner
    body = photo.image[photo.image.shape[0] // 2:, photo.image.shape[1] // 2:]   # away from the marker
    assert abs(float(body[..., 2].mean()) - BLUE) < 6 and float(body[..., 0].mean()) < 6


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_and_resized_exactly(tmp_path):
    """draft() picks a power-of-two reduction >= the target; the result is still the exact target size."""
    path = save(marked(2000, 1500), tmp_path / "big.jpg")
    with Image.open(path) as im:
        im.draft("RGB", (500, 375))
        assert im.size == (500, 375)  # what Pillow decodes for this target: a quarter of each side
    photo = P.decode_photo(path, 512)
    assert photo.image.shape == (384, 512, 3) and photo.source_size == (2000, 1500)
    assert red_corner(photo.image) == "tl"


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "I;16", "CMYK"])
def test_other_modes_come_out_rgb(tmp_path, mode):
    base = marked(120, 80)
    if mode == "I;16":
        img = Image.fromarray((np.asarray(base.convert("L")).astype(np.uint16) * 257))
        assert img.mode.startswith("I;16")
        path = tmp_path / "deep.png"
        img.save(path)
    else:
        img = base.convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
        img.save(path, quality=95) if mode == "CMYK" else img.save(path)
    photo = P.decode_photo(path, 60)
    assert photo.image.dtype == np.uint8 and photo.image.shape == (40, 60, 3)
    grey_ref = np.asarray(base.convert("L").resize((60, 40)), dtype=float)
    if mode in ("L", "I;16"):  # greys survive as greys (16-bit scaled down, not clipped to white)
        assert abs(photo.image[..., 0].astype(float) - grey_ref).mean() < 4
    else:
        assert red_corner(photo.image) == "tl"


def test_transparency_is_laid_over_the_pad_grey(tmp_path):
    a = np.zeros((40, 40, 4), np.uint8)
    a[:20, :, :] = (0, 255, 0, 255)       # top half opaque green, bottom half fully transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "cut.png")
    img = P.decode_photo(tmp_path / "cut.png", 40).image
    assert tuple(img[5, 5]) == (0, 255, 0)
    assert tuple(img[35, 5]) == (P.PAD_GREY,) * 3


# --- the batch ------------------------------------------------------------------------------------

def test_mixed_sizes_give_one_size_with_letterbox_masks(tmp_path):
    folder = tmp_path / "person"
    save(marked(400, 300), folder / "a_landscape.jpg")
    save(marked(300, 400), folder / "b_portrait.png")
    save(marked(200, 200), folder / "c_square.webp")
    save(marked(640, 160), folder / "d_wide.jpg")
    save(marked(400, 300), folder / "e_rotated.jpg", orientation=6)   # stored landscape, upright portrait
    batch = P.load_photos(tmp_path, "person", 128)
    assert batch.names == ["a_landscape.jpg", "b_portrait.png", "c_square.webp", "d_wide.jpg", "e_rotated.jpg"]
    assert batch.images.shape == (5, 3, 128, 128) and batch.masks.shape == (5, 128, 128)
    assert batch.images.dtype == torch.float32 and 0 <= float(batch.images.min()) and float(batch.images.max()) <= 1
    assert batch.images.permute(0, 2, 3, 1).is_contiguous()               # ComfyUI's BHWC view without a copy
    valid = {"a_landscape.jpg": (96, 128), "b_portrait.png": (128, 96), "c_square.webp": (128, 128),
             "d_wide.jpg": (32, 128), "e_rotated.jpg": (128, 96)}            # (h, w) of each photo's own pixels
    pad = P.PAD_GREY / 255
    for i, name in enumerate(batch.names):
        h, w = valid[name]
        m = batch.masks[i]
        assert float(m[:h, :w].min()) == 1.0 and float(m.sum()) == h * w, name   # photo at the top-left
        img = batch.images[i]                                                   # (3, S, S)
        outside = img[:, m == 0]
        assert outside.numel() == 0 or torch.allclose(outside, torch.full_like(outside, pad)), name
        corner = red_corner((img[:, :h, :w].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        assert corner == ("tr" if name == "e_rotated.jpg" else "tl"), name
    assert batch.source_sizes[4] == (300, 400) and batch.skipped == [] and batch.not_read == 0


def test_non_images_are_skipped_counted_and_named(tmp_path):
    folder = tmp_path / "person"
    save(marked(160, 120), folder / "good.jpg")
    save_heic(marked(160, 120), folder / "phone.heic", orientation=6)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "meta.json").write_text(json.dumps({"a": 1}))
    (folder / "empty.jpg").write_bytes(b"")
    noisy = Image.fromarray((np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8))
    whole = io.BytesIO()
    noisy.save(whole, "JPEG", quality=90)
    (folder / "cut.jpg").write_bytes(whole.getvalue()[: whole.tell() // 2])   # a copy that stopped half way
    (folder / "cut_header.jpg").write_bytes(whole.getvalue()[:300])           # ... or in its header
    (folder / "header_only.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (folder / "old").mkdir()
    save(marked(80, 60), folder / "old" / "inner.jpg")
    batch = P.load_photos(tmp_path, "person", 64)
    assert batch.names == ["good.jpg", "phone.heic"]
    reasons = {s.name: s.reason for s in batch.skipped}
    assert sorted(reasons) == ["cut.jpg", "cut_header.jpg", "empty.jpg", "header_only.png", "meta.json", "notes.txt",
                               "old/"]
    assert reasons["notes.txt"].startswith("not an image") and reasons["meta.json"].startswith("not an image")
    assert reasons["empty.jpg"].startswith("empty (0 bytes)")
    assert "does not decode" in reasons["cut.jpg"] and "copy it again" in reasons["cut.jpg"]
    assert "copy it again" in reasons["cut_header.jpg"]
    assert reasons["old/"].startswith("a folder")
    report = batch.report()
    assert "loaded 2 photos" in report and "skipped 7:" in report
    for name in reasons:
        assert name in report
    # A recursive read takes the sub-folder's photo as well.
    deep = P.load_photos(tmp_path, "person", 64, recursive=True)
    assert "old/inner.jpg" in deep.names and "old/" not in {s.name for s in deep.skipped}


def test_no_photo_at_all_says_what_was_found_and_the_fix(tmp_path):
    folder = tmp_path / "person"
    folder.mkdir()
    with pytest.raises(BoLIDError, match=r"is empty: put photos of one person in it"):
        P.load_photos(tmp_path, "person", 64)
    (folder / "readme.txt").write_text("hello")
    (folder / "zero.jpg").write_bytes(b"")
    with pytest.raises(BoLIDError) as e:
        P.load_photos(tmp_path, "person", 64)
    msg = str(e.value)
    assert "no readable photo" in msg and "found 2 entries" in msg
    assert "readme.txt: not an image" in msg and "zero.jpg: empty" in msg and "Put photos of one person there" in msg


def test_max_photos_stops_early_and_says_how_many_were_not_read(tmp_path):
    folder = tmp_path / "person"
    for i in range(5):
        save(marked(80, 60), folder / f"p{i}.jpg")
    (folder / "p1.jpg").write_bytes(b"broken")                          # a failed photo does not count
    batch = P.load_photos(tmp_path, "person", 64, max_photos=2)
    assert batch.names == ["p0.jpg", "p2.jpg"] and batch.images.shape[0] == 2
    assert batch.not_read == 2 and "not read: 2 more files" in batch.report()
    with pytest.raises(BoLIDError, match="max_photos"):
        P.load_photos(tmp_path, "person", 64, max_photos=-1)


def test_progress_is_reported_per_photo(tmp_path):
    folder = tmp_path / "person"
    for i in range(3):
        save(marked(80, 60), folder / f"p{i}.png")
    calls = []
    P.load_photos(tmp_path, "person", 64, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("size", [0, 63, 4097, 512.0, "1024"])
def test_working_size_out_of_range_is_refused(tmp_path, size):
    save(marked(80, 60), tmp_path / "person" / "p.jpg")
    with pytest.raises(BoLIDError, match="working size"):
        P.load_photos(tmp_path, "person", size)


# --- the folder name -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, words", [
    ("../outside", "would leave"), ("person/../../outside", "would leave"), ("/etc", "absolute path"),
    ("C:/Users/me/Pictures", "absolute path"), ("", "no photo folder chosen"), ("missing", "there is no folder"),
])
def test_folder_names_that_leave_the_input_folder_are_refused(tmp_path, name, words):
    base = tmp_path / "input"
    save(marked(80, 60), base / "person" / "p.jpg")
    save(marked(80, 60), tmp_path / "outside" / "p.jpg")
    with pytest.raises(BoLIDError, match=words):
        P.load_photos(base, name, 64)


def test_links_out_of_the_input_folder_are_refused_and_not_listed(tmp_path):
    base = tmp_path / "input"
    save(marked(80, 60), base / "person" / "p.jpg")
    save(marked(80, 60), tmp_path / "secret" / "s.jpg")
    (base / "escape").symlink_to(tmp_path / "secret", target_is_directory=True)
    (base / "person" / "stolen.jpg").symlink_to(tmp_path / "secret" / "s.jpg")
    with pytest.raises(BoLIDError, match="cannot be read"):
        P.load_photos(base, "escape", 64)
    batch = P.load_photos(base, "person", 64)
    assert batch.names == ["p.jpg"]
    assert [s.name for s in batch.skipped] == ["stolen.jpg"] and "outside the photo folder" in batch.skipped[0].reason
    assert P.list_photo_folders(base) == ["person"]


def test_folder_list_is_every_sub_folder_sorted_without_hidden_ones(tmp_path):
    for d in ("b", "a/inner", "a/.cache", ".hidden", "c d"):
        (tmp_path / d).mkdir(parents=True)
    assert P.list_photo_folders(tmp_path) == ["a", "a/inner", "b", "c d"]
    assert P.list_photo_folders(tmp_path / "nope") == []
    assert P.resolve_photo_folder(tmp_path, "a/inner") == (tmp_path / "a" / "inner").resolve()
    assert P.resolve_photo_folder(tmp_path, "a\\inner") == (tmp_path / "a" / "inner").resolve()


# --- streaming and memory ---------------------------------------------------------------------------

def test_iter_photos_streams_one_photo_at_a_time(tmp_path):
    """A generator that reads a file only when asked: a file changed after the first photo came out is read
    as it is then, so nothing past the current photo was decoded ahead."""
    folder = tmp_path / "person"
    for i in range(3):
        save(marked(80, 60), folder / f"p{i}.jpg")
    (folder / "x.txt").write_text("not a photo")
    it = P.iter_photos(folder, 64)
    assert isinstance(it, types.GeneratorType)
    first = next(it)
    assert isinstance(first, P.Photo) and first.name == "p0.jpg"
    (folder / "p2.jpg").write_bytes(b"changed after the first photo was read")
    rest = list(it)
    assert [type(r).__name__ for r in rest] == ["Photo", "Skipped", "Skipped"]
    assert [r.name for r in rest] == ["p1.jpg", "p2.jpg", "x.txt"]
    assert [p.name for p in P.iter_photos(folder, 64, max_photos=1) if isinstance(p, P.Photo)] == ["p0.jpg"]


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np
    sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
    from pathlib import Path
    from PIL import Image
    from memlib import peak_extra
    from bolid_lib.data import photos as P
    folder = Path(sys.argv[2])
    w, h = 4000, 3000
    rng = np.random.default_rng(0)
    a = (rng.random((h, w, 3)) * 255).astype(np.uint8)              # noise: nothing compresses it away
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.fromarray(a).save(folder / f"p{i}.jpg", quality=85)
    Image.fromarray(a).save(folder.parent / "q.png", compress_level=0)
    del a
    P.decode_photo(folder / "p0.jpg", 256)                           # warm-up: codecs, allocator
    full = w * h * 3
    out = {"full": full,
           "jpeg": peak_extra(lambda: P.decode_photo(folder / "p1.jpg", 256))[1],
           "png": peak_extra(lambda: P.decode_photo(folder.parent / "q.png", 256))[1],
           "naive_jpeg": peak_extra(lambda: Image.open(folder / "p2.jpg").convert("RGB").resize((256, 192)))[1],
           "stream_1": peak_extra(lambda: sum(1 for _ in P.iter_photos(folder, 256, max_photos=1)))[1],
           "stream_4": peak_extra(lambda: sum(1 for _ in P.iter_photos(folder, 256)))[1],
           "batch_1": peak_extra(lambda: P.load_photos(folder.parent, folder.name, 256, max_photos=1))[1],
           "batch_4": peak_extra(lambda: P.load_photos(folder.parent, folder.name, 256))[1],
           "photo_bytes": 256 * 256 * 4 * 4}
    print(json.dumps(out))
""")


def test_decode_memory_stays_near_the_working_size(tmp_path):
    """Peak extra resident memory (tests/memlib.py, fresh process): a 12 MP JPEG decodes in well under a
    full-resolution copy; a PNG (no reduced decoding) in at most one; streaming four photos costs what one
    does; a batch grows by its own slots only. The naive full decode shows the measure sees a full copy."""
    from memlib import MMAP_ENV

    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(REPO), str(tmp_path / "big")], capture_output=True,
                         text=True, timeout=300, env={**os.environ, **MMAP_ENV})
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout.strip().splitlines()[-1])
    full, mib = m["full"], 1024 * 1024
    assert m["naive_jpeg"] > 0.9 * full, m                   # the measure sees a full-resolution decode
    assert m["jpeg"] < 0.35 * full, m                        # draft: a quarter of each side (1000 x 750)
    assert m["png"] < 1.7 * full, m                          # one full copy (+ decoder buffers), reduced first
    assert m["stream_4"] < m["stream_1"] + 4 * mib, m
    assert m["batch_4"] - m["batch_1"] < 3 * m["photo_bytes"] + 4 * mib, m


def test_library_module_does_not_touch_pillow_at_import():
    """Importing bolid_lib.data.photos registers nothing; the HEIF opener is registered by the first load."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from PIL import Image; Image.init(); "
            "before = dict(Image.OPEN); import bolid_lib.data.photos as P; assert dict(Image.OPEN) == before; "
            "P.register_heif(); assert 'HEIF' in Image.OPEN; print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("mode, scale", [("F", 1.0), ("I", 65535)])
def test_float_and_32_bit_greys_are_scaled_to_8_bit(tmp_path, mode, scale):
    """A [0, 1] float TIFF and a 16-bit range in a 32-bit TIFF both span the 8-bit range (not clipped, not dark)."""
    ramp = np.linspace(0, 1, 48 * 64).reshape(48, 64)
    arr = (ramp * scale).astype(np.float32 if mode == "F" else np.int32)
    Image.fromarray(arr, mode).save(tmp_path / "grey.tiff")
    img = P.decode_photo(tmp_path / "grey.tiff", 64).image
    assert img.shape == (48, 64, 3) and int(img.min()) <= 2 and int(img.max()) >= 250
    assert abs(img[..., 0].astype(float) / 255 - ramp).mean() < 0.02


# --- the pack's own bounds: pixels a photo may claim, memory a batch may take --------------------------

def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A real 8 x 8 PNG whose header (IHDR) claims width x height: a decompression bomb's shape, tiny on disk."""
    import struct
    import zlib

    buf = io.BytesIO()
    marked(8, 8).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    at = data.index(b"IHDR")
    data[at + 4:at + 12] = struct.pack(">II", width, height)
    chunk = bytes(data[at:at + 17])  # the chunk's type and its 13 bytes of data, which its CRC covers
    data[at + 17:at + 21] = struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def test_a_header_over_the_packs_pixel_limit_is_skipped_even_when_pillows_limit_is_lifted(tmp_path, monkeypatch):
    """Another pack may set Image.MAX_IMAGE_PIXELS = None for the whole process; the pack's own MAX_PIXELS still
    refuses a photo whose header claims more, before a pixel is decoded (the file would otherwise decode to GiBs)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    folder = tmp_path / "person"
    _png_claiming(folder / "bomb.png", 40000, 40000)                      # 1,600 MP
    save(marked(80, 60), folder / "ok.jpg")
    with Image.open(folder / "bomb.png") as im:
        assert im.size == (40000, 40000)                                   # Pillow alone would go on
    batch = P.load_photos(tmp_path, "person", 64)
    assert batch.names == ["ok.jpg"]
    (skip,) = batch.skipped
    assert skip.name == "bomb.png" and "too many pixels" in skip.reason and "1600 MP" in skip.reason
    streamed = list(P.iter_photos(folder, 64))
    assert [type(x).__name__ for x in streamed] == ["Skipped", "Photo"]


def test_an_over_budget_batch_is_refused_before_anything_is_allocated(tmp_path):
    folder = tmp_path / "person"
    for i in range(6):
        save(marked(80, 60), folder / f"p{i}.jpg")
    per = P.working_photo_bytes(256)
    assert per == 256 * 256 * 16                                           # image (3 floats) + mask (1 float)
    P.load_photos(tmp_path, "person", 256, memory_budget=6 * per)          # exactly fits
    with pytest.raises(BoLIDError) as e:
        P.load_photos(tmp_path, "person", 256, memory_budget=5 * per)
    msg = str(e.value)
    assert "6 photos at size 256" in msg and "Nothing was loaded" in msg and P.STREAMING_NODE in msg
    assert "set size to 232 or less" in msg and "set max_photos to 5 or less" in msg
    fit = int(msg.split("set size to ")[1].split()[0])
    P.load_photos(tmp_path, "person", fit, memory_budget=5 * per)          # the size it names does fit
    P.load_photos(tmp_path, "person", 256, max_photos=5, memory_budget=5 * per)


def test_the_default_budget_is_a_share_of_the_available_memory():
    avail = P.available_memory()
    if avail is None:
        assert P.batch_budget() == P.FALLBACK_BATCH_BUDGET
    else:
        assert P.batch_budget(avail) == int(avail * P.BATCH_MEMORY_SHARE)
    # 2,000 photos at 1024 (the case): 31 GiB, refused on any machine with less than 62 GiB available.
    with pytest.raises(BoLIDError, match=r"2000 photos at size 1024 would take 31\.2 GiB"):
        P.check_batch_fits(2000, 1024, budget=16 * 1024 ** 3)
