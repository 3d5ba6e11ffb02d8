"""What gates check, for the end-to-end tests: Probe objects and a real Prometheus.

``probes`` installs a CRD (``probes.gates.example.com``, kind Probe, ``spec.state``) standing
for what users gate on (a CephCluster, a database operator's status), for CEL health checks.
``GateTarget`` serves ``/metrics`` with one gauge, ``nodeos_test_gate``, that a test flips;
``prometheus_process`` runs Prometheus (built from its Go module like the sandbox) scraping it
and any other targets every second, with a rule file, and waits until it is ready.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from helpers.e2e import wait_for
from nodeos.sandbox import processes

PROBE_GROUP, PROBE_PLURAL = "gates.example.com", "probes"
PROBE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PROBE_PLURAL}.{PROBE_GROUP}"},
    "spec": {
        "group": PROBE_GROUP,
        "scope": "Namespaced",
        "names": {"plural": PROBE_PLURAL, "singular": "probe", "kind": "Probe"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"state": {"type": "string"}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


@contextmanager
def probes(kube: client.ApiClient, *names: str) -> Iterator[client.CustomObjectsApi]:
    """The Probe CRD with probes ``names`` in ``default``, all in state ``ok``; removed after."""
    ext = client.ApiextensionsV1Api(kube)
    ext.create_custom_resource_definition(PROBE_CRD)
    custom = client.CustomObjectsApi(kube)

    def served() -> bool:
        try:
            custom.list_namespaced_custom_object(PROBE_GROUP, "v1", "default", PROBE_PLURAL)
        except client.ApiException:
            return False
        return True

    try:
        wait_for("the Probe CRD to be served", served)
        for name in names:
            custom.create_namespaced_custom_object(
                PROBE_GROUP,
                "v1",
                "default",
                PROBE_PLURAL,
                {
                    "apiVersion": f"{PROBE_GROUP}/v1",
                    "kind": "Probe",
                    "metadata": {"name": name},
                    "spec": {"state": "ok"},
                },
            )
        yield custom
    finally:
        ext.delete_custom_resource_definition(f"{PROBE_PLURAL}.{PROBE_GROUP}")


def set_probe(custom: client.CustomObjectsApi, name: str, state: str) -> None:
    custom.patch_namespaced_custom_object(
        PROBE_GROUP, "v1", "default", PROBE_PLURAL, name, {"spec": {"state": state}}
    )


class GateTarget:
    """An HTTP scrape target whose one gauge the test sets (0 or 1)."""

    def __init__(self) -> None:
        self.value = 0
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = f"# TYPE nodeos_test_gate gauge\nnodeos_test_gate {target.value}\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Prometheus:
    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def firing(self) -> set[str]:
        return {
            a["labels"]["alertname"] for a in self.api("alerts")["alerts"] if a["state"] == "firing"
        }


@contextmanager
def prometheus_process(
    binaries: dict[str, Path], workdir: Path, targets: dict[str, str], rules: dict[str, Any]
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (job name -> host:port) every second, with ``rules``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "rules.yaml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [address]}]}
            for job, address in targets.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = processes.free_port()
    log = workdir / "prometheus.log"
    child = processes.start(
        "prometheus",
        [
            str(binaries["prometheus"]),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", log)
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as reply:
                    return reply.status == 200
            except OSError:
                return False

        wait_for("Prometheus to be ready", ready, 60)
        yield server
    finally:
        processes.stop(child)
