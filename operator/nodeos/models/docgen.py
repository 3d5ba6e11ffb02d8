"""Renders the API reference (Markdown) from the models: every field, its type, default, meaning.

Pure: returns text. Each model reachable from the roots gets one section, in the order first met.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from nodeos.models.common import GO_DURATION_PATTERN

_SKIPPED_ROOT_FIELDS = {"api_version", "kind", "metadata"}


def reference_markdown(roots: tuple[type[BaseModel], ...], title: str, intro: str) -> str:
    """The reference page for the given root kinds."""
    order: list[type[BaseModel]] = []
    for root in roots:
        _collect(root, order)
    lines = [f"# {title}", "", intro, ""]
    for model in order:
        lines += _section(model, is_root=model in roots)
    return "\n".join(lines).rstrip() + "\n"


def _collect(model: type[BaseModel], order: list[type[BaseModel]]) -> None:
    if model in order:
        return
    order.append(model)
    for field in model.model_fields.values():
        for nested in _models_in(field.annotation):
            _collect(nested, order)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += _models_in(arg)
    return found


def _section(model: type[BaseModel], *, is_root: bool) -> list[str]:
    doc = _markdown((model.__doc__ or "").strip())
    lines = [f"## {model.__name__}", "", doc, ""]
    lines += ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    fields = sorted(model.model_fields.items(), key=lambda item: not item[1].is_required())
    for name, field in fields:
        if is_root and name in _SKIPPED_ROOT_FIELDS:
            continue
        alias = field.alias or name
        kind = "duration" if _is_duration(field) else _type_name(field.annotation)
        lines.append(f"| `{alias}` | {kind} | {_default(field)} | {_describe(field)} |")
    lines.append("")
    return lines


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(names)
    if origin is Literal:
        return " \\| ".join(f"`{arg}`" for arg in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "bool": "boolean", "datetime": "timestamp"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _nested_doc(annotation: Any) -> str:
    models = _models_in(annotation)
    if not models:
        return ""
    return (models[0].__doc__ or "").strip().split("\n")[0]


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(defaults below)"
        return f"`{value!r}`" if value not in ([], {}) else "empty"
    if field.default is PydanticUndefined:
        return "**required**"
    if field.default is None:
        return ""
    if field.default == "":
        return "empty"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    return f"`{field.default}`"


def _is_duration(field: FieldInfo) -> bool:
    return _duration_in(field.metadata) or _duration_annotation(field.annotation)


def _duration_in(metadata: Any) -> bool:
    for meta in metadata:
        if getattr(meta, "pattern", None) == GO_DURATION_PATTERN:
            return True
        if isinstance(meta, FieldInfo) and _duration_in(meta.metadata):
            return True
    return False


def _duration_annotation(annotation: Any) -> bool:
    """Whether a (possibly optional) annotation is the Duration type."""
    if get_origin(annotation) is typing.Annotated:
        return _duration_in(annotation.__metadata__)
    return any(_duration_annotation(arg) for arg in get_args(annotation))


def _markdown(text: str) -> str:
    """Docstrings use reStructuredText literals and indentation; the reference is Markdown."""
    return inspect.cleandoc(text).replace("``", "`")


def _describe(field: FieldInfo) -> str:
    parts = [_markdown(field.description or _nested_doc(field.annotation))]
    for meta in field.metadata:
        pattern = getattr(meta, "pattern", None)
        if pattern and pattern != GO_DURATION_PATTERN:
            parts.append(f"Pattern: `{pattern}`.")
        for attr, label in (("ge", "≥"), ("le", "≤")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                parts.append(f"{label} {bound}.")
    return " ".join(p for p in parts if p).replace("|", "\\|").replace("\n", " ")
