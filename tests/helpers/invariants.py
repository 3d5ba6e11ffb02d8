"""Watches a rollout from outside, event by event, and records every invariant that does not hold.

Watches on Nodes, Pods, PodDisruptionBudgets and UpgradePlans (list, then watch from the list's
resourceVersion, resuming from the last event's after a dropped connection; a 410 Gone is a gap,
reported in ``gaps``, after which the state is listed afresh). Every event is checked against
the state all four watches have built, so an overlap shorter than any polling interval is
still seen. With the simulator's
journal, every install and reboot it served is checked too.

Checked continuously:
- budget: at each new cordon carrying a plan's mark, the selected nodes out of service (cordoned
  by anyone, or NotReady; failed nodes kept cordoned count) fit ``max_unavailable``, unless the
  node was out of service already; and beyond the nodes out of service when the watch began,
  never more than ``max_unavailable`` out at once;
- control planes: never two out of service at once, a control plane is cordoned only while the
  others are in service, and no worker is cordoned by a plan before every control plane it
  selects runs the target (or failed);
- every PodDisruptionBudget at or above its desired healthy count (once its status is current);
- each install and reboot the simulator served: the node was cordoned then, no pod that a drain
  must move was on it, at most ``installs_per_node`` installs and ``reboots_per_node`` Reboot
  calls per node (an install through the legacy API reboots by itself: no Reboot call).

Placing a call among the watched events is done in the API server's order, not by when the
events reached the monitor (a busy machine delivers them seconds late): every watched change is
stamped with its resourceVersion, and a sampler reads the cluster's current resourceVersion
five times a second, so a call served at time t falls between the last sample answered before
t and the first sample sent after it. A call is a breach only if the node was uncordoned, or a
pod that must leave was on it, throughout that window, once the watches have caught up with
its end. (resourceVersions are compared as numbers: true of the etcd behind this sandbox.)

At the end: no node carries a plan's cordon mark unless the plan reports it failed.

A monitor that cannot keep watching fails the test: ``__exit__`` raises.
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from helpers.e2e import plan_records

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
MARK = "nodeos.dev/cordoned-by"
INSTALLS = ("machine.LifecycleService/Upgrade", "machine.MachineService/Upgrade")
REBOOT = "machine.MachineService/Reboot"
SAMPLE_S = 0.2  # how often the cluster's resourceVersion is sampled to place journal entries
SAMPLE_TIMEOUT_S = 5.0  # the longest one sample may take (the monitor joins its threads for 10 s)
QUIET_S = 2.0  # a watch with no event for this long has delivered everything before it
PLACE_S = 30.0  # the longest a journal entry waits for its window's end and the watches
EXTERNAL_GRACE_S = 2.0  # a change by someone else this recent may not have reached the plan


@dataclass
class _NodeState:
    unschedulable: bool = False
    ready: bool = True
    mark: str | None = None
    control_plane: bool = False
    os_image: str = ""
    # (resourceVersion, cordoned?) transitions, to place journal entries among them
    cordons: list[tuple[int, bool]] = field(default_factory=list)

    @property
    def out(self) -> bool:
        return self.unschedulable or not self.ready


@dataclass
class _PodState:
    node: str | None
    must_leave: bool
    since: int  # resourceVersion of the change that placed it on ``node``
    gone: int | None = None  # resourceVersion of its deletion (requested or done)


@dataclass
class InvariantMonitor:
    """Use as a context manager around a rollout."""

    kube: client.ApiClient
    nodes: set[str]
    max_unavailable: int
    namespaces: set[str] | None = None  # whose PDBs count (None: all; earlier tests' are going)
    journal: Path | None = None
    target: str | None = None
    installs_per_node: int = 1
    # A takeover while a node was in Upgrading reboots it once to check what it runs (the
    # install may not have gone out), then installs in a new attempt: one Reboot more.
    reboots_per_node: int = 1
    drained: bool = True  # False when the plan may reboot with pods left (SkipRemaining)
    gaps_allowed: bool = False  # True where the test restarts the API server on purpose
    others_cordon: bool = False  # True where people cordon nodes during the rollout
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # 410s: events may have been missed
    reconnects: collections.Counter[str] = field(default_factory=collections.Counter)
    samples: int = 0  # events checked
    peak_unavailable: int = 0
    baseline: set[str] = field(default_factory=set)
    events: collections.Counter[str] = field(default_factory=collections.Counter)
    _node: dict[str, _NodeState] = field(default_factory=dict)
    _pods: dict[str, _PodState] = field(default_factory=dict)
    _plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    _calls: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    _seen: dict[str, int] = field(default_factory=dict)  # kind -> last resourceVersion handled
    _heard: dict[str, float] = field(default_factory=dict)  # kind -> when its last event came
    _samples: list[tuple[float, float, int]] = field(default_factory=list)  # sent, answered, rv
    _journal_read: int = 0  # bytes of the journal checked
    _external_at: float = 0.0
    _entered_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _watches: list[watch.Watch] = field(default_factory=list)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> InvariantMonitor:
        self._entered_at = time.monotonic()
        sources: list[
            tuple[str, Callable[[client.ApiClient], Callable[..., Any]], Callable[[str, Any], None]]
        ] = [
            ("Node", lambda api: client.CoreV1Api(api).list_node, self._on_node),
            (
                "Pod",
                lambda api: client.CoreV1Api(api).list_pod_for_all_namespaces,
                self._on_pod,
            ),
            (
                "PodDisruptionBudget",
                lambda api: client.PolicyV1Api(api).list_pod_disruption_budget_for_all_namespaces,
                self._on_pdb,
            ),
            ("UpgradePlan", _plans_lister, self._on_plan),
        ]
        ready: list[threading.Event] = []
        for kind, lister_of, handle in sources:
            started = threading.Event()
            ready.append(started)
            thread = threading.Thread(
                target=self._follow, args=(kind, lister_of, handle, started), daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if self.journal is not None:
            for target in (self._sample, self._tail):
                thread = threading.Thread(target=target, daemon=True)
                thread.start()
                self._threads.append(thread)
        for started in ready:
            if not started.wait(30):
                raise AssertionError(f"the invariant monitor could not start: {self.errors}")
        with self._lock:
            self.baseline = {n for n, s in self._node.items() if n in self.nodes and s.out}
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(SAMPLE_S * 2)  # let the last journal lines arrive
        deadline = time.monotonic() + 2 * PLACE_S
        while self.journal is not None and time.monotonic() < deadline and not self.errors:
            written = self.journal.stat().st_size if self.journal.exists() else 0
            if self._journal_read >= written:
                break
            time.sleep(0.1)  # every call served is checked before the monitor stops
        self._stop.set()
        for stream in self._watches:
            stream.stop()
            _unblock(stream)
        for thread in self._threads:
            # every thread ends here: none lives on into the next test with its connections
            thread.join(timeout=10)
        with self._lock:
            self._check_end()
        if self.errors:
            raise AssertionError(f"the invariant monitor stopped watching: {self.errors}")
        if self.gaps and not self.gaps_allowed:
            raise AssertionError(f"the invariant monitor missed events: {self.gaps}")

    # -- watches -----------------------------------------------------------------------------

    def _follow(
        self,
        kind: str,
        lister_of: Callable[[client.ApiClient], Callable[..., Any]],
        handle: Callable[[str, Any], None],
        started: threading.Event,
    ) -> None:
        """List, then watch from the list's version, resuming from the last event's.

        A dropped connection (an API server restart) is resumed from the last version: nothing
        is missed. A 410 (the version is no longer served) is a gap: recorded in ``gaps``, then
        the state is listed afresh and checked. Unable to watch for a minute, the monitor dies.

        Each watch has a client of its own, closed when the thread ends: a stream cut by an
        API server restart never hands a half-used connection back to the test's client, and
        none of its connections outlives the monitor.
        """
        with client.ApiClient(self.kube.configuration) as api:
            self._watch(kind, lister_of(api), handle, started)

    def _watch(
        self,
        kind: str,
        lister: Callable[..., Any],
        handle: Callable[[str, Any], None],
        started: threading.Event,
    ) -> None:
        version: str | None = None
        failing_since: float | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist(kind, lister, handle)
                    started.set()
                stream = watch.Watch()
                self._watches.append(stream)
                for event in stream.stream(
                    lister,
                    resource_version=version,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                ):
                    failing_since = None
                    if self._stop.is_set():
                        return
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        raise _GoneError(str(obj))
                    version = _version(obj) or version
                    with self._lock:
                        self._seen[kind] = int(version)
                        self._heard[kind] = time.monotonic()
                        if event["type"] == "BOOKMARK":
                            continue
                        self.events[kind] += 1
                        handle(event["type"], obj)
            except Exception as error:
                if self._stop.is_set():
                    return
                if isinstance(error, _GoneError) or getattr(error, "status", None) == 410:
                    self.gaps.append(f"{time.time():.2f} {kind} watch: 410 at {version}")
                    version = None  # list afresh
                    continue
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > 60:
                    self.errors.append(f"{kind} watch died: {type(error).__name__}: {error}")
                    started.set()
                    return
                self.reconnects[kind] += 1
                time.sleep(0.5)

    def _relist(
        self, kind: str, lister: Callable[..., Any], handle: Callable[[str, Any], None]
    ) -> str:
        listed = lister()
        if isinstance(listed, dict):
            items, version = listed["items"], listed["metadata"]["resourceVersion"]
        else:
            items, version = listed.items, listed.metadata.resource_version
        with self._lock:
            for item in items:
                handle("ADDED", item)
            self._seen[kind] = int(version)
            self._heard[kind] = time.monotonic()
        return str(version)

    def _sample(self) -> None:
        """Reads the cluster's current resourceVersion every ``SAMPLE_S`` (a consistent list).

        With a client of its own, opened and closed in this thread after its last request, and
        a deadline on every request: a read in flight when the monitor stops (an API server
        waiting on a restarting etcd) neither outlives the monitor for long nor leaves its
        connection to the collector, which found one open in a later test.
        """
        with client.ApiClient(self.kube.configuration) as api:
            core = client.CoreV1Api(api)
            while not self._stop.wait(SAMPLE_S):
                sent = time.time()
                try:
                    listed = core.list_namespace(limit=1, _request_timeout=SAMPLE_TIMEOUT_S)
                except Exception:  # the API server restarting: the windows just grow
                    continue
                with self._lock:
                    self._samples.append((sent, time.time(), int(listed.metadata.resource_version)))

    def _tail(self) -> None:
        assert self.journal is not None
        while not self._stop.is_set():
            time.sleep(0.05)
            if not self.journal.exists():
                continue
            with self.journal.open() as lines:
                lines.seek(self._journal_read)
                for line in lines:
                    if not line.endswith("\n"):
                        break
                    call = json.loads(line)
                    if call["code"] == "OK" and call["method"] in (*INSTALLS, REBOOT):
                        window = self._place(float(call["at"]))
                        if window is None:
                            return  # stopping
                        with self._lock:
                            self._on_call(call, *window)
                    self._journal_read += len(line.encode())

    def _place(self, at: float) -> tuple[int, int | None] | None:
        """The resourceVersions around time ``at``, once the Node and Pod watches pass the end.

        The start is the last sample answered before ``at`` (0 if none); the end the first
        sample sent after it (None if none came within ``PLACE_S``: the window stays open).
        None when the monitor is stopping.
        """
        deadline = time.monotonic() + PLACE_S
        while True:
            with self._lock:
                low = max((rv for _, answered, rv in self._samples if answered <= at), default=0)
                high = min((rv for sent, _, rv in self._samples if sent >= at), default=None)
                caught_up = high is not None and all(
                    self._seen.get(kind, 0) >= high
                    or time.monotonic() - self._heard.get(kind, 0.0) > QUIET_S
                    for kind in ("Node", "Pod")
                )
            if caught_up or time.monotonic() > deadline:
                return low, high
            if self._stop.wait(0.05):
                return None

    # -- events ------------------------------------------------------------------------------

    def _on_node(self, kind: str, node: Any) -> None:
        name = node.metadata.name
        if kind == "DELETED":
            self._node.pop(name, None)
            return
        before = self._node.get(name) or _NodeState()
        labels = node.metadata.labels or {}
        after = _NodeState(
            unschedulable=bool(node.spec.unschedulable),
            ready=any(
                c.type == "Ready" and c.status == "True" for c in node.status.conditions or []
            ),
            mark=(node.metadata.annotations or {}).get(MARK),
            control_plane=CONTROL_PLANE in labels,
            os_image=node.status.node_info.os_image if node.status.node_info else "",
            cordons=before.cordons,
        )
        now = time.time()
        if after.unschedulable != before.unschedulable or not before.cordons:
            after.cordons.append((int(_version(node) or 0), after.unschedulable))
        self._node[name] = after
        self.samples += 1
        if name not in self.nodes:
            return
        ours = after.mark is not None and after.mark != before.mark
        if not ours and (after.out != before.out) and not (after.mark or before.mark):
            self._external_at = now  # a person, or a kubelet: not a plan's doing
        if ours and after.mark is not None:
            self._on_cordon(name, after.mark, was_out=before.out)
        self._check_budget()

    def _on_cordon(self, name: str, plan: str, *, was_out: bool) -> None:
        me = self._node[name]
        others_out = sorted(n for n in self.nodes if n != name and self._out(n))
        recent = time.time() - self._external_at < EXTERNAL_GRACE_S  # not yet seen by the plan
        if not was_out and not recent and len(others_out) + 1 > self.max_unavailable:
            self._violate(
                f"{plan} cordoned {name} with {others_out} already out of service "
                f"(maxUnavailable {self.max_unavailable})"
            )
        control = [n for n in self.nodes if n in self._node and self._node[n].control_plane]
        if me.control_plane:
            busy = [n for n in control if n != name and self._out(n)]
            if busy:
                self._violate(f"control plane {name} cordoned while {busy} out")
        elif control and self.target is not None:
            failed = self._failed(plan)
            behind = [
                n for n in control if self.target not in self._node[n].os_image and n not in failed
            ]
            if behind:
                self._violate(f"worker {name} cordoned before control planes {behind}")

    def _check_budget(self) -> None:
        out = [n for n in self.nodes if self._out(n)]
        extra = set(out) - self.baseline
        self.peak_unavailable = max(self.peak_unavailable, len(extra))
        marked = sorted(n for n in self.nodes if n in self._node and self._node[n].mark)
        if len(marked) > self.max_unavailable:
            self._violate(f"{len(marked)} nodes carry a plan's cordon: {marked}")
        if len(extra) > self.max_unavailable and not self.others_cordon:
            self._violate(f"{len(extra)} nodes out of service: {sorted(extra)}")
        control = [n for n in out if self._node[n].control_plane]
        if len(control) > 1:
            self._violate(f"control-plane nodes out together: {sorted(control)}")

    def _on_pod(self, kind: str, pod: Any) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        version = int(_version(pod) or 0)
        known = self._pods.get(key)
        gone = kind == "DELETED" or pod.metadata.deletion_timestamp is not None
        gone = gone or pod.status.phase in ("Succeeded", "Failed")
        if known is None or known.node != pod.spec.node_name:
            owners = pod.metadata.owner_references or []
            mirror = "kubernetes.io/config.mirror" in (pod.metadata.annotations or {})
            must_leave = not mirror and not any(o.kind == "DaemonSet" for o in owners)
            known = _PodState(pod.spec.node_name, must_leave, since=version)
            self._pods[key] = known
        if gone and known.gone is None:
            known.gone = version
        self.samples += 1

    def _on_pdb(self, kind: str, pdb: Any) -> None:
        self.samples += 1
        status = pdb.status
        if kind == "DELETED" or status is None:
            return
        if self.namespaces is not None and pdb.metadata.namespace not in self.namespaces:
            return
        current = status.observed_generation == pdb.metadata.generation
        if (
            current
            and status.current_healthy < status.desired_healthy
            and not self._namespace_going(pdb.metadata.namespace)
        ):
            self._violate(
                f"PDB {pdb.metadata.namespace}/{pdb.metadata.name}: {status.current_healthy} "
                f"healthy < {status.desired_healthy} desired; {self._unhealthy(pdb)}"
            )

    def _on_plan(self, kind: str, plan: Any) -> None:
        self.samples += 1
        name = plan["metadata"]["name"]
        if kind == "DELETED":
            self._plans.pop(name, None)
        else:
            self._plans[name] = plan

    def _on_call(self, call: dict[str, Any], low: int, high: int | None) -> None:
        """Checks a call served between resourceVersions ``low`` and ``high`` (None: open)."""
        node, at = call["node"], float(call["at"])
        what = "install" if call["method"] in INSTALLS else "reboot"
        self.samples += 1
        if node not in self.nodes:
            return
        self._calls[(node, what)] += 1
        bound = self.installs_per_node if what == "install" else self.reboots_per_node
        if self._calls[(node, what)] > bound:
            self._violate(f"{node}: {self._calls[(node, what)]} {what} calls")
        state = self._node.get(node)
        if state is None or not _cordoned_within(state.cordons, low, high):
            self._violate(
                f"{what} of {node} at {at:.2f} (resourceVersion {low}..{high}), "
                "which was not cordoned"
            )
        if self.drained:
            # an open window (no sample after the call) still sees a pod that never left
            left = [
                key
                for key, pod in self._pods.items()
                if pod.node == node
                and pod.must_leave
                and pod.since <= low
                and (pod.gone is None or (high is not None and pod.gone > high))
            ]
            if left:
                self._violate(f"{what} of {node} with pods still on it: {left}")

    # -- helpers -----------------------------------------------------------------------------

    def _violate(self, what: str) -> None:
        """Record a breach with when it was seen, counted from the monitor's start."""
        self.violations.append(f"+{time.monotonic() - self._entered_at:.1f}s {what}")

    def calls_checked(self, what: str) -> int:
        """How many of the simulator's calls (``install`` or ``reboot``) have been checked."""
        with self._lock:
            return sum(n for (_, kind), n in self._calls.items() if kind == what)

    def _out(self, name: str) -> bool:
        state = self._node.get(name)
        return state is not None and state.out

    def _failed(self, plan: str) -> set[str]:
        body = self._plans.get(plan)
        if body is None:
            return set()
        records = plan_records(client.CoreV1Api(self.kube), body)
        return {n for n, r in records.items() if r.get("phase") in ("Failed", "RolledBack")}

    def _check_end(self) -> None:
        for name in self.nodes:
            state = self._node.get(name)
            if state is None or not state.mark:
                continue
            plan = self._plans.get(state.mark)
            if plan is not None and name in ((plan.get("status") or {}).get("inFlight") or []):
                continue  # still in its ledger: the rollout is not over for it
            if name not in self._failed(state.mark):
                self._violate(f"{name} left cordoned by {state.mark}")

    def _namespace_going(self, namespace: str) -> bool:
        """An earlier test's namespace being deleted: its pods go, and its PDBs fall short."""
        try:
            found = client.CoreV1Api(self.kube).read_namespace(namespace)
        except client.ApiException as error:
            return error.status == 404
        return found.metadata.deletion_timestamp is not None

    def _unhealthy(self, pdb: Any) -> str:
        selector = pdb.spec.selector.match_labels or {}
        labels = ",".join(f"{k}={v}" for k, v in selector.items())
        notes = []
        with client.ApiClient(self.kube.configuration) as api:  # this thread's, closed here
            listed = client.CoreV1Api(api).list_namespaced_pod(
                pdb.metadata.namespace, label_selector=labels
            )
        for pod in listed.items:
            ready = any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )
            if ready and pod.metadata.deletion_timestamp is None:
                continue
            node = self._node.get(pod.spec.node_name or "")
            where = (
                f"{pod.spec.node_name} (ready={node.ready}, unschedulable={node.unschedulable})"
                if node
                else "unscheduled"
            )
            history = ", ".join(
                f"{c.type}={c.status}@{c.last_transition_time:%H:%M:%S}"
                for c in pod.status.conditions or []
                if c.last_transition_time is not None
            )
            created = f"{pod.metadata.creation_timestamp:%H:%M:%S}"
            notes.append(f"{pod.metadata.name} on {where}; created {created}; {history}")
        return "unhealthy: " + (", ".join(notes) or "none now")


class _GoneError(Exception):
    """The watch answered 410: the version asked for is no longer served."""


def _plans_lister(api: client.ApiClient) -> Callable[..., Any]:
    custom = client.CustomObjectsApi(api)

    def plans(**kwargs: Any) -> Any:
        return custom.list_cluster_custom_object("nodeos.dev", "v1alpha1", "upgradeplans", **kwargs)

    return plans


def _unblock(stream: watch.Watch) -> None:
    """Ends a watch's blocking read from outside its thread: its socket is shut for reading."""
    response = getattr(stream, "_resp", None)
    if response is not None:
        with contextlib.suppress(Exception):  # released meanwhile, or never a socket
            response.shutdown()


def _version(obj: Any) -> str | None:
    if isinstance(obj, dict):
        return (obj.get("metadata") or {}).get("resourceVersion")
    metadata = getattr(obj, "metadata", None)
    return getattr(metadata, "resource_version", None) if metadata is not None else None


def _cordoned_within(transitions: list[tuple[int, bool]], low: int, high: int | None) -> bool:
    """Whether the node was cordoned at some point between resourceVersions ``low`` and ``high``.

    ``transitions`` are in resourceVersion order; ``high`` None leaves the window open.
    """
    state = False
    for version, cordoned in transitions:
        if version <= low:
            state = cordoned
        elif high is None or version <= high:
            state = state or cordoned
    return state
