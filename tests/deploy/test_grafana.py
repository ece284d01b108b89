"""The Grafana dashboard: valid for the Grafana release compose deploys (JSON Schema generated from that release's
@grafana/schema), covering what operators look at, and naming only metrics the running service exports."""

from __future__ import annotations

import copy
import json
import re

import httpx
import pytest
import yaml

from .conftest import CHART, DASHBOARD, REPO, exported_samples, run, tool

PANEL_SCHEMAS = {"timeseries": "timeseries.options.json", "stat": "stat.options.json"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def schema_errors(doc: dict) -> list[str]:
    """Every error of the dashboard, its panels' options and its timeseries field config against the schemas."""
    schemas = tool("grafana-schema")
    script = r"""
import json, sys, jsonschema
schemas, doc = sys.argv[1], json.load(sys.stdin)
def check(name, instance, where):
    schema = json.load(open(f"{schemas}/{name}"))
    out = []
    def walk(e):  # anyOf (a panel is a Panel or a RowPanel): report the alternatives' reasons too
        out.append(f"{where}{'/'.join(map(str, e.absolute_path))}: {e.message}")
        for sub in e.context or []:
            walk(sub)
    for e in jsonschema.Draft7Validator(schema).iter_errors(instance):
        walk(e)
    return out
errors = check("dashboard.json", doc, "/")
kinds = %s
for i, panel in enumerate(doc.get("panels", [])):
    if panel.get("type") in kinds:
        errors += check(kinds[panel["type"]], panel.get("options"), f"/panels/{i}/options/")
    if panel.get("type") == "timeseries":
        errors += check("timeseries.fieldconfig.json", panel["fieldConfig"]["defaults"].get("custom", {}),
                        f"/panels/{i}/fieldConfig/defaults/custom/")
print(json.dumps(errors))
""" % json.dumps(PANEL_SCHEMAS)
    out = run([tool("tools-python"), "-c", script, schemas], input=json.dumps(doc)).stdout
    return json.loads(out)


def test_schema_is_generated_for_the_grafana_that_compose_deploys():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    image = compose["services"]["grafana"]["image"]
    version = (tool("grafana-schema") / "VERSION").read_text().strip()
    assert image == f"grafana/grafana:{version}"
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["annotations"]["sam2-service/grafana-version"] == version


def test_dashboard_validates_against_the_grafana_schema():
    assert schema_errors(dashboard()) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(titel="x"), "'titel' was unexpected"),
    (lambda d: d.update(refresh=30), "refresh"),
    (lambda d: d.pop("schemaVersion"), "'schemaVersion' is a required property"),
    (lambda d: d["panels"][1].update(gridPos={"x": 0, "y": 0, "w": 4}), "'h' is a required property"),
    (lambda d: d["panels"][1]["options"].pop("reduceOptions"), "reduceOptions"),
    (lambda d: d["panels"][8]["options"]["legend"].update(displayMode="grid"), "displayMode"),
])
def test_schema_check_catches_broken_dashboards(mutate, expected):
    doc = copy.deepcopy(dashboard())
    mutate(doc)
    errors = schema_errors(doc)
    assert any(expected in e for e in errors), errors


def test_panels_are_laid_out_without_overlap_and_use_the_datasource_variable():
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps at {(x, y)}"
                cells.add((x, y))
        for t in p.get("targets", []):
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert 'job="$job"' in t["expr"] or "sam2_model_info" not in t["expr"], p["title"]
            # releases and namespaces in one Prometheus are told apart (the chart's ServiceMonitor labels them)
            assert 'namespace=~"$namespace", release=~"$release"' in t["expr"], p["title"]


def queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_matchers = re.sub(r"\{[^}]*\}", "{}", without_strings)
    return set(re.findall(r"\bsam2_[a-zA-Z0-9_]+", without_matchers))


def test_dashboard_covers_what_operators_need():
    """The issue's list: latency p50/p95/p99 per route, requests/s and errors by status, queue depth and wait,
    batch size, encoder/decoder time, cache hit rate, active sessions, frames/s, store latency, GPU memory."""
    text = " ".join(e for _, e in queries())
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (route, le) (rate(sam2_request_duration_seconds_bucket" in text
    assert "sum by (status)" in text and 'status=~"[45].."' in text
    for name in ("sam2_queue_depth", "sam2_queue_wait_seconds_bucket", "sam2_batch_size_bucket",
                 "sam2_device_seconds_bucket", "sam2_embedding_cache_hits_total", "sam2_embedding_cache_misses_total",
                 "sam2_active_sessions", "sam2_frames_tracked_total", "sam2_frame_latency_seconds_bucket",
                 "sam2_store_write_seconds_bucket", "sam2_store_write_bytes_bucket", "sam2_gpu_memory_bytes",
                 "sam2_errors_total", "sam2_store_errors_total", "sam2_dropped_frames_total",
                 "sam2_session_resumes_total"):
        assert name in text, name
    assert "by (stage, le)" in text  # encoder / decoder / amg


def test_every_panel_names_metrics_the_running_service_exports(service):
    exported = exported_samples(httpx.get(f"{service}/metrics", timeout=10).text)
    assert "sam2_request_duration_seconds_bucket" in exported  # the parser sees the exposition
    missing = {}
    for title, expr in queries():
        names = metric_names(expr)
        assert names, f"panel {title!r} names no sam2_ metric: {expr}"
        if names - exported:
            missing.setdefault(title, set()).update(names - exported)
    assert not missing, f"panels naming metrics /metrics does not export: {missing}"


def test_metric_name_extraction():
    assert metric_names('sum(rate(sam2_a_total{job="$job", x=~"sam2_not"}[5m])) / sam2_b') == {"sam2_a_total", "sam2_b"}
