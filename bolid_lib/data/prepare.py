"""Dataset preparation (paper section 6): filter photos grouped by person into a clean copy.

``python -m bolid_lib.data prepare --src DIR --out DIR [--min-side 1000] [--pose PATH] [--watermark PATH]
[--workers N]``

Layout: ``src/<person>/...images`` in, ``out/<person>/...`` (same relative paths) out, plus
``out/prepare_report.json`` and ``out/prepare_report.md``. A file directly in ``src`` (no person folder)
is dropped and reported.

Filters, in this order (a dropped file gets the first reason that applies; cheap checks first so the
detector runs only on files that pass them):

1. ``not_image``  the file is not in an image format Pillow knows;
2. ``too_small``  the short side is under ``min_side`` (the paper: at least 1000 px);
3. ``corrupt``    the format is known but the pixels do not decode (truncated, damaged);
4. ``duplicate``  same bytes (SHA-256) as a file earlier in sorted order, anywhere in ``src``;
   ``near_duplicate`` (opt-in, ``--near-duplicates BITS``): a 64-bit difference hash within BITS of an
   earlier kept image of the same person (across persons only exact duplicates count);
5. ``no_person`` / ``several_persons``  the person detector finds 0 or more than 1 person;
6. ``watermark``  the optional watermark detector fires (off unless a model path is given).

Persons are counted with the YOLO pose model's person boxes (the paper counted faces with a YOLOv11n
face model; a body detector also counts people whose face is hidden, which is what "one person in the
image" means for a body dataset). The counter and the watermark detector are parameters of
``prepare``: any ``images (B, 3, S, S) float [0, 1] -> list`` callable works, the CLI builds YOLO ones.

Parallelism: ``workers`` processes read, hash, decode and letterbox the images (the CPU-heavy part);
the detector runs in the main process in batches while the workers go on decoding the next files.
``workers=1`` does everything in the main process. Results are consumed in sorted order, so the report
and the choice of which duplicate is kept do not depend on the number of workers.

The source is only read. Kept files are **copied** (``shutil.copy2``: bytes, times, permissions), not
hard-linked: a hard link is the same file, so a later edit of the prepared set (cropping, stripping
EXIF, re-saving in place) would silently change the source; links also fail across filesystems.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from ..errors import BoLIDError
from . import photos

log = logging.getLogger("bolid")

REASONS = {
    "not_image": "not an image file",
    "too_small": "short side under the minimum",
    "corrupt": "image data does not decode",
    "duplicate": "same bytes as an earlier file",
    "near_duplicate": "nearly the same picture as an earlier file of the same person",
    "no_person": "no person detected",
    "several_persons": "more than one person detected",
    "watermark": "watermark detected",
    "outside_person_folder": "not inside a person folder",
}
REPORT_JSON = "prepare_report.json"
REPORT_MD = "prepare_report.md"
_PAD = photos.PAD_GREY  # ultralytics' letterbox grey

# images (B, 3, S, S) float [0, 1] -> one int (persons) / bool (watermark) per image
PersonCounter = Callable[["object"], Sequence[int]]
WatermarkDetector = Callable[["object"], Sequence[bool]]


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of one ``prepare`` run (stored in the report)."""

    min_side: int = 1000
    workers: int = 1
    imgsz: int = 640                # square side the detectors see (letterboxed), a multiple of 32
    batch_size: int = 8             # detector batch
    person_conf: float = 0.5
    watermark_conf: float = 0.5
    near_duplicate_bits: int = -1   # -1: off; else max Hamming distance of 64-bit dHashes
    person_filter: bool = True

    def check(self) -> None:
        if self.min_side < 1:
            raise BoLIDError(f"min_side must be >= 1 pixel; got {self.min_side}")
        if self.workers < 1:
            raise BoLIDError(f"workers must be >= 1; got {self.workers}")
        if self.imgsz < 32 or self.imgsz % 32:
            raise BoLIDError(f"imgsz must be a multiple of 32 (YOLO's stride), at least 32; got {self.imgsz}")
        if self.batch_size < 1:
            raise BoLIDError(f"batch_size must be >= 1; got {self.batch_size}")
        if not -1 <= self.near_duplicate_bits <= 64:
            raise BoLIDError(f"near_duplicate_bits must be -1 (off) or 0..64; got {self.near_duplicate_bits}")
        for name in ("person_conf", "watermark_conf"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise BoLIDError(f"{name} must lie in [0, 1]; got {getattr(self, name)}")


@dataclass
class Inspection:
    """What a worker learns about one file. thumb: (S, S, 3) uint8 letterboxed, only for decodable images."""

    rel: str
    person: str
    size_bytes: int = 0
    sha256: str = ""
    status: str = "ok"              # ok | not_image | too_small | corrupt
    detail: str = ""
    width: int = 0
    height: int = 0
    dhash: int | None = None
    thumb: np.ndarray | None = None


@dataclass
class PrepareReport:
    src: str
    out: str
    config: dict
    kept: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        c = collections.Counter(d["reason"] for d in self.dropped)
        return {"files": len(self.kept) + len(self.dropped), "kept": len(self.kept),
                **{r: c[r] for r in REASONS if c[r]}}

    def to_json(self) -> dict:
        return {"src": self.src, "out": self.out, "config": self.config, "counts": self.counts,
                "seconds": round(self.seconds, 3), "kept": self.kept, "dropped": self.dropped}

    def to_markdown(self) -> str:
        lines = ["# Dataset preparation report", "", f"- source: `{self.src}`", f"- output: `{self.out}`",
                 f"- settings: " + ", ".join(f"{k}={v}" for k, v in self.config.items()),
                 f"- time: {self.seconds:.1f} s", "", "| result | files |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.counts.items()]
        persons = collections.Counter(k["person"] for k in self.kept)
        if persons:
            lines += ["", "## Kept per person", "", "| person | images |", "|---|---|"]
            lines += [f"| {p} | {n} |" for p, n in sorted(persons.items())]
        if self.dropped:
            lines += ["", "## Dropped files", "", "| file | reason | detail |", "|---|---|---|"]
            lines += [f"| `{d['file']}` | {d['reason']} | {d['detail'].replace('|', '/')} |" for d in self.dropped]
        return "\n".join(lines) + "\n"


# --- worker side: read, hash, decode, letterbox ----------------------------------------------------

def _dhash(grey: Image.Image) -> int:
    """64-bit difference hash: 9x8 greyscale, one bit per horizontally adjacent pair."""
    a = np.asarray(grey.resize((9, 8), Image.BILINEAR), dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def _letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 3) uint8: a photo whose long side is ``size`` padded right and bottom with grey."""
    h, w = image.shape[:2]
    canvas = np.full((size, size, 3), _PAD, dtype=np.uint8)
    canvas[:h, :w] = image
    return canvas


def inspect_file(path: str, rel: str, person: str, min_side: int, imgsz: int) -> Inspection:
    """Read one file: hash its bytes, identify, size-check, decode (the one photo reader: upright, long side
    ``imgsz``), letterbox. Runs in a worker process."""
    info = Inspection(rel=rel, person=person)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        info.status, info.detail = "corrupt", f"cannot be read: {e.strerror}"
        return info
    info.size_bytes = len(data)
    info.sha256 = hashlib.sha256(data).hexdigest()
    try:
        info.width, info.height, _ = photos.probe(path, data)
    except photos.NotAPhoto as e:
        info.status, info.detail = "not_image", f"not an image format Pillow reads ({e})"
        return info
    except BoLIDError as e:  # a header claiming more pixels than Pillow will allocate
        info.status, info.detail = "corrupt", str(e)
        return info
    if min(info.width, info.height) < min_side:
        info.status, info.detail = "too_small", f"{info.width}x{info.height} px, short side under {min_side}"
        return info
    try:
        photo = photos.decode_photo(path, imgsz, data=data)
    except BoLIDError as e:
        info.status, info.detail = "corrupt", str(e)
        return info
    info.thumb = _letterbox(photo.image, imgsz)
    info.dhash = _dhash(Image.fromarray(photo.image).convert("L"))
    return info


def _inspect_args(args: tuple) -> Inspection:
    return inspect_file(*args)


def _ordered_map(fn, items: Sequence, workers: int, window: int) -> Iterator:
    """fn over items in order; with workers > 1 in a process pool with at most ``window`` tasks in flight
    (bounds memory: each result carries an image thumbnail)."""
    if workers == 1:
        for item in items:
            yield fn(item)
        return
    # spawn: the same start method on every OS, and safe when torch (with its threads) is loaded here
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: collections.deque = collections.deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield result


# --- main side -------------------------------------------------------------------------------------

def list_source(src: Path) -> list[tuple[str, str]]:
    """(relative POSIX path, person) of every file under ``src``, sorted; person is "" for top-level files."""
    files = []
    for root, dirs, names in os.walk(src):
        dirs.sort()
        for name in names:
            rel = Path(root, name).relative_to(src).as_posix()
            person = rel.split("/", 1)[0] if "/" in rel else ""
            files.append((rel, person))
    return sorted(files)


def _check_folders(src: Path, out: Path) -> tuple[Path, Path]:
    if not src.is_dir():
        raise BoLIDError(f"source folder not found: {src}; give the folder that holds one sub-folder per person")
    src, out_r = src.resolve(), out.resolve()
    if out_r == src or src in out_r.parents or out_r in src.parents:
        raise BoLIDError(f"the output folder {out} must lie outside the source {src} (and not contain it): "
                         "choose another --out")
    if out_r.exists() and (not out_r.is_dir() or any(out_r.iterdir())):
        raise BoLIDError(f"the output folder {out} exists and is not empty: choose a new or empty folder "
                         "(prepare never overwrites)")
    return src, out_r


def _to_batch(thumbs: list[np.ndarray]):
    import torch

    return torch.from_numpy(np.stack(thumbs)).permute(0, 3, 1, 2).float().div(255)  # (B, 3, S, S)


class _Verdicts:
    """The filters' verdict on each file (rel -> (reason, detail), or None when kept), reached in sorted order.

    Filters 1-4 decide as each worker's inspection arrives; a file that passes them waits in a batch for
    the detectors (filters 5-6), which run when the batch is full and once more at the end (``flush``).
    """

    def __init__(self, config: PrepareConfig, count_persons: PersonCounter | None,
                 detect_watermark: WatermarkDetector | None):
        self.config, self.count_persons, self.detect_watermark = config, count_persons, detect_watermark
        self.results: dict[str, tuple[str, str] | None] = {}
        self.info_by_rel: dict[str, Inspection] = {}
        self._first_by_hash: dict[str, str] = {}
        self._kept_hashes: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)  # person -> (dHash, rel)
        self._batch: list[Inspection] = []

    def add(self, info: Inspection) -> None:
        """Filters 1-4 (the worker's status, duplicate, near duplicate) on one inspected file."""
        self.info_by_rel[info.rel] = info
        if info.status != "ok":
            self.results[info.rel] = (info.status, info.detail)
        elif info.sha256 in self._first_by_hash:
            self.results[info.rel] = ("duplicate", f"same bytes as {self._first_by_hash[info.sha256]}")
            info.thumb = None
        else:
            self._first_by_hash[info.sha256] = info.rel
            near = self._near_duplicate_of(info)
            if near is not None:
                self.results[info.rel] = ("near_duplicate", f"nearly the same picture as {near}")
                info.thumb = None
            else:
                self._kept_hashes[info.person].append((info.dhash, info.rel))
                self._batch.append(info)
                if len(self._batch) >= self.config.batch_size:
                    self.flush()

    def _near_duplicate_of(self, info: Inspection) -> str | None:
        """The first earlier kept image of the same person within ``near_duplicate_bits`` of its dHash."""
        if self.config.near_duplicate_bits < 0:
            return None
        return next((r for h, r in self._kept_hashes[info.person]
                     if (h ^ info.dhash).bit_count() <= self.config.near_duplicate_bits), None)

    def flush(self) -> None:
        """Filters 5-6: the person counter and the watermark detector on the waiting batch."""
        batch = self._batch
        if not batch:
            return
        images = _to_batch([b.thumb for b in batch])
        counts = list(self.count_persons(images)) if self.config.person_filter else [1] * len(batch)
        marks = list(self.detect_watermark(images)) if self.detect_watermark is not None else [False] * len(batch)
        if len(counts) != len(batch) or len(marks) != len(batch):
            raise BoLIDError(f"a detector returned {len(counts)}/{len(marks)} answers for {len(batch)} images")
        for b, n, mark in zip(batch, counts, marks):
            if int(n) == 0:
                self.results[b.rel] = ("no_person", "the detector found no person")
            elif int(n) > 1:
                self.results[b.rel] = ("several_persons", f"{int(n)} persons detected")
            elif bool(mark):
                self.results[b.rel] = ("watermark", "the watermark detector fired")
            else:
                self.results[b.rel] = None
            b.thumb = None  # free the pixels
        batch.clear()


def _judge(src: Path, files: list[tuple[str, str]], config: PrepareConfig, count_persons: PersonCounter | None,
           detect_watermark: WatermarkDetector | None, progress: Callable[[int, int], None] | None) -> _Verdicts:
    """Every file's verdict: the workers inspect the files of person folders in order, the rest are dropped."""
    verdicts = _Verdicts(config, count_persons, detect_watermark)
    todo = []
    for rel, person in files:
        if person == "":
            verdicts.results[rel] = ("outside_person_folder", "put it in a sub-folder named after the person")
        else:
            todo.append((str(src / rel), rel, person, config.min_side, config.imgsz))
    done = len(files) - len(todo)
    window = max(4, 4 * config.workers)
    for info in _ordered_map(_inspect_args, todo, config.workers, window):
        verdicts.add(info)
        done += 1
        if progress is not None:
            progress(done, len(files))
    verdicts.flush()
    return verdicts


def _copy_kept(src: Path, out: Path, files: list[tuple[str, str]], verdicts: _Verdicts, report: PrepareReport) -> None:
    """Copy the kept files to the same relative paths under ``out``; list kept and dropped files in the report."""
    out.mkdir(parents=True, exist_ok=True)
    for rel, _person in files:
        verdict = verdicts.results[rel]
        info = verdicts.info_by_rel.get(rel)
        if verdict is None:
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, target)
            report.kept.append({"file": rel, "person": info.person, "width": info.width, "height": info.height,
                                "sha256": info.sha256})
        else:
            report.dropped.append({"file": rel, "reason": verdict[0], "detail": verdict[1]})


def prepare(src: str | os.PathLike, out: str | os.PathLike, *, config: PrepareConfig = PrepareConfig(),
            count_persons: PersonCounter | None = None, detect_watermark: WatermarkDetector | None = None,
            progress: Callable[[int, int], None] | None = None) -> PrepareReport:
    """Filter ``src`` into ``out`` (see the module docstring). Returns the report, also written into ``out``.

    count_persons: images (B, 3, S, S) float [0, 1] -> persons per image; required unless
        ``config.person_filter`` is False. detect_watermark: same images -> bool per image; None = no filter.
    progress(done, total) after each file.
    With ``config.workers > 1`` the workers are *spawned* processes, which import the calling script again:
    a script that calls ``prepare`` must do so under ``if __name__ == "__main__":`` (the CLI does).
    """
    config.check()
    if config.person_filter and count_persons is None:
        raise BoLIDError("the one-person filter needs a person detector: give --pose PATH (a YOLO pose .pt), "
                         "or turn the filter off with --no-person-filter")
    src_path, out_path = _check_folders(Path(src), Path(out))
    t0 = time.perf_counter()
    files = list_source(src_path)
    report = PrepareReport(str(src_path), str(out_path), asdict(config))
    if not files:
        raise BoLIDError(f"{src_path} holds no files: put photos in one sub-folder per person")
    verdicts = _judge(src_path, files, config, count_persons, detect_watermark, progress)
    _copy_kept(src_path, out_path, files, verdicts, report)
    report.seconds = time.perf_counter() - t0
    (out_path / REPORT_JSON).write_text(json.dumps(report.to_json(), indent=2))
    (out_path / REPORT_MD).write_text(report.to_markdown())
    log.info("prepare: kept %d of %d files in %.1f s", len(report.kept), len(files), report.seconds)
    return report


# --- YOLO detectors ---------------------------------------------------------------------------------

def yolo_person_counter(path: str | os.PathLike, *, conf: float = 0.5, device=None) -> PersonCounter:
    """A person counter from a YOLO pose model: the number of person boxes with score >= conf.

    Loaded through ``bolid_lib.method.pose.PoseModel.load`` (which refuses non-pose models); ``PoseModel.predict``
    keeps one person per image, so the count is read from the underlying ultralytics model directly.
    """
    import torch

    from ..method.pose import PoseModel

    model = PoseModel.load(str(path), device)

    def count(images) -> list[int]:
        with torch.inference_mode():
            results = model.yolo.predict(images.to(model.device), conf=conf, verbose=False, device=model.device,
                                         imgsz=list(images.shape[-2:]))
        return [len(r.boxes) for r in results]

    return count


def yolo_watermark_detector(path: str | os.PathLike, *, conf: float = 0.5, device=None) -> WatermarkDetector:
    """A watermark detector from an ultralytics detection model: any box with score >= conf marks the image.

    Like the pose model, an ultralytics ``.pt`` is a pickle: it is vetted against ultralytics' allow-list of model
    classes first (``method.pose.load_yolo``), and one holding anything else is refused unread.
    """
    import torch

    from ..method.pose import load_yolo

    path = Path(path)
    if not path.is_file():
        raise BoLIDError(f"watermark model not found: {path}; give an ultralytics detection .pt, or leave "
                         "--watermark out to skip the watermark filter")
    # Vetted like the pose model (method.pose.load_yolo): a .pt is a pickle, read against ultralytics' allow-list
    # before anything in it can run.
    yolo = load_yolo(path, "the watermark filter needs an ultralytics detection model (.pt)")
    if yolo.task != "detect":
        raise BoLIDError(f"{path.name} is a {yolo.task} model; the watermark filter needs a detection model "
                         "(task 'detect') whose boxes mark watermarks")
    if device is not None:
        yolo.model.to(torch.device(device))
    dev = next(yolo.model.parameters()).device

    def detect(images) -> list[bool]:
        with torch.inference_mode():
            results = yolo.predict(images.to(dev), conf=conf, verbose=False, device=dev, imgsz=list(images.shape[-2:]))
        return [len(r.boxes) > 0 for r in results]

    return detect


# --- command line -------------------------------------------------------------------------------------

def _tqdm_progress(total_hint: str):
    from tqdm import tqdm

    bar = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=total_hint, unit="img")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return on_progress


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bolid_lib.data", description="BoLID dataset tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="filter photos grouped by person into a clean copy (paper section 6)")
    p.add_argument("--src", required=True, help="folder with one sub-folder per person (only read)")
    p.add_argument("--out", required=True, help="new or empty folder for the kept copies and the report")
    p.add_argument("--min-side", type=int, default=1000, help="minimum short side in pixels (paper: 1000)")
    p.add_argument("--pose", help="YOLO pose model .pt used to count persons (e.g. yolo11n-pose.pt)")
    p.add_argument("--no-person-filter", action="store_true", help="keep images whatever the number of persons")
    p.add_argument("--person-conf", type=float, default=0.5, help="score a person box needs to count")
    p.add_argument("--watermark", help="ultralytics detection model .pt for watermarks; no filter when absent")
    p.add_argument("--watermark-conf", type=float, default=0.5, help="score a watermark box needs")
    p.add_argument("--near-duplicates", type=int, default=-1, metavar="BITS",
                   help="also drop near duplicates of the same person: max dHash Hamming distance (off: -1)")
    p.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 1))),
                   help="processes that decode and hash images (1: all in this process)")
    p.add_argument("--imgsz", type=int, default=640, help="square size the detectors see")
    p.add_argument("--batch-size", type=int, default=8, help="detector batch size")
    p.add_argument("--device", default=None, help="torch device for the detectors (default: the model's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.pose and args.no_person_filter:
            raise BoLIDError("--pose and --no-person-filter contradict each other: give one")
        config = PrepareConfig(min_side=args.min_side, workers=args.workers, imgsz=args.imgsz,
                               batch_size=args.batch_size, person_conf=args.person_conf,
                               watermark_conf=args.watermark_conf, near_duplicate_bits=args.near_duplicates,
                               person_filter=not args.no_person_filter)
        config.check()
        counter = yolo_person_counter(args.pose, conf=args.person_conf, device=args.device) if args.pose else None
        watermark = (yolo_watermark_detector(args.watermark, conf=args.watermark_conf, device=args.device)
                     if args.watermark else None)
        report = prepare(args.src, args.out, config=config, count_persons=counter, detect_watermark=watermark,
                         progress=_tqdm_progress("prepare"))
    except BoLIDError as e:
        log.error("error: %s", e)
        return 2
    c = report.counts
    log.info("kept %d of %d files; report: %s", c["kept"], c["files"], Path(report.out) / REPORT_MD)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
