"""Print, as JSON, the /object_info entries of this pack's nodes, built against the stand-in.

Run as a separate process (the stand-in's module names are ComfyUI's): python tests/standin/dump_pack_info.py
"""

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACK = HERE.parent.parent
sys.path.insert(0, str(HERE))

spec = importlib.util.spec_from_file_location("bolid_pack", PACK / "__init__.py", submodule_search_locations=[str(PACK)])
pack = importlib.util.module_from_spec(spec)
sys.modules["bolid_pack"] = pack
spec.loader.exec_module(pack)

ext = asyncio.run(pack.comfy_entrypoint())
nodes = asyncio.run(ext.get_node_list())
info = {}
for cls in nodes:
    cls.RELATIVE_PYTHON_MODULE = "custom_nodes.bolid"
    schema = cls.GET_SCHEMA()
    info[schema.node_id] = json.loads(json.dumps(cls.GET_NODE_INFO_V1(), default=lambda o: getattr(o, "value", str(o))))
json.dump({"web_directory": pack.WEB_DIRECTORY, "nodes": info}, sys.stdout, indent=1, sort_keys=True)
