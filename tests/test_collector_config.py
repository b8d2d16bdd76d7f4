"""collector-config/: every YAML parses; every collector pipeline references only defined
components, starts with memory_limiter and batches after it; the ports and endpoints agree
with the compose stack (compose.yaml) and with what docs/opentelemetry.md tells users to set."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT

CONFIG_DIR = ROOT / "collector-config"
DOCS = [ROOT / "docs" / "opentelemetry.md", CONFIG_DIR / "README.md"]
COLLECTORS = ["agent.yaml", "gateway.yaml"]
KINDS = ("receivers", "processors", "exporters")
_ENV = re.compile(r"\$\{env:([A-Z0-9_]+)(?::-([^}]*))?\}")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _resolve(value: str) -> str:
    """The collector's ${env:NAME:-default} substitution, with the defaults."""
    return _ENV.sub(lambda m: m.group(2) or "", value)


def _port(endpoint: str) -> int:
    return int(_resolve(endpoint).rstrip("/").rsplit(":", 1)[1].split("/")[0])


def test_every_yaml_file_parses() -> None:
    files = sorted(CONFIG_DIR.rglob("*.y*ml"))
    assert {p.name for p in files} >= {"agent.yaml", "gateway.yaml", "compose.yaml"}
    for path in files:
        assert isinstance(_load(path), dict), path


@pytest.mark.parametrize("name", COLLECTORS)
def test_pipelines_reference_only_defined_components(name: str) -> None:
    config = _load(CONFIG_DIR / name)
    service = config["service"]
    pipelines = service["pipelines"]
    assert {"logs", "traces"} <= set(pipelines)
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for pipeline_name, pipeline in pipelines.items():
        assert pipeline_name.split("/")[0] in ("logs", "traces", "metrics")
        assert pipeline.get("receivers") and pipeline.get("exporters"), pipeline_name
        for kind in KINDS:
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), (
                    f"{name}: pipeline {pipeline_name} uses undefined {kind[:-1]} {component!r}"
                )
                used[kind].add(component)
    for kind in KINDS:  # and nothing is defined that no pipeline uses
        assert set(config.get(kind) or {}) == used[kind], (name, kind)
    for extension in service.get("extensions", []):
        assert extension in config["extensions"], extension


@pytest.mark.parametrize("name", COLLECTORS)
def test_memory_limiter_first_then_batch(name: str) -> None:
    for pipeline_name, pipeline in _load(CONFIG_DIR / name)["service"]["pipelines"].items():
        processors = [p.split("/")[0] for p in pipeline["processors"]]
        assert processors[0] == "memory_limiter", (name, pipeline_name)
        assert "batch" in processors, (name, pipeline_name)
        assert processors.index("memory_limiter") < processors.index("batch")
        assert processors[-1] == "batch", "batch goes last, after every filtering processor"


@pytest.mark.parametrize("name", COLLECTORS)
def test_otlp_receiver_listens_on_the_standard_ports(name: str) -> None:
    protocols = _load(CONFIG_DIR / name)["receivers"]["otlp"]["protocols"]
    assert _port(protocols["grpc"]["endpoint"]) == 4317
    assert _port(protocols["http"]["endpoint"]) == 4318
    # reachable from outside the container/pod, not only from its loopback
    for protocol in ("grpc", "http"):
        assert protocols[protocol]["endpoint"].startswith("0.0.0.0:")


def test_documented_endpoints_match_the_receivers() -> None:
    """Every endpoint the docs tell users to set is a port the agent receives on, with the
    protocol that port speaks."""
    agent = _load(CONFIG_DIR / "agent.yaml")["receivers"]["otlp"]["protocols"]
    ports = {_port(agent["grpc"]["endpoint"]): "grpc", _port(agent["http"]["endpoint"]): "http"}
    seen = set()
    pattern = re.compile(
        r"(?:FAPILOG_OTLP__ENDPOINT|OTEL_EXPORTER_OTLP_ENDPOINT)=http://localhost:(\d+)"
    )
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            for match in pattern.finditer(line):
                port = int(match.group(1))
                assert port in ports, f"{doc.name}: {line.strip()}"
                speaks_http = "http/protobuf" in line
                assert speaks_http == (ports[port] == "http"), f"{doc.name}: {line.strip()}"
                seen.add(port)
    assert seen == {4317, 4318}  # both protocols are documented
    # and the defaults the docs state are fapilog's
    text = (ROOT / "docs" / "opentelemetry.md").read_text()
    assert "`http://localhost:4317` (grpc)" in text or "http://localhost:4317` (grpc)" in text
    assert "protocol `grpc`" in text


def test_agent_forwards_to_gateway_ports() -> None:
    """Scale-out: what the README tells agents to point at is where the gateway listens."""
    gateway = _load(CONFIG_DIR / "gateway.yaml")["receivers"]["otlp"]["protocols"]
    readme = (CONFIG_DIR / "README.md").read_text()
    logs = re.search(r"LOGS_ENDPOINT=(http://otel-gateway:\d+)", readme)
    traces = re.search(r"TRACES_ENDPOINT=(otel-gateway:\d+)", readme)
    assert logs and traces
    assert _port(logs.group(1)) == _port(gateway["http"]["endpoint"])
    assert _port(traces.group(1)) == _port(gateway["grpc"]["endpoint"])
    agent = _load(CONFIG_DIR / "agent.yaml")["exporters"]
    # the agent's exporters take those variables: otlphttp for logs, otlp (grpc) for traces
    assert "LOGS_ENDPOINT" in agent["otlphttp/logs"]["endpoint"]
    assert "TRACES_ENDPOINT" in agent["otlp/traces"]["endpoint"]


def test_compose_stack_is_consistent() -> None:
    compose = _load(CONFIG_DIR / "compose.yaml")
    services = compose["services"]
    assert {"otel-collector", "loki", "tempo", "grafana"} <= set(services)
    collector = services["otel-collector"]
    published = {tuple(int(p) for p in str(port).split(":")) for port in collector["ports"]}
    assert {(4317, 4317), (4318, 4318)} <= published
    # every mounted file exists, and the collector runs the agent configuration
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (CONFIG_DIR / source).is_file(), volume
    mounted = {v.split(":")[1]: v.split(":")[0] for v in collector["volumes"]}
    config_arg = next(a for a in collector["command"] if a.startswith("--config="))
    assert mounted[config_arg.split("=", 1)[1]] == "./agent.yaml"
    # the agent's default destinations are the compose services, on the ports they listen on
    agent = _load(CONFIG_DIR / "agent.yaml")["exporters"]
    environment = collector.get("environment", {})
    logs_url = environment.get("LOGS_ENDPOINT") or _resolve(agent["otlphttp/logs"]["endpoint"])
    traces = environment.get("TRACES_ENDPOINT") or _resolve(agent["otlp/traces"]["endpoint"])
    assert logs_url == _resolve(agent["otlphttp/logs"]["endpoint"]) == "http://loki:3100/otlp"
    assert traces == _resolve(agent["otlp/traces"]["endpoint"])
    assert traces.split(":")[0] == "tempo"
    tempo = _load(CONFIG_DIR / "tempo.yaml")
    tempo_grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert _port(traces) == _port(tempo_grpc)
    assert "3100:3100" in services["loki"]["ports"]
    # Grafana's data sources point at the compose services
    datasources = _load(CONFIG_DIR / "grafana" / "datasources.yaml")["datasources"]
    urls = {d["type"]: d["url"] for d in datasources}
    assert urls == {
        "loki": "http://loki:3100",
        "tempo": f"http://tempo:{tempo['server']['http_listen_port']}",
    }


def test_readme_lists_every_file() -> None:
    readme = (CONFIG_DIR / "README.md").read_text()
    for path in CONFIG_DIR.rglob("*.y*ml"):
        assert f"`{path.relative_to(CONFIG_DIR)}`" in readme, path
