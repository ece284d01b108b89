"""Dockerfiles: hadolint, and their install steps checked against the project's own install. The CPU image is
built and run for real in test_image.py; the CUDA image's base cannot be pulled here, so it is only checked."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from .conftest import REPO, run, tool

DOCKERFILES = {"cpu": REPO / "docker" / "Dockerfile", "cuda": REPO / "docker" / "Dockerfile.cuda"}
IMAGE_EXTRAS = ("video",)  # pyproject extras both images install: PyAV, so `sam2-service track` writes H.264


def stages(text: str) -> dict[str, list[str]]:
    """Instructions per build stage (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out: dict[str, list[str]] = {}
    current = None
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if m:
            current = m.group(1)
            out[current] = []
        elif current:
            out[current].append(line)
    return out


def arg(text: str, name: str, **build_args: str) -> str:
    """An ARG's value as the build sees it: --build-arg overrides, then ${OTHER} of earlier ARGs substituted."""
    if name in build_args:
        return build_args[name]
    value = re.search(rf"^ARG {name}=(\S*)", text, re.M).group(1).strip('"')
    return re.sub(r"\$\{(\w+)\}", lambda m: arg(text, m[1], **build_args), value)


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_hadolint(flavour):
    proc = run([tool("hadolint"), "--no-color", "--failure-threshold", "info", DOCKERFILES[flavour]], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def replaced(text: str, old: str, new: str) -> str:
    """text with old replaced, failing if old is not in it (an edit that no longer applies tests nothing)."""
    assert old in text, f"{old!r} is not in the file any more"
    return text.replace(old, new)


def test_hadolint_can_fail(tmp_path):
    """The CPU Dockerfile run as root (DL3002) and with a `cd` inside a RUN (DL3003): hadolint reports both."""
    text = DOCKERFILES["cpu"].read_text()
    text = replaced(text, "USER 10001:10001", "USER root")
    text = replaced(text, "RUN pip install -r constraints.txt", "RUN cd /src && pip install -r constraints.txt")
    bad = tmp_path / "Dockerfile"
    bad.write_text(text)
    proc = run([tool("hadolint"), "--no-color", "--format", "json", bad], check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert {"DL3002", "DL3003"} <= {finding["code"] for finding in json.loads(proc.stdout)}, proc.stdout


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_install_steps_match_the_project_install(flavour):
    text = DOCKERFILES[flavour].read_text()
    build, runtime = stages(text)["build"], stages(text)["runtime"]
    setup = (REPO / ".ci" / "setup").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    # the torch release CI tests with
    tested = re.search(r'"torch==([0-9.]+)"', setup).group(1)
    assert arg(text, "TORCH_VERSION") == tested
    assert any('pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in i for i in build)
    index = arg(text, "TORCH_INDEX_URL")
    if flavour == "cpu":
        assert index == "https://download.pytorch.org/whl/cpu"
        assert any("torch.version.cuda is None" in i for i in build)
    else:
        assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu1[0-9]{2}", index)
        assert any("assert torch.version.cuda" in i for i in build)
    # the project's install (.ci/setup: pip install -e ".[test]") without the editable flag and the test extra
    assert re.search(r'pip install -e "\.\[test\]"', setup)
    installs = [m for i in build if (m := re.match(r'RUN pip install -c constraints\.txt "\.\[([\w,]+)\]"( |$)', i))]
    assert len(installs) == 1 and tuple(installs[0][1].split(",")) == IMAGE_EXTRAS
    assert set(IMAGE_EXTRAS) <= set(pyproject["project"]["optional-dependencies"])
    assert re.search(r'pip install -e "\.\[test\]" -c docker/constraints\.txt', setup)
    assert not any("[test]" in i or "pip install -e" in i for i in build)
    # every file the build of the distribution needs is copied in
    copied = " ".join(i for i in build if i.startswith("COPY"))
    for package in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert f"COPY {package.rstrip('*')} " in copied, package
    for f in ("pyproject.toml", pyproject["project"]["readme"]):
        assert f in copied
    # and survives the .dockerignore beside the Dockerfile
    ignore = (DOCKERFILES[flavour].parent / f"{DOCKERFILES[flavour].name}.dockerignore").read_text()
    for kept in ("!pyproject.toml", "!README.md", "!docker/constraints.txt", "!model_core/**", "!service/**"):
        assert kept in ignore.splitlines()
    # the console script the image runs is the project's
    assert "sam2-service" in pyproject["project"]["scripts"]
    assert 'ENTRYPOINT ["sam2-service"]' in runtime and 'CMD ["serve"]' in runtime


def runtime_requirements() -> dict[str, str]:
    """Every package the images' `pip install ".[video]"` brings beyond torch, at the version installed in this
    (the test) environment."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    found: dict[str, str] = {}
    extras = [d for extra in IMAGE_EXTRAS for d in pyproject["project"]["optional-dependencies"][extra]]
    todo = [Requirement(d) for d in pyproject["project"]["dependencies"] + extras]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found or name == "torch" or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        dist = distribution(req.name)
        found[name] = dist.version
        todo += [Requirement(r) for r in dist.requires or []]
    return found


def test_images_install_the_versions_ci_tests():
    """docker/constraints.txt pins every runtime dependency, the images' extras' too (transitively), at the version
    the tests ran with."""
    text = (REPO / "docker" / "constraints.txt").read_text()
    pinned = dict(line.split("==") for line in text.splitlines() if line and not line.startswith("#"))
    expected = runtime_requirements()
    assert pinned == expected, "docker/constraints.txt should read:\n" + "\n".join(
        f"{n}=={v}" for n, v in sorted(expected.items()))


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_runtime_stage_is_lean_non_root_with_healthcheck_and_weights_volume(flavour):
    text = DOCKERFILES[flavour].read_text()
    runtime = stages(text)["runtime"]
    joined = "\n".join(runtime)
    assert re.search(r"^FROM .* AS build$", text, re.M) and re.search(r"^FROM .* AS runtime$", text, re.M)
    assert "COPY --from=build /opt/venv /opt/venv" in joined
    for compiler in ("build-essential", "gcc", "g++", "clang", "python3-dev", "python3-pip"):
        assert not re.search(rf"\b{re.escape(compiler)}\b", joined), compiler
    assert not re.search(r"\bpip install\b", joined)
    user = [i for i in runtime if i.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0") and runtime.index(user[-1]) > max(
        i for i, line in enumerate(runtime) if line.startswith("RUN "))
    assert re.search(r"HEALTHCHECK .*CMD .*/healthz", joined)
    assert "SAM2_WEIGHTS_DIR=/weights" in joined and 'VOLUME ["/weights"]' in joined
    assert "SAM2_HOST=0.0.0.0" in joined
    # weights only when asked for: the build arg defaults to empty and guards the download
    assert arg(text, "BAKE_MODEL") == ""
    assert any('if [ -n "${BAKE_MODEL}" ]' in i and "resolve_checkpoint" in i for i in stages(text)["build"])


# The oldest driver branch each CUDA major needs (NVIDIA's minor-version compatibility table).
CUDA_DRIVER_MINIMUM = {12: 525, 13: 580}


@pytest.mark.parametrize("build_args", [{}, {"CUDA_VERSION": "12.8.1", "TORCH_CUDA": "cu128"}])
def test_cuda_image_and_torch_build_follow_one_pair_of_build_args(build_args):
    """The default CUDA 13 image, and the CUDA 12 variant for older drivers and GPUs that the Dockerfile documents."""
    text = DOCKERFILES["cuda"].read_text()
    if build_args:
        documented = " ".join(f"--build-arg {k}={v}" for k, v in build_args.items())
        assert documented in text
    version = arg(text, "CUDA_VERSION", **build_args)
    assert arg(text, "CUDA_IMAGE", **build_args) == f"nvidia/cuda:{version}-base-ubuntu24.04"
    major, minor = version.split(".")[:2]
    assert arg(text, "TORCH_INDEX_URL", **build_args) == f"https://download.pytorch.org/whl/cu{major}{minor}"


def test_production_example_schedules_only_on_nodes_whose_driver_runs_the_cuda_image():
    """GPU Feature Discovery labels: a driver branch new enough for the image's CUDA, and a GPU it supports."""
    import yaml

    major = int(arg(DOCKERFILES["cuda"].read_text(), "CUDA_VERSION").split(".")[0])
    example = yaml.safe_load((REPO / "deploy" / "helm" / "examples" / "production.yaml").read_text())
    terms = example["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    for term in terms:  # every alternative requires the driver
        driver = [e for e in term["matchExpressions"] if e["key"] == "nvidia.com/cuda.driver-version.major"]
        assert driver == [{"key": "nvidia.com/cuda.driver-version.major", "operator": "Gt",
                           "values": [str(CUDA_DRIVER_MINIMUM[major] - 1)]}]
        assert any(e["key"].startswith("nvidia.com/gpu.compute.") for e in term["matchExpressions"])


def test_base_image_python_satisfies_requires_python():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    minimum = tuple(int(x) for x in re.search(r">=\s*([0-9.]+)", pyproject["project"]["requires-python"]).group(1).split("."))
    cpu = arg(DOCKERFILES["cpu"].read_text(), "PYTHON_IMAGE")
    assert tuple(int(x) for x in re.search(r"python:(\d+\.\d+)", cpu).group(1).split(".")) >= minimum
    cuda = arg(DOCKERFILES["cuda"].read_text(), "CUDA_IMAGE")
    assert "ubuntu24.04" in cuda  # Python 3.12 from Ubuntu 24.04
    assert (3, 12) >= minimum


def test_readme_documents_both_dockerfiles_build_args_side_by_side():
    """README's build-argument table (CPU | CUDA) shows each Dockerfile's own defaults."""
    section = (REPO / "README.md").read_text().split("### Image build arguments\n", 1)[1].strip().split("\n\n")[0]
    rows = {}
    for line in section.splitlines()[2:]:  # past the header and the |---| line
        name, cpu, cuda = (c.strip() for c in line.strip().strip("|").split("|"))
        rows[name] = (cpu, cuda)
    cpu, cuda = DOCKERFILES["cpu"].read_text(), DOCKERFILES["cuda"].read_text()

    def default(text: str, name: str) -> str:  # as written, ${OTHER} unexpanded
        return re.search(rf"^ARG {name}=(\S*)", text, re.M).group(1).strip('"')

    for name in ("TORCH_VERSION", "TORCH_INDEX_URL"):
        assert rows[f"`{name}`"] == (f"`{default(cpu, name)}`", f"`{default(cuda, name)}`"), name
    for name in ("TORCH_CUDA", "CUDA_VERSION"):
        assert rows[f"`{name}`"][1].startswith(f"`{default(cuda, name)}`"), name
        assert not re.search(rf"^ARG {name}\b", cpu, re.M)
    assert rows["base image"] == (f"`PYTHON_IMAGE={default(cpu, 'PYTHON_IMAGE')}`",
                                  f"`CUDA_IMAGE={default(cuda, 'CUDA_IMAGE')}`")
    assert default(cpu, "BAKE_MODEL") == default(cuda, "BAKE_MODEL") == "" and rows["`BAKE_MODEL`"][0].startswith("empty")
    # the CUDA 12 variant the table names is the one the Dockerfile documents
    assert "--build-arg CUDA_VERSION=12.8.1 --build-arg TORCH_CUDA=cu128" in cuda
    assert "`cu128` with `CUDA_VERSION=12.8.1`" in rows["`TORCH_CUDA`"][1]
