"""bolid_lib.runner.headless pieces that need no ComfyUI: finding it, the loopback rule, messages, pack loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bolid_lib.runner import headless as runner
from bolid_lib.runner.workflow import RequiredFile


def _fake_comfyui(root: Path) -> Path:
    (root / "comfy").mkdir(parents=True)
    (root / "main.py").write_text("")
    (root / "nodes.py").write_text("")
    (root / "custom_nodes").mkdir()
    return root


def test_find_comfyui_order_and_errors(tmp_path, monkeypatch):
    a, b = _fake_comfyui(tmp_path / "a"), _fake_comfyui(tmp_path / "b")
    monkeypatch.setenv("COMFYUI_PATH", str(b))
    assert runner.find_comfyui(str(a)) == a.resolve()      # --comfyui wins
    assert runner.find_comfyui(None) == b.resolve()        # then COMFYUI_PATH
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    with pytest.raises(runner.RunError, match="not a ComfyUI folder"):
        runner.find_comfyui(None)
    monkeypatch.delenv("COMFYUI_PATH")
    if runner.PACK_ROOT.parent.name != "custom_nodes":
        with pytest.raises(runner.RunError, match="no ComfyUI found"):
            runner.find_comfyui(None)


@pytest.mark.parametrize("url, ok", [
    ("http://127.0.0.1:8188", True), ("127.0.0.1:8188", True), ("http://localhost:8188/", True),
    ("http://[::1]:8188", True), ("http://192.168.1.5:8188", False), ("https://127.0.0.1:8188", False),
    ("http://example.com", False),
])
def test_only_loopback_servers(url, ok):
    if ok:
        assert runner.check_loopback(url).startswith("http://")
    else:
        with pytest.raises(runner.RunError, match="on this machine"):
            runner.check_loopback(url)


def test_pack_is_linked_when_not_installed(tmp_path):
    comfyui = _fake_comfyui(tmp_path / "ComfyUI")
    args = runner.prepare_pack_loading(comfyui, None, tmp_path / "work")
    assert args[0] == "--extra-model-paths-config"
    link = tmp_path / "work" / "custom_nodes" / "ComfyUI-BoLID"
    assert link.is_symlink() and link.resolve() == runner.PACK_ROOT
    assert str(tmp_path / "work" / "custom_nodes") in Path(args[1]).read_text()
    # installed (as a link inside custom_nodes): nothing to add
    os.symlink(runner.PACK_ROOT, comfyui / "custom_nodes" / "ComfyUI-BoLID")
    assert runner.prepare_pack_loading(comfyui, None, tmp_path / "work2") == []
    runner._remove_workdir(tmp_path / "work")
    assert not (tmp_path / "work").exists() and runner.PACK_ROOT.is_dir()  # the link was not followed


def test_node_errors_read_like_the_ui():
    prompt = {"3": {"class_type": "KSampler", "inputs": {}, "_meta": {"title": "Sampler"}}}
    errors = {"3": {"class_type": "KSampler", "errors": [
        {"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1", "details": "steps",
         "extra_info": {"input_name": "steps"}}]}}
    assert runner.format_node_errors(errors, prompt) == (
        "  node 3 (KSampler, 'Sampler') input 'steps': Value 0 smaller than min of 1: steps")


def test_checklist_names_file_folder_and_source():
    missing = [runner.MissingFile(RequiredFile("CheckpointLoaderSimple", "ckpt_name", "sd_xl_base_1.0.safetensors",
                                               "checkpoints", 4), "/x/models/checkpoints"),
               runner.MissingFile(RequiredFile("BoLIDPoseModelLoader", "model_name", "pose/yolo11n-pose.pt",
                                               "ultralytics", 5), "/x/models/ultralytics")]
    text = runner.format_checklist(missing)
    assert "[ ] sd_xl_base_1.0.safetensors" in text and "folder : /x/models/checkpoints" in text
    assert "stabilityai/stable-diffusion-xl-base-1.0" in text
    assert f"folder : {os.path.join('/x/models/ultralytics', 'pose')}" in text


def test_bad_workflow_files_are_user_errors(tmp_path):
    with pytest.raises(runner.RunError, match="no workflow file"):
        runner.load_workflow(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(runner.RunError, match="not valid JSON"):
        runner.load_workflow(tmp_path / "bad.json")


def test_execution_error_message():
    msg = ["execution_error", {"node_id": "3", "node_type": "BoLIDPoseKeypoints",
                               "exception_type": "custom_nodes.x.bolid_lib.errors.BoLIDError",
                               "exception_message": "no person found in image 1: lower conf", "traceback": ["tb"]}]
    text = runner.format_execution_error([["execution_start", {}], msg])
    assert text == "  node 3 (BoLIDPoseKeypoints): BoLIDError: no person found in image 1: lower conf"
    msg[1]["exception_type"] = "RuntimeError"
    assert "traceback (end):\ntb" in runner.format_execution_error([msg])


def test_unreachable_server_is_a_user_error(tmp_path, capsys):
    import argparse
    import json

    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    port = runner.free_port()  # nothing listens there
    args = argparse.Namespace(workflow=wf, comfyui=None, out=tmp_path / "out", port=None, timeout=5,
                              start_timeout=5, cpu=True, server=f"http://127.0.0.1:{port}", base_directory=None,
                              comfy_args=[])
    assert runner.main_run(args) == runner.EXIT_ERROR
    out = capsys.readouterr().out
    assert "cannot reach ComfyUI" in out and "Traceback" not in out


def _argparse_help(flags_and_kwargs: list[tuple[tuple[str, ...], dict]]) -> str:
    """A real argparse --help text (what ComfyUI's main.py prints), for the flags given."""
    import argparse

    parser = argparse.ArgumentParser(prog="main.py")
    for names, kwargs in flags_and_kwargs:
        parser.add_argument(*names, **kwargs)
    return parser.format_help()


NEWEST = [(("--listen",), dict(type=str, nargs="?", const="0.0.0.0,::", metavar="IP", help="Specify the IP address " * 5)),
          (("--port",), dict(type=int, help="Set the listen port.")),
          (("--base-directory",), dict(type=str, help="base")),
          (("--extra-model-paths-config",), dict(type=str, nargs="+", action="append", metavar="PATH", help="yaml")),
          (("--cpu",), dict(action="store_true", help="To use the CPU for everything (slow).")),
          (("--disable-partner-nodes",), dict(action="store_true", help="partner nodes only")),
          (("--offline",), dict(action="store_true", help="no internet; also disables partner nodes")),
          (("--disable-api-nodes",), dict(action="store_true", help="Deprecated alias for --offline.")),
          (("--database-url",), dict(type=str, help="db")),
          (("--feature-flag",), dict(type=str, action="append", metavar="KEY[=VALUE]", help="Examples: --feature-flag x " * 4))]


def test_flags_are_read_from_help_and_from_cli_args_source():
    flags = runner.parse_help_flags(_argparse_help(NEWEST))
    assert flags == {n for names, _ in NEWEST for n in names} | {"--help"}
    source = "\n".join(f"parser.add_argument({', '.join(repr(n) for n in names)}, help='x')" for names, _ in NEWEST)
    source += "\nvram_group.add_argument(\"--lowvram\", action=\"store_true\")\n# '--not-a-flag' in a comment\n"
    assert runner.parse_cli_args_flags(source) == {n for names, _ in NEWEST for n in names} | {"--lowvram"}


@pytest.mark.parametrize("host, offline", [
    ("newest", "--offline"),                       # --disable-api-nodes is only a deprecated alias there
    ("0.3.64/0.33", "--disable-api-nodes"),
    ("partner-only", "--disable-partner-nodes"),
    ("none", None),
])
def test_server_args_use_only_flags_the_host_has(host, offline, tmp_path):
    flags = runner.parse_help_flags(_argparse_help(NEWEST))
    drop = {"newest": set(), "0.3.64/0.33": {"--offline", "--disable-partner-nodes"},
            "partner-only": {"--offline", "--disable-api-nodes"},
            "none": {"--offline", "--disable-api-nodes", "--disable-partner-nodes", "--cpu", "--database-url"}}[host]
    flags -= drop
    args = runner.server_args(flags, 8190, cpu=True, base_directory=tmp_path)
    assert args[:4] == ["--listen", "127.0.0.1", "--port", "8190"]
    assert set(a for a in args if a.startswith("--")) <= flags, f"a flag this host lacks: {args}"
    chosen = [a for a in args if a in ("--offline", "--disable-api-nodes", "--disable-partner-nodes")]
    assert chosen == ([offline] if offline else [])
    assert ("--cpu" in args) == ("--cpu" in flags)
    assert args[args.index("--base-directory") + 1] == str(tmp_path)
    if "--database-url" in flags:
        assert args[args.index("--database-url") + 1] == f"sqlite:///{(tmp_path / 'user' / 'comfyui.db').as_posix()}"


def test_server_args_refuse_a_host_without_what_the_runner_needs(tmp_path):
    with pytest.raises(runner.RunError, match="no --port option.*--server"):
        runner.server_args({"--listen", "--cpu"}, 8190, cpu=True)
    with pytest.raises(runner.RunError, match="no --base-directory"):
        runner.server_args({"--listen", "--port"}, 8190, cpu=False, base_directory=tmp_path)
    comfyui = _fake_comfyui(tmp_path / "ComfyUI")
    with pytest.raises(runner.RunError, match="no --extra-model-paths-config"):
        runner.prepare_pack_loading(comfyui, None, tmp_path / "work", flags={"--listen", "--port"})


# The option lines of ComfyUI 0.38.1's `main.py --help` (argparse's own layout of the add_argument calls in its
# comfy/cli_args.py, as read in the code index, at 80 columns): the flags the runner cares about, and their
# neighbours, with their help texts as written there.
HELP_0_38_1 = Path(__file__).parent / "data" / "comfyui_0.38.1_main_help.txt"


def test_server_args_for_comfyui_0_38_1(tmp_path):
    """0.38.1 turns the assets system on by default (start-up stops with ASSETS_STARTUP_FAILED without SQLAlchemy,
    alembic or a writable, unlocked database) and makes --disable-api-nodes a deprecated alias of --offline: the
    runner passes --offline and --disable-assets, and nothing its --help does not list."""
    flags = runner.parse_help_flags(HELP_0_38_1.read_text(encoding="utf-8"))
    assert {"--listen", "--port", "--cpu", "--base-directory", "--extra-model-paths-config", "--database-url",
            "--offline", "--disable-api-nodes", "--disable-partner-nodes", "--disable-assets", "--enable-assets",
            "--fast-disk", "--disable-fast-disk", "--disabled-nodes-config", "--feature-flag"} <= flags
    args = runner.server_args(flags, 8190, cpu=True, base_directory=tmp_path)
    assert {a for a in args if a.startswith("--")} <= flags
    assert "--offline" in args and "--disable-api-nodes" not in args and "--disable-partner-nodes" not in args
    assert "--disable-assets" in args and "--enable-assets" not in args
    assert args[args.index("--base-directory") + 1] == str(tmp_path)


def test_no_disable_assets_where_the_host_has_no_such_flag(tmp_path):
    """0.3.64 and 0.33 have no --disable-assets (0.33's assets are off unless --enable-assets): never passed there."""
    flags = runner.parse_help_flags(HELP_0_38_1.read_text(encoding="utf-8")) - {"--disable-assets", "--offline",
                                                                               "--disable-partner-nodes"}
    args = runner.server_args(flags, 8190, cpu=True)
    assert "--disable-assets" not in args and "--enable-assets" not in args and "--disable-api-nodes" in args
