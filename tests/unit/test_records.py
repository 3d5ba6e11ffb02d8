"""core.records: the annotation key is valid for any plan name; values round-trip or are ignored."""

from __future__ import annotations

import datetime
import re

import pytest

from nodeos.core.records import annotation_key, decode, encode, records_on
from nodeos.models.upgradeplan import NodeProgress

# Kubernetes: an optional DNS-subdomain prefix (at most 253), "/", a name of at most 63
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.mark.parametrize("plan", ["p", "talos-v1.13.9", "a" * 236, "b" * 237, "c.d-" * 63 + "e"])
def test_the_key_is_a_valid_annotation_name_and_differs_per_plan(plan: str) -> None:
    key = annotation_key(plan)
    prefix, name = key.split("/")
    assert len(prefix) <= 253 and SUBDOMAIN.match(prefix), key
    assert name == "record"
    assert annotation_key(plan) == key and annotation_key(plan + "x") != key


def test_a_record_round_trips_without_its_name_and_stays_small() -> None:
    now = datetime.datetime(2026, 11, 30, 6, 0, tzinfo=datetime.UTC)
    record = NodeProgress(
        name="worker-00042",
        phase="Rebooting",
        since=now,
        started_at=now,
        attempt=1,
        boot_id="0f5c7e1e-6a87-4a43-9d53-1d2b8f1e9c3a",
        from_version="v1.12.4",
        deadline=now,
        cordoned_by_us=True,
        target="v1.13.9",
        node_uid="5d9a1c3e-0b7e-4c84-a8a4-1f4f0e1a2b3c",
    )
    text = encode(record, "plan-uid")
    assert "worker-00042" not in text and len(text) < 512, text
    assert decode(text, "worker-00042", "plan-uid") == record


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"phase":"Nope","planUID":"u"}', '{"phase":"Done"}']
)
def test_an_unreadable_or_foreign_value_is_no_record(text: str) -> None:
    assert decode(text, "n", "u") is None


def test_records_on_keeps_only_this_plans_records() -> None:
    mine = encode(NodeProgress(name="x", phase="Done"), "u1")
    nodes = [
        ("a", {annotation_key("p"): mine}),
        ("b", {annotation_key("other"): mine}),
        ("c", {}),
    ]
    assert list(records_on(nodes, "p", "u1")) == ["a"]
    assert records_on(nodes, "p", "u2") == {}
