"""A folder of one person's photos, as people have them, to one batch of a common working size.

Photos come in different sizes and orientations (phones store portrait shots as landscape pixels plus an EXIF
orientation tag), as JPEG, PNG, WebP or phone HEIC, with the odd text file or broken copy beside them. This
module reads such a folder without asking the user to crop or convert anything:

- the folder is listed in sorted order, non-recursively by default; the folder name is resolved inside a base
  folder (ComfyUI's input directory) and never escapes it;
- each photo is decoded with Pillow (HEIC through ``pi_heif``), turned upright by its EXIF orientation, made
  RGB (transparency over the pad grey), scaled so its long side is ``size`` (aspect kept) and letterboxed to
  ``size x size``: padded right and bottom with ultralytics' grey, as ``bolid_lib.data.prepare`` prepares training
  photos and ``bolid_lib.method.pose`` letterboxes for the detector; a mask marks the photo's own pixels;
- anything that is not a readable photo (text, JSON, zero bytes, a truncated JPEG, a sub-folder, a link out of
  the folder) is skipped, counted and named with the reason.

Memory stays flat in the number of photos: one photo is decoded at a time, a JPEG is decoded at a reduced scale
near the target (``Image.draft``: a 12 MP JPEG for a 1024 working size decodes at 2016 x 1512), other formats
are reduced before anything else touches them (``Image.resize`` with a reducing gap), and each result is
written straight into its slot of the batch. ``iter_photos`` streams photos one by one for callers that want
no batch at all (``bolid_lib.data.body_from_folder``: a folder to a Body-ID in flat memory).

Two bounds hold whatever else runs in the process: a photo's header may claim at most ``MAX_PIXELS`` (the pack's
own limit, not Pillow's process-global one), and ``load_photos`` refuses, before allocating, a batch larger than
a share of the memory available (``check_batch_fits``), naming the streaming node or a size that fits.

Shape letters: B photos, S the working size, H, W, C=3.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BoLIDError
from ..files import resolve_inside
from ..method.body_id import DEFAULT_RECIPE, MAX_WORKING_SIZE, MIN_WORKING_SIZE

PAD_GREY = 114  # ultralytics' letterbox grey, as bolid_lib.data.prepare and bolid_lib.method.pose pad
# The working size's bounds and default are the Body-ID recipe's (a VAE learns from photos read at one size).
MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = MIN_WORKING_SIZE, MAX_WORKING_SIZE, DEFAULT_RECIPE.working_size
FORMATS = "JPEG, PNG, WebP, HEIC, BMP or TIFF"
# Modes Pillow resizes as they are (alpha premultiplied for RGBA/LA); anything else is converted first.
_RESIZABLE_MODES = {"RGB", "RGBA", "L", "LA", "CMYK", "YCbCr", "RGBX", "RGBa", "La"}

# Pixels a photo may hold, checked on its header before a pixel is decoded. The pack's own bound: Pillow's
# (Image.MAX_IMAGE_PIXELS) is process-global, and another pack that lifts it would let a decompression bomb (a small
# file whose header claims gigapixels) allocate until ComfyUI is killed. The value is Pillow's own default hard
# limit (twice its warning level), so nothing Pillow reads by default is refused here; it bounds one full-size
# decode at about 0.7 GiB (RGBA) whatever Pillow is set to.
MAX_PIXELS = 2 * 89_478_485
# BoLID Load Photos allocates its whole batch at once: it refuses a batch larger than this share of the memory
# available (psutil), leaving the rest to ComfyUI and to the nodes after it, which make working copies of it.
BATCH_MEMORY_SHARE = 0.5
# The budget where the available memory cannot be read (psutil missing): a batch of at most this many bytes.
FALLBACK_BATCH_BUDGET = 8 * 1024 ** 3
STREAMING_NODE = "BoLID Body-ID From Folder"

_heif_registered = False


class NotAPhoto(BoLIDError):
    """The file is not an image Pillow reads (empty, another kind of file, a header it does not recognise)."""


class DamagedPhoto(BoLIDError):
    """The file is an image whose pixels do not decode (cut short, damaged) or are too many."""


def register_heif() -> None:
    """Let Pillow open HEIC/HEIF (phone photos) through pi_heif; once per process.

    Called by the loaders, not at import: importing this module changes nothing in Pillow.
    """
    global _heif_registered
    if not _heif_registered:
        from pi_heif import register_heif_opener

        register_heif_opener()
        _heif_registered = True


# --- the folder ----------------------------------------------------------------------------------

def resolve_photo_folder(base: str | os.PathLike, name: str) -> Path:
    """The folder ``name`` inside ``base`` (ComfyUI's input directory), refusing anything that leaves it.

    ``name`` may hold sub-folders ("people/alice"); absolute paths, ``..`` and links that resolve outside
    ``base`` are refused with the fix. The folder must exist.
    """
    if not isinstance(name, str) or not name.strip():
        raise BoLIDError(f"no photo folder chosen: put the photos of one person in a folder inside {base}, "
                         "press R (refresh) and choose it")
    raw = name.strip().replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise BoLIDError(f"the photo folder {name!r} is an absolute path; only folders inside {base} can be read: "
                         "move or copy the photos there and choose that folder")
    if ".." in raw.split("/"):
        raise BoLIDError(f"the photo folder {name!r} would leave {base}: choose a folder inside it (no '..')")
    try:
        path = resolve_inside(base, raw)
    except BoLIDError as e:
        raise BoLIDError(f"the photo folder {name!r} cannot be read ({e}): choose a folder inside {base}") from None
    if not path.is_dir():
        raise BoLIDError(f"there is no folder {raw!r} in {base}: put the photos of one person in {Path(base) / raw}, "
                         "press R (refresh) and choose it")
    return path


def list_photo_folders(base: str | os.PathLike) -> list[str]:
    """Every sub-folder of ``base``, recursively, as 'a' and 'a/b' (sorted; hidden folders and links left out).

    What the folder combo offers; the names are those ``resolve_photo_folder`` accepts.
    """
    base = Path(base)
    if not base.is_dir():
        return []
    found = []
    for root, dirs, _files in os.walk(base):  # followlinks=False: a link is never walked into
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(root, d)))
        rel = os.path.relpath(root, base)
        if rel != ".":
            found.append(rel.replace(os.sep, "/"))
    return sorted(found)


@dataclass(frozen=True)
class Skipped:
    """An entry of the folder that gave no photo: its name (relative to the folder) and why."""

    name: str
    reason: str


def list_entries(folder: Path, *, recursive: bool = False) -> tuple[list[tuple[str, Path]], list[Skipped]]:
    """(files to try as photos, entries skipped already) of ``folder``, in sorted order of their names.

    Sub-folders are skipped (named) unless ``recursive``; links that resolve outside ``folder`` are skipped.
    """
    folder = Path(folder).resolve()
    files: list[tuple[str, Path]] = []
    skipped: list[Skipped] = []

    def walk(d: Path, prefix: str) -> None:
        for entry in sorted(os.scandir(d), key=lambda e: e.name):
            rel = prefix + entry.name
            path = Path(entry.path)
            real = path.resolve()
            if real != folder and folder not in real.parents:
                skipped.append(Skipped(rel, "a link to a place outside the photo folder: copy the file in instead"))
                continue
            try:
                mode = real.stat().st_mode
            except OSError as e:
                skipped.append(Skipped(rel, f"cannot be read ({e.strerror})"))
                continue
            if stat.S_ISDIR(mode):
                if recursive:
                    walk(path, rel + "/")
                else:
                    skipped.append(Skipped(rel + "/", "a folder (sub-folders are not read: move its photos up)"))
            elif stat.S_ISREG(mode):
                files.append((rel, path))
            else:
                skipped.append(Skipped(rel, "not a regular file"))

    walk(folder, "")
    return files, skipped


# --- one photo -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Photo:
    """One decoded photo at the working size.

    image (h, w, 3) uint8, upright, long side = the working size (not yet letterboxed);
    source_size (W, H) of the upright original in pixels; format: Pillow's name for it ("JPEG", "HEIF", ...).
    """

    name: str
    image: np.ndarray
    source_size: tuple[int, int]
    format: str


def _fit(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the long side ``size`` and the aspect kept."""
    gain = size / max(width, height)
    return max(1, round(width * gain)), max(1, round(height * gain))


def _open(path: Path, data: bytes | None = None) -> Image.Image:
    """Open (header only) or raise BoLIDError with the reason the file is not a photo. data: the file's bytes,
    already read (then the file is not opened again)."""
    if (len(data) if data is not None else path.stat().st_size) == 0:
        raise NotAPhoto("empty (0 bytes): the copy or download failed; copy the photo again")
    try:
        im = Image.open(io.BytesIO(data) if data is not None else path)
    except UnidentifiedImageError:
        raise NotAPhoto(f"not an image ({FORMATS} are read)") from None
    except Image.DecompressionBombError as e:
        raise DamagedPhoto(f"too many pixels for Pillow's safety limit ({e}): save a smaller copy, e.g. 12 MP") from None
    except (OSError, SyntaxError, ValueError) as e:  # a recognised header that is broken
        raise NotAPhoto(f"not a readable image ({type(e).__name__}: {e}): the file is damaged or cut short; "
                        "copy it again from the phone or camera") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise DamagedPhoto(f"too many pixels ({w}x{h} = {w * h / 1e6:.0f} MP; BoLID reads at most {MAX_PIXELS / 1e6:.0f} MP "
                         "a photo): save a smaller copy, e.g. 12 MP")
    return im


def probe(path: str | os.PathLike, data: bytes | None = None) -> tuple[int, int, str]:
    """(width, height, format) from the header alone (sizes as stored, before the EXIF orientation; no pixels are
    decoded). Raises NotAPhoto when the file is not an image Pillow reads, DamagedPhoto when it is one too big."""
    register_heif()
    im = _open(Path(path), data)
    try:
        return im.size[0], im.size[1], im.format or "image"
    finally:
        im.close()


def decode_photo(path: str | os.PathLike, size: int | None, *, name: str | None = None,
                 data: bytes | None = None) -> Photo:
    """Decode one photo to an upright RGB image whose long side is ``size`` (uint8, aspect kept); size None keeps
    the photo's own size.

    The one place the library opens an image file (nodes, preparation, both trainers, evaluation): every path
    gets the same pixels, turned upright by the EXIF orientation. Never holds more than one full-resolution copy:
    a JPEG decodes at the smallest power-of-two reduction still >= the target (``draft``), other formats are
    reduced before orientation and mode conversion. data: the file's bytes when the caller has read them already.
    Raises BoLIDError with the reason when the file is not a readable photo.
    """
    register_heif()
    path = Path(path)
    name = name or path.name
    im = _open(path, data)
    try:
        fmt = im.format or "image"
        try:
            w0, h0 = im.size
            target = _fit(w0, h0, size) if size is not None else (w0, h0)
            if im.format == "JPEG" and size is not None:
                im.draft("RGB", target)                 # decode at 1/2, 1/4 or 1/8 scale, still >= target
            if im.mode not in _RESIZABLE_MODES:
                # palette, 16-bit or float images: to 8-bit RGB(A) first (full size, but still one copy at a time)
                has_alpha = im.mode in ("P", "PA") and ("transparency" in im.info or im.mode == "PA")
                im_conv = _to_8bit(im, "RGBA" if has_alpha else "RGB")
            else:
                im.load()
                im_conv = im
            small = im_conv.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0) if im_conv.size != target else im_conv.copy()
            del im_conv
            # Orientation after the resize, where it is cheap: the EXIF block must travel with the small copy.
            if "exif" in im.info:
                small.info.setdefault("exif", im.info["exif"])
            upright = ImageOps.exif_transpose(small)
            rgb = _to_rgb(upright)
        except BoLIDError:
            raise
        except Image.DecompressionBombError as e:
            raise DamagedPhoto(f"too many pixels for Pillow's safety limit ({e}): save a smaller copy, e.g. 12 MP") from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
            raise DamagedPhoto(f"{fmt} data does not decode ({type(e).__name__}: {e}): the file is damaged or cut "
                             "short; copy it again from the phone or camera") from None
    finally:
        im.close()
    arr = np.array(rgb)                                 # (h, w, 3) uint8, writable (torch.from_numpy wants that)
    up_w, up_h = (h0, w0) if rgb.size != small.size else (w0, h0)  # a 90-degree orientation swaps the sides
    return Photo(name, arr, (up_w, up_h), fmt)


def _to_8bit(im: Image.Image, mode: str) -> Image.Image:
    """8-bit RGB/RGBA of any Pillow mode; 16-bit and 32-bit greys are scaled, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return im.convert("I").point(lambda v: v / 257).convert("L").convert(mode)
    if im.mode in ("I", "F"):
        # Pillow maps these modes only linearly: pick the scale from the range (16-bit in I, [0, 1] floats in F).
        _, hi = im.getextrema()
        scale = (1 / 257 if hi > 255 else 1) if im.mode == "I" else (255 if hi <= 1.0 else 1)
        return im.point(lambda v: v * scale).convert("L").convert(mode)
    return im.convert(mode)


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB; transparent parts over the pad grey (so a cut-out looks like the letterbox around it)."""
    if im.mode in ("RGBA", "LA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (PAD_GREY, PAD_GREY, PAD_GREY, 255))
        return Image.alpha_composite(back, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def letterbox_into(image: torch.Tensor, mask: torch.Tensor, photo: Photo) -> None:
    """Write ``photo`` into a slot of a batch: image (S, S, 3) float32 gets the photo top-left in [0, 1] and the pad
    grey elsewhere; mask (S, S) gets 1 on the photo's own pixels, 0 elsewhere."""
    h, w = photo.image.shape[:2]
    image.fill_(PAD_GREY / 255.0)
    image[:h, :w].copy_(torch.from_numpy(photo.image)).div_(255.0)
    mask.zero_()
    mask[:h, :w] = 1.0


def read_letterboxed(path: str | os.PathLike, size: int) -> torch.Tensor:
    """One photo as Load Photos gives it: (3, S, S) float32 in [0, 1], upright, long side ``size``, padded right
    and bottom with the pad grey. Raises BoLIDError when the file is not a readable photo."""
    _check_size(size)
    image = torch.empty(size, size, 3)
    letterbox_into(image, torch.empty(size, size), decode_photo(path, size))
    return image.permute(2, 0, 1)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """One photo at its own size: (3, H, W) float32 in [0, 1], upright (EXIF orientation applied), RGB."""
    photo = decode_photo(path, None)
    return torch.from_numpy(photo.image).permute(2, 0, 1).float().div(255)


def iter_photos(folder: str | os.PathLike, size: int = DEFAULT_SIZE, *, recursive: bool = False,
                max_photos: int = 0) -> Iterator[Photo | Skipped]:
    """Stream the folder: a ``Photo`` per readable photo, a ``Skipped`` for everything else.

    Entries skipped by the listing itself (sub-folders, links out of the folder) come first, then every file
    in sorted order of its name. One photo is decoded at a time and nothing is kept between items, so memory
    does not depend on how many photos the folder holds. ``max_photos`` > 0 stops after that many photos
    (later entries are not read).
    """
    _check_size(size)
    files, skipped = list_entries(Path(folder), recursive=recursive)
    yield from skipped
    loaded = 0
    for rel, path in files:
        if max_photos and loaded >= max_photos:
            return
        try:
            photo = decode_photo(path, size, name=rel)
        except BoLIDError as e:
            yield Skipped(rel, str(e))
            continue
        loaded += 1
        yield photo


def working_photo_bytes(size: int) -> int:
    """Bytes one photo takes at working size ``size`` in a batch: its image (S, S, 3) and mask (S, S), float32."""
    return size * size * 4 * 4


def available_memory() -> int | None:
    """Bytes of memory the system can give now without swapping (psutil), or None where that cannot be read."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def batch_budget(available: int | None = None) -> int:
    """Bytes a batch of photos may take: BATCH_MEMORY_SHARE of ``available`` (default: read now), or
    FALLBACK_BATCH_BUDGET where the available memory is unknown."""
    available = available_memory() if available is None else available
    return FALLBACK_BATCH_BUDGET if available is None else int(available * BATCH_MEMORY_SHARE)


def check_batch_fits(count: int, size: int, budget: int | None = None) -> None:
    """Refuse, before anything is allocated, a batch of ``count`` photos at ``size`` that exceeds ``budget`` bytes
    (default: ``batch_budget()``); the message names the streaming node, a size and a max_photos that would fit."""
    need = count * working_photo_bytes(size)
    available = None
    if budget is None:
        available = available_memory()
        budget = batch_budget(available)
    if need <= budget:
        return
    gib, mib = 1024 ** 3, 1024 ** 2
    where = (f"{100 * BATCH_MEMORY_SHARE:.0f}% of the {available / gib:.1f} GiB available now, leaving the rest to ComfyUI "
             "and the nodes after it" if available is not None else
             f"the fixed budget used where the free memory cannot be read (no psutil): {FALLBACK_BATCH_BUDGET / gib:.0f} GiB")
    fixes = [f"use {STREAMING_NODE} instead: it reads the folder a few photos at a time, so its memory does not grow "
             "with the number of photos"]
    fit_size = next((s for s in range(size - size % 8, MIN_SIZE - 1, -8) if count * working_photo_bytes(s) <= budget), None)
    if fit_size is not None and fit_size < size:
        fixes.append(f"set size to {fit_size} or less ({count * working_photo_bytes(fit_size) / gib:.1f} GiB)")
    fit_count = budget // working_photo_bytes(size)
    if fit_count >= 1:
        fixes.append(f"set max_photos to {fit_count} or less")
    raise BoLIDError(f"{count} photos at size {size} would take {need / gib:.1f} GiB as one batch "
                     f"({working_photo_bytes(size) / mib:.0f} MiB a photo: image and mask), more than BoLID Load Photos "
                     f"allows itself: {budget / gib:.1f} GiB ({where}). Nothing was loaded. To go on: " + "; or ".join(fixes))


def no_photo_error(path: Path, skipped: list[Skipped]) -> BoLIDError:
    """The error for a folder that gave no photo at all: what was found in it, and the fix."""
    if not skipped:
        return BoLIDError(f"the folder {path} is empty: put photos of one person in it ({FORMATS}), then run again")
    return BoLIDError(f"no readable photo in {path}: found {len(skipped)} entr{'ies' if len(skipped) != 1 else 'y'}, "
                      f"none a photo ({_describe_found(skipped)}). Put photos of one person there ({FORMATS}), "
                      "then run again")


def _check_size(size: int) -> None:
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise BoLIDError(f"the working size must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}; got {size!r}")


# --- the batch -----------------------------------------------------------------------------------

@dataclass
class PhotoBatch:
    """Photos of one folder at one working size.

    images (B, 3, S, S) float32 in [0, 1], letterboxed (photo top-left, pad grey right and bottom); stored
    channels-last, so ``images.permute(0, 2, 3, 1)`` (ComfyUI's BHWC) is contiguous and costs no copy.
    masks (B, S, S) float32: 1 on the photo's own pixels, 0 on the padding.
    names: file names (relative to the folder) in batch order; source_sizes: (W, H) of each upright original.
    skipped: the entries that gave no photo; not_read: photos left unread because of ``max_photos``.
    """

    folder: str
    size: int
    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]
    source_sizes: list[tuple[int, int]]
    formats: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    not_read: int = 0

    def report(self, max_names: int = 50) -> str:
        """What a user reads: how many were loaded, at which size, and every skipped entry with its reason."""
        b = len(self.names)
        kinds = {}
        for f in self.formats:
            kinds[f] = kinds.get(f, 0) + 1
        kinds_text = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        sizes = sorted({f"{w}x{h}" for w, h in self.source_sizes})
        lines = [f"loaded {b} photo{'s' * (b != 1)} from {self.folder} ({kinds_text}; "
                 f"{len(sizes)} size{'s' * (len(sizes) != 1)}: {', '.join(sizes[:6])}{' ...' if len(sizes) > 6 else ''}), "
                 f"each scaled to a long side of {self.size} px and padded to {self.size}x{self.size}"]
        if self.not_read:
            lines.append(f"not read: {self.not_read} more file{'s' * (self.not_read != 1)} (max_photos = {b})")
        lines += skipped_lines(self.skipped, max_names)
        return "\n".join(lines)


def skipped_lines(skipped: list[Skipped], max_names: int = 30) -> list[str]:
    """A report's lines for the entries that gave no photo: how many, then each with why (the first max_names)."""
    lines = [f"skipped {len(skipped)}" + (":" if skipped else "")]
    lines += [f"  {s.name}: {s.reason}" for s in skipped[:max_names]]
    if len(skipped) > max_names:
        lines.append(f"  ... and {len(skipped) - max_names} more")
    return lines


def _identify(files: list[tuple[str, Path]], skipped: list[Skipped]) -> list[tuple[str, Path]]:
    """The files whose header Pillow recognises (cheap: no pixels are decoded); the rest join ``skipped``."""
    register_heif()
    kept = []
    for rel, path in files:
        try:
            _open(path).close()
        except BoLIDError as e:
            skipped.append(Skipped(rel, str(e)))
            continue
        kept.append((rel, path))
    return kept


def _short(reason: str) -> str:
    """The first words of a reason ('not an image', 'empty', 'JPEG data does not decode')."""
    return reason.split(":")[0].split(" (")[0]


def _describe_found(skipped: list[Skipped], limit: int = 8) -> str:
    shown = "; ".join(f"{s.name}: {_short(s.reason)}" for s in skipped[:limit])
    return shown + (f"; and {len(skipped) - limit} more" if len(skipped) > limit else "")


def load_photos(base: str | os.PathLike, folder: str, size: int = DEFAULT_SIZE, *, max_photos: int = 0,
                recursive: bool = False, progress: Callable[[int, int], None] | None = None,
                memory_budget: int | None = None) -> PhotoBatch:
    """Every readable photo of ``base/folder`` (sorted by name) as one letterboxed batch; see ``PhotoBatch``.

    The batch is allocated once for the photos whose headers read, and each photo is written into its slot as
    it is decoded: the peak is the batch plus one photo being decoded. Before that, the batch's size is checked
    against ``memory_budget`` bytes (default ``batch_budget()``: a share of the memory available now), and a
    batch that would not fit is refused with the fix (``check_batch_fits``). ``progress(done, total)`` is called
    after each file tried. No readable photo at all is an error that says what was found and the fix.
    """
    _check_size(size)
    if not isinstance(max_photos, int) or max_photos < 0:
        raise BoLIDError(f"max_photos must be 0 (all) or a positive whole number; got {max_photos!r}")
    path = resolve_photo_folder(base, folder)
    shown_folder = folder.strip().replace("\\", "/")
    files, skipped = list_entries(path, recursive=recursive)
    if not files and not skipped:
        raise no_photo_error(path, [])
    candidates = _identify(files, skipped)
    n = min(len(candidates), max_photos) if max_photos else len(candidates)
    check_batch_fits(n, size, memory_budget)
    # Allocated once, never written past the photos that decode: untouched pages of a photo whose header read
    # but whose data did not are never made resident, so the views below cost nothing for it.
    images = torch.empty(n, size, size, 3, dtype=torch.float32)    # (B, S, S, 3): ComfyUI's layout, filled in place
    masks = torch.zeros(n, size, size, dtype=torch.float32)        # (B, S, S)
    names, source_sizes, formats = [], [], []
    tried = 0
    for rel, p in candidates:
        if len(names) == n:
            break
        tried += 1
        try:
            photo = decode_photo(p, size, name=rel)
        except BoLIDError as e:
            skipped.append(Skipped(rel, str(e)))
        else:
            i = len(names)
            letterbox_into(images[i], masks[i], photo)             # (S, S, 3), (S, S)
            names.append(photo.name)
            source_sizes.append(photo.source_size)
            formats.append(photo.format)
        if progress is not None:
            progress(min(tried, n), n)
    not_read = len(candidates) - tried
    b = len(names)
    skipped.sort(key=lambda s: s.name)
    if b == 0:
        raise no_photo_error(path, skipped)
    images, masks = images[:b], masks[:b]
    return PhotoBatch(shown_folder, size, images.permute(0, 3, 1, 2), masks, names, source_sizes, formats,
                      skipped, not_read)


__all__ = [
    "PAD_GREY", "DEFAULT_SIZE", "MIN_SIZE", "MAX_SIZE", "MAX_PIXELS", "FORMATS", "BATCH_MEMORY_SHARE",
    "FALLBACK_BATCH_BUDGET", "STREAMING_NODE", "Photo", "Skipped", "PhotoBatch", "register_heif",
    "resolve_photo_folder", "list_photo_folders", "list_entries", "decode_photo", "iter_photos", "letterbox_into",
    "working_photo_bytes", "available_memory", "batch_budget", "check_batch_fits", "no_photo_error", "load_photos",
    "read_letterboxed", "read_image", "probe", "NotAPhoto", "DamagedPhoto", "skipped_lines",
]
