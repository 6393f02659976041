"""The committed pack dump (bolid_lib/runner/core_nodes/object_info_pack.json), which `python -m bolid_lib check` reads
as this pack's node schemas, equals what the nodes' code gives now through the stand-in, node for node.

When a node's schema changes, regenerate it: python tests/tools/dump_object_info.py --pack
"""

import json

from bolid_lib.runner import workflow as wfl
from tools.dump_object_info import pack_dump_text

FIX = "regenerate it: python tests/tools/dump_object_info.py --pack"


def test_pack_dump_equals_the_code(standin_pack_info):
    committed = wfl.pack_object_info()
    code = standin_pack_info["nodes"]
    assert sorted(committed) == sorted(code), f"the committed pack dump lists other nodes than the code: {FIX}"
    stale = [name for name in sorted(code) if committed[name] != code[name]]
    assert not stale, f"the committed pack dump is stale for {stale}: {FIX}"


def test_pack_dump_file_is_what_the_tool_writes(standin_pack_info):
    """Byte for byte, so that regenerating an up-to-date dump never shows a diff."""
    path = wfl.DATA_DIR / wfl.PACK_DUMP_NAME
    assert path.read_text(encoding="utf-8") == pack_dump_text(standin_pack_info["nodes"]), FIX


def test_pack_dump_is_no_core_dump_and_clashes_with_none():
    assert wfl.PACK_DUMP_NAME not in {p.name for p in wfl.core_dumps().values()}
    pack = wfl.pack_object_info()
    for version in wfl.core_dumps():
        assert not set(pack) & set(wfl.core_object_info(version)), version


def test_pack_dump_has_the_fields_check_reads():
    for name, info in wfl.pack_object_info().items():
        assert set(wfl.SCHEMA_FIELDS) <= set(info), name
        json.dumps(info)
