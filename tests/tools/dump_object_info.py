"""Dump the ``/object_info`` schemas of a real ComfyUI's core nodes to ``bolid_lib/runner/core_nodes/object_info_core_<version>.json``.

One committed dump per supported ComfyUI version (``bolid_lib.runner.workflow.core_dumps`` finds them; they are package
data, so ``python -m bolid_lib check`` works from an installed wheel). The contract tier checks the example
workflows against each when no ComfyUI is installed, so a dump must hold exactly what ``GET /object_info``
serves for ComfyUI's own nodes (``nodes.py`` built-ins and ``comfy_extras``): no custom nodes, no API/partner
nodes (the runner starts ComfyUI with ``--offline`` or ``--disable-api-nodes``). Make it with the host's full
requirements installed (torchaudio included): optional nodes whose imports fail are left out and listed
under ``import_failed``; the tests compare only the nodes both sides have.

Usage::

    COMFYUI_PATH=/path/to/ComfyUI python tests/tools/dump_object_info.py [--out FILE]
    python tests/tools/dump_object_info.py --pack      # this pack's nodes, no ComfyUI needed

``--pack`` writes ``bolid_lib/runner/core_nodes/object_info_pack.json``, this pack's own node schemas as
``/object_info`` serves them, built from the nodes' code against the ComfyUI stand-in
(``tests/standin/dump_pack_info.py``); ``python -m bolid_lib check`` reads it with the core dumps. Run it after any
change to a node's schema: ``tests/contract/test_pack_dump.py`` fails until the file equals the code again, and
``tests/host/test_pack_dump_host.py`` checks it against each real ComfyUI.

ComfyUI is booted in-process on the CPU (see HOST_NOTES.md): ``args.cpu = True`` before anything imports
``comfy.model_management``, ``utils.extra_config`` before ``nodes``, temp/output directories in a temp dir
so that nothing is written into the ComfyUI checkout. Model-file combos list whatever that ComfyUI's model
folders hold (usually nothing); ``bolid_lib.runner.workflow.check_workflow`` treats those as "missing model file",
not as bad values. Long ``description`` / ``tooltip`` strings are shortened when the file would be over
``--max-mb``, to keep the committed JSON reviewable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "bolid_lib", "runner", "core_nodes"))
PACK_DUMP = os.path.join(DATA_DIR, "object_info_pack.json")
STANDIN_DUMP = os.path.normpath(os.path.join(HERE, "..", "standin", "dump_pack_info.py"))


def boot(comfyui: str) -> list[str]:
    """Import ComfyUI in-process on the CPU and load its core nodes (built-ins + comfy_extras).

    Returns the comfy_extras files that failed to import (e.g. the audio nodes without torchaudio).
    """
    sys.path.insert(0, comfyui)
    from comfy.cli_args import args

    args.cpu = True
    for flag in ("disable_api_nodes", "offline", "disable_partner_nodes"):  # whichever this ComfyUI has
        if hasattr(args, flag):
            setattr(args, flag, True)
    # An empty base directory: model-file and input-file combos come out empty on every machine, so the
    # dump does not depend on what the machine that made it had installed.
    tmp = tempfile.mkdtemp(prefix="bolid_dump_")
    for sub in ("temp", "output", "input", "models", "custom_nodes", "user"):  # nodes list some while loading
        os.makedirs(os.path.join(tmp, sub), exist_ok=True)
    args.base_directory = tmp
    import utils.extra_config  # noqa: F401  (must come before `nodes`, see HOST_NOTES.md)
    import folder_paths

    assert folder_paths.models_dir.startswith(tmp), "folder_paths was imported before the base directory was set"
    import nodes

    asyncio.run(nodes.init_public_apis())
    return list(asyncio.run(nodes.init_builtin_extra_nodes()) or [])


def node_info(nodes, node_class: str) -> dict:
    """What ComfyUI's server.py ``node_info`` serves for one node class (0.3.64, server.py:592-625)."""
    from comfy_api.internal import _ComfyNodeInternal

    obj_class = nodes.NODE_CLASS_MAPPINGS[node_class]
    if issubclass(obj_class, _ComfyNodeInternal):
        return obj_class.GET_NODE_INFO_V1()
    info = {}
    info["input"] = obj_class.INPUT_TYPES()
    info["input_order"] = {key: list(value.keys()) for (key, value) in obj_class.INPUT_TYPES().items()}
    info["output"] = obj_class.RETURN_TYPES
    info["output_is_list"] = getattr(obj_class, "OUTPUT_IS_LIST", [False] * len(obj_class.RETURN_TYPES))
    info["output_name"] = getattr(obj_class, "RETURN_NAMES", info["output"])
    info["name"] = node_class
    info["display_name"] = nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_class, node_class)
    info["description"] = getattr(obj_class, "DESCRIPTION", "")
    info["python_module"] = getattr(obj_class, "RELATIVE_PYTHON_MODULE", "nodes")
    info["category"] = getattr(obj_class, "CATEGORY", "sd")
    info["output_node"] = getattr(obj_class, "OUTPUT_NODE", False) is True
    if hasattr(obj_class, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = obj_class.OUTPUT_TOOLTIPS
    if getattr(obj_class, "DEPRECATED", False):
        info["deprecated"] = True
    if getattr(obj_class, "EXPERIMENTAL", False):
        info["experimental"] = True
    if hasattr(obj_class, "API_NODE"):
        info["api_node"] = obj_class.API_NODE
    return info


def _shorten(obj, limit: int):
    """Cut long free-text fields (descriptions, tooltips) to ``limit`` characters, recursively."""
    if isinstance(obj, dict):
        return {k: (v[:limit] + "…" if k in ("description", "tooltip") and isinstance(v, str) and len(v) > limit
                    else _shorten(v, limit)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_shorten(v, limit) for v in obj]
    return obj


def dump_text(nodes: dict, head: dict) -> str:
    """One node per line (small diffs when a schema moves, and still a compact file), after the ``head`` fields."""
    lines = ["{"] + [f"{json.dumps(k)}:{json.dumps(v)}," for k, v in head.items()]
    lines.append('"nodes":{')
    names = sorted(nodes)
    for i, name in enumerate(names):
        sep = "," if i < len(names) - 1 else ""
        lines.append(json.dumps(name) + ":" + json.dumps(nodes[name], ensure_ascii=False, separators=(",", ":")) + sep)
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def standin_pack_nodes() -> dict:
    """This pack's /object_info entries built from its code against the stand-in (a separate process: the
    stand-in's modules carry ComfyUI's names)."""
    import subprocess

    done = subprocess.run([sys.executable, STANDIN_DUMP], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"the pack did not import against the stand-in:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)["nodes"]


def pack_dump_text(nodes: dict) -> str:
    """The text of bolid_lib/runner/core_nodes/object_info_pack.json for these pack nodes."""
    return dump_text(nodes, {"made_by": "python tests/tools/dump_object_info.py --pack (the nodes' code, through "
                                        "the ComfyUI stand-in in tests/standin)"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout (default: $COMFYUI_PATH)")
    parser.add_argument("--out", help="output JSON (default: bolid_lib/runner/core_nodes/object_info_core_<version>.json)")
    parser.add_argument("--max-mb", type=float, default=3.0, help="shorten long descriptions above this size")
    parser.add_argument("--pack", action="store_true",
                        help=f"write this pack's node schemas (from the stand-in, no ComfyUI) to {os.path.relpath(PACK_DUMP)}")
    opts = parser.parse_args(argv)
    if opts.pack:
        out = opts.out or PACK_DUMP
        nodes = standin_pack_nodes()
        with open(out, "w", encoding="utf-8") as f:
            f.write(pack_dump_text(nodes))
        sys.stdout.write(f"wrote {len(nodes)} pack nodes to {out}\n")
        return 0
    if not opts.comfyui or not os.path.isfile(os.path.join(opts.comfyui, "main.py")):
        parser.error("no ComfyUI found: pass --comfyui PATH or set COMFYUI_PATH to a ComfyUI checkout")
    comfyui = os.path.abspath(opts.comfyui)
    failed = boot(comfyui)
    if failed:
        sys.stderr.write(f"warning: these comfy_extras did not import and are left out: {', '.join(failed)}\n")
    import nodes
    from comfyui_version import __version__

    infos = {}
    for name in sorted(nodes.NODE_CLASS_MAPPINGS):
        infos[name] = node_info(nodes, name)
    # The same JSON encoding aiohttp's json_response uses (tuples become lists).
    dump = {"comfyui_version": __version__, "import_failed": sorted(failed), "nodes": json.loads(json.dumps(infos))}
    text = json.dumps(dump, indent=None, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    limit = 400
    while len(text.encode()) > opts.max_mb * 1e6 and limit >= 50:
        dump["nodes"] = _shorten(json.loads(json.dumps(infos)), limit)
        text = json.dumps(dump, indent=None, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        limit //= 2
    text = dump_text(dump["nodes"], {"comfyui_version": __version__, "import_failed": sorted(failed)})
    names = sorted(dump["nodes"])
    opts.out = opts.out or os.path.join(DATA_DIR, f"object_info_core_{__version__}.json")
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    with open(opts.out, "w", encoding="utf-8") as f:
        f.write(text)
    size = os.path.getsize(opts.out)
    sys.stdout.write(f"wrote {len(names)} core nodes of ComfyUI {__version__} to {opts.out} ({size / 1e6:.2f} MB)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
