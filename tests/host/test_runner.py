"""``python -m bolid_lib run`` against a real ComfyUI started as a subprocess on a free loopback port.

Every server here runs with ``--base-directory`` in a temp dir, so nothing is written into the ComfyUI
checkout, and is stopped by its PID at the end (the runner's own, or the fixture's ``finally``).
Core-only workflows: no model files are needed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import hostlib
from bolid_lib.runner import headless as runner

pytestmark = pytest.mark.host

PACK = Path(__file__).resolve().parents[2]


def _comfyui() -> Path:
    root, why = hostlib.find_comfyui()
    if root is None:
        pytest.skip(f"host tier: {why}")
    return Path(root)


def _cli(*args: str, timeout: float = 540) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PACK))
    return subprocess.run([sys.executable, "-m", "bolid_lib", "run", *args], cwd=str(PACK), env=env,
                          capture_output=True, text=True, timeout=timeout)


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is gone for our purpose once it is no longer running.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _ui_workflow(color: int = 0x3366CC) -> dict:
    """EmptyImage -> ImageInvert -> SaveImage, in the UI format (with a Note, dropped on conversion)."""
    return {
        "last_node_id": 4, "last_link_id": 2, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0,
             "inputs": [{"name": n, "type": "INT", "widget": {"name": n}, "link": None}
                        for n in ("width", "height", "batch_size", "color")],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": [64, 48, 1, color]},
            {"id": 2, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "widgets_values": []},
            {"id": 3, "type": "SaveImage", "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 2},
                        {"name": "filename_prefix", "type": "STRING", "widget": {"name": "filename_prefix"}, "link": None}],
             "outputs": [], "widgets_values": ["bolid_runner_test"]},
            {"id": 4, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["a note"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    }


def _checkpoint_workflow(name: str) -> dict:
    wf = _ui_workflow()
    wf["nodes"].append({"id": 5, "type": "CheckpointLoaderSimple", "mode": 0,
                        "inputs": [{"name": "ckpt_name", "type": "COMBO", "widget": {"name": "ckpt_name"}, "link": None}],
                        "outputs": [{"name": "MODEL", "type": "MODEL", "links": []},
                                    {"name": "CLIP", "type": "CLIP", "links": []},
                                    {"name": "VAE", "type": "VAE", "links": []}],
                        "widgets_values": [name]})
    return wf


SHARED_BODY = "shared_person.safetensors"


def _write_shared_body(path: Path) -> None:
    import torch

    from bolid_lib.method.embedding import BodyEmbedding, save_body

    path.parent.mkdir(parents=True, exist_ok=True)
    save_body(BodyEmbedding(torch.linspace(-1, 1, 16), torch.zeros(16), {"vae_fingerprint": "shared", "views_used": 2}),
              path, overwrite=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One ComfyUI for the ``--server`` tests, stopped by PID at the end whatever happens.

    Started with the runner's own arguments for this host (``server_args``), plus a user's
    extra_model_paths.yaml that shares a Body-ID folder (``bolid: <shared>``), as ComfyUI's main.py reads it.
    """
    comfyui = _comfyui()
    work = tmp_path_factory.mktemp("runner_server")
    base = work / "base"
    (base / "custom_nodes").mkdir(parents=True)
    shared = work / "shared_models"
    _write_shared_body(shared / "bolid" / "bodies" / SHARED_BODY)
    user_yaml = work / "extra_model_paths.yaml"
    user_yaml.write_text(f"shared:\n    base_path: {json.dumps(str(shared))}\n    bolid: bolid\n", encoding="utf-8")
    # The pack is loaded the way the runner loads it when it is not in ComfyUI/custom_nodes.
    flags = runner.host_flags(comfyui)
    pack_args = runner.prepare_pack_loading(comfyui, base, work, flags)
    assert pack_args, "the pack unexpectedly sits in the temp base's custom_nodes"
    port = runner.free_port()
    proc = runner.ServerProcess(comfyui, port, work / "comfyui.log",
                                [*runner.server_args(flags, port, cpu=True, base_directory=base), *pack_args,
                                 "--extra-model-paths-config", str(user_yaml)])
    proc.shared = shared
    proc.start()
    try:
        proc.wait_ready(400, lambda _: None)
        yield proc, base
    finally:
        proc.stop()
        assert _pid_gone(proc.proc.pid)


def test_flags_the_runner_reads_are_those_of_this_comfyui():
    """``main.py --help`` and the host's comfy/cli_args.py agree on the flags; the runner picks from them."""
    comfyui = _comfyui()
    flags = runner.host_flags(comfyui)
    declared = runner.parse_cli_args_flags((comfyui / "comfy" / "cli_args.py").read_text(encoding="utf-8"))
    assert flags - {"--help"} == declared
    args = runner.server_args(flags, 8190, cpu=True)
    assert {a for a in args if a.startswith("--")} <= flags
    offline = "--offline" if "--offline" in flags else "--disable-api-nodes"
    assert offline in args and ("--disable-api-nodes" not in args or "--offline" not in flags)
    # The assets system: off where it can be turned off (ComfyUI >= ~0.38), never turned on (0.33's --enable-assets).
    assert ("--disable-assets" in args) == ("--disable-assets" in flags) and "--enable-assets" not in args


def test_example_workflows_and_thumbnails_are_served(server):
    """What the template browser fetches: /workflow_templates lists the pack's examples under its folder
    name, and each workflow and its .jpg thumbnail come from the route this host serves, byte for byte."""
    proc, _ = server
    client = runner.Client(proc.url)
    status, listed = client.get_json("/workflow_templates")
    assert status == 200 and isinstance(listed, dict), listed
    examples = {p.stem for p in (PACK / "example_workflows").glob("*.json")}
    module = next((m for m, names in listed.items() if examples and examples <= set(names)), None)
    assert module is not None, f"the pack's examples are not listed: {listed}"
    routes = (f"/api/workflow_templates/{module}/", f"/workflow_templates/{module}/")
    for name in sorted(examples):
        for suffix in (".json", ".jpg"):
            local = (PACK / "example_workflows" / f"{name}{suffix}").read_bytes()
            served = {}
            for route in routes:
                status, raw = client._request("GET", route + name + suffix)
                served[route] = status == 200 and raw == local
            assert any(served.values()), f"{name}{suffix} is not served on {routes}: {served}"


def test_body_ids_in_a_shared_folder_are_offered_and_loaded(server, tmp_path):
    """``bolid: <shared>`` in the user's extra_model_paths.yaml: Load Body-ID offers <shared>/bodies/x and runs
    with it (0.33 checks the choice against the list), and the Body-ID VAE list leaves it out."""
    proc, _ = server
    client = runner.Client(proc.url)
    info = client.get_json("/object_info/BoLIDLoadBody")[1]["BoLIDLoadBody"]
    spec = info["input"]["required"]["body_name"]
    options = spec[0] if isinstance(spec[0], list) else spec[1]["options"]
    assert SHARED_BODY in options, options
    vae = client.get_json("/object_info/BoLIDBodyVAELoader")[1]["BoLIDBodyVAELoader"]["input"]["required"]["vae_name"]
    assert not any(SHARED_BODY in str(o) for o in (vae[0] if isinstance(vae[0], list) else vae[1]["options"]))
    api = {"1": {"class_type": "BoLIDLoadBody", "inputs": {"body_name": SHARED_BODY}},
           "2": {"class_type": "BoLIDBodyPreview", "inputs": {"body": ["1", 0]}}}
    wf = tmp_path / "shared_body.json"
    wf.write_text(json.dumps(api), encoding="utf-8")
    done = _cli(str(wf), "--server", proc.url, "--out", str(tmp_path / "out"), "--timeout", "120")
    assert done.returncode == 0, done.stdout + done.stderr + proc.log_tail(30)
    prompt_id = done.stdout.split("queued prompt ")[1].split()[0]
    entry = client.get_json(f"/history/{prompt_id}")[1][prompt_id]
    assert entry["outputs"]["2"]["bolid_body"][0]["dim"] == 16   # the shared file, not another one


def test_run_writes_the_image_and_stops_its_server(tmp_path):
    comfyui = _comfyui()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_ui_workflow()), encoding="utf-8")
    out = tmp_path / "out"
    port = runner.free_port()
    done = _cli(str(wf), "--comfyui", str(comfyui), "--out", str(out), "--port", str(port), "--cpu",
                "--base-directory", str(tmp_path / "base"), "--timeout", "300")
    assert done.returncode == 0, done.stdout + done.stderr
    images = sorted(out.glob("bolid_runner_test_*.png"))
    assert len(images) == 1 and str(images[0]) in done.stdout
    assert "running node 2 (ImageInvert)" in done.stdout  # progress followed over the websocket
    from PIL import Image

    with Image.open(images[0]) as im:
        assert im.size == (64, 48)
        pixel = im.convert("RGB").getpixel((10, 10))
        expected = (255 - 0x33, 255 - 0x66, 255 - 0xCC)  # ImageInvert of the EmptyImage colour
        assert all(abs(a - b) <= 1 for a, b in zip(pixel, expected)), pixel  # float -> uint8 truncation
        assert "workflow" in im.info  # the UI workflow is embedded, as the frontend does
    pid = int(done.stdout.split("(pid ")[1].split(")")[0])
    assert _pid_gone(pid) and _port_closed(port)
    assert not (comfyui / "output" / images[0].name).exists()  # nothing written into the checkout


def test_missing_checkpoint_prints_the_checklist_and_exits_2(server, tmp_path):
    proc, base = server
    wf = tmp_path / "needs_sdxl.json"
    wf.write_text(json.dumps(_checkpoint_workflow("sd_xl_base_1.0.safetensors")), encoding="utf-8")
    done = _cli(str(wf), "--server", proc.url, "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stdout + done.stderr
    text = done.stdout
    assert "[ ] sd_xl_base_1.0.safetensors" in text
    assert str(base / "models" / "checkpoints") in text
    assert "stabilityai/stable-diffusion-xl-base-1.0" in text and "6.9 GB" in text
    assert "queued" not in text and not (tmp_path / "out").exists()
    # Nothing was queued on the server.
    history = runner.Client(proc.url).get_json("/history")[1]
    assert not any("needs_sdxl" in json.dumps(v) for v in (history or {}).values())


def test_present_file_is_not_reported(server, tmp_path):
    """A file that exists in the folder passes the check (a stand-in file: the image branch runs only)."""
    proc, base = server
    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "present_model.safetensors").write_bytes(b"\0" * 16)
    client = runner.Client(proc.url)
    info = client.get_json("/object_info")[1]
    wf = _checkpoint_workflow("present_model.safetensors")
    missing = runner.find_missing_files(client, wf, info, str(base))
    assert missing == []
    wf = _checkpoint_workflow("absent.safetensors")
    assert [m.file.file_name for m in runner.find_missing_files(client, wf, info, str(base))] == ["absent.safetensors"]


def test_node_errors_are_reported_readably(server, tmp_path):
    proc, _ = server
    api = {"1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 48, "batch_size": 1, "color": 0}},
           "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    wf = tmp_path / "bad.json"
    wf.write_text(json.dumps(api), encoding="utf-8")
    done = _cli(str(wf), "--server", proc.url, "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "node 1 (EmptyImage) input 'width': Value 0 smaller than min of 1" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_bad_combo_value_is_reported(server, tmp_path):
    """An API-format file goes to ComfyUI as is; its own validation answers, and we print it readably."""
    proc, _ = server
    api = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0}},
           "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nope", "width": 8,
                                                        "height": 8, "crop": "disabled"}},
           "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}
    wf = tmp_path / "bad_combo.json"
    wf.write_text(json.dumps(api), encoding="utf-8")
    done = _cli(str(wf), "--server", proc.url, "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "node 2 (ImageScale) input 'upscale_method': Value not in list" in done.stdout


def test_remote_server_is_refused(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_ui_workflow()), encoding="utf-8")
    done = _cli(str(wf), "--server", "http://example.com:8188", timeout=60)
    assert done.returncode == 1 and "on this machine" in done.stdout


def test_interrupt_stops_the_server(tmp_path):
    comfyui = _comfyui()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_ui_workflow()), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(PACK), PYTHONUNBUFFERED="1")
    cli = subprocess.Popen([sys.executable, "-m", "bolid_lib", "run", str(wf), "--comfyui", str(comfyui), "--cpu",
                            "--base-directory", str(tmp_path / "base"), "--out", str(tmp_path / "out")],
                           cwd=str(PACK), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           # Ctrl-C as in a terminal: a run started in the background (`nohup ... &`, as CI may be)
                           # hands its children an ignored SIGINT, and the CLI would never see the signal.
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = cli.stdout.readline()
        assert "(pid " in first, first
        child = int(first.split("(pid ")[1].split(")")[0])
        cli.send_signal(signal.SIGINT)                       # while the server boots: the tiny job cannot finish first
        rest = cli.communicate(timeout=120)[0]
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == runner.EXIT_INTERRUPTED, rest
    assert _pid_gone(child)


def _pose_workflow(model_name: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "person.png"}},
        "2": {"class_type": "BoLIDPoseModelLoader", "inputs": {"model_name": model_name}},
        "3": {"class_type": "BoLIDPoseKeypoints",
              "inputs": {"image": ["1", 0], "pose_model": ["2", 0], "conf": 0.0, "visibility": 0.5,
                         "person": "largest", "person_index": 0, "on_missing": "skip"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 2], "filename_prefix": "bolid_pose"}},
    }


def test_pack_nodes_run_with_a_model_file_in_the_models_folder(server, tmp_path, yolo_pose_pt):
    """The pack loads in the server the runner starts; with its model file present the job writes images."""
    proc, base = server
    info = runner.Client(proc.url).get_json("/object_info")[1]
    if "BoLIDPoseKeypoints" not in info:
        pytest.fail(f"the pack's pose nodes did not load; server log:\n{proc.log_tail(40)}")
    import shutil

    from PIL import Image

    (base / "models" / "ultralytics" / "pose").mkdir(parents=True, exist_ok=True)
    shutil.copy(yolo_pose_pt, base / "models" / "ultralytics" / "pose" / "random-pose.pt")
    (base / "input").mkdir(exist_ok=True)
    Image.new("RGB", (96, 128), (120, 90, 60)).save(base / "input" / "person.png")
    wf = tmp_path / "pose.json"
    wf.write_text(json.dumps(_pose_workflow("pose/random-pose.pt")), encoding="utf-8")
    out = tmp_path / "out"
    done = _cli(str(wf), "--server", proc.url, "--out", str(out), "--timeout", "300")
    assert done.returncode == 0, done.stdout + done.stderr + proc.log_tail(40)
    images = sorted(out.glob("bolid_pose_*.png"))
    assert len(images) == 1
    with Image.open(images[0]) as im:
        assert im.size == (96, 128)


def test_missing_pose_model_is_in_the_checklist(server, tmp_path):
    proc, base = server
    wf = tmp_path / "pose_missing.json"
    wf.write_text(json.dumps(_pose_workflow("pose/yolo11n-pose.pt")), encoding="utf-8")
    done = _cli(str(wf), "--server", proc.url, "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "[ ] pose/yolo11n-pose.pt" in done.stdout
    assert f"folder : {base / 'models' / 'ultralytics' / 'pose'}" in done.stdout
    assert "ultralytics/assets" in done.stdout


EXAMPLES = sorted((PACK / "example_workflows").glob("*.json"))
SERVER_MODEL_DIRS = {"checkpoints": "checkpoints", "clip_vision": "clip_vision", "bolid": "bolid",
                     "bolid_bodies": "bolid/bodies", "ultralytics": "ultralytics"}


def test_the_example_workflows_are_there():
    assert len(EXAMPLES) >= 4, f"example_workflows/*.json: {[p.name for p in EXAMPLES]}"


def _set_aside(paths: list[Path], aside: Path) -> list[tuple[Path, Path]]:
    """Move the files or folders that exist among ``paths`` into ``aside``; returns (where, moved to) to restore."""
    moved = []
    for i, path in enumerate(paths):
        if path.exists():
            target = aside / f"{i}_{path.name}"
            aside.mkdir(parents=True, exist_ok=True)
            path.rename(target)
            moved.append((path, target))
    return moved


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_workflow_without_models_prints_its_checklist(server, tmp_path, example):
    """README: `python -m bolid_lib run example_workflows/<x>.json` lists every file it needs, exit 2.

    The server is shared with tests that put model files and photos in place; whatever of this example's files
    is there (in the server's base or in the shared Body-ID folder) is set aside while it runs, so every file
    the example names is missing whatever ran before."""
    from bolid_lib.runner import workflow as W

    proc, base = server
    info = runner.Client(proc.url).get_json("/object_info")[1]
    wf = json.loads(example.read_text(encoding="utf-8"))
    needed = W.required_models(wf, info)
    assert needed, f"{example.name}: required_models found no file in it"
    assert {folder for (_, _, _, folder) in needed} <= set(SERVER_MODEL_DIRS) | {"input"}, needed
    paths = []
    for (_, _, name, folder) in needed:
        if folder == "input":
            paths.append(base / "input" / name)
        else:
            paths.append(base / "models" / SERVER_MODEL_DIRS[folder] / name)
            if folder == "bolid_bodies":
                paths.append(proc.shared / "bolid" / "bodies" / name)
    moved = _set_aside(paths, tmp_path / "aside")
    try:
        done = _cli(str(example), "--server", proc.url, "--out", str(tmp_path / "out"))
    finally:
        for where, target in moved:
            target.rename(where)
    assert done.returncode == 2, done.stdout + done.stderr
    for (_, _, name, _) in needed:
        assert f"[ ] {name}" in done.stdout, (name, done.stdout)
    assert "queued" not in done.stdout


def test_runtime_error_is_reported_with_node_and_message(server, tmp_path):
    """SaveImage refuses a prefix leaving the output folder only when it runs (validation passes)."""
    proc, _ = server
    api = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
           "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "../../escape"}}}
    wf = tmp_path / "escape.json"
    wf.write_text(json.dumps(api), encoding="utf-8")
    done = _cli(str(wf), "--server", proc.url, "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the workflow failed while running" in done.stdout
    assert "node 2 (SaveImage)" in done.stdout and "outside the output folder" in done.stdout


def test_pack_user_error_reaches_the_terminal(server, tmp_path, yolo_pose_pt):
    """A BoLIDError raised by a pack node (no person found, on_missing=error) is printed, not hidden."""
    proc, base = server
    import shutil

    from PIL import Image

    (base / "models" / "ultralytics" / "pose").mkdir(parents=True, exist_ok=True)
    shutil.copy(yolo_pose_pt, base / "models" / "ultralytics" / "pose" / "random-pose.pt")
    (base / "input").mkdir(exist_ok=True)
    Image.new("RGB", (96, 128), (120, 90, 60)).save(base / "input" / "person.png")
    api = _pose_workflow("pose/random-pose.pt")
    api["3"]["inputs"].update(conf=1.0, on_missing="error")  # nobody scores 1.0 at random weights
    wf = tmp_path / "nobody.json"
    wf.write_text(json.dumps(api), encoding="utf-8")
    done = _cli(str(wf), "--server", proc.url, "--out", str(tmp_path / "out"), "--timeout", "300")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "node 3 (BoLIDPoseKeypoints)" in done.stdout and "BoLIDError" in done.stdout


def _put_example_inputs(base: Path) -> None:
    """Photos for the examples: procedural people (tests/browserlib.sample_files) in input/ and
    input/bolid_person/, plus copies of other sizes and orientations (the photo loader letterboxes them)."""
    import io

    import browserlib
    from PIL import Image

    files = browserlib.sample_files()
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    first = Image.open(io.BytesIO(next(d for r, d in files.items() if "bolid_person/" in r))).convert("RGB")
    first.resize((300, 500)).save(base / "input" / "bolid_person" / "tall_300x500.jpg", quality=90)
    first.resize((640, 360)).rotate(90, expand=True).save(base / "input" / "bolid_person" / "turned_360x640.png")


def _example_with(name: str, **widgets) -> dict:
    """An example workflow with some widgets changed: {node type: {widget index: value}}."""
    wf = json.loads((PACK / "example_workflows" / f"{name}.json").read_text(encoding="utf-8"))
    for node in wf["nodes"]:
        for index, value in widgets.get(node["type"], {}).items():
            node["widgets_values"][index] = value
    return wf


def test_build_body_id_example_runs_through_the_cli(server, tmp_path, yolo_pose_pt):
    """`python -m bolid_lib run example_workflows/bolid_build_body_id.json` against this host: a random-weight
    YOLO pose model and Body-ID VAE (default layout) in the server's folders, photos of several sizes. The
    only change to the example: the pose thresholds (random weights score every detection about 2e-4)."""
    import shutil

    import torch

    from bolid_lib.method.body_vae import BodyVAE, BodyVAEConfig, save_body_vae
    from bolid_lib.method.embedding import load_body

    proc, base = server
    (base / "models" / "ultralytics" / "pose").mkdir(parents=True, exist_ok=True)
    shutil.copy(yolo_pose_pt, base / "models" / "ultralytics" / "pose" / "yolo11n-pose.pt")
    torch.manual_seed(0)
    save_body_vae(BodyVAE(BodyVAEConfig()), base / "models" / "bolid" / "bolid_body_vae.safetensors")
    _put_example_inputs(base)
    wf = _example_with("bolid_build_body_id", BoLIDBodyIDFromFolder={3: 0.0001, 4: 0.0})  # conf, visibility
    path = tmp_path / "bolid_build_body_id.json"
    path.write_text(json.dumps(wf), encoding="utf-8")
    # The server's user yaml shares a Body-ID folder (``bolid: <shared>``, read before the pack loads), so
    # Save Body-ID writes into that first Body-ID folder, where Load Body-ID lists it.
    bodies = proc.shared / "bolid" / "bodies"
    before = set(bodies.glob("my_person*.safetensors"))
    done = _cli(str(path), "--server", proc.url, "--out", str(tmp_path / "out"), "--timeout", "400")
    assert done.returncode == 0, done.stdout + done.stderr + proc.log_tail(40)
    new = sorted(set(bodies.glob("my_person*.safetensors")) - before)
    assert len(new) == 1, (new, done.stdout)
    body = load_body(new[0])
    photos = [p for p in (base / "input" / "bolid_person").iterdir() if p.is_file()]
    assert body.dim == 756 and body.meta["views_used"] + body.meta["views_skipped"] == len(photos) >= 6
    options = client_options(proc, "BoLIDLoadBody", "body_name")
    assert new[0].name in options, options


def client_options(proc, node: str, name: str) -> list:
    spec = runner.Client(proc.url).get_json(f"/object_info/{node}")[1][node]["input"]["required"][name]
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES if not p.stem.startswith("bolid_build_body_id")])
def test_sdxl_examples_are_accepted_by_the_server(server, tmp_path, name, yolo_pose_pt):
    """The SDXL examples through the CLI up to the server: converted, every file found, queued (ComfyUI's own
    validation passed); they then stop at the first stand-in model file (an empty file: a full-size SDXL does
    not fit beside the other tests here; tests/host/test_workflows_run.py runs them with BOLID_SDXL_RUN=1)."""
    import shutil

    import torch

    from bolid_lib.runner import workflow as W
    from bolid_lib.method.embedding import BodyEmbedding, save_body

    proc, base = server
    client = runner.Client(proc.url)
    info = client.get_json("/object_info")[1]
    _put_example_inputs(base)
    stand_ins = set()
    wf = _example_with(name, BoLIDPoseKeypoints={0: 0.0001, 1: 0.0})  # random pose weights score ~2e-4
    for f in W.required_files(wf, info):
        if f.folder in (None, "input"):
            continue
        target = base / "models" / SERVER_MODEL_DIRS[f.folder] / f.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.folder == "ultralytics":
            shutil.copy(yolo_pose_pt, target)
        elif f.folder == "bolid_bodies":
            save_body(BodyEmbedding(torch.zeros(756), torch.zeros(756)), target, overwrite=True)
        else:
            target.write_bytes(b"")
            stand_ins.add(f.node_type)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(wf), encoding="utf-8")
    done = _cli(str(path), "--server", proc.url, "--out", str(tmp_path / "out"))
    assert "queued prompt" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 1 and "the workflow failed while running" in done.stdout, done.stdout
    failed = done.stdout.split("failed while running:")[1]
    assert any(f"({kind})" in failed for kind in stand_ins), (stand_ins, failed)
