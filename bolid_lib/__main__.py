"""Command line of the pack: ``python -m bolid_lib run|check|train ...``.

* ``run WORKFLOW.json``: run a workflow headless in a ComfyUI installation and write its images; prints
  a checklist of missing model files (exit status 2) instead of queueing when files are absent.
* ``check WORKFLOW.json [--comfyui-version V] [--object-info FILE]``: check node types, links and widget values
  without starting ComfyUI, against the committed core-node dump of every supported ComfyUI version (or of
  one, or against ``/object_info`` files you give), plus this pack's own node schemas (its committed dump): both are
  package data, so it works from an installed wheel as from a checkout.
* ``train body-vae|adapter ...``: the trainers (same as ``python -m bolid_lib.training``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .runner import headless as runner

def _check(args: argparse.Namespace) -> int:
    from .runner.workflow import WorkflowError, check_workflow, core_dumps, core_object_info, pack_object_info

    workflow = runner.load_workflow(args.workflow)
    ignore = {"missing model file", "missing input file"} if args.ignore_missing_files else set()
    targets: list[tuple[str, dict]] = []
    if args.object_info:
        info: dict = {}
        for path in args.object_info:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            info.update(data.get("nodes", data))
        targets.append((", ".join(str(p) for p in args.object_info), info))
    else:
        versions = [args.comfyui_version] if args.comfyui_version else list(core_dumps())
        for version in versions:
            try:
                targets.append((f"ComfyUI {version}", {**core_object_info(version), **pack_object_info()}))
            except WorkflowError as e:
                sys.stdout.write(f"error: {e}\n")
                return 1
        if not targets:
            sys.stdout.write("error: no committed /object_info dump found (bolid_lib/runner/core_nodes): pass --object-info FILE\n")
            return 1
    total = 0
    for label, info in targets:
        problems = check_workflow(workflow, info, ignore=ignore)
        total += len(problems)
        for line in problems:
            sys.stdout.write(f"[{label}] {line}\n" if len(targets) > 1 else line + "\n")
        sys.stdout.write(f"{len(problems)} problem(s) in {args.workflow} on {label}\n")
    return 1 if total else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from .training.cli import main as train_main

        return train_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bolid_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a workflow headless in ComfyUI and write its images",
                           description=runner.__doc__.split("\n\n")[1] if runner.__doc__ else None)
    runner.add_arguments(run_p)
    check_p = sub.add_parser("check", help="check a workflow against an /object_info dump, without ComfyUI")
    check_p.add_argument("workflow", type=Path)
    check_p.add_argument("--object-info", type=Path, action="append",
                         help="an /object_info JSON (e.g. saved from a running ComfyUI's /object_info), repeatable "
                              "(default: the committed core-node dump of each supported ComfyUI version plus this "
                              "pack's committed node schemas)")
    check_p.add_argument("--comfyui-version", help="check against the committed dump of this ComfyUI version only "
                                                   "(default: every supported version)")
    check_p.add_argument("--ignore-missing-files", action="store_true",
                         help="do not report model files and input images absent from the dump")
    sub.add_parser("train", help="train the Body-ID VAE or the adapter (python -m bolid_lib train -h)")
    comfy_args: list[str] = []
    if "--" in argv:  # everything after -- is for ComfyUI's main.py
        cut = argv.index("--")
        argv, comfy_args = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    args.comfy_args = comfy_args
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    if args.command == "run":
        return runner.main_run(args)
    return _check(args)


if __name__ == "__main__":
    sys.exit(main())
