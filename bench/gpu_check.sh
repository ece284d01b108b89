#!/usr/bin/env bash
# Proves and measures the CUDA path in one go: the `gpu` fidelity tests, then image / video / service /
# segment-everything / compile figures, ours beside Meta's reference in the same run.
#
#   bench/gpu_check.sh [--smoke] [--only "tests image ..."] [OUT_DIR]     (OUT_DIR default: $OUT or ./gpu_check_out)
#
# Writes OUT_DIR/results.jsonl, OUT_DIR/results.md (the table), OUT_DIR/gpu_tests.xml and one log per part.
# Each part runs under its own time limit and a failed part does not stop the others (exit status 1 then).
# GPU_CHECK_ARGS: extra flags for bench/gpu_measure.py (e.g. "--models t,l").
# --smoke: every part on the CPU with the tiny model at 128 px (CI runs it so that the script never rots).
# On a bare GPU machine without the project's dependencies, run `bench/gpu_wheels.sh` on a machine with
# pip access first: it fills .whl/ (wheels + the reference), which this script installs to a temp folder.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=""
ONLY="tests image video service amg profile"  # and compile: --only "tests compile" (its own call), or --smoke;
# refcompile (Meta's vos_optimized tracking, max-autotune: minutes of compiling): --only refcompile, alone
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=--smoke; shift ;;
    --only) ONLY="$2"; shift 2 ;;
    *) break ;;
  esac
done
OUT_DIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR"
: > "$OUT_DIR/results.jsonl"
export PYTHONUNBUFFERED=1

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
if ! "$PY" -c "import fastapi, sam2, pycocotools, redis" 2>/dev/null; then
  [ -d .whl ] || { echo "missing dependencies and no .whl/ (run bench/gpu_wheels.sh where pip works)"; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sam2-site \
    .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/sam2-site:$PWD/.whl/py:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee "$OUT_DIR/device.txt"

if [ -n "$SMOKE" ]; then
  export SAM2_TEST_DEVICE=cpu SAM2_GPU_TEST_MODELS=sam2.1_hiera_tiny SAM2_GPU_TEST_SIZE=128
  # compile: traced with the eager backend (inductor's code generation takes minutes on a CPU)
  [[ " $ONLY " == *" compile "* ]] || ONLY="$ONLY compile"
  [[ " $ONLY " == *" refcompile "* ]] || ONLY="$ONLY refcompile"
  declare -A LIMIT=([tests]=300 [image]=200 [video]=300 [service]=300 [amg]=200 [profile]=200 [compile]=300
                    [refcompile]=200)
else
  # compile: the encoders of t and b+ (~20 s each, ours and the reference's), then SAM2_COMPILE's warm-up and
  # tracking for two modes; run it on its own (--only "tests compile") to stay inside one call's 10 minutes
  declare -A LIMIT=([tests]=160 [image]=90 [video]=80 [service]=90 [amg]=50 [profile]=60 [compile]=300
                    [refcompile]=500)
fi

status=0
for part in $ONLY; do
  start=$(date +%s)
  if [ "$part" = tests ]; then
    # smoke: bf16 is left out (on CPU, with random weights, it misses the 0.99 bar: README, GPU)
    timeout -k 5 "${LIMIT[$part]}" "$PY" -m pytest -q -p no:cacheprovider -m gpu ${SMOKE:+-k "not bf16"} \
      tests/model_core/test_gpu_fidelity.py --junitxml="$OUT_DIR/gpu_tests.xml" > "$OUT_DIR/tests.log" 2>&1
  else
    timeout -k 5 "${LIMIT[$part]}" "$PY" bench/gpu_measure.py "$part" --out "$OUT_DIR" $SMOKE ${GPU_CHECK_ARGS:-} \
      > "$OUT_DIR/$part.log" 2>&1
  fi
  rc=$?
  echo "[gpu_check] $part: exit $rc in $(( $(date +%s) - start )) s"
  [ $rc -eq 0 ] || { status=1; tail -n 25 "$OUT_DIR/$part.log"; }
done
if [ -s "$OUT_DIR/results.jsonl" ]; then
  "$PY" bench/gpu_measure.py report --out "$OUT_DIR" || status=1
fi
grep -h -E "passed|failed" "$OUT_DIR/tests.log" 2>/dev/null | tail -n 1
exit $status
