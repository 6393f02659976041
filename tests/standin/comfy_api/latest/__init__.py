"""Stand-in for comfy_api.latest: the schema half of ComfyUI 0.3.64's V3 node API."""

from abc import ABC, abstractmethod

from . import io, ui  # noqa: F401


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        pass

    @abstractmethod
    async def get_node_list(self):
        ...
