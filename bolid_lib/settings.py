"""Config dataclasses <-> plain dicts (JSON in safetensors metadata, YAML/JSON/TOML files), for every room: the
method's AdapterConfig / BodyVAEConfig and the trainers' configs read and check their dicts here."""

from __future__ import annotations

import dataclasses
import types
import typing

from .errors import BoLIDError


def to_dict(cfg) -> dict:
    """A config dataclass as a JSON-able dict (tuples become lists when dumped)."""
    return dataclasses.asdict(cfg)


def _is_tuple(tp) -> bool:
    """Whether a field type is a tuple, or an optional tuple."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple(a) for a in typing.get_args(tp) if a is not type(None))
    return origin is tuple or tp is tuple


def check_fields(cls, d: dict, source: str = "settings", unknown: str | None = None) -> None:
    """Refuse keys of ``d`` that are not fields of ``cls``. unknown: the message, with {} for the keys (default:
    name them and the known ones, as for a typo in a settings file)."""
    known = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(d) - known)
    if extra:
        raise BoLIDError(unknown.format(", ".join(extra)) if unknown else
                         f"{source} has unknown settings {extra}; known: {sorted(known)}")


def from_dict(cls, d: dict, source: str = "settings", unknown: str | None = None):
    """``cls(**d)`` after ``check_fields``, turning lists back into tuples where a field is a tuple (JSON and YAML
    have no tuples)."""
    check_fields(cls, d, source, unknown)
    hints = typing.get_type_hints(cls)
    return cls(**{k: tuple(v) if isinstance(v, list) and _is_tuple(hints[k]) else v for k, v in d.items()})
