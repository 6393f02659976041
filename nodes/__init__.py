"""ComfyUI glue: one module per node family, each exporting ``NODES``.

Node modules stay thin: unpack ComfyUI types, call one ``bolid_lib`` function, wrap the result.
"""

from comfy_api.latest import ComfyExtension, io

from ._comfy import register_model_folders
from . import photos, pose, weighting, body_id, adapter, evaluation

FAMILIES = (photos, pose, weighting, body_id, adapter, evaluation)


def all_nodes() -> list[type[io.ComfyNode]]:
    return [node for family in FAMILIES for node in family.NODES]


class BoLIDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return all_nodes()


async def comfy_entrypoint() -> BoLIDExtension:
    return BoLIDExtension()


__all__ = ["comfy_entrypoint", "register_model_folders", "all_nodes"]
