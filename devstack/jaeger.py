"""Jaeger v2 (all-in-one, in-memory) on loopback: the real trace backend the tests export to.

Built once by ``scripts/install-jaeger`` from the Go module proxy. OTLP/HTTP in, the query API
(``/api/traces/<id>``) out, every port on 127.0.0.1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.ports import free_tcp_port
from devstack.probe import http_ok
from devstack.process import LoopbackServer, ServerProcess, cache_dir, find_binary

JAEGER_VERSION = "v1.76.0"
INSTALL_HINT = "scripts/install-jaeger   (needs Go; builds Jaeger " + JAEGER_VERSION + ")"


def find_jaeger() -> str:
    # Only the pinned build: no jaeger from PATH.
    cached = cache_dir() / "bin" / f"jaeger-{JAEGER_VERSION}"
    return find_binary("jaeger", INSTALL_HINT, cached, search_path=False)


@dataclass
class JaegerServer(LoopbackServer):
    data_dir: Path
    name: str = "jaeger"
    otlp_http_port: int = field(default_factory=free_tcp_port)
    query_port: int = field(default_factory=free_tcp_port)
    query_grpc_port: int = field(default_factory=free_tcp_port)
    health_port: int = field(default_factory=free_tcp_port)
    process: ServerProcess | None = None

    @property
    def otlp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def config_text(self) -> str:
        return f"""
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{self.query_port}
    grpc:
      endpoint: 127.0.0.1:{self.query_grpc_port}
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{self.health_port}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{self.otlp_http_port}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""

    def start(self, timeout: float = 30.0) -> None:
        binary = find_jaeger()
        config = self.write_config(f"{self.name}.yaml", self.config_text())
        self.launch([binary, "--config", str(config)], self._ready, timeout)

    def _ready(self) -> bool:
        return http_ok(f"{self.query_url}/api/services")

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The trace's spans, each with its process's ``serviceName`` folded in ([] if not found)."""
        try:
            with urllib.request.urlopen(f"{self.query_url}/api/traces/{trace_id}", timeout=2) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return []
            raise
        spans: list[dict[str, Any]] = []
        for item in body.get("data") or []:
            processes = item.get("processes", {})
            for span in item.get("spans", []):
                span["serviceName"] = processes.get(span.get("processID"), {}).get("serviceName")
                spans.append(span)
        return spans
