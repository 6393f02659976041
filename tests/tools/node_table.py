"""Print the README's table of nodes (Markdown) from the node schemas, so the table cannot drift from the code.

    python tests/tools/node_table.py            # prints the table
    python tests/tools/node_table.py --check README.md
                                                # exit 1 when the file's table differs from the code's

The schemas come from tests/standin/dump_pack_info.py (the pack imported against the thin ComfyUI stand-in,
which the host tier checks against the real ComfyUI), so this runs without ComfyUI.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- node-table:begin -->", "<!-- node-table:end -->"
# The order a user meets the nodes; nodes not listed follow in alphabetical order.
ORDER = ["BoLIDBodyIDFromFolder", "BoLIDLoadPhotos", "BoLIDPoseModelLoader", "BoLIDPoseKeypoints", "BoLIDGaussianWeighting", "BoLIDBodyVAELoader",
         "BoLIDBodyEncode", "BoLIDSaveBody", "BoLIDLoadBody", "BoLIDBlendBodies", "BoLIDBodyPreview",
         "BoLIDAdapterLoader", "BoLIDApply"]


def pack_info() -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "tests/standin/dump_pack_info.py")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"the pack did not import against the stand-in:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)["nodes"]


def _type_name(spec) -> str:
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    if isinstance(kind, (list, tuple)):
        return "choice"
    return {"COMBO": "choice"}.get(str(kind), str(kind))


def _inputs(info: dict) -> list[str]:
    out = []
    order = info.get("input_order") or {}
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        for name in order.get(section, list(specs)):
            text = f"`{name}` {_type_name(specs[name])}"
            out.append(text + (" (optional)" if section == "optional" else ""))
    return out


def _outputs(info: dict) -> list[str]:
    return [f"`{n}` {t}" for n, t in zip(info["output_name"], info["output"])]


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    m = re.match(r"(.+?[.!?])(\s+[A-Z(`]|$)", text)
    return (m.group(1) if m else text).replace("|", "\\|")


def _rank(node_id: str) -> tuple:
    return (ORDER.index(node_id), "") if node_id in ORDER else (len(ORDER), node_id)


def table(nodes: dict) -> str:
    rows = ["| node | inputs | outputs | what it is for |", "|---|---|---|---|"]
    for node_id in sorted(nodes, key=_rank):
        info = nodes[node_id]
        rows.append(f"| **{info['display_name']}**<br>`{node_id}` | {'<br>'.join(_inputs(info)) or '-'} | "
                    f"{'<br>'.join(_outputs(info)) or '-'} | {_first_sentence(info.get('description', ''))} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", type=Path, help="a Markdown file holding the table between the node-table markers")
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this file")
    args = parser.parse_args(argv)
    text = table(pack_info())
    target = args.check or args.write
    if target is None:
        print(text)
        return 0
    doc = target.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{target} has no {BEGIN} ... {END} markers")
    head, rest = doc.split(BEGIN, 1)
    current, tail = rest.split(END, 1)
    if args.check:
        if current.strip() != text.strip():
            print(f"{target}: the node table differs from the code; run python tests/tools/node_table.py --write {target}")
            return 1
        return 0
    target.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
