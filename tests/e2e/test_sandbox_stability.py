"""The sandbox's nodes behave like real kubelets: idle nodes under load never flap.

Real kubelets renew a node Lease; a node whose heartbeat races the controller manager's grace
period flips to Ready=Unknown for an instant, its pods go NotReady and PodDisruptionBudgets
refuse evictions, which no real cluster does. This watches 50 loaded nodes event by event for
90 seconds (over two of the controller manager's grace periods, many lease renewals) and
allows no Ready transition the test did not cause.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, watch

from helpers.e2e import deployment, is_ready, wait_for
from nodeos.sandbox import kwok

pytestmark = pytest.mark.sandbox

NODES = 50
REPLICAS = 150
WATCH_S = 90.0  # over two of the controller manager's 40 s grace periods


def ready_status(node: client.V1Node) -> str:
    for condition in node.status.conditions or []:
        if condition.type == "Ready":
            return str(condition.status)
    return "Missing"


def ready_transitions(
    core: client.CoreV1Api, selector: str, seconds: float
) -> tuple[list[str], int]:
    """Every change of a selected Node's Ready status within ``seconds``, and the event count.

    The watch resumes from the last resourceVersion it saw; a gap (410 Gone) is a failure of
    the observation, not something to skip over.
    """
    listed = core.list_node(label_selector=selector)
    last = {n.metadata.name: ready_status(n) for n in listed.items}
    version = listed.metadata.resource_version
    transitions: list[str] = []
    events = 0
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 1:
        stream = watch.Watch().stream(
            core.list_node,
            label_selector=selector,
            resource_version=version,
            timeout_seconds=max(1, int(remaining)),
            allow_watch_bookmarks=True,
        )
        for event in stream:
            if event["type"] == "ERROR":
                raise AssertionError(f"the Node watch broke: {event['raw_object']}")
            if event["type"] == "BOOKMARK":
                version = event["raw_object"]["metadata"]["resourceVersion"]
                continue
            node = event["object"]
            version = node.metadata.resource_version
            events += 1
            status = ready_status(node)
            name = node.metadata.name
            if last.get(name) != status:
                reason = next(
                    (c.reason for c in node.status.conditions or [] if c.type == "Ready"), ""
                )
                transitions.append(f"{name}: {last.get(name)} -> {status} ({reason})")
                last[name] = status
    return transitions, events


@pytest.fixture
def loaded_nodes(kube: client.ApiClient) -> Iterator[str]:
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    suffix = uuid.uuid4().hex[:6]
    selector = {"stability": suffix}
    names = [f"steady-{suffix}-{i:02d}" for i in range(NODES)]
    for name in names:
        core.create_node(kwok.fake_node(name, labels=selector))
    apps.create_namespaced_deployment("default", deployment(f"load-{suffix}", REPLICAS, selector))
    try:
        wait_for(
            f"{NODES} nodes Ready",
            lambda: (
                sum(is_ready(n) for n in core.list_node(label_selector=f"stability={suffix}").items)
                == NODES
            ),
            timeout_s=120,
        )
        wait_for(
            f"{REPLICAS} pods Ready",
            lambda: (
                sum(
                    is_ready(p)
                    for p in core.list_namespaced_pod(
                        "default", label_selector=f"app=load-{suffix}"
                    ).items
                )
                == REPLICAS
            ),
            timeout_s=180,
        )
        yield f"stability={suffix}"
    finally:
        apps.delete_namespaced_deployment(f"load-{suffix}", "default")
        for name in names:
            core.delete_node(name)


def test_loaded_idle_nodes_never_flap_ready(
    kube: client.ApiClient, loaded_nodes: str, figures: list[str]
) -> None:
    core = client.CoreV1Api(kube)
    transitions, events = ready_transitions(core, loaded_nodes, WATCH_S)
    figures.append(
        f"sandbox stability: {NODES} nodes, {REPLICAS} pods, {WATCH_S:.0f} s watched, "
        f"{events} Node events, {len(transitions)} Ready transitions"
    )
    assert events >= NODES, f"only {events} Node events in {WATCH_S:.0f} s: no heartbeats seen"
    assert transitions == []
