"""Build the example workflows in ComfyUI's real frontend and save them in its UI format.

    COMFYUI_PATH=/work/ComfyUI python tests/tools/make_workflows.py [--only NAME] [--pictures]

Each workflow is declared below as nodes (type, widget values by name, column), links (by output and
input *names*) and groups. The script serves ComfyUI with this pack (tests/browserlib.py) and the newest
frontend (``--frontend``, default browserlib.NEWEST_FRONTEND; ``pinned`` for the host's own), opens it in
headless Chromium, creates the nodes with ``LiteGraph.createNode``, sets the widgets by name, connects the
sockets, lays the columns out, and saves ``app.graph.serialize()``: the frontend itself decides widget order,
hidden control slots and link records, so the files match the node schemas exactly.

Nodes 2.0 draws nodes taller than the classic canvas (its widgets are DOM controls), so a layout from the classic
sizes overlaps there. Where the frontend offers Nodes 2.0, each built workflow is opened once in it, every node's
on-screen box is measured, and the workflow is built again with each node at least that large: the file's sizes
then hold in both renderers, nodes are stacked by them and groups drawn around them (tests/browser/
test_frontend.py checks the boxes in both). Run it again whenever a node schema changes;
tests/contract/test_workflows.py says when that is needed.

``--pictures`` also writes docs/images/<name>.png (README) and example_workflows/<name>.jpg (the
template browser's thumbnail) from a screenshot of each saved workflow opened on the canvas.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import browserlib  # noqa: E402
import hostlib  # noqa: E402

OUT_DIR = ROOT / "example_workflows"

# Model file names the workflows use: the public names users already have, and this pack's own.
SDXL = "sd_xl_base_1.0.safetensors"
SDXL_LIGHTNING = "sdxl_lightning_4step.safetensors"
CLIP_VISION_H = "clip_vision_h.safetensors"
YOLO_POSE = "pose/yolo11n-pose.pt"
ADAPTER = "bolid_adapter_sdxl.safetensors"
BODY_VAE = "bolid_body_vae.safetensors"
BODY = "my_person.safetensors"
REFERENCE_IMAGE = "bolid_reference.png"
PHOTO_FOLDER = "bolid_person"

POSITIVE = "full-body photo of a person standing in a sunlit park, wearing a denim jacket, natural light, 35mm"
NEGATIVE = "blurry, lowres, deformed body, extra limbs, watermark, text"


@dataclass
class N:
    """One node: its key in this file, type, widget values by name, column (left to right), title, colour."""

    key: str
    type: str
    widgets: dict = field(default_factory=dict)
    col: int = 0
    title: str | None = None
    width: int | None = None
    height: int | None = None
    color: str | None = None


@dataclass
class Workflow:
    name: str
    nodes: list[N]
    links: list[tuple[str, str, str, str]]  # (from key, output name, to key, input name)
    groups: list[tuple[str, list[str], str]]  # (title, member keys, colour)


# --- the model-file notes (shown on the canvas) -------------------------------------------------

def _files_note(rows: list[tuple[str, str, str]], extra: str = "") -> str:
    lines = ["## Model files this workflow needs", "",
             "| file | put it in | where to get it |", "|---|---|---|"]
    lines += [f"| `{f}` | `ComfyUI/{d}` | {w} |" for f, d, w in rows]
    lines += ["", "No public BoLID weights exist yet: train the adapter and the Body-ID VAE with "
              "`python -m bolid_lib.training adapter|body-vae` (see the pack's README)."]
    if extra:
        lines += ["", extra]
    return "\n".join(lines)


ROW_SDXL = (SDXL, "models/checkpoints/", "Hugging Face: stabilityai/stable-diffusion-xl-base-1.0")
ROW_LIGHTNING = (SDXL_LIGHTNING, "models/checkpoints/", "Hugging Face: ByteDance/SDXL-Lightning")
ROW_ADAPTER = (ADAPTER, "models/bolid/", "your training run (BoLID adapter for SDXL)")
ROW_VAE = (BODY_VAE, "models/bolid/", "your training run (Body-ID VAE)")
ROW_BODY = (BODY, "models/bolid/bodies/", "made by the bolid_build_body_id workflow")
ROW_YOLO = ("yolo11n-pose.pt", "models/ultralytics/pose/", "GitHub: ultralytics/assets releases")
ROW_CLIPV = (CLIP_VISION_H, "models/clip_vision/",
             "Hugging Face: Comfy-Org/Wan_2.1_ComfyUI_repackaged, or ComfyUI-Manager (CLIP-ViT-H-14-laion2B); "
             "ViT-H, not bigG")


def _sampler(steps, cfg, sampler, scheduler, col=4):
    return N("sampler", "KSampler", {"seed": 20251122, "control_after_generate": "fixed", "steps": steps, "cfg": cfg,
                                     "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0}, col=col)


def _generation_tail(prefix: str, col: int) -> list[N]:
    return [
        N("decode", "VAEDecode", col=col + 1),
        N("save", "SaveImage", {"filename_prefix": prefix}, col=col + 1, width=420, height=560),
    ]


def _prompts(col=1) -> list[N]:
    return [
        N("positive", "CLIPTextEncode", {"text": POSITIVE}, col=col, title="Positive prompt", width=420, height=150),
        N("negative", "CLIPTextEncode", {"text": NEGATIVE}, col=col, title="Negative prompt", width=420, height=120),
        N("latent", "EmptyLatentImage", {"width": 832, "height": 1216, "batch_size": 1}, col=col),
    ]


GEN_LINKS = [
    ("ckpt", "CLIP", "positive", "clip"), ("ckpt", "CLIP", "negative", "clip"),
    ("positive", "CONDITIONING", "sampler", "positive"), ("negative", "CONDITIONING", "sampler", "negative"),
    ("latent", "LATENT", "sampler", "latent_image"), ("sampler", "LATENT", "decode", "samples"),
    ("ckpt", "VAE", "decode", "vae"), ("decode", "IMAGE", "save", "images"),
]


def text_only(lightning: bool) -> Workflow:
    ckpt = SDXL_LIGHTNING if lightning else SDXL
    sampler = (_sampler(4, 1.5, "euler", "sgm_uniform", col=3) if lightning
               else _sampler(30, 6.0, "dpmpp_2m", "karras", col=3))
    name = "bolid_text_only_lightning" if lightning else "bolid_text_only"
    settings = ("SDXL-Lightning 4-step: 4 steps, euler, sgm_uniform, CFG 1-2 (higher CFG burns the image)."
                if lightning else "SDXL base: 25-40 steps, dpmpp_2m + karras, CFG 5-7, about 1 megapixel.")
    note = _files_note(
        [ROW_LIGHTNING if lightning else ROW_SDXL, ROW_ADAPTER, ROW_BODY],
        "Text-only mode (paper 4.3): the saved Body-ID drives the body branch (lambda_body); there is no "
        "reference image, so lambda_ref does nothing here. " + settings)
    nodes = [
        N("ckpt", "CheckpointLoaderSimple", {"ckpt_name": ckpt}, col=0),
        N("body", "BoLIDLoadBody", {"body_name": BODY}, col=0),
        N("adapter", "BoLIDAdapterLoader", {"adapter_name": ADAPTER}, col=0),
        N("note", "MarkdownNote", {"text": note}, col=0, title="Model files", width=640, height=330, color="#432"),
        *_prompts(),
        N("apply", "BoLIDApply", {"lambda_ref": 0.0, "lambda_body": 0.8, "start_at": 0.0, "end_at": 1.0}, col=2),
        sampler,
        *_generation_tail("BoLID/text_only" + ("_lightning" if lightning else ""), 3),
    ]
    links = GEN_LINKS + [
        ("ckpt", "MODEL", "apply", "model"), ("adapter", "BOLID_ADAPTER", "apply", "adapter"),
        ("body", "BOLID_BODY", "apply", "body"), ("apply", "MODEL", "sampler", "model"),
    ]
    groups = [("Body-ID and adapter (BoLID)", ["body", "adapter"], "#3f789e"),
              ("Read me: model files", ["note"], "#a1309b")]
    return Workflow(name, nodes, links, groups)


def image_reference() -> Workflow:
    note = _files_note(
        [ROW_SDXL, ROW_ADAPTER, ROW_VAE, ROW_YOLO, ROW_CLIPV],
        "Image-referenced mode (paper 4.3): the reference photo feeds both branches, CLIP vision into the ref "
        "branch (lambda_ref) and pose + Gaussian weighting + the Body-ID VAE into the body branch (lambda_body). "
        f"Put your photo in ComfyUI/input/ (or upload it in Load Image).")
    nodes = [
        N("image", "LoadImage", {"image": REFERENCE_IMAGE}, col=0, height=420),
        N("note", "MarkdownNote", {"text": note}, col=0, title="Model files", width=640, height=380, color="#432"),
        N("pose_model", "BoLIDPoseModelLoader", {"model_name": YOLO_POSE}, col=1),
        N("pose", "BoLIDPoseKeypoints", {"on_missing": "error"}, col=1),
        N("weighting", "BoLIDGaussianWeighting", {}, col=2),
        N("vae", "BoLIDBodyVAELoader", {"vae_name": BODY_VAE}, col=2),
        N("encode", "BoLIDBodyEncode", {}, col=3),
        N("clip_vision", "CLIPVisionLoader", {"clip_name": CLIP_VISION_H}, col=4),
        N("ckpt", "CheckpointLoaderSimple", {"ckpt_name": SDXL}, col=4),
        N("adapter", "BoLIDAdapterLoader", {"adapter_name": ADAPTER}, col=4),
        N("apply", "BoLIDApply", {"lambda_ref": 0.6, "lambda_body": 0.8, "start_at": 0.0, "end_at": 1.0}, col=5),
        *_prompts(col=5),
        _sampler(30, 6.0, "dpmpp_2m", "karras", col=6),
        *_generation_tail("BoLID/image_reference", 6),
    ]
    links = GEN_LINKS + [
        ("image", "IMAGE", "pose", "image"), ("pose_model", "BOLID_POSE_MODEL", "pose", "pose_model"),
        ("image", "IMAGE", "weighting", "image"), ("pose", "BOLID_POSE", "weighting", "pose"),
        ("weighting", "weighted", "encode", "views"), ("pose", "BOLID_POSE", "encode", "pose"),
        ("vae", "BOLID_BODY_VAE", "encode", "body_vae"),
        ("ckpt", "MODEL", "apply", "model"), ("adapter", "BOLID_ADAPTER", "apply", "adapter"),
        ("encode", "BOLID_BODY", "apply", "body"), ("clip_vision", "CLIP_VISION", "apply", "clip_vision"),
        ("image", "IMAGE", "apply", "image"), ("apply", "MODEL", "sampler", "model"),
    ]
    groups = [("Body branch: pose, weighting, Body-ID", ["pose_model", "pose", "weighting", "vae", "encode"], "#3f789e"),
              ("Read me: model files", ["note"], "#a1309b")]
    return Workflow("bolid_image_reference", nodes, links, groups)


PHOTOS_NOTE = (
    f"Put the photos of ONE person in ComfyUI/input/{PHOTO_FOLDER}/ and press R (refresh) so the folder is listed "
    "(one photo is enough, 10-100 are better). Photos as they come off a phone or camera are fine: different sizes "
    "and orientations (EXIF rotation is applied), JPEG, PNG, WebP or HEIC; nothing needs cropping: each photo is "
    "scaled so its long side is `size` and padded to a square. Other files in the folder (text, damaged copies, "
    "sub-folders) are skipped and named in the report. Photos with no person found are skipped and counted. The "
    "Body-ID is saved to ComfyUI/models/bolid/bodies/ and appears in BoLID Load Body-ID.")


def build_body_id() -> Workflow:
    """The folder to a saved Body-ID with the streaming node: memory does not grow with the number of photos."""
    note = _files_note(
        [ROW_YOLO, ROW_VAE],
        PHOTOS_NOTE + " BoLID Body-ID From Folder reads the photos a few at a time, so 100 or 1,000 photos need the "
        "same memory. To look at every stage (skeletons, weighted photos, heat maps), open "
        "bolid_build_body_id_step_by_step: the same Body-ID, with all photos held at each stage.")
    nodes = [
        N("pose_model", "BoLIDPoseModelLoader", {"model_name": YOLO_POSE}, col=0),
        N("vae", "BoLIDBodyVAELoader", {"vae_name": BODY_VAE}, col=0),
        N("note", "MarkdownNote", {"text": note}, col=0, title="Model files", width=640, height=360, color="#432"),
        N("folder_body", "BoLIDBodyIDFromFolder", {"folder": PHOTO_FOLDER, "size": 1024, "max_photos": 0}, col=1,
          width=420),
        N("save", "BoLIDSaveBody", {"name": "my_person", "if_exists": "increment"}, col=2),
    ]
    links = [
        ("pose_model", "BOLID_POSE_MODEL", "folder_body", "pose_model"),
        ("vae", "BOLID_BODY_VAE", "folder_body", "body_vae"), ("folder_body", "BOLID_BODY", "save", "body"),
    ]
    groups = [("Read me: model files", ["note"], "#a1309b")]
    return Workflow("bolid_build_body_id", nodes, links, groups)


def build_body_id_step_by_step() -> Workflow:
    """The same Body-ID one stage at a time, every stage's output on the canvas (all photos held at each stage)."""
    note = _files_note(
        [ROW_YOLO, ROW_VAE],
        PHOTOS_NOTE + " Every stage holds every photo (ComfyUI keeps each node's outputs), so this suits a few "
        "photos; for many, bolid_build_body_id (BoLID Body-ID From Folder) makes the same Body-ID in flat memory, "
        "and BoLID Load Photos refuses a folder too large for the memory available.")
    nodes = [
        N("photos", "BoLIDLoadPhotos", {"folder": PHOTO_FOLDER, "size": 1024, "max_photos": 0}, col=0),
        N("pose_model", "BoLIDPoseModelLoader", {"model_name": YOLO_POSE}, col=0),
        N("note", "MarkdownNote", {"text": note}, col=0, title="Model files", width=640, height=360, color="#432"),
        N("pose", "BoLIDPoseKeypoints", {"on_missing": "skip"}, col=1, height=520),
        N("weighting", "BoLIDGaussianWeighting", {}, col=2, height=520),
        N("vae", "BoLIDBodyVAELoader", {"vae_name": BODY_VAE}, col=3),
        N("encode", "BoLIDBodyEncode", {}, col=3),
        N("save", "BoLIDSaveBody", {"name": "my_person", "if_exists": "increment"}, col=4),
        N("preview", "BoLIDBodyPreview", {}, col=4),
    ]
    links = [
        ("photos", "images", "pose", "image"), ("pose_model", "BOLID_POSE_MODEL", "pose", "pose_model"),
        ("photos", "images", "weighting", "image"), ("pose", "BOLID_POSE", "weighting", "pose"),
        ("weighting", "weighted", "encode", "views"), ("pose", "BOLID_POSE", "encode", "pose"),
        ("vae", "BOLID_BODY_VAE", "encode", "body_vae"), ("encode", "BOLID_BODY", "save", "body"),
        ("encode", "BOLID_BODY", "preview", "body"),
    ]
    groups = [("Read me: model files", ["note"], "#a1309b")]
    return Workflow("bolid_build_body_id_step_by_step", nodes, links, groups)


def all_workflows() -> list[Workflow]:
    return [text_only(False), text_only(True), image_reference(), build_body_id(), build_body_id_step_by_step()]


# --- building in the browser ---------------------------------------------------------------------



class BuildError(Exception):
    """The frontend could not build a workflow as declared (a node type, widget or socket is missing)."""


def build(page, wf: Workflow) -> dict:
    spec = {
        "nodes": [{"key": n.key, "type": n.type, "widgets": n.widgets, "col": n.col, "title": n.title,
                   "width": n.width, "height": n.height, "color": n.color} for n in wf.nodes],
        "links": [list(link) for link in wf.links],
        "groups": [list(g) for g in wf.groups],
    }
    result = browserlib.build_graph(page, spec)
    if result["problems"]:
        raise BuildError(f"{wf.name}:\n  " + "\n  ".join(result["problems"]))
    graph = result["graph"]
    graph["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-bolid/" + wf.name))
    graph.setdefault("extra", {}).pop("ds", None)  # the frontend fits a template to the window itself
    # Frontend 1.58 also writes the widget values by name; the files keep the positional list alone, the form every
    # supported frontend (1.27 on) writes and reads, so they do not depend on the frontend that built them.
    for node in graph["nodes"]:
        node.pop("widgets_values_named", None)
    return result


def grow_to(wf: Workflow, sizes: dict[str, tuple[float, float]]) -> None:
    """Make each node of ``wf`` at least as large as ``sizes`` says (whole pixels, rounded up)."""
    import math

    for n in wf.nodes:
        if n.key in sizes:
            w, h = sizes[n.key]
            n.width = max(n.width or 0, math.ceil(w))
            n.height = max(n.height or 0, math.ceil(h))


def take_picture(page, server, name: str, shots: Path) -> bytes:
    """Open the saved workflow as the template browser does, fit it, and screenshot the canvas."""
    wf = server.get_json(f"/api/workflow_templates/{browserlib.PACK_NAME}/{name}.json")
    browserlib.close_dialogs(page)
    report = browserlib.load_workflow(page, wf, name)
    if report["missingTypes"] or report["broken"] or report["dialogs"] or report["toasts"]:
        raise BuildError(f"{name} did not open cleanly: {report}")
    png = browserlib.workflow_picture(page)
    (shots / f"{name}.png").write_bytes(png)
    return png


def serve_and_open(base: Path, frontend: str = browserlib.NEWEST_FRONTEND):
    """(server, playwright, context, page) with this pack served (classic canvas); caller stops them."""
    from playwright.sync_api import sync_playwright

    root, why = hostlib.find_comfyui()
    if root is None:
        raise SystemExit(why)
    missing = browserlib.chromium_missing()
    if missing:
        raise SystemExit(missing)
    static = None
    if frontend != "pinned":
        static, why = browserlib.fetch_frontend(frontend)
        if static is None:
            raise SystemExit(why)
    browserlib.make_base_dir(base, browserlib.sample_files())
    server = browserlib.ComfyServer(root, base, front_end_root=static).start()
    server.set_setting(browserlib.VUE_NODES_SETTING, False)
    pw = sync_playwright().start()
    context = browserlib.launch_browser(pw, base / "chromium_profile")
    page = browserlib.open_app(context, server.url)
    return server, pw, context, page


def put_model_placeholders(base: Path) -> None:
    """Empty files under the model names the workflows use, so the loaders list them: the pictures show the
    workflows as a user who has the files sees them (frontend 1.58 outlines a node whose model is missing in red).

    Not there while the workflows are measured: Nodes 2.0 draws a loader whose file is missing taller (it adds a
    notice), and that is what a user opening a template for the first time sees, so the sizes allow for it."""
    for rel in (f"checkpoints/{SDXL}", f"checkpoints/{SDXL_LIGHTNING}", f"clip_vision/{CLIP_VISION_H}",
                f"ultralytics/{YOLO_POSE}", f"bolid/{ADAPTER}", f"bolid/{BODY_VAE}", f"bolid/bodies/{BODY}"):
        path = base / "models" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def nodes2_sizes(context, server, built: dict[str, dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """{workflow: {node key: (width, height)}}: each node's size as Nodes 2.0 draws it (graph units, the title bar
    left out, as LiteGraph's node.size counts), from each built workflow opened in a Nodes 2.0 page; {} where the
    frontend keeps Nodes 2.0 hidden."""
    server.set_setting(browserlib.VUE_NODES_SETTING, True)
    page = browserlib.open_app(context, server.url)
    try:
        if not browserlib.renderer_state(page)["vueNodesMode"]:
            return {}
        title = page.evaluate("() => window.LiteGraph.NODE_TITLE_HEIGHT")
        sizes = {}
        for name, result in built.items():
            browserlib.close_dialogs(page)
            browserlib.load_workflow(page, result["graph"], name)
            boxes = browserlib.node_boxes(page)["nodes"]
            sizes[name] = {key: (boxes[i][2] - boxes[i][0], boxes[i][3] - boxes[i][1] - title)
                           for key, i in result["ids"].items()}
        return sizes
    finally:
        page.close()
        server.set_setting(browserlib.VUE_NODES_SETTING, False)


def main(argv=None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", help="build only this workflow (repeatable)")
    parser.add_argument("--pictures", action="store_true", help="also write docs/images/*.png and thumbnails")
    parser.add_argument("--no-build", action="store_true", help="only take pictures of the saved workflows")
    parser.add_argument("--frontend", default=browserlib.NEWEST_FRONTEND,
                        help="comfyui-frontend-package version to build with, or 'pinned' for the host's own "
                             f"(default {browserlib.NEWEST_FRONTEND})")
    args = parser.parse_args(argv)
    workflows = [w for w in all_workflows() if not args.only or w.name in args.only]
    with tempfile.TemporaryDirectory(prefix="bolid_make_workflows_") as tmp:
        server, pw, context, page = serve_and_open(Path(tmp), args.frontend)
        try:
            failed = []
            if not args.no_build:
                built = {}
                for wf in workflows:
                    try:
                        built[wf.name] = build(page, wf)
                    except BuildError as e:
                        failed.append(str(e))
                page.close()
                # Nodes 2.0's node sizes, then the same workflows again with every node at least that large.
                sizes = nodes2_sizes(context, server, built)
                page = browserlib.open_app(context, server.url)
                for wf in workflows:
                    if wf.name not in built:
                        continue
                    if sizes:
                        grow_to(wf, sizes[wf.name])
                        built[wf.name] = build(page, wf)
                    graph = built[wf.name]["graph"]
                    path = OUT_DIR / f"{wf.name}.json"
                    path.write_text(json.dumps(graph, indent=2) + "\n")
                    print(f"wrote {path.relative_to(ROOT)}: {len(graph['nodes'])} nodes, {len(graph['links'])} links"
                          + (" (sizes from Nodes 2.0)" if sizes else ""))
            if args.pictures:
                put_model_placeholders(Path(tmp))
                page.close()
                page = browserlib.open_app(context, server.url)
                for wf in workflows:
                    png = take_picture(page, server, wf.name, Path(tmp))
                    for p in browserlib.write_pictures(wf.name, png):
                        print(f"wrote {p.relative_to(ROOT)} ({p.stat().st_size // 1024} KB)")
        finally:
            context.close()
            pw.stop()
            server.stop()
    if failed:
        print("not built (the node schemas changed?):\n" + "\n".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
