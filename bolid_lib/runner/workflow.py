"""ComfyUI workflows as plain JSON: UI format -> API prompt, checks, and the model files a workflow needs.

Pure JSON and standard library; never imports ComfyUI. ``object_info`` is what ComfyUI's
``GET /object_info`` serves (a dict node type -> {input: {required, optional, hidden}, input_order,
output, ...}), either live from a server or from a committed dump of ComfyUI's core nodes, one per supported
ComfyUI version (``bolid_lib/runner/core_nodes/object_info_core_<version>.json``: ``core_dumps``, ``core_object_info``),
and this pack's own node schemas from ``bolid_lib/runner/core_nodes/object_info_pack.json`` (``pack_object_info``).

The conversion follows the frontend's ``graphToPrompt`` (comfyui-frontend-package 1.27), the reference:

* ``widgets_values`` holds one slot per frontend *widget*, in the node's input order (``input_order``:
  required, then optional, then extras). Widgets are inputs of type INT, FLOAT, STRING, BOOLEAN,
  COMBO (``"COMBO"`` or a list of options), MARKDOWN and a few frontend widget types, unless
  ``forceInput``. Extra, unserialised slots: an INT with ``control_after_generate`` (or, when the
  option is absent, named ``seed``/``noise_seed``) is followed by its control value (``"randomize"``,
  or ``true`` in old files); a COMBO with ``control_after_generate`` by the control value and a filter
  string; a required COMBO with ``image_upload``/``video_upload``/``animated_image_upload`` adds an
  ``upload`` button widget *after all other widgets* (LoadImage: ``["example.png", "image"]``).
* A widget input with a link takes the link; its slot in ``widgets_values`` is still there.
* Frontend-only nodes are dropped: Note, MarkdownNote (no effect), PrimitiveNode (its value is written
  into the widgets it feeds), Reroute (links are followed through it).
* Mode 2 (muted, "never") nodes are dropped, and inputs linked to them are removed; mode 4 (bypassed)
  nodes are dropped and a link from one of their outputs is passed to the bypassed node's input of the
  matching type (same slot first, then an exact type match, then a compatible one).

Subgraphs (``definitions.subgraphs``) and group nodes are refused with a message: convert them back to
plain nodes in ComfyUI (right-click > Unpack Subgraph) and save again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import BoLIDError
from .model_catalog import folder_for_input, resolve_file

# Node types the frontend draws but the server never sees.
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
PRIMITIVE_TYPE = "PrimitiveNode"
REROUTE_TYPE = "Reroute"
FRONTEND_ONLY_TYPES = NOTE_TYPES | {PRIMITIVE_TYPE, REROUTE_TYPE}

MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4

# Input types the frontend turns into widgets (ComfyWidgets and the core extensions' custom widgets).
WIDGET_TYPES = frozenset({
    "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "MARKDOWN", "IMAGEUPLOAD", "FILEUPLOAD", "COLOR",
    "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART", "GALLERIA", "SELECTBUTTON", "TEXTAREA",
    "LOAD_3D", "LOAD_3D_ANIMATION", "PREVIEW_3D", "PREVIEW_3D_ANIMATION", "AUDIO_UI", "AUDIOUPLOAD",
    "AUDIO_RECORD", "WEBCAM",
})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
# Combos whose values are files of ComfyUI's input folder (the frontend adds an upload button to each; only
# UPLOAD_OPTIONS add a serialised "upload" widget slot, the audio and 3D ones are trailing extras).
INPUT_FILE_OPTIONS = UPLOAD_OPTIONS + ("audio_upload", "file_upload")
MODEL_FILE_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl", ".gguf", ".onnx")

# Kinds of widget slots in widgets_values.
SLOT_VALUE, SLOT_CONTROL, SLOT_FILTER, SLOT_UPLOAD = "value", "control", "filter", "upload"


class WorkflowError(BoLIDError):
    """A workflow file that cannot be converted (unknown format, subgraphs, unknown node types...)."""


# --- input specs -------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputSpec:
    """One input of a node type as the frontend sees it.

    ``type`` is the socket type ("INT", "MODEL", "COMBO", ...; a V1 list of options becomes "COMBO"
    with ``choices`` set), ``options`` the spec's option dict.
    """

    name: str
    type: str
    options: dict
    optional: bool
    choices: tuple | None = None

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def control_slots(self) -> int:
        """Unserialised slots that follow this widget in ``widgets_values``."""
        if self.type == "INT":
            control = self.options.get("control_after_generate")
            if control is None:  # the frontend's legacy naming convention
                control = self.name in ("seed", "noise_seed")
            return 1 if control else 0
        if self.type == "COMBO" and self.options.get("control_after_generate"):
            return 2  # control mode + filter list
        return 0

    @property
    def is_upload_combo(self) -> bool:
        return self.type == "COMBO" and any(self.options.get(k) is True for k in UPLOAD_OPTIONS)

    @property
    def names_input_file(self) -> bool:
        """A combo of files in ComfyUI's input folder (images, videos, audio, 3D models)."""
        return self.type == "COMBO" and any(self.options.get(k) is True for k in INPUT_FILE_OPTIONS)

    def default(self) -> Any:
        """The value a fresh widget gets (frontend: ``default``, else min / first option / empty)."""
        if "default" in self.options:
            return self.options["default"]
        if self.type == "COMBO":
            return self.choices[0] if self.choices else None
        if self.type in ("INT", "FLOAT"):
            return self.options.get("min", 0)
        if self.type == "BOOLEAN":
            return False
        if self.type == "STRING":
            return ""
        return None


def _parse_spec(name: str, spec: Any, optional: bool) -> InputSpec:
    if isinstance(spec, str):  # hidden-style shorthand
        spec = [spec]
    if not isinstance(spec, (list, tuple)) or not spec:
        return InputSpec(name, "*", {}, optional)
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, (list, tuple)):
        return InputSpec(name, "COMBO", options, optional, tuple(kind))
    if kind == "COMBO":
        choices = options.get("options")
        return InputSpec(name, "COMBO", options, optional, tuple(choices) if choices is not None else None)
    return InputSpec(name, str(kind), options, optional)


def input_specs(info: dict) -> list[InputSpec]:
    """The inputs of one ``object_info`` entry, in the frontend's order (``getOrderedInputSpecs``).

    Required inputs in ``input_order``, then optional ones, then the rest (the ``upload`` widget the
    frontend adds for an upload combo). Hidden inputs are not part of the graph and are left out.
    """
    inputs = info.get("input", {}) or {}
    order = info.get("input_order") or {}
    specs: list[InputSpec] = []
    seen: set[str] = set()
    for section, optional in (("required", False), ("optional", True)):
        declared = inputs.get(section, {}) or {}
        names = [n for n in order.get(section, declared.keys()) if n in declared]
        names += [n for n in declared if n not in names]
        for name in names:
            if name in seen:
                continue
            specs.append(_parse_spec(name, declared[name], optional))
            seen.add(name)
    upload = next((s for s in specs if not s.optional and s.is_upload_combo), None)
    if upload is not None and "upload" not in seen:
        specs.append(InputSpec("upload", "IMAGEUPLOAD", {"imageInputName": upload.name}, False))
    return specs


def widget_layout(info: dict) -> list[tuple[str, str]]:
    """The ``widgets_values`` slots of a node type: ``(input name, kind)`` per slot, kind one of
    "value", "control", "filter", "upload". Only "value" slots reach the API prompt."""
    layout: list[tuple[str, str]] = []
    for spec in input_specs(info):
        if not spec.is_widget:
            continue
        if spec.type == "IMAGEUPLOAD":
            layout.append((spec.name, SLOT_UPLOAD))
            continue
        layout.append((spec.name, SLOT_VALUE))
        controls = spec.control_slots
        if controls:
            layout.append((spec.name, SLOT_CONTROL))
        if controls == 2:
            layout.append((spec.name, SLOT_FILTER))
    return layout


def _legacy_layout(info: dict) -> list[tuple[str, str]]:
    """Layout of files saved when ``forceInput`` inputs still had a widget slot (migrateWidgetsValues)."""
    layout: list[tuple[str, str]] = []
    for spec in input_specs(info):
        if spec.type not in WIDGET_TYPES or spec.type == "IMAGEUPLOAD":
            continue
        layout.append((spec.name, SLOT_VALUE))
        layout.extend([(spec.name, SLOT_CONTROL)] * min(spec.control_slots, 1))
    return layout


def _file_upload_buttons(layout: list[tuple[str, str]], specs: dict[str, "InputSpec"], n_raw: int) -> list[tuple[str, str]]:
    """A ``file_upload`` combo (Load3D's model file) is followed in ``widgets_values`` by the frontend's button
    widgets ("upload3dmodel", "uploadExtraResources", "clear": how many depends on the frontend version), before
    the node's other widgets. Their count is what ``widgets_values`` holds beyond the layout."""
    extra = n_raw - len(layout)
    combo = next((s.name for s in specs.values() if s.type == "COMBO" and s.options.get("file_upload") is True), None)
    if extra <= 0 or combo is None or (combo, SLOT_VALUE) not in layout:
        return layout
    at = layout.index((combo, SLOT_VALUE)) + 1
    return layout[:at] + [(combo, SLOT_UPLOAD)] * extra + layout[at:]


def widget_values(node: dict, info: dict) -> dict[str, Any]:
    """The widget values of a UI node by input name (control/upload slots dropped).

    Widgets missing from ``widgets_values`` (older files, or none saved) get the spec's default.
    A dict-style ``widgets_values`` (some custom nodes) is read by name.
    """
    specs = {s.name: s for s in input_specs(info)}
    raw = node.get("widgets_values")
    layout = widget_layout(info)
    if isinstance(raw, dict):
        values = {name: raw[name] for name, kind in layout if kind == SLOT_VALUE and name in raw}
    else:
        raw = list(raw or [])
        forced = [s for s in specs.values() if s.options.get("forceInput") and s.type in WIDGET_TYPES]
        if forced and len(raw) != len(layout):
            legacy = _legacy_layout(info)
            if len(legacy) == len(raw):
                layout = legacy
        layout = _file_upload_buttons(layout, specs, len(raw))
        values = {}
        for (name, kind), value in zip(layout, raw):
            if kind == SLOT_VALUE and name not in values and not (specs[name].options.get("forceInput")):
                values[name] = value
    for name, kind in widget_layout(info):
        if kind == SLOT_VALUE and name not in values:
            values[name] = specs[name].default()
    return values


def control_values(node: dict, info: dict) -> dict[str, Any]:
    """The ``control_after_generate`` slot of each widget that has one ("randomize", "fixed", ...)."""
    raw = node.get("widgets_values")
    if not isinstance(raw, list):
        return {}
    return {name: value for (name, kind), value in zip(widget_layout(info), raw) if kind == SLOT_CONTROL}


# --- the UI graph ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Link:
    id: int
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: str


def _parse_link(raw: Any) -> Link:
    if isinstance(raw, dict):
        return Link(int(raw["id"]), int(raw["origin_id"]), int(raw["origin_slot"]), int(raw["target_id"]),
                    int(raw["target_slot"]), str(raw.get("type", "*")))
    if isinstance(raw, (list, tuple)) and len(raw) >= 5:
        kind = raw[5] if len(raw) > 5 else "*"
        return Link(int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]), str(kind))
    raise WorkflowError(f"a link must be [id, origin_id, origin_slot, target_id, target_slot, type]; got {raw!r}")


def is_ui_workflow(data: Any) -> bool:
    """True for the frontend's format (``nodes`` list + ``links``), as saved by Workflow > Save."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def is_api_prompt(data: Any) -> bool:
    """True for the API format (node id -> {class_type, inputs}), as saved by Workflow > Export (API)."""
    if not isinstance(data, dict) or not data:
        return False
    if "prompt" in data and isinstance(data["prompt"], dict) and len(data) <= 3:
        data = data["prompt"]
    return all(isinstance(v, dict) and "class_type" in v for v in data.values())


def unwrap_api_prompt(data: dict) -> dict:
    """An API prompt, also when wrapped as ``{"prompt": {...}}`` (the body POSTed to /prompt)."""
    if "prompt" in data and isinstance(data["prompt"], dict) and not data.get("class_type"):
        return data["prompt"]
    return data


def _refuse_unsupported(workflow: dict) -> None:
    subgraphs = (workflow.get("definitions") or {}).get("subgraphs") or []
    if subgraphs:
        names = ", ".join(repr(s.get("name", s.get("id", "?"))) for s in subgraphs[:5])
        raise WorkflowError(
            f"this workflow contains {len(subgraphs)} subgraph(s) ({names}); the converter handles plain "
            "nodes only: open it in ComfyUI, right-click each subgraph node > Unpack Subgraph, save, and run "
            "again (or export it with Workflow > Export (API) and run that file)")
    group_nodes = (workflow.get("extra") or {}).get("groupNodes") or {}
    if group_nodes:
        raise WorkflowError(
            f"this workflow uses group nodes ({', '.join(sorted(group_nodes)[:5])}); convert them back to nodes "
            "in ComfyUI (right-click > Convert to nodes) or export the workflow with Workflow > Export (API)")


class _Graph:
    """Index of a UI workflow: nodes by id, links by id, a node's input by slot."""

    def __init__(self, workflow: dict):
        if not is_ui_workflow(workflow):
            raise WorkflowError("expected a ComfyUI workflow with 'nodes' and 'links' (the UI format saved by "
                                "Workflow > Save); got a JSON object with keys "
                                f"{sorted(workflow)[:8] if isinstance(workflow, dict) else type(workflow).__name__}")
        _refuse_unsupported(workflow)
        self.nodes: dict[int, dict] = {}
        for node in workflow["nodes"]:
            self.nodes[int(node["id"])] = node
        self.links: dict[int, Link] = {}
        for raw in workflow.get("links") or []:
            if raw is None:  # LiteGraph can leave holes where links were deleted
                continue
            link = _parse_link(raw)
            self.links[link.id] = link

    def inputs(self, node_id: int) -> list[dict]:
        return list(self.nodes[node_id].get("inputs") or [])

    def outputs(self, node_id: int) -> list[dict]:
        return list(self.nodes[node_id].get("outputs") or [])

    def link_into(self, node_id: int, slot: int) -> Link | None:
        inputs = self.inputs(node_id)
        if slot >= len(inputs) or inputs[slot].get("link") is None:
            return None
        return self.links.get(int(inputs[slot]["link"]))

    def links_from(self, node_id: int, slot: int) -> list[Link]:
        return [l for l in self.links.values() if l.origin_id == node_id and l.origin_slot == slot]


# A V3 MatchType socket (ComfyUI 0.33's switch and resize nodes) takes the type of what is connected (within its
# template's allowed types); without running the frontend's type inference it is checked as a wildcard.
MATCH_TYPE = "COMFY_MATCHTYPE_V3"


def types_match(output_type: Any, input_type: Any) -> bool:
    """ComfyUI's link rule: equal, either is ``*``, or comma-separated alternatives overlap.

    A list of options (a V1 combo output) connects to a COMBO input.
    """
    if isinstance(output_type, (list, tuple)):
        output_type = "COMBO"
    if isinstance(input_type, (list, tuple)):
        input_type = "COMBO"
    a, b = str(output_type or "*"), str(input_type or "*")
    if a == b or a == "*" or b == "*" or MATCH_TYPE in (a, b):
        return True
    return bool({t.strip() for t in a.split(",")} & {t.strip() for t in b.split(",")})


@dataclass
class _Resolved:
    origin_id: int
    origin_slot: int


class _Resolver:
    """Follows a link back through Reroutes and bypassed nodes to the node that really produces it."""

    def __init__(self, graph: _Graph, object_info: dict):
        self.g = graph
        self.info = object_info

    def resolve_input(self, node_id: int, slot: int, want_type: str | None, seen: set) -> _Resolved | None:
        key = ("in", node_id, slot)
        if key in seen:
            raise WorkflowError(f"circular link through node {node_id} input {slot}: remove the loop")
        seen.add(key)
        link = self.g.link_into(node_id, slot)
        if link is None:
            return None
        if link.origin_id not in self.g.nodes:
            raise WorkflowError(f"link {link.id} comes from node {link.origin_id}, which is not in the workflow")
        inputs = self.g.inputs(node_id)
        want = want_type if want_type is not None else inputs[slot].get("type", "*")
        return self.resolve_output(link.origin_id, link.origin_slot, want, seen)

    def resolve_output(self, node_id: int, slot: int, want_type: str, seen: set) -> _Resolved | None:
        key = ("out", node_id, slot)
        if key in seen:
            raise WorkflowError(f"circular link through node {node_id} output {slot}: remove the loop")
        seen.add(key)
        node = self.g.nodes[node_id]
        kind = node.get("type")
        if node.get("mode", 0) == MODE_BYPASS and kind not in FRONTEND_ONLY_TYPES:
            index = self._bypass_slot(node_id, slot, want_type)
            return None if index < 0 else self.resolve_input(node_id, index, want_type, seen)
        if kind == REROUTE_TYPE:
            return self.resolve_input(node_id, 0, want_type, seen)
        if kind in FRONTEND_ONLY_TYPES:
            return None  # PrimitiveNode: its value was written into the target widget
        return _Resolved(node_id, slot)

    def _bypass_slot(self, node_id: int, slot: int, want_type: str) -> int:
        """ExecutableNodeDTO#getBypassSlotIndex: which input a bypassed node passes to output ``slot``."""
        inputs = self.g.inputs(node_id)
        outputs = self.g.outputs(node_id)
        out_type = outputs[slot].get("type", "*") if slot < len(outputs) else "*"
        if want_type in ("*", ""):
            return slot if len(inputs) > slot else 0
        if slot < len(inputs):
            t = inputs[slot].get("type", "*")
            if types_match(t, out_type) and types_match(t, want_type):
                return slot
        for i, inp in enumerate(inputs):
            if inp.get("type") == want_type:
                return i
        for i, inp in enumerate(inputs):
            t = inp.get("type", "*")
            if types_match(t, out_type) and types_match(t, want_type):
                return i
        return -1


def _primitive_values(graph: _Graph) -> dict[tuple[int, str], Any]:
    """(target node id, widget name) -> value, for widgets fed by a PrimitiveNode (through Reroutes)."""
    out: dict[tuple[int, str], Any] = {}
    for node_id, node in graph.nodes.items():
        # graphToPrompt applies every virtual node, whatever its mode: a muted Primitive still sets its targets.
        if node.get("type") != PRIMITIVE_TYPE:
            continue
        values = node.get("widgets_values") or []
        if not values:
            continue
        pending = list(graph.links_from(node_id, 0))
        visited: set[int] = set()
        while pending:
            link = pending.pop()
            if link.id in visited or link.target_id not in graph.nodes:
                continue
            visited.add(link.id)
            target = graph.nodes[link.target_id]
            if target.get("type") == REROUTE_TYPE:
                pending.extend(graph.links_from(link.target_id, 0))
                continue
            inputs = graph.inputs(link.target_id)
            if link.target_slot < len(inputs):
                widget = inputs[link.target_slot].get("widget") or {}
                name = widget.get("name") or inputs[link.target_slot].get("name")
                out[(link.target_id, name)] = values[0]
    return out


# V3 inputs whose widgets depend on their own value (a DynamicCombo's chosen option brings its own widgets,
# named "<combo>.<input>"; autogrow adds numbered sockets): widgets_values cannot be read without the frontend's
# per-value layout, which this converter does not model yet.
DYNAMIC_INPUT_TYPES = frozenset({"COMFY_DYNAMICCOMBO_V3", "COMFY_AUTOGROW_V3", "COMFY_DYNAMICSLOT_V3"})


def dynamic_inputs(info: dict) -> list[str]:
    """Names of the inputs of a node type whose widgets depend on their value (see DYNAMIC_INPUT_TYPES)."""
    found = []
    for section in ("required", "optional"):
        for name, spec in ((info.get("input") or {}).get(section) or {}).items():
            if isinstance(spec, (list, tuple)) and spec and isinstance(spec[0], str) and spec[0] in DYNAMIC_INPUT_TYPES:
                found.append(name)
    return found


def _dynamic_message(node: dict, names: list[str]) -> str:
    return (f"node {node.get('id')} ({node.get('type')}) has inputs whose widgets change with their value "
            f"({', '.join(names)}), which this converter cannot read from a UI workflow: in ComfyUI, use "
            "Workflow > Export (API) and give that file instead")


def _node_info(object_info: dict, node: dict) -> dict:
    kind = node.get("type")
    info = object_info.get(kind)
    if info is None:
        raise WorkflowError(
            f"node {node.get('id')} has the type {kind!r}, which this ComfyUI does not know: install the custom "
            "node pack that provides it (ComfyUI-Manager > Install Missing Custom Nodes), or remove the node")
    dynamic = dynamic_inputs(info)
    if dynamic:
        raise WorkflowError(_dynamic_message(node, dynamic))
    return info


def _wrap(value: Any) -> Any:
    # A list would read as a link [node_id, slot]; the frontend wraps list values (graphToPrompt).
    return {"__value__": value} if isinstance(value, list) else value


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow to the API prompt ComfyUI's ``POST /prompt`` takes.

    Returns ``{node_id (str): {"class_type", "inputs", "_meta": {"title"}}}``; linked inputs are
    ``[origin node id (str), output slot]``. Raises WorkflowError for unknown node types, subgraphs,
    broken links.
    """
    graph = _Graph(workflow)
    resolver = _Resolver(graph, object_info)
    primitives = _primitive_values(graph)
    prompt: dict[str, dict] = {}
    for node_id in sorted(graph.nodes):
        node = graph.nodes[node_id]
        kind = node.get("type")
        if kind in FRONTEND_ONLY_TYPES or node.get("mode", 0) in (MODE_NEVER, MODE_BYPASS):
            continue
        info = _node_info(object_info, node)
        values = widget_values(node, info)
        inputs: dict[str, Any] = {}
        specs = {s.name: s for s in input_specs(info)}
        for name, value in values.items():
            inputs[name] = _wrap(primitives.get((node_id, name), value))
        for slot, inp in enumerate(graph.inputs(node_id)):
            name = inp.get("name")
            if inp.get("link") is None:
                continue
            want = inp.get("type", "*")
            if name in specs and specs[name].type != "*":
                want = specs[name].type
            resolved = resolver.resolve_input(node_id, slot, want, set())
            if resolved is None:
                continue  # unlinked after resolution: a widget keeps its value, a socket stays empty
            inputs[name] = [str(resolved.origin_id), resolved.origin_slot]
        prompt[str(node_id)] = {"class_type": kind, "inputs": inputs,
                                "_meta": {"title": node.get("title") or info.get("display_name") or kind}}
    # graphToPrompt: drop links to nodes that are not in the prompt (muted ones).
    for entry in prompt.values():
        for name in [n for n, v in entry["inputs"].items()
                     if isinstance(v, list) and len(v) == 2 and v[0] not in prompt]:
            del entry["inputs"][name]
    return prompt


def to_api_prompt(data: dict, object_info: dict) -> dict:
    """A workflow in either format -> API prompt (UI format converted, API format returned as is)."""
    if is_ui_workflow(data):
        return ui_to_api(data, object_info)
    if is_api_prompt(data):
        return unwrap_api_prompt(data)
    raise WorkflowError("this JSON is neither a ComfyUI workflow (with 'nodes' and 'links') nor an API prompt "
                        "(node id -> {class_type, inputs}); save it from ComfyUI with Workflow > Save or "
                        "Workflow > Export (API)")


# --- checks ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow. ``category`` is one of CATEGORIES."""

    category: str
    node_id: Any
    node_type: str
    message: str
    input_name: str | None = None

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.node_type})"
        if self.input_name:
            where += f" input {self.input_name!r}"
        return f"{self.category}: {where}: {self.message}"


CATEGORIES = ("unsupported", "unknown node type", "bad link", "type mismatch", "wrong type", "out of range",
              "bad value", "missing model file", "missing input file")


# --- committed /object_info dumps of ComfyUI's core nodes ---------------------------------------------

DATA_DIR = Path(__file__).resolve().parent / "core_nodes"
_DUMP_NAME = re.compile(r"object_info_core_(\d+(?:\.\d+)*)\.json")


def version_key(version: str) -> tuple[int, ...]:
    """"0.3.64" -> (0, 3, 64), for ordering versions (anything after the numbers is ignored)."""
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


def core_dumps(folder: Path | None = None) -> dict[str, Path]:
    """ComfyUI version -> its committed core-node dump (made by tests/tools/dump_object_info.py), oldest first."""
    folder = Path(folder) if folder else DATA_DIR
    found = {}
    for path in folder.glob("object_info_core_*.json"):
        m = _DUMP_NAME.fullmatch(path.name)
        if m:
            found[m.group(1)] = path
    return dict(sorted(found.items(), key=lambda kv: version_key(kv[0])))


def load_core_dump(version: str, folder: Path | None = None) -> dict:
    """The whole dump of one supported ComfyUI version: {"comfyui_version", "import_failed", "nodes"}.

    A version without a dump is refused with the versions there are (the fix: make one with
    tests/tools/dump_object_info.py, or check against a running ComfyUI's /object_info)."""
    dumps = core_dumps(folder)
    if version not in dumps:
        raise WorkflowError(f"no committed /object_info dump for ComfyUI {version}; there are: "
                            f"{', '.join(dumps) or 'none'} (make one with tests/tools/dump_object_info.py)")
    with open(dumps[version], encoding="utf-8") as f:
        return json.load(f)


def core_object_info(version: str, folder: Path | None = None) -> dict:
    """node type -> object_info entry of ComfyUI's core nodes in that version (its committed dump)."""
    return load_core_dump(version, folder)["nodes"]


# This pack's own node schemas, as /object_info serves them (made from the nodes' code by
# ``tests/tools/dump_object_info.py --pack``; the contract tier checks it against the code, the host tier against
# each real ComfyUI). Package data like the core dumps, so ``python -m bolid_lib check`` needs no checkout.
PACK_DUMP_NAME = "object_info_pack.json"
# The fields of an /object_info entry that the checks, the conversion and the runner read.
SCHEMA_FIELDS = ("input", "input_order", "output", "output_node", "display_name")


def pack_object_info(folder: Path | None = None) -> dict:
    """node type -> object_info entry of this pack's nodes (the committed pack dump)."""
    path = (Path(folder) if folder else DATA_DIR) / PACK_DUMP_NAME
    if not path.is_file():
        raise WorkflowError(f"this pack's node schemas are missing ({path}): reinstall the pack, or make the file with "
                            "tests/tools/dump_object_info.py --pack")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["nodes"]


def looks_like_model_file(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(MODEL_FILE_EXTENSIONS)


def check_value(spec: InputSpec, value: Any, node_type: str = "") -> tuple[str, str] | None:
    """Check one widget value against its input spec; ``(category, message)`` or None when valid.

    A combo value not among the options is a "missing model file" when the input is a model loader's
    (known to the catalogue, or the value is a model file name), "missing input file" for an upload
    combo, else "bad value".
    """
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    t = spec.type
    if t == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            return "wrong type", f"expected an integer; got {value!r}"
    elif t == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "wrong type", f"expected a number; got {value!r}"
    elif t == "STRING":
        if not isinstance(value, str):
            return "wrong type", f"expected a string; got {value!r}"
    elif t == "BOOLEAN":
        if not isinstance(value, bool):
            return "wrong type", f"expected true or false; got {value!r}"
    elif t == "COMBO":
        if spec.options.get("multiselect") and isinstance(value, list):
            bad = [v for v in value if spec.choices is not None and v not in spec.choices]
            return ("bad value", f"{bad!r} not among the options") if bad else None
        if spec.choices is None or spec.options.get("remote"):
            return None  # options come from elsewhere at run time
        if value not in spec.choices:
            folder = folder_for_input(node_type, spec.name)
            if spec.names_input_file or folder == "input":
                return "missing input file", f"{value!r} is not in ComfyUI's input folder: put the file there or pick another"
            if folder or looks_like_model_file(value):
                return "missing model file", f"{value!r} is not installed ({len(spec.choices)} file(s) listed)"
            shown = list(spec.choices[:12]) + (["..."] if len(spec.choices) > 12 else [])
            return "bad value", f"{value!r} is not one of {shown}"
        return None
    if t in ("INT", "FLOAT"):
        lo, hi = spec.options.get("min"), spec.options.get("max")
        if lo is not None and value < lo:
            return "out of range", f"{value!r} is below the minimum {lo}"
        if hi is not None and value > hi:
            return "out of range", f"{value!r} is above the maximum {hi}"
    return None


def find_problems(workflow: dict, object_info: dict) -> list[Problem]:
    """Everything :func:`check_workflow` reports, as :class:`Problem` objects (UI or API format)."""
    if is_api_prompt(workflow) and not is_ui_workflow(workflow):
        return _api_problems(unwrap_api_prompt(workflow), object_info)
    try:
        graph = _Graph(workflow)
    except WorkflowError as e:
        return [Problem("unsupported", "-", "-", str(e))]
    problems: list[Problem] = []
    primitives = _primitive_values(graph)
    for node_id in sorted(graph.nodes):
        node = graph.nodes[node_id]
        kind = node.get("type")
        if kind in FRONTEND_ONLY_TYPES:
            continue
        info = object_info.get(kind)
        if info is None:
            problems.append(Problem("unknown node type", node_id, kind,
                                    f"no node type {kind!r} in this ComfyUI: install the pack that provides it"))
            continue
        dynamic = dynamic_inputs(info)
        if dynamic:
            problems.append(Problem("unsupported", node_id, kind, _dynamic_message(node, dynamic)))
            continue
        specs = {s.name: s for s in input_specs(info)}
        linked = {inp.get("name") for inp in graph.inputs(node_id) if inp.get("link") is not None}
        values = widget_values(node, info)
        # Extra trailing widgets_values are normal: frontend extensions append their own widgets (image
        # previews, a remote combo's refresh button) after the input widgets.
        for name, value in values.items():
            if name in linked and (node_id, name) not in primitives:
                continue
            value = primitives.get((node_id, name), value)
            found = check_value(specs[name], value, kind)
            if found:
                problems.append(Problem(found[0], node_id, kind, found[1], name))
        for inp in graph.inputs(node_id):
            name = inp.get("name")
            if name not in specs:
                problems.append(Problem("bad link" if inp.get("link") is not None else "bad value", node_id, kind,
                                        f"the node has no input {name!r} (inputs: {sorted(specs)})", name))
    problems.extend(_link_problems(graph, object_info))
    return problems


def _link_problems(graph: _Graph, object_info: dict) -> list[Problem]:
    problems = []
    for link in graph.links.values():
        if link.target_id not in graph.nodes or link.origin_id not in graph.nodes:
            problems.append(Problem("bad link", link.target_id, "-",
                                    f"link {link.id} joins node {link.origin_id} to node {link.target_id}; one of "
                                    "them is missing"))
            continue
        target = graph.nodes[link.target_id]
        if target.get("type") in FRONTEND_ONLY_TYPES or target.get("type") not in object_info:
            continue
        if dynamic_inputs(object_info[target["type"]]):
            continue  # reported with the node as unsupported
        inputs = graph.inputs(link.target_id)
        if link.target_slot >= len(inputs) or inputs[link.target_slot].get("link") != link.id:
            problems.append(Problem("bad link", link.target_id, target.get("type"),
                                    f"link {link.id} points at input slot {link.target_slot}, which does not hold it"))
            continue
        name = inputs[link.target_slot].get("name")
        specs = {s.name: s for s in input_specs(object_info[target["type"]])}
        if name not in specs:
            continue  # reported with the node
        # Walk back through Reroutes (not bypassed nodes: those pass through by type at run time).
        origin_id, origin_slot, seen = link.origin_id, link.origin_slot, set()
        while graph.nodes.get(origin_id, {}).get("type") == REROUTE_TYPE and origin_id not in seen:
            seen.add(origin_id)
            up = graph.link_into(origin_id, 0)
            if up is None:
                break
            origin_id, origin_slot = up.origin_id, up.origin_slot
        origin = graph.nodes.get(origin_id)
        if origin is None or origin.get("type") in FRONTEND_ONLY_TYPES:
            continue  # a Primitive's value is checked as a widget value
        origin_info = object_info.get(origin.get("type"))
        if origin_info is None:
            continue  # reported as unknown node type
        outputs = origin_info.get("output") or []
        if origin_slot >= len(outputs):
            problems.append(Problem("bad link", link.target_id, target["type"],
                                    f"link {link.id} comes from output {origin_slot} of node {origin_id} "
                                    f"({origin['type']}), which has {len(outputs)} output(s)", name))
            continue
        out_type = outputs[origin_slot]
        if not types_match(out_type, specs[name].type):
            shown = "COMBO" if isinstance(out_type, list) else out_type
            problems.append(Problem("type mismatch", link.target_id, target["type"],
                                    f"receives {shown} from node {origin_id} ({origin['type']}) output "
                                    f"{origin_slot}, but takes {specs[name].type}", name))
    return problems


def _api_problems(prompt: dict, object_info: dict) -> list[Problem]:
    problems = []
    for node_id, entry in prompt.items():
        kind = entry.get("class_type")
        info = object_info.get(kind)
        if info is None:
            problems.append(Problem("unknown node type", node_id, kind,
                                    f"no node type {kind!r} in this ComfyUI: install the pack that provides it"))
            continue
        specs = {s.name: s for s in input_specs(info)}
        for name, value in (entry.get("inputs") or {}).items():
            spec = specs.get(name)
            if spec is None:
                continue  # ComfyUI ignores extra inputs
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                origin = prompt.get(value[0])
                if origin is None:
                    problems.append(Problem("bad link", node_id, kind, f"links to node {value[0]}, which is absent", name))
                    continue
                outputs = (object_info.get(origin.get("class_type")) or {}).get("output") or []
                if origin.get("class_type") in object_info and value[1] < len(outputs):
                    if not types_match(outputs[value[1]], spec.type):
                        problems.append(Problem("type mismatch", node_id, kind,
                                                f"receives {outputs[value[1]]} from node {value[0]}, but takes {spec.type}", name))
                continue
            if spec.is_widget:
                found = check_value(spec, value, kind)
                if found:
                    problems.append(Problem(found[0], node_id, kind, found[1], name))
    return problems


def check_workflow(workflow: dict, object_info: dict, *, ignore: Iterable[str] = ()) -> list[str]:
    """Problems of a workflow against an ``object_info``: one readable line each, empty when it is fine.

    Lines start with their category: "unknown node type", "type mismatch", "bad link", "wrong type",
    "out of range", "bad value", "missing model file", "missing input file", "unsupported". Pass
    ``ignore={"missing model file", "missing input file"}`` when checking against a dump taken from a
    ComfyUI without the model files.
    """
    skip = set(ignore)
    unknown = skip - set(CATEGORIES)
    if unknown:
        raise BoLIDError(f"unknown problem categories {sorted(unknown)}; use some of {list(CATEGORIES)}")
    return [str(p) for p in find_problems(workflow, object_info) if p.category not in skip]


# --- model files -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RequiredFile:
    """A file a workflow names: ``folder`` is ComfyUI's folder key ("checkpoints", "bolid", "input"...),
    None when unknown. ``url``/``directory`` come from the node's ``properties.models`` when present."""

    node_type: str
    input_name: str
    file_name: str
    folder: str | None
    node_id: Any = None
    url: str | None = None
    value: str | None = None  # the widget value as written, when it differs from file_name (a prefix)

    def __iter__(self):  # unpacks as (node type, input name, file name, folder key)
        return iter((self.node_type, self.input_name, self.file_name, self.folder))


def _file_input(node_type: str, spec: InputSpec | None, name: str, value: Any) -> tuple[str | None, str] | None:
    """``(folder key or None, file name)`` when an input names a file, else None.

    Known loader inputs take the catalogue's folder (a value prefix may pick another folder); an upload
    combo's value is in "input"; any other combo whose value is a model file name has an unknown folder.
    """
    if not isinstance(value, str) or not value:
        return None
    known = resolve_file(node_type, name, value)
    if known is not None:
        return known
    if spec is not None and spec.names_input_file:
        return "input", value
    if spec is not None and spec.type == "COMBO" and looks_like_model_file(value):
        return None, value
    return None


def required_files(workflow: dict, object_info: dict) -> list[RequiredFile]:
    """Every file a workflow's active nodes name (model files and input images), in node order.

    Works on both formats. Inputs fed by a link are skipped (the file is not chosen by that widget).
    """
    found: list[RequiredFile] = []
    if is_ui_workflow(workflow):
        graph = _Graph(workflow)
        primitives = _primitive_values(graph)
        for node_id in sorted(graph.nodes):
            node = graph.nodes[node_id]
            kind = node.get("type")
            if kind in FRONTEND_ONLY_TYPES or node.get("mode", 0) in (MODE_NEVER, MODE_BYPASS) or kind not in object_info:
                continue
            info = object_info[kind]
            specs = {s.name: s for s in input_specs(info)}
            linked = {i.get("name") for i in graph.inputs(node_id) if i.get("link") is not None}
            urls = {m.get("name"): m.get("url") for m in (node.get("properties") or {}).get("models") or []
                    if isinstance(m, dict)}
            for name, value in widget_values(node, info).items():
                value = primitives.get((node_id, name), value)
                if name in linked and (node_id, name) not in primitives:
                    continue
                hit = _file_input(kind, specs.get(name), name, value)
                if hit is not None:
                    found.append(RequiredFile(kind, name, hit[1], hit[0], node_id, urls.get(value), value))
    else:
        prompt = unwrap_api_prompt(workflow)
        for node_id, entry in prompt.items():
            kind = entry.get("class_type")
            specs = {s.name: s for s in input_specs(object_info.get(kind) or {})}
            for name, value in (entry.get("inputs") or {}).items():
                if isinstance(value, list):
                    continue
                hit = _file_input(kind, specs.get(name), name, value)
                if hit is not None:
                    found.append(RequiredFile(kind, name, hit[1], hit[0], node_id, value=value))
    return found


def required_models(workflow: dict, object_info: dict) -> list[tuple[str, str, str, str | None]]:
    """``(node type, input name, file name, folder key)`` of every model file and input image a workflow
    needs, without repeats; the folder key is None for a model file in an unknown loader."""
    seen, out = set(), []
    for f in required_files(workflow, object_info):
        row = tuple(f)
        if row not in seen:
            seen.add(row)
            out.append(row)
    return out


def output_nodes(prompt: dict, object_info: dict) -> list[str]:
    """Ids of the nodes ComfyUI executes as outputs (``output_node`` true)."""
    return [nid for nid, e in prompt.items() if (object_info.get(e.get("class_type")) or {}).get("output_node")]


__all__ = [
    "WorkflowError", "InputSpec", "Problem", "RequiredFile", "input_specs", "widget_layout", "widget_values",
    "control_values", "is_ui_workflow", "is_api_prompt", "ui_to_api", "to_api_prompt", "types_match",
    "check_value", "find_problems", "check_workflow", "required_files", "required_models", "output_nodes",
    "looks_like_model_file", "FRONTEND_ONLY_TYPES", "CATEGORIES", "core_dumps", "core_object_info",
    "load_core_dump", "version_key", "DATA_DIR",
]
