"""Every values file the repository ships renders, with the real helm, to manifests that pass
kubernetes-validate --strict and to a container environment that the service's own `Settings()` accepts:
the chart's example must start, not only render."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from .conftest import CHART, REPO, load_yaml_docs
from .test_helm import helm_template, kubernetes_validate, one

# values.yaml (the defaults) and every example; a new example is picked up without editing this list
SHIPPED_VALUES = {"defaults": None} | {
    f"examples/{p.name}": p for p in sorted((REPO / "deploy" / "helm" / "examples").glob("*.yaml"))}

# What the Secrets referenced by valueFrom would hold in a cluster.
SECRET_STANDINS = {
    "SAM2_API_KEYS": "ab" * 32,
    "SAM2_REDIS_URL": "redis://:pw@redis:6379/0",
    "REDIS_PASSWORD": "pw",
    "SAM2_POD_NAME": "sam2-7c9d-x2x",  # the downward API's metadata.name / metadata.namespace
    "SAM2_POD_NAMESPACE": "sam2",
}


def values_args(path) -> list:
    return [] if path is None else ["-f", path]


def service_container(docs: list[dict]) -> dict:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "sam2")


def container_environment(container: dict) -> dict[str, str]:
    """The environment the kubelet gives the process: values, Secret stand-ins, `$(VAR)` of earlier entries."""
    env: dict[str, str] = {}
    for entry in container["env"]:
        name = entry["name"]
        if "value" in entry:
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), str(entry["value"]))
        else:
            assert name in SECRET_STANDINS, f"{name} comes from {entry['valueFrom']}: add a stand-in"
            env[name] = SECRET_STANDINS[name]
    return env


def load_settings(env: dict[str, str], monkeypatch):
    from service.settings import Settings

    for name in [n for n in list(os.environ) if n.startswith("SAM2_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_shipped_values_files_are_found():
    assert "examples/production.yaml" in SHIPPED_VALUES


@pytest.mark.parametrize("name", list(SHIPPED_VALUES))
def test_shipped_values_render_a_container_environment_the_service_accepts(name, monkeypatch):
    path = SHIPPED_VALUES[name]
    docs = load_yaml_docs(helm_template(*values_args(path)).stdout)
    settings = load_settings(container_environment(service_container(docs)), monkeypatch)
    values = yaml.safe_load((path or CHART / "values.yaml").read_text())
    # every setting of the file reaches the service with its value, whole numbers of any size included
    for key, value in (values.get("settings") or {}).items():
        assert getattr(settings, key) == value, key


@pytest.mark.parametrize("name", list(SHIPPED_VALUES))
def test_shipped_values_pass_strict_kubernetes_schemas(name):
    kubernetes_validate(helm_template(*values_args(SHIPPED_VALUES[name])).stdout, "1.30")


def test_large_whole_numbers_render_as_integers(tmp_path):
    """Helm reads 4294967296 from a values file as a float; the env must still say 4294967296."""
    values = tmp_path / "v.yaml"
    values.write_text("settings:\n  cache_bytes: 4294967296\n  max_image_pixels: 100000000\n  max_wait_ms: 2.5\n")
    env = container_environment(service_container(load_yaml_docs(helm_template("-f", values).stdout)))
    assert env["SAM2_CACHE_BYTES"] == "4294967296" and env["SAM2_MAX_IMAGE_PIXELS"] == "100000000"
    assert env["SAM2_MAX_WAIT_MS"] == "2.5"
