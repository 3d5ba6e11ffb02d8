"""Machine-config patches: apply them to a node's configuration and tell whether it drifted.

Pure. A patch is a YAML mapping merged into the configuration: mappings merge key by key, any
other value (lists included) replaces what was there, and ``null`` deletes the key. A node has
drifted when applying the patches would change its configuration.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import yaml


class PatchError(ValueError):
    """A patch is not a YAML mapping; the message says which one."""


def apply_patches(config: bytes, patches: Sequence[str]) -> bytes:
    """The configuration with every patch merged in, as canonical YAML."""
    document = yaml.safe_load(config) or {}
    if not isinstance(document, dict):
        raise PatchError("the node's configuration is not a YAML mapping")
    for index, text in enumerate(patches):
        try:
            patch = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise PatchError(f"patches[{index}] is not valid YAML: {error}") from None
        if not isinstance(patch, dict):
            raise PatchError(f"patches[{index}] must be a YAML mapping")
        document = _merge(document, patch)
    return canonical(document)


def canonical(document: Any) -> bytes:
    """A stable byte form of a configuration (sorted keys), so equal configs hash equally."""
    return yaml.safe_dump(document, sort_keys=True).encode()


def config_hash(config: bytes) -> str:
    """Short hash of a configuration in canonical form."""
    document = yaml.safe_load(config) or {}
    return hashlib.sha256(canonical(document)).hexdigest()[:16]


def drifted(config: bytes, patches: Sequence[str]) -> bool:
    """Whether applying the patches would change the configuration."""
    return config_hash(apply_patches(config, patches)) != config_hash(config)


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
