"""Prometheus: the compose scrape config and the alert rules pass promtool, the rules' unit tests pass, and a real
prometheus on loopback scrapes a real service process and answers PromQL over its latency histogram."""

from __future__ import annotations

import math
import re
import subprocess
import time

import httpx
import pytest
import yaml

from .conftest import DASHBOARD, PROMETHEUS_DIR, png_bytes, run, stop, tool, wait_for
from tests.fixtures import free_port

JOB = "sam2-service"  # the job name alerts.yml and the dashboard select on


def test_promtool_check_config():
    out = run([tool("promtool"), "check", "config", PROMETHEUS_DIR / "prometheus.yml"]).stdout
    assert "SUCCESS" in out and "1 rule files found" in out


def test_promtool_check_rules():
    out = run([tool("promtool"), "check", "rules", PROMETHEUS_DIR / "alerts.yml"]).stdout
    assert "SUCCESS" in out


def test_promtool_rule_unit_tests():
    out = run([tool("promtool"), "test", "rules", PROMETHEUS_DIR / "tests" / "alerts_test.yml"]).stdout
    assert "SUCCESS" in out


def test_every_alert_has_a_unit_test_that_fires_it():
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS_DIR / "tests" / "alerts_test.yml").read_text())
    fired = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert alerts == fired, alerts ^ fired
    assert {"SAM2HighLatencyP99", "SAM2HighErrorRate", "SAM2QueueSaturated", "SAM2SessionStoreErrors",
            "SAM2NoReadyReplicas", "SAM2TrackingFrameLatency", "SAM2PodRestarting", "SAM2OOMKilled",
            "SAM2AutoscalerAtMaximum", "SAM2GPUXidErrors", "SAM2GPUUncorrectableECC"} <= alerts


def test_service_alerts_group_by_namespace_and_release():
    """Every alert on the service's own metrics keeps releases apart (the unit tests run two releases side by side)."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        expr = rule["expr"]
        if "sam2_" in expr and "by (" in expr:
            for by in re.findall(r"by \(([^)]*)\)", expr):
                assert {"namespace", "release"} <= {x.strip() for x in by.split(",")}, (rule.get("alert"), by)
        assert "absent(" not in expr, rule  # one healthy release would mask every other


def test_compose_scrape_job_is_the_one_the_rules_select():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert JOB in [j["job_name"] for j in config["scrape_configs"]]
    assert f'job="{JOB}"' in (PROMETHEUS_DIR / "alerts.yml").read_text()


# ---- a real prometheus scraping a real service ----------------------------------------------------------

def loopback_config(service_url: str, rules_path: str) -> dict:
    """deploy/prometheus/prometheus.yml with the service's loopback address in place of compose DNS discovery."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [rules_path]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] == JOB:
            job.pop("dns_sd_configs")
            job["static_configs"] = [{"targets": [service_url.removeprefix("http://")]}]
            job.update(scrape_interval="1s", scrape_timeout="1s")
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


@pytest.fixture(scope="session")
def prometheus(service, tmp_path_factory):
    binary = tool("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(loopback_config(service, str(PROMETHEUS_DIR / "alerts.yml"))))
    port = free_port()
    log = work / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/-/ready", timeout=1).status_code == 200, 30, "prometheus ready", proc, log)
        prom = Prometheus(base)
        # the scrape manager applies its targets on a 5 s tick: the first scrape lands ~5 s after start
        wait_for(lambda: prom.scalar(f'up{{job="{JOB}"}}') == 1.0, 15, "first scrape of the service", proc, log)
        yield prom
    finally:
        stop(proc)


class Prometheus:
    def __init__(self, base: str):
        self.base = base

    def api(self, path: str, **params) -> dict:
        r = httpx.get(f"{self.base}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_service_latency_histogram(service, prometheus):
    # traffic while Prometheus watches, so that rate() over the histogram has something to say
    with httpx.Client(base_url=service, timeout=60) as c:
        for _ in range(3):
            assert c.post("/v1/segment", files={"image": ("a.png", png_bytes(80, 48), "image/png")},
                          data={"objects": '[{"box": [5, 5, 60, 40]}]'}).status_code == 200
            time.sleep(0.5)
    segment = f'job="{JOB}", route="/v1/segment", method="POST", status="200"'

    def p99():
        value = prometheus.scalar(
            f"histogram_quantile(0.99, sum by (le) (rate(sam2_request_duration_seconds_bucket{{{segment}}}[30s])))")
        return value if value is not None and math.isfinite(value) else None

    value = wait_for(p99, 15, "a finite p99 of /v1/segment")
    assert 0 < value <= 60  # within the histogram's largest finite bucket
    # 2 requests from the service fixture + 3 here, once the last scrape has them
    wait_for(lambda: prometheus.scalar(f"sum(sam2_request_duration_seconds_count{{{segment}}})") >= 5, 10,
             "all five /v1/segment requests in Prometheus")
    by_route = {r["metric"]["route"] for r in prometheus.query(f'sam2_request_duration_seconds_count{{job="{JOB}"}}')}
    assert "/v1/segment" in by_route and not any(r.startswith("/v1/segment/") and "{" in r for r in by_route)
    model = prometheus.query(f'sam2_model_info{{job="{JOB}"}}')
    assert model and model[0]["metric"]["model"] == "sam2.1_hiera_tiny"


def test_alert_rules_evaluate_cleanly_against_the_live_service(prometheus):
    def evaluated():
        groups = prometheus.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

    rules = wait_for(evaluated, 15, "every rule evaluated once")
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]

    # A replica with a loaded model is scraped under the alerts' job name, so no-ready-replicas is inactive
    # (an evaluation from before the first scrape may have left it pending for a moment).
    def no_ready_state():
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        state = next(r["state"] for r in rules if r["name"] == "SAM2NoReadyReplicas")
        return state == "inactive"

    wait_for(no_ready_state, 15, "SAM2NoReadyReplicas inactive")


def dashboard_queries() -> list[tuple[str, str]]:
    import json

    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def fill_variables(expr: str, rate_interval: str) -> str:
    """A panel's query as Grafana sends it with every multi-value variable on "All" (compose has no namespace
    or release label: ".*" matches series without them)."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$job", JOB)
    for name in ("$namespace", "$release", "$instance"):
        expr = expr.replace(name, ".*")
    return expr


def test_every_dashboard_query_parses_and_runs_in_prometheus(prometheus):
    """Each panel's PromQL, with the dashboard variables filled in, is accepted and evaluated by Prometheus."""
    for title, expr in dashboard_queries():
        concrete = fill_variables(expr, "30s")
        assert "$" not in concrete, (title, concrete)
        prometheus.query(concrete)  # asserts status == success (a parse error is status "error")
    # the latency panel returns data for the route that had traffic
    latency = next(e for t, e in dashboard_queries() if t.startswith("Latency per route"))
    result = prometheus.query(fill_variables(latency, "5m"))
    assert any(r["metric"].get("route") == "/v1/segment" for r in result), result
