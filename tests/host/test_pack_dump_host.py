"""The committed pack dump (bolid_lib/runner/core_nodes/object_info_pack.json) against the real ComfyUI's /object_info
for this pack's nodes, on the fields `python -m bolid_lib check` and the runner read (workflow.SCHEMA_FIELDS).

Combo options listed from folders (model files, input sub-folders) are what this host's folders hold, not a
schema: where the dump lists none, those lists are left out of the comparison.
"""

import json

import pytest

from bolid_lib.runner import workflow as wfl

pytestmark = pytest.mark.host


def _listed_files_dropped(dump: dict, real: dict) -> None:
    for section in ("required", "optional"):
        for name, spec in (dump.get("input", {}).get(section) or {}).items():
            other = (real.get("input", {}).get(section) or {}).get(name)
            if spec and spec[0] == "COMBO" and len(spec) > 1 and spec[1].get("options") == [] and other and len(other) > 1:
                spec[1] = {k: v for k, v in spec[1].items() if k != "options"}
                other[1] = {k: v for k, v in other[1].items() if k != "options"}


def test_pack_dump_equals_the_hosts_object_info(comfy):
    dump = wfl.pack_object_info()
    assert set(comfy.pack_nodes) == set(dump), "this ComfyUI loads other pack nodes than the committed dump lists"
    differ = []
    for node_id in sorted(dump):
        real = json.loads(json.dumps(comfy.object_info(node_id), default=lambda o: getattr(o, "value", str(o))))
        ours = json.loads(json.dumps(dump[node_id]))
        missing = [f for f in wfl.SCHEMA_FIELDS if f not in real]
        assert not missing, f"{node_id}: this ComfyUI does not serve {missing}"
        _listed_files_dropped(ours, real)
        if {f: ours[f] for f in wfl.SCHEMA_FIELDS} != {f: real[f] for f in wfl.SCHEMA_FIELDS}:
            differ.append(node_id)
    assert not differ, f"the committed pack dump differs from this ComfyUI's /object_info for {differ}"
