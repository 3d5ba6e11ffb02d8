"""Turns a root API model into a CustomResourceDefinition (a plain dict). Pure, no I/O.

Pydantic's JSON Schema is close to what Kubernetes wants but not structural: it uses ``$ref``,
``anyOf`` with null for optional fields, titles, ``additionalProperties: false`` and
``examples``. This module inlines references, collapses optional fields, and keeps only the
keywords a structural schema allows. Defaults stay out of the schema on purpose: the operator
applies them when it reads an object, so what a user applies is exactly what the API stores.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from nodeos.models.common import API_GROUP, API_VERSION
from nodeos.models.resource import CrdInfo, PrinterColumn

_DROPPED_KEYS = frozenset({"title", "examples", "default"})
_LIST_MAP_KEYS = {"conditions": "type", "nodes": "name"}


def crd_for(model: type[BaseModel], info: CrdInfo) -> dict[str, Any]:
    """The CRD for a root model (one with apiVersion, kind, metadata, spec and status)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.get("$defs", {})
    properties = raw["properties"]
    schema = {
        "type": "object",
        "description": raw.get("description", ""),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural(properties["spec"], definitions),
            "status": structural(properties["status"], definitions),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Cluster",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        _printer_column(column) for column in info.printer_columns
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def structural(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """One schema node made structural: references inlined, optional-null collapsed."""
    node = _resolve(node, definitions)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        node = _collapse_nullable(node, definitions)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "anyOf" and node.get("x-kubernetes-int-or-string")):
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "properties":
            result[key] = {name: structural(sub, definitions) for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            result[key] = structural(value, definitions)
        else:
            result[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    _mark_list_maps(result)
    return result


def _resolve(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Replaces ``$ref`` (alone or wrapped in a one-item ``allOf``) by its definition."""
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**{k: v for k, v in node.items() if k != "allOf"}, **node["allOf"][0]}
    if "$ref" not in node:
        return node
    name = node["$ref"].rsplit("/", 1)[-1]
    merged = copy.deepcopy(definitions[name])
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "x-kubernetes-validations":
            merged[key] = [*merged.get(key, []), *value]
        else:
            merged[key] = value
    return _resolve(merged, definitions)


def _collapse_nullable(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    options = [option for option in node["anyOf"] if option.get("type") != "null"]
    if len(options) != 1:
        raise ValueError(f"cannot make a structural schema of anyOf {node['anyOf']}")
    inner = _resolve(options[0], definitions)
    outer = {key: value for key, value in node.items() if key != "anyOf"}
    validations = [
        *inner.get("x-kubernetes-validations", []),
        *outer.pop("x-kubernetes-validations", []),
    ]
    merged = {**inner, **outer}
    if validations:
        merged["x-kubernetes-validations"] = validations
    return merged


def _mark_list_maps(schema: dict[str, Any]) -> None:
    for name, key in _LIST_MAP_KEYS.items():
        prop = schema.get("properties", {}).get(name)
        if prop and prop.get("type") == "array" and key in prop["items"].get("properties", {}):
            prop["x-kubernetes-list-type"] = "map"
            prop["x-kubernetes-list-map-keys"] = [key]
            required = prop["items"].setdefault("required", [])
            if key not in required:
                required.append(key)


def _printer_column(column: PrinterColumn) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": column.name,
        "type": column.type,
        "jsonPath": column.json_path,
    }
    if column.description:
        entry["description"] = column.description
    if column.priority:
        entry["priority"] = column.priority
    return entry
