"""What users install: the chart, the rendered manifests, dashboards, Argo CD checks, the image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

from nodeos import codegen

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/nodeos"

# Every permission the operator uses, and why (docs/operating.md lists the same).
EXPECTED_CLUSTER_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {
        "apiGroups": ["nodeos.dev"],
        "resources": ["upgradeplans"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": ["nodeos.dev"], "resources": ["upgradeplans/status"], "verbs": ["patch"]},
    {
        "apiGroups": ["nodeos.dev"],
        "resources": ["nodeosconfigs"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": ["nodeos.dev"], "resources": ["nodeosconfigs/status"], "verbs": ["patch"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
]


def helm(binaries: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries["helm"]), *args], capture_output=True, text=True, check=False, timeout=60
    )


def rendered(binaries: dict[str, Path], *sets: str) -> list[dict[str, Any]]:
    args = ["template", "nodeos", str(CHART), "--namespace", "nodeos-system"]
    for value in sets:
        args += ["--set", value]
    result = helm(binaries, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_chart_lints_clean(sandbox_binaries: dict[str, Path]) -> None:
    result = helm(sandbox_binaries, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_manifests_match_the_chart(sandbox_binaries: dict[str, Path]) -> None:
    assert (REPO / codegen.RENDERED).read_text() == codegen.render_chart(REPO), (
        "deploy/nodeos.yaml is stale: run `make generate`"
    )


def test_optional_objects_render_when_enabled(sandbox_binaries: dict[str, Path]) -> None:
    kinds = [
        d["kind"]
        for d in rendered(
            sandbox_binaries,
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "networkPolicy.enabled=true",
            "talosServiceAccount.create=true",
        )
    ]
    for kind in ("ServiceMonitor", "PrometheusRule", "NetworkPolicy", "ServiceAccount"):
        assert kind in kinds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("replicaCount=-1", "at '/replicaCount': minimum: got -1, want 0"),
        ("osApi.endpoints=Everywhere", "value must be one of 'ControlPlane', 'Node'"),
        ("osApi.port=70000", "at '/osApi/port': maximum: got 70,000, want 65,535"),
        ("logLevel=LOUD", "at '/logLevel'"),
        ("metrics.serviceMonitor.interval=soon", "at '/metrics/serviceMonitor/interval'"),
        ("replicas=3", "additional properties 'replicas' not allowed"),
    ],
)
def test_bad_values_are_refused_naming_the_value(
    sandbox_binaries: dict[str, Path], value: str, message: str
) -> None:
    result = helm(sandbox_binaries, "template", "nodeos", str(CHART), "--set", value)
    assert result.returncode != 0
    assert message in result.stderr


def test_cluster_role_is_exactly_what_the_operator_uses(sandbox_binaries: dict[str, Path]) -> None:
    docs = rendered(sandbox_binaries)
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"] == EXPECTED_CLUSTER_RULES
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    assert roles["nodeos-leader"]["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    # Secrets: get, in the release namespace only (no cluster-wide read of every Secret)
    secrets = roles["nodeos-secrets"]
    assert secrets["metadata"]["namespace"] == "nodeos-system"
    assert secrets["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert len(roles) == 2
    text = json.dumps([role, *roles.values()])
    assert "*" not in text, "no wildcards"


def test_secret_access_follows_the_namespaces_listed(sandbox_binaries: dict[str, Path]) -> None:
    docs = rendered(sandbox_binaries, "osApi.secretNamespaces={team-a,team-b}")
    where = sorted(
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] in ("Role", "RoleBinding") and d["metadata"]["name"] == "nodeos-secrets"
    )
    assert where == ["team-a", "team-a", "team-b", "team-b"]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert (
        "--secret-namespaces=team-a,team-b"
        in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_deployment_is_locked_down(sandbox_binaries: dict[str, Path]) -> None:
    deployment = next(d for d in rendered(sandbox_binaries) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "podAntiAffinity" in pod["affinity"]
    env = {e["name"] for e in container["env"]}
    assert {"POD_NAME", "POD_NAMESPACE", "NODE_NAME"} <= env


def test_every_value_is_documented_in_the_chart_readme() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()

    def keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
        found = []
        for key, value in tree.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and key not in ("resources",):
                found += keys(value, f"{path}.")
            else:
                found.append(path)
        return found

    missing = [key for key in keys(values) if f"`{key}`" not in readme]
    assert missing == []


def test_dashboard_queries_only_metrics_the_operator_exports() -> None:
    from prometheus_client import REGISTRY

    import nodeos.adapters.kube
    import nodeos.engine.metrics
    import nodeos.operator  # noqa: F401

    exported = set()
    for collector in list(REGISTRY._collector_to_names):
        exported.update(REGISTRY._collector_to_names[collector])
    dashboard = json.loads((REPO / "integrations/grafana/nodeos-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bnodeos_[a-z_]+", e)}
    assert used, "the dashboard queries nodeos metrics"
    assert used <= exported, used - exported
    rules = (CHART / "templates/prometheusrule.yaml").read_text()
    assert set(re.findall(r"\bnodeos_[a-z_]+", rules)) <= exported


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        ("upgradeplan", None, "Progressing"),
        ("upgradeplan", {"phase": "Progressing"}, "Progressing"),
        ("upgradeplan", {"phase": "Completed", "counts": {"failed": 0}}, "Healthy"),
        ("upgradeplan", {"phase": "Completed", "counts": {"failed": 2}}, "Degraded"),
        ("upgradeplan", {"phase": "Failed", "message": "budget spent"}, "Degraded"),
        ("upgradeplan", {"phase": "Paused"}, "Suspended"),
        ("upgradeplan", {"phase": "Completed", "observedGeneration": 1}, "Progressing"),
        ("nodeosconfig", None, "Progressing"),
        (
            "nodeosconfig",
            {"conditions": [{"type": "Ready", "status": "True", "message": "ok"}]},
            "Healthy",
        ),
        (
            "nodeosconfig",
            {"conditions": [{"type": "Degraded", "status": "True", "message": "x"}]},
            "Degraded",
        ),
        # credentials that do not work do not fix themselves
        (
            "nodeosconfig",
            {"conditions": [{"type": "Ready", "status": "False", "reason": "CredentialsUnusable"}]},
            "Degraded",
        ),
        (
            "nodeosconfig",
            {"conditions": [{"type": "Ready", "status": "False", "reason": "NotInSync"}]},
            "Progressing",
        ),
        # a spec the operator has not seen yet says nothing about health
        (
            "nodeosconfig",
            {
                "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "InSync"}],
            },
            "Progressing",
        ),
        # waits only a person can end
        (
            "upgradeplan",
            {
                "phase": "Waiting",
                "conditions": [
                    {"type": "Waiting", "status": "True", "reason": "NoNodesSelected"},
                    {"type": "Degraded", "status": "True", "reason": "NoNodesSelected"},
                ],
            },
            "Degraded",
        ),
        (
            "upgradeplan",
            {
                "phase": "Waiting",
                "conditions": [{"type": "Degraded", "status": "True", "reason": "InvalidSpec"}],
            },
            "Degraded",
        ),
        (
            "upgradeplan",
            {
                "phase": "Waiting",
                "conditions": [
                    {"type": "Waiting", "status": "True", "reason": "OutsideMaintenanceWindow"},
                    {"type": "Degraded", "status": "False", "reason": "NoFailures"},
                ],
            },
            "Progressing",
        ),
        (
            "upgradeplan",
            {
                "phase": "Waiting",
                "conditions": [
                    {"type": "Waiting", "status": "True", "reason": "CanaryAwaitingApproval"}
                ],
            },
            "Suspended",
        ),
    ],
)
def test_argocd_health_checks(kind: str, status: dict[str, Any] | None, expected: str) -> None:
    script = (REPO / f"integrations/argocd/health-{kind}.lua").read_text()
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    obj: dict[str, Any] = {"metadata": {"generation": 2}}
    if status is not None:
        obj["status"] = {"observedGeneration": 2, **status}
    lua_obj = _to_lua(runtime, obj)
    result = runtime.eval(f"function(obj) {script} end")(lua_obj)
    assert result["status"] == expected


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def test_dockerfile_passes_hadolint_with_the_oci_labels_required() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    labels = [
        f"--require-label=org.opencontainers.image.{name}:{kind}"
        for name, kind in (
            ("title", "text"),
            ("description", "text"),
            ("version", "text"),
            ("revision", "text"),
            ("created", "text"),
            ("licenses", "spdx"),
        )
    ]
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", *labels, str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _locked(path: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\;]+)", path.read_text(), flags=re.MULTILINE)
    return {_normal(name): version for name, version in pins}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_lock_pins_what_pyproject_pins_each_with_hashes() -> None:
    """requirements/runtime.txt is pyproject.toml's dependencies resolved (`make lock`)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    locked = _locked(REPO / "requirements/runtime.txt")
    for requirement in project["project"]["dependencies"]:
        name = _normal(re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0])
        assert name in locked, f"{name} is not in requirements/runtime.txt: run make lock"
        if "==" in requirement:
            pinned = requirement.split("==", 1)[1].strip()
            assert locked[name] == pinned, f"{name}: pyproject {pinned}, lock {locked[name]}"
    for lock in ("runtime.txt", "build.txt"):
        text = (REPO / "requirements" / lock).read_text()
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        for entry in entries:
            assert "--hash=sha256:" in entry, f"{lock}: no hash for {entry.splitlines()[0]}"
    build = _locked(REPO / "requirements/build.txt")
    required = project["build-system"]["requires"]
    assert required == ["setuptools>=77"], required
    assert tuple(int(part) for part in build["setuptools"].split(".")[:1]) >= (77,)


def test_the_build_context_is_what_the_dockerfile_copies() -> None:
    """An allow-list: no virtualenv, caches or tests go to the builder."""
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignored
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", (REPO / "Dockerfile").read_text(), re.M))
    sources = {source.rstrip("/") for line in copied for source in line.split()}
    assert sources == allowed, (sources, allowed)


def test_the_wheel_builds_and_its_entry_point_runs(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("nodeos-*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=120,
    )
    assert (target / "nodeos/osapi/v1/machine_pb2.py").exists()
    assert (target / "nodeos/sandbox/gomod/kubernetes/go.sum").exists()
    ran = subprocess.run(
        [str(target / "bin/nodeos"), "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "nodeos 0.1.0"


def _lua(script: str, obj: dict[str, Any]) -> Any:
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    return runtime.eval(f"function(obj) {script} end")(_to_lua(runtime, obj))


def _table(value: Any) -> Any:
    if hasattr(value, "items"):
        return {k: _table(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("spec", "status", "enabled"),
    [
        ({}, {"phase": "Progressing"}, {"pause"}),
        ({"paused": True}, {"phase": "Paused"}, {"resume"}),
        ({}, {"phase": "Failed"}, {"pause", "retry"}),
        (
            {},
            {
                "phase": "Waiting",
                "conditions": [
                    {"type": "Waiting", "status": "True", "reason": "CanaryAwaitingApproval"}
                ],
            },
            {"pause", "approve"},
        ),
    ],
)
def test_argocd_offers_the_plan_actions_that_apply(
    spec: dict[str, Any], status: dict[str, Any], enabled: set[str]
) -> None:
    script = (REPO / "integrations/argocd/actions-upgradeplan/discovery.lua").read_text()
    actions = _table(_lua(script, {"metadata": {}, "spec": spec, "status": status}))
    assert set(actions) == {"pause", "resume", "retry", "approve"}
    assert {name for name, a in actions.items() if not a["disabled"]} == enabled


@pytest.mark.parametrize(
    ("action", "field", "value"),
    [
        ("pause", ("spec", "paused"), True),
        ("resume", ("spec", "paused"), False),
        ("retry", ("metadata", "annotations", "nodeos.dev/retry"), "true"),
        ("approve", ("metadata", "annotations", "nodeos.dev/approve"), "true"),
    ],
)
def test_argocd_plan_actions_set_what_the_operator_reads(
    action: str, field: tuple[str, ...], value: Any
) -> None:
    script = (REPO / f"integrations/argocd/actions-upgradeplan/{action}.lua").read_text()
    result: Any = _table(_lua(script, {"metadata": {"name": "p"}, "spec": {"paused": False}}))
    for key in field:
        result = result[key]
    assert result == value


def test_the_chart_renders_as_a_subchart_with_global_values(
    sandbox_binaries: dict[str, Path], tmp_path: Path
) -> None:
    parent = tmp_path / "platform"
    (parent / "charts").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts/nodeos")
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: platform\nversion: 1.0.0\n"
        "dependencies:\n  - name: nodeos\n    version: '>=0.0.0'\n"
    )
    (parent / "values.yaml").write_text(
        "global:\n  imageRegistry: registry.example.com\n"
        "nodeos:\n  fullnameOverride: fleet-upgrades\n  replicaCount: 1\n"
    )
    result = helm(sandbox_binaries, "template", "platform", str(parent), "-n", "platform")
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["metadata"]["name"] == "fleet-upgrades"
    assert deployment["spec"]["replicas"] == 1
    assert helm(sandbox_binaries, "lint", "--strict", str(parent)).returncode == 0


def test_name_overrides_name_every_object(sandbox_binaries: dict[str, Path]) -> None:
    docs = rendered(sandbox_binaries, "nameOverride=osup")
    names = {d["metadata"]["name"] for d in docs if d["kind"] in ("Deployment", "ClusterRole")}
    assert names == {"nodeos-osup"}
    labels = next(d for d in docs if d["kind"] == "Deployment")["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "osup"


def test_a_users_affinity_is_merged_into_the_default_spread(
    sandbox_binaries: dict[str, Path],
) -> None:
    args = ["template", "nodeos", str(CHART), "--show-only", "templates/deployment.yaml"]
    args += [
        "--set",
        "affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        "[0].topologyKey=topology.kubernetes.io/zone",
    ]
    args += [
        "--set",
        "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
    ]
    result = helm(sandbox_binaries, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("podAntiAffinity:") == 1, "one key, not two"
    affinity = yaml.safe_load(result.stdout)["spec"]["template"]["spec"]["affinity"]
    anti = affinity["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == (
        "topology.kubernetes.io/zone"
    )
    assert "nodeAffinity" in affinity


def test_each_override_renders_where_it_belongs(sandbox_binaries: dict[str, Path]) -> None:
    digest = "sha256:" + "a" * 64
    docs = rendered(
        sandbox_binaries,
        f"image.digest={digest}",
        "extraEnv[0].name=HTTPS_PROXY",
        "extraEnv[0].value=http://proxy:3128",
        "extraVolumes[0].name=ca",
        "extraVolumes[0].configMap.name=corp-ca",
        "extraVolumeMounts[0].name=ca",
        "extraVolumeMounts[0].mountPath=/etc/ssl/corp",
        "livenessProbe.periodSeconds=30",
        "podSecurityContext.fsGroupChangePolicy=OnRootMismatch",
        "securityContext.runAsNonRoot=true",
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.namespace=monitoring",
        "metrics.serviceMonitor.scrapeTimeout=10s",
        "metrics.serviceMonitor.relabelings[0].action=labeldrop",
        "metrics.serviceMonitor.relabelings[0].regex=pod",
        "metrics.dashboard.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.namespace=monitoring",
        "metrics.prometheusRule.annotations.owner=platform",
        "metrics.prometheusRule.additionalRuleLabels.team=platform",
        "metrics.prometheusRule.additionalRuleLabels.severity=page",
        "metrics.prometheusRule.disabled[0]=NodeosNoLeader",
        "metrics.prometheusRule.extraRules[0].alert=MyNodeosAlert",
        "metrics.prometheusRule.extraRules[0].expr=vector(1)",
    )
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == f"nodeos@{digest}"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    assert {"name": "ca", "configMap": {"name": "corp-ca"}} in pod["volumes"]
    assert {"name": "ca", "mountPath": "/etc/ssl/corp"} in container["volumeMounts"]
    assert container["livenessProbe"]["periodSeconds"] == 30
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert pod["securityContext"]["runAsUser"] == 65532, "merged, not replaced"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["nodeos-system"]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["scrapeTimeout"] == "10s"
    assert endpoint["relabelings"] == [{"action": "labeldrop", "regex": "pod"}]
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["annotations"] == {"owner": "platform"}
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert "NodeosNoLeader" not in alerts
    assert alerts["MyNodeosAlert"]["expr"] == "vector(1)"
    assert alerts["NodeosPlanFailed"]["labels"] == {"severity": "critical", "team": "platform"}
    assert alerts["NodeosRolloutStuck"]["labels"] == {"severity": "warning", "team": "platform"}
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["nodeos.json"]) == json.loads(
        (REPO / "integrations/grafana/nodeos-dashboard.json").read_text()
    )
