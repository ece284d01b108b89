"""docker-compose.yml (and the GPU override) against the compose-spec JSON Schema, and the wiring between its
services and the repository files they mount."""

from __future__ import annotations

import re

import pytest
import yaml

from .conftest import REPO, run, tool

COMPOSE = REPO / "docker-compose.yml"
GPU = REPO / "docker-compose.gpu.yml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.mark.parametrize("path", [COMPOSE, GPU], ids=["compose", "gpu-override"])
def test_compose_file_matches_the_compose_spec(path):
    out = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path]).stdout
    assert "ok -- validation done" in out


@pytest.mark.parametrize("old, new", [
    ('      - "${BIND_ADDRESS:-127.0.0.1}:${SAM2_HTTP_PORT:-8000}:8000"\n', "      8000\n"),  # ports: not a list
    ("    restart: unless-stopped\n", "    restart: unless-stopped\n    restarts: always\n"),  # unknown key
], ids=["ports-not-a-list", "unknown-key"])
def test_compose_spec_check_can_fail(tmp_path, old, new):
    text = COMPOSE.read_text()
    assert old in text
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(text.replace(old, new, 1))
    proc = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", bad], check=False)
    assert proc.returncode != 0, proc.stdout


def test_stack_services_and_images_are_pinned():
    services = compose()["services"]
    assert set(services) == {"sam2", "redis", "prometheus", "grafana"}
    assert services["sam2"]["build"]["dockerfile"] == "docker/Dockerfile"
    for name in ("redis", "prometheus", "grafana"):
        image = services[name]["image"]
        assert re.match(r"^[\w./-]+:[\w.-]+$", image) and not image.endswith(":latest"), image
    gpu = yaml.safe_load(GPU.read_text())["services"]["sam2"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_redis_persists_and_requires_the_password_from_env():
    services = compose()["services"]
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and '--requirepass "$$REDIS_PASSWORD"' in command
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")  # no default password
    assert any(v.endswith(":/data") for v in redis["volumes"])
    url = services["sam2"]["environment"]["SAM2_REDIS_URL"]
    assert url.startswith("redis://:${REDIS_PASSWORD:?") and url.endswith("@redis:6379/0")
    assert services["sam2"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_service_environment_names_real_settings():
    from service.settings import Settings

    env = compose()["services"]["sam2"]["environment"]
    known = {f"SAM2_{name.upper()}" for name in Settings.model_fields} | {"SAM2_WEIGHTS_DIR", "SAM2_WEIGHTS_URL"}
    assert set(env) <= known, set(env) - known


def test_mounted_repository_files_exist_and_are_the_ones_the_configs_name():
    services = compose()["services"]
    mounts = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
                mounts[target] = source
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"  # rule_files: [alerts.yml]
    assert mounts["/etc/grafana/dashboards/sam2-service.json"] == "./deploy/grafana/sam2-service.json"
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/sam2-service.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    datasource = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "sam2-service")
    assert job["dns_sd_configs"][0]["names"] == ["sam2"] and job["dns_sd_configs"][0]["port"] == 8000
