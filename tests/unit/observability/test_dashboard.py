"""The Grafana dashboard (``deploy/grafana``) asks only for metrics that exist.

Every query of every panel and template variable is read out of the JSON; each ``raygent_*``
series it names must be one the gateway's :class:`~runtime.observability.metrics.Metrics` renders
(with every label the query selects on), and each ``ray_serve_*`` one must be a metric that the
installed Ray Serve defines (Ray exports it with the ``ray_`` prefix). A renamed metric or label
fails here rather than as an empty panel.
"""

from __future__ import annotations

import functools
import json
import re
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from runtime.observability.metrics import Metrics

DEPLOY = Path(__file__).parents[3] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "raygent.json"
SELECTOR = re.compile(r"\b((?:raygent|ray_serve)_[a-z_]+)(\{[^}]*\})?")


def _queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    out = [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]
    out += [
        (v["name"], v["query"]["query"])
        for v in board["templating"]["list"]
        if v["type"] == "query"
    ]
    return out


@functools.cache
def _exported() -> dict[str, set[str]]:
    """Sample name -> label names, of a gateway's metrics with every kind of sample recorded."""
    m = Metrics()
    m.observe_request("/v1/chat/completions", "chat", 200, 0.1, variant="a")
    m.observe_ttft("chat", 0.05, variant="a")
    m.observe_generation("chat", 10, 1.0, variant="a")
    m.cache_event("hit", 0.001)
    m.set_queue_depth("mailbox", "writer", 1)
    m.observe_shadow("chat", "b", "same", 0.2)
    with m.in_flight():
        body, _ = m.render()
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, set()).update(k for k in s.labels if k != "le")
    return out


def test_the_dashboard_has_panels_over_every_part_it_promises():
    board = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in board["panels"]}
    for needed in ("Requests per second", "Error ratio (5xx, 4xx)", "TTFT p50 / p99",
                   "TPOT p50 / p99", "End-to-end latency p50 / p99", "Cache hit ratio",
                   "Queue depths", "Replicas", "Shadow outcomes"):  # fmt: skip
        assert needed in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in board["templating"]["list"]} >= {"target", "variant"}


@pytest.mark.parametrize(("where", "query"), _queries())
def test_every_query_names_exported_metrics_and_labels(where, query):
    exported = _exported()
    names = SELECTOR.findall(query)
    assert names, f"{where}: no raygent or Serve metric in {query!r}"
    for name, selector in names:
        labels = set(re.findall(r"(\w+)\s*[=!]~?", selector))
        if name.startswith("raygent_"):
            assert name in exported, f"{where}: {name} is not exported; have {sorted(exported)}"
            assert labels <= exported[name], (
                f"{where}: {name} has no label {labels - exported[name]}"
            )
        else:
            _check_serve_metric(name)


def _check_serve_metric(name: str) -> None:
    if find_spec("ray") is None:
        pytest.skip("ray is not installed")
    import ray.serve

    source = Path(ray.serve.__file__).parent
    bare = name.removeprefix("ray_")
    defined = any(f'"{bare}"' in f.read_text(errors="ignore") for f in source.rglob("*.py"))
    assert defined, f"Ray Serve defines no metric {bare!r}"


def test_the_provisioning_loads_the_dashboard_from_where_the_readme_mounts_it():
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/raygent.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    readme = (DEPLOY.parent / "README.md").read_text()
    assert f"deploy/grafana/dashboards:{path}" in readme
    sources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    assert sources["datasources"][0]["uid"] == "prometheus"
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert {j["job_name"] for j in scrape["scrape_configs"]} == {"raygent-gateway", "ray"}
