#!/usr/bin/env bash
# Fills .whl/ with what bench/gpu_check.sh needs on a GPU machine that has PyTorch but no network:
# the service's pure-Python dependencies as CPython 3.12 wheels and the reference (Meta's sam2 with hydra,
# omegaconf, antlr4, iopath) copied from this checkout's .venv. Run where pip reaches a package index.
#   bench/gpu_wheels.sh            (then carry .whl to the GPU machine; ~6 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${GPU_PYTHON_VERSION:-3.12}
plat=()
for p in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 \
         manylinux2014 manylinux1; do plat+=(--platform "${p}_x86_64"); done
ver() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
pkgs=()
for name in fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv annotated-types \
            typing-inspection uvicorn python-multipart redis pycocotools websockets hydra-core omegaconf \
            typing_extensions opentelemetry-api; do
  pkgs+=("$name==$(ver "$name")")
done
mkdir -p .whl/py
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  "${plat[@]}" -d .whl "${pkgs[@]}"
site=$(.venv/bin/python -c "import sam2, os; print(os.path.dirname(os.path.dirname(sam2.__file__)))")
for pkg in sam2 antlr4 iopath; do  # pure Python, published as source only: copied as installed
  rm -rf ".whl/py/$pkg"
  cp -r "$site/$pkg" .whl/py/
done
find .whl/py -name __pycache__ -prune -exec rm -rf {} +
du -sh .whl
