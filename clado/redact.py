"""Settings that never reach the disk: API keys and tokens are marked `secret` and left out of stored configs."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

SECRET: dict[str, Any] = {"secret": True}  # json_schema_extra of a secret field


def is_secret(field: FieldInfo) -> bool:
    return isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("secret") is True


def _section(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (also inside `X | None`), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        return next((m for m in map(_section, get_args(annotation)) if m is not None), None)
    return None


def without_secrets(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a dump of `model`) without its secret fields at any depth; every other key kept as it is."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is not None and is_secret(field):
            continue
        section = _section(field.annotation) if field is not None else None
        out[key] = without_secrets(section, value) if section is not None and isinstance(value, dict) else value
    return out
