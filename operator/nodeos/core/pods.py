"""Which pods a drain must move off a node. Pure: a pod view and the plan's drain policy in.

A drain leaves alone mirror pods (the kubelet owns them), pods that have finished, DaemonSet
pods when the plan says to ignore them, the operator's own pod (it would evict itself in the
middle of the rollout), and, when the plan narrows the drain with a pod selector, pods outside
it. Everything else must leave before the node is installed or rebooted.
"""

from __future__ import annotations

from nodeos.core.nodes import matches
from nodeos.models.rollout import DrainPolicy
from nodeos.ports.kube import PodView


def must_leave(pod: PodView, policy: DrainPolicy, own_pod: tuple[str, str] | None) -> bool:
    """Whether the drain has to move this pod off the node."""
    if pod.mirror or pod.finished:
        return False
    if policy.ignore_daemon_sets and pod.daemon_set:
        return False
    if own_pod is not None and (pod.namespace, pod.name) == own_pod:
        return False
    if policy.pod_selector is not None:
        return matches(policy.pod_selector.to_api(), pod.labels)
    return True
