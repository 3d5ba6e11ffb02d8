"""Watches a rollout from outside and records every moment a safety invariant does not hold.

A thread samples the cluster every 100 ms for the whole rollout (not only at the end):
- never more selected nodes out of service (cordoned or NotReady) than maxUnavailable, beyond
  those that were out of service before the plan started;
- never two control-plane nodes out of service at once;
- the workload's PodDisruptionBudget never below its desired healthy count.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from kubernetes import client

from helpers.e2e import is_ready

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


@dataclass
class InvariantMonitor:
    kube: client.ApiClient
    nodes: set[str]
    max_unavailable: int
    pdb: tuple[str, str] | None = None
    violations: list[str] = field(default_factory=list)
    samples: int = 0
    peak_unavailable: int = 0
    baseline: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> InvariantMonitor:
        self.baseline = set(self._out_of_service()[0])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=5)

    def _out_of_service(self) -> tuple[list[str], list[str]]:
        core = client.CoreV1Api(self.kube)
        out, control = [], []
        for node in core.list_node().items:
            if node.metadata.name not in self.nodes:
                continue
            if node.spec.unschedulable or not is_ready(node):
                out.append(node.metadata.name)
                if CONTROL_PLANE in (node.metadata.labels or {}):
                    control.append(node.metadata.name)
        return out, control

    def _unhealthy_pods(self, pdb: client.V1PodDisruptionBudget) -> str:
        """Which of the budget's pods are not healthy, and the state of their nodes."""
        core = client.CoreV1Api(self.kube)
        labels = ",".join(f"{k}={v}" for k, v in (pdb.spec.selector.match_labels or {}).items())
        nodes = {n.metadata.name: n for n in core.list_node().items}
        notes = []
        for pod in core.list_namespaced_pod(pdb.metadata.namespace, label_selector=labels).items:
            if is_ready(pod) and pod.metadata.deletion_timestamp is None:
                continue
            node = nodes.get(pod.spec.node_name or "")
            where = "unscheduled"
            if node is not None:
                where = (
                    f"{node.metadata.name} (ready={is_ready(node)}, "
                    f"unschedulable={bool(node.spec.unschedulable)})"
                )
            terminating = " terminating" if pod.metadata.deletion_timestamp else ""
            history = ", ".join(
                f"{c.type}={c.status}@{c.last_transition_time:%H:%M:%S}"
                for c in pod.status.conditions or []
                if c.last_transition_time is not None
            )
            created = f"{pod.metadata.creation_timestamp:%H:%M:%S}"
            notes.append(
                f"{pod.metadata.name}{terminating} on {where}; created {created}; {history}"
            )
        return "unhealthy: " + (", ".join(notes) or "none now")

    def _run(self) -> None:
        policy = client.PolicyV1Api(self.kube)
        while not self._stop.is_set():
            out, control = self._out_of_service()
            self.samples += 1
            extra = set(out) - self.baseline
            self.peak_unavailable = max(self.peak_unavailable, len(extra))
            if len(extra) > self.max_unavailable:
                self.violations.append(f"{len(extra)} nodes out of service: {sorted(extra)}")
            if len(control) > 1:
                self.violations.append(f"control-plane nodes out together: {control}")
            if self.pdb is not None:
                pdb = policy.read_namespaced_pod_disruption_budget(self.pdb[1], self.pdb[0])
                status = pdb.status
                if (
                    status is not None
                    and status.observed_generation == pdb.metadata.generation
                    and status.current_healthy < status.desired_healthy
                ):
                    self.violations.append(
                        f"PDB {self.pdb[1]}: {status.current_healthy} healthy < "
                        f"{status.desired_healthy} desired; {self._unhealthy_pods(pdb)}"
                    )
            time.sleep(0.1)
