"""Where a plan keeps each node's record: one annotation on the Node, per plan. Pure.

The plan's status holds what does not grow with the fleet (phase, counts, conditions, the
in-flight ledger); each node's ``NodeProgress`` lives on its own Node, under
``<plan>.progress.nodeos.dev/record``, so a transition writes one small annotation instead of
the whole fleet's records. The value is the record as JSON with the plan's UID, so a plan
deleted and created again under the same name does not inherit its predecessor's records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from pydantic import ValidationError

from nodeos.models.upgradeplan import NodeProgress

SUFFIX = ".progress.nodeos.dev/record"
_MAX_PREFIX = 253  # a DNS subdomain
_PLAN_UID = "planUID"


def annotation_key(plan: str) -> str:
    """The annotation that carries ``plan``'s record on a Node."""
    prefix = plan + SUFFIX.split("/", 1)[0]
    if len(prefix) <= _MAX_PREFIX:
        return plan + SUFFIX
    digest = hashlib.sha256(plan.encode()).hexdigest()[:16]
    keep = _MAX_PREFIX - len(SUFFIX.split("/", 1)[0]) - len(digest) - 1
    return f"{plan[:keep].rstrip('.-')}-{digest}{SUFFIX}"


def encode(record: NodeProgress, plan_uid: str) -> str:
    """The annotation's value: the record without its name (the Node names it), compact."""
    data = record.model_dump(by_alias=True, exclude_none=True, mode="json")
    del data["name"]
    data[_PLAN_UID] = plan_uid
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def decode(text: str, node: str, plan_uid: str) -> NodeProgress | None:
    """The record in an annotation, or None when it is another plan's or unreadable."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.pop(_PLAN_UID, None) != plan_uid:
        return None
    try:
        return NodeProgress.model_validate({**data, "name": node})
    except ValidationError:
        return None


def records_on(
    nodes: Iterable[tuple[str, Mapping[str, str]]], plan: str, plan_uid: str
) -> dict[str, NodeProgress]:
    """The plan's records on these nodes, given as (name, annotations) pairs."""
    key = annotation_key(plan)
    found = {}
    for name, marks in nodes:
        text = marks.get(key)
        record = decode(text, name, plan_uid) if text is not None else None
        if record is not None:
            found[name] = record
    return found
