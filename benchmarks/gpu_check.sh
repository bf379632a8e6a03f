#!/usr/bin/env bash
# One command to verify a release on a GPU machine (about 5 minutes on one GPU):
#   1. the test suite (tests/test_gpu.py included: it runs only with a GPU);
#   2. the quickstart trained on the GPU (mtl-run --device cuda);
#   3. mtl-throughput on its run: float32, bfloat16 and --compile;
#   4. the overhead benchmark (plain loop / bare Lightning / mtl-run) in fp32 and bf16-mixed.
# It prints one summary (also written to OUT/summary.txt).
#
# Nothing is installed from the network. It uses the torch (CUDA build), Lightning,
# torchmetrics, peft and safetensors already installed; a missing pure-Python dependency is
# installed from --wheels DIR (pip --no-index) into OUT/pydeps, never into the environment.
# The repository runs from PYTHONPATH (no install needed).
#
# Usage: benchmarks/gpu_check.sh [--wheels DIR] [--out DIR] [--python PY] [--quick]
#                                [--cpu-dry-run]
#   --quick        skip tests marked slow
#   --cpu-dry-run  no GPU needed: every step on CPU at smoke size, to check this script itself
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS=""
OUT=""
QUICK=0
DRY=0
usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="${2:?--wheels needs a directory}"; shift 2 ;;
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    --python) PY="${2:?--python needs an interpreter}"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --cpu-dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
  echo "gpu_check: --wheels $WHEELS is not a directory" >&2; exit 2
fi
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$OUT" || { echo "gpu_check: cannot create $OUT" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"
command -v "$PY" >/dev/null || { echo "gpu_check: no interpreter '$PY' (--python)" >&2; exit 2; }
case "$PY" in  # steps run inside OUT: a relative interpreter path must not depend on the cwd
  /*) ;;
  */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;;
  *) PY="$(command -v "$PY")" ;;
esac

# ---- dependencies: present, or from --wheels (offline) ------------------------------------
export PYTHONPATH="$REPO:$REPO/tests:$OUT/pydeps${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 PIP_NO_INDEX=1 PYTHONDONTWRITEBYTECODE=1
# module:distribution pairs; the first five must come with the environment (compiled code)
PREINSTALLED="torch:torch lightning:lightning torchmetrics:torchmetrics peft:peft safetensors:safetensors"
PURE="yaml:pyyaml click:click jsonargparse:jsonargparse deepmerge:deepmerge \
docstring_parser:docstring-parser typeshed_client:typeshed-client sklearn:scikit-learn \
matplotlib:matplotlib numpy:numpy pytest:pytest hypothesis:hypothesis"
missing() { "$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('$1') is not None)"; }
for pair in $PREINSTALLED; do
  if missing "${pair%%:*}"; then
    echo "gpu_check: ${pair#*:} is not installed; it must come with the environment (a CUDA build of torch and its companions)" >&2
    exit 2
  fi
done
for pair in $PURE; do
  module="${pair%%:*}" dist="${pair#*:}"
  missing "$module" || continue
  if [ -z "$WHEELS" ]; then
    echo "gpu_check: $dist is missing; pass --wheels DIR holding its wheel (nothing is downloaded)" >&2
    exit 2
  fi
  echo "gpu_check: installing $dist from $WHEELS into $OUT/pydeps"
  "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$OUT/pydeps" "$dist" \
    || { echo "gpu_check: no usable wheel of $dist in $WHEELS" >&2; exit 2; }
done

HAS_CUDA="$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')"
if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  echo "gpu_check: --cpu-dry-run: every step on CPU at smoke size (figures mean nothing)"
elif [ "$HAS_CUDA" != 1 ]; then
  BUILD="$("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda or "none")')"
  echo "gpu_check: no CUDA GPU is visible (torch $BUILD); run it on a GPU machine, or pass --cpu-dry-run to check the script itself" >&2
  exit 2
else
  DEVICE=cuda
fi
GPU="$("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "none")')"
VERSIONS="$("$PY" -c 'import torch, lightning; print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), lightning {lightning.__version__}")')"

# ---- steps ---------------------------------------------------------------------------------
SUMMARY=()
FAILED=0
step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, record status and seconds
  local name="$1"; shift
  local start end status
  start=$(date +%s)
  echo "gpu_check: [$name] $*"
  ( cd "$OUT" && "$@" ) >"$OUT/$name.log" 2>&1
  status=$?
  end=$(date +%s)
  if [ $status -eq 0 ]; then
    SUMMARY+=("$(printf '%-14s %-6s %5ss' "$name" PASS $((end - start)))")
  else
    FAILED=1
    SUMMARY+=("$(printf '%-14s %-6s %5ss  (exit %s; see %s)' "$name" FAIL $((end - start)) "$status" "$OUT/$name.log")")
  fi
}

if [ "$DRY" = 1 ]; then
  TESTS=("$REPO/tests/test_step_stats.py" -k "means or state or non_finite_loss_is or skip_policy_refuses")
  EPOCHS=1; ITERS=2; OVERHEAD=(--models quickstart --repeats 1 --epochs 2)
else
  TESTS=("$REPO/tests")
  EPOCHS=12; ITERS=30; OVERHEAD=(--repeats 2)
fi
PYTEST_ARGS=(-q -p no:cacheprovider -o "cache_dir=$OUT/.pytest_cache")
[ "$QUICK" = 1 ] && PYTEST_ARGS+=(-m "not slow")
if "$PY" -c 'import xdist' 2>/dev/null && [ "$DRY" = 0 ]; then
  PYTEST_ARGS+=(-n "$("$PY" -c 'import os; print(min(8, max(1, (os.cpu_count() or 2) // 2)))')")
fi

step tests "$PY" -m pytest "${PYTEST_ARGS[@]}" "${TESTS[@]}"
step quickstart bash -c "'$PY' -m compiler '$REPO/maker_configs/quickstart.yaml' -o quickstart.run.yaml -q \
  && '$PY' -m runtime quickstart.run.yaml --device $DEVICE --trainer.max_epochs=$EPOCHS \
     --trainer.enable_progress_bar=false --run-dir qs --force"
for row in float32:"--dtype float32" bfloat16:"--dtype bfloat16" compiled:"--dtype float32 --compile"; do
  name="${row%%:*}" flags="${row#*:}"
  # shellcheck disable=SC2086 # flags are words on purpose
  step "tput-$name" "$PY" -m scripts.throughput qs --device "$DEVICE" $flags --batch-sizes 64,1024 \
    --iters "$ITERS" --warmup 5 --json "throughput-$name.json" --force
done
step overhead-fp32 "$PY" "$REPO/benchmarks/runtime_overhead.py" --device "$DEVICE" \
  --precision 32-true "${OVERHEAD[@]}" --no-sampler
COMPILE=(--compile)
[ "$DRY" = 1 ] && COMPILE=()  # tput-compiled already checks compiling; keep the dry run short
step overhead-bf16 "$PY" "$REPO/benchmarks/runtime_overhead.py" --device "$DEVICE" \
  --precision bf16-mixed "${OVERHEAD[@]}" "${COMPILE[@]}" --no-sampler

# ---- one summary ---------------------------------------------------------------------------
{
  echo "gpu_check $(date -u +%Y-%m-%dT%H:%MZ) on $GPU; $VERSIONS; device $DEVICE"
  [ "$DRY" = 1 ] && echo "(CPU dry run: checks the script only; no figure means anything)"
  printf '%s\n' "${SUMMARY[@]}"
  tail -n 2 "$OUT/tests.log" 2>/dev/null | sed 's/^/tests: /'
  grep -h "Per-task results" -A3 "$OUT/quickstart.log" 2>/dev/null | sed 's/^/quickstart: /'
  for name in float32 bfloat16 compiled; do
    grep -hE "^(infer|train) " "$OUT/tput-$name.log" 2>/dev/null | sed "s/^/throughput $name: /"
  done
  for name in fp32 bf16; do
    sed -n '/ms\/step/,/^$/p' "$OUT/overhead-$name.log" 2>/dev/null | sed "s/^/overhead $name: /"
  done
  if [ "$FAILED" = 0 ]; then echo "gpu_check: PASSED (logs in $OUT)"; else echo "gpu_check: FAILED (logs in $OUT)"; fi
} | tee "$OUT/summary.txt"
exit "$FAILED"
