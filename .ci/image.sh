#!/usr/bin/env bash
# Build sam2-service's CPU image offline with podman: no Docker Hub, only the package mirrors this machine's
# apt and pip already use. tests/deploy/test_image.py calls it; README "Deployment" has the recipe.
#
#   bash .ci/image.sh          # tools, base image, the CPU image and the compose stand-ins (cached: < 1 min)
#   bash .ci/image.sh env      # the variables podman and podman-compose need here:  eval "$(bash .ci/image.sh env)"
#   bash .ci/image.sh clean    # remove every image built here (the next build starts from scratch)
#
# 1. tools: podman + runc + mmdebstrap (apt), podman-compose from PyPI (Debian's 1.0.3 mangles ${VAR:-}).
#    crun refuses these VMs' cgroup layout and container rlimits may not exceed the host's, so podman gets a
#    containers.conf of its own (CONTAINERS_CONF), changing nothing system-wide.
# 2. base: a Debian bookworm rootfs with python3 from the host's apt mirror (mmdebstrap), imported as the
#    image that docker/Dockerfile's PYTHON_IMAGE names. Cached: skipped when the image exists.
# 3. the CPU image from docker/Dockerfile, with the host's pip configuration (index, find-links, CA bundle)
#    mounted into the build; torch is the CPU wheel that configuration provides (TORCH_VERSION, TORCH_INDEX_URL
#    override it). Its build stage is kept, tagged, as the layer cache; the images a build supersedes are
#    removed (only those: nothing else in podman's storage is touched).
# 4. stand-ins for the compose file's redis and prometheus images, from their Debian packages (.ci/images/).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${SAM2_TOOLS_DIR:-$PWD/.tools}/image
IMAGE=${SAM2_IMAGE:-localhost/sam2-service:cpu}
BASE=localhost/python:3.11-slim-bookworm
SUITE=bookworm
PODMAN_COMPOSE_VERSION=1.6.0
PY=${PYTHON:-python3}
export CONTAINERS_CONF=$WORK/containers.conf
log() { echo "[image $(date +%T)] $*" >&2; }

compose_image() { sed -n "s#^ *image: *\($1[^ ]*\).*#\1#p" docker-compose.yml | head -n1; }
REDIS_IMAGE=docker.io/library/$(compose_image redis:)
PROMETHEUS_IMAGE=docker.io/$(compose_image prom/prometheus:)

tools() {
  local need=()
  for p in podman runc mmdebstrap; do command -v "$p" >/dev/null || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  mkdir -p "$WORK"
  [ -f "$WORK/.gitignore" ] || echo '*' >"$WORK/.gitignore"   # the folder ignores itself
  if [ ! -x "$WORK/compose/bin/podman-compose" ]; then
    log "pip install podman-compose==$PODMAN_COMPOSE_VERSION"
    "$PY" -m venv "$WORK/compose"
    "$WORK/compose/bin/python" -m pip install -q "podman-compose==$PODMAN_COMPOSE_VERSION"
  fi
  # rlimits no higher than the host's: nofile its hard limit, nproc 32768 (higher is refused here even below
  # the host's 96551: "error setting rlimit type 6: operation not permitted")
  local nofile nproc
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
  nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
  printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n[engine]\nruntime = "runc"\n' \
    "$nofile" "$nofile" "$nproc" "$nproc" >"$CONTAINERS_CONF"
}

base() {
  if podman image exists "$BASE"; then return; fi
  # the host's Debian mirrors for this suite (main, updates, security), as apt has them configured
  local mirrors=() site suite
  while read -r site suite; do
    mirrors+=("deb $site $suite main")
  done < <(apt-get indextargets --format '$(SITE) $(CODENAME)' 'Identifier: Packages' | grep " $SUITE" | sort -u)
  [ ${#mirrors[@]} -gt 0 ] || { echo "image.sh: apt has no $SUITE mirror configured" >&2; exit 1; }
  log "mmdebstrap $SUITE from ${mirrors[*]}"
  rm -f "$WORK/rootfs.tar"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    "$SUITE" "$WORK/rootfs.tar" "${mirrors[@]}"
  podman import -q --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$WORK/rootfs.tar" "$BASE" >/dev/null
  rm -f "$WORK/rootfs.tar"
}

# The host's pip configuration, as a pip.conf for the build, plus the -v mounts its local paths need.
pip_config() {
  "$PY" - "$WORK/pip.conf" <<'EOF'
import re, subprocess, sys
from pathlib import Path
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
keys = ("index-url", "extra-index-url", "find-links", "cert", "trusted-host", "timeout", "default-timeout")
conf = {}
for line in listed.splitlines():  # e.g. global.cert='/etc/ssl/certs/ca-certificates.crt', :env:.find-links='/opt/wheels'
    m = re.match(r"^[^.]*\.([\w-]+)='(.*)'$", line)
    if m and m[1] in keys:
        conf[m[1]] = m[2]
host_ca = Path("/etc/ssl/certs/ca-certificates.crt")  # the host's CA bundle, also where pip sets none
if "cert" not in conf and host_ca.exists():
    conf["cert"] = str(host_ca)
Path(sys.argv[1]).write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
mounts = set()
for k in ("extra-index-url", "find-links", "cert", "index-url"):
    for v in conf.get(k, "").split():
        path = v[len("file://"):] if v.startswith("file://") else v
        if path.startswith("/") and Path(path).exists():
            mounts.add(path.rstrip("/").removesuffix("/simple") if "index-url" in k else path)
print(" ".join(f"-v {p}:{p}:ro" for p in sorted(mounts)))
print(conf.get("index-url", "https://pypi.org/simple"))
print(" ".join(conf.get("find-links", "").split()))
EOF
}

# The CPU torch wheel the host's pip configuration provides (find-links), e.g. 2.13.0+cpu; empty: none.
host_cpu_torch() {
  local dir
  for dir in $1; do
    dir=${dir#file://}
    ls "$dir"/torch-*+cpu-cp311-*.whl 2>/dev/null | sed 's#.*/torch-\([^-]*\)-.*#\1#' | sort -V | tail -n1
  done | tail -n1
}

build() {
  local config mounts index links torch
  config=$(pip_config)
  mounts=$(sed -n 1p <<<"$config"); index=$(sed -n 2p <<<"$config"); links=$(sed -n 3p <<<"$config")
  torch=${TORCH_VERSION:-$(host_cpu_torch "$links")}
  local old; old=$(image_ids)
  local args=(--format docker --network host --pull=never --ignorefile docker/Dockerfile.dockerignore
              --build-arg "PYTHON_IMAGE=$BASE")   # docker format: OCI drops HEALTHCHECK
  if [ -n "$torch" ]; then
    args+=(--build-arg "TORCH_VERSION=$torch" --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL:-$index}")
  fi
  echo "TORCH_VERSION=${torch:-(Dockerfile default)} TORCH_INDEX_URL=${TORCH_INDEX_URL:-$index}" >"$WORK/build.env"
  log "podman build $IMAGE (torch ${torch:-as the Dockerfile defaults})"
  # The build stage (pip) with the host's pip setup mounted; then the image from that cached stage with no
  # mounts, since podman leaves each mount point behind as an empty directory in the layer it runs in.
  podman build -q "${args[@]}" -v "$WORK/pip.conf:/etc/pip.conf:ro" $mounts --target build -t "$IMAGE-build" \
    -f docker/Dockerfile . 2> >(grep -v "is ignored: it is neither" >&2) >/dev/null
  podman build -q "${args[@]}" -t "$IMAGE" -f docker/Dockerfile . >/dev/null
  for name in redis prometheus; do
    local tag=$REDIS_IMAGE; [ $name = prometheus ] && tag=$PROMETHEUS_IMAGE
    log "podman build $tag (Debian's $name)"
    podman build -q --format docker --network host --pull=never --build-arg "BASE=$BASE" \
      -t "$tag" -f ".ci/images/$name.Containerfile" .ci/images >/dev/null
  done
  local now id; now=$(image_ids)
  for id in $old; do   # what this build superseded (each build stage ~1.4 GB), with its intermediate layers
    grep -qx "$id" <<<"$now" || podman rmi "$id" >/dev/null
  done
  log "built $IMAGE: $(podman run --rm --no-healthcheck --entrypoint python "$IMAGE" -c 'import torch; print("torch", torch.__version__)')"
}

image_ids() {
  local name
  for name in "$IMAGE" "$IMAGE-build" "$REDIS_IMAGE" "$PROMETHEUS_IMAGE"; do
    podman image inspect --format '{{.Id}}' "$name" 2>/dev/null || true
  done
}

clean() {
  local id
  for id in $(image_ids); do podman rmi -f "$id" >/dev/null; done
  podman rmi "$BASE" >/dev/null 2>&1 || true
}

case "${1:-build}" in
  build) tools; base; build ;;
  env) echo "export CONTAINERS_CONF=$CONTAINERS_CONF PATH=$WORK/compose/bin:\$PATH" ;;
  clean) clean ;;
  *) echo "usage: $0 [build|env|clean]" >&2; exit 2 ;;
esac
