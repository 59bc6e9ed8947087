#!/usr/bin/env bash
# jaxlogit on a GPU in one call: environment, devices, a short test selection, matmul peaks, and
# `jaxlogit bench --arch resnet50 --attack all` at batch 64 and 256 (float32 against torchattacks
# on the same GPU, and bfloat16 for jaxlogit), then benchmarks/results/gpu-<gpu>.md/.json
# (copied to $OUT when set). Every stage has its own time box; a failed or cut-off stage leaves
# the others' results. The whole script stays under TOTAL_S (default 470 s).
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine (device tool: one `run`)
#   PYTHON=.venv/bin/python TOTAL_S=1200 BOX_SCALE=4 bash benchmarks/gpu_check.sh --dry-run
#                                             # here, on CPU: no install, tiny sizes
#
# The GPU machine reaches no package registry; its image's python3 already has jax (CUDA
# plugin), flax, optax, orbax, torch and torchvision. torchattacks is not there: carry it as
# a wheel in .whl/ (`bash benchmarks/gpu_check.sh --fetch-wheels` here, then name .whl in the
# run's carry); without it the bench times jaxlogit alone.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=gpu
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --fetch-wheels)
    exclude=$(git rev-parse --git-path info/exclude); mkdir -p .whl "$(dirname "$exclude")"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >> "$exclude"
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux2014_x86_64 --platform any -d .whl "torchattacks==3.5.1" ;;
  "") ;;
  *) echo "usage: $0 [--dry-run|--fetch-wheels]"; exit 2 ;;
esac

TOTAL_S=${TOTAL_S:-470}
BOX_SCALE=${BOX_SCALE:-1}   # the dry run on a shared CPU: more time per stage
START=$(date +%s)
WORK=${WORK:-/tmp/jaxlogit-gpu-check}
rm -rf "$WORK"; mkdir -p "$WORK"
OUT_DIR=${OUT:-}
LOG=$WORK/gpu_check.log
[ -n "$OUT_DIR" ] && { mkdir -p "$OUT_DIR"; LOG=$OUT_DIR/gpu_check.log; }
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # jax and torch share the GPU
: > "$WORK/stages.tsv"

log() { echo "[gpu_check $(date +%T) +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# stage NAME BOX_SECONDS COMMAND...: runs COMMAND under min(BOX, time left - 15 s).
stage() {
  local name=$1 box=$2; shift 2
  local left=$(( TOTAL_S - ($(date +%s) - START) - 15 ))
  box=$(( box * BOX_SCALE ))
  local limit=$(( box < left ? box : left ))
  if [ "$limit" -lt 10 ]; then
    log "skip $name: ${left}s left"; printf '%s\tskipped\t0\n' "$name" >> "$WORK/stages.tsv"; return
  fi
  log "stage $name (time box ${limit}s): ${*:1:6}"
  local t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && log "stage $name hit its time box"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$WORK/stages.tsv"
  log "stage $name: exit $rc"
}

setup_env() {  # prints the interpreter to use as its last line
  if [ "$MODE" = dry ]; then echo "${PYTHON:-python3}"; return 0; fi
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >&2 || true
  local py=python3
  if ! "$py" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" >&2; then
    # A bare machine with a registry: a venv of its own with jax[cuda12] and the project.
    echo "no GPU jax in python3: a venv with jax[cuda12] from the registry" >&2
    python3 -m venv /tmp/jaxlogit-venv >&2 && py=/tmp/jaxlogit-venv/bin/python
    "$py" -m pip install -q --retries 0 --timeout 10 "jax[cuda12]" -e ".[torch,test]" >&2 || \
      echo "jax[cuda12] not installable here" >&2
  fi
  # The image's python3 (no registry): carried wheels (torchattacks) into /tmp/site.
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >&2 \
      || echo "carried wheels failed" >&2
  fi
  PYTHONPATH="$PYTHONPATH:/tmp/site" "$py" -c "import torchattacks" 2>/dev/null || \
    echo "torchattacks unavailable: the bench times jaxlogit alone" >&2
  PYTHONPATH="$PYTHONPATH:/tmp/site" "$py" -c \
    "import jaxlogit, jax; print(jaxlogit.__file__, jax.__version__, jax.devices())" >&2
  echo "$py"
}

log "mode $MODE, repo $REPO, work $WORK"
stage setup 75 bash -c "$(declare -f setup_env); MODE=$MODE; setup_env > $WORK/python"
PY=$(tail -n 1 "$WORK/python" 2>/dev/null); PY=${PY:-python3}
export PYTHONPATH="$PYTHONPATH:/tmp/site"
[ "$MODE" = dry ] && export JAX_PLATFORMS=cpu
RESULTS=$REPO/benchmarks/results; [ "$MODE" = dry ] && RESULTS=$WORK   # a dry run writes no results
log "python: $PY"

if [ "$MODE" = gpu ]; then
  SIZE=8192; ARCH=resnet50; BATCHES="64 256"; REPEATS=2
  # Both convolution paths on the GPU (the ImageNet architectures too), then the attacks; the
  # trained-backbone test needs Fashion-MNIST, which the machine cannot download.
  TESTS="tests/test_backend.py tests/test_attacks.py"
  TEST_SELECT=(-k "not bfloat16_pgd")
else
  SIZE=512; ARCH=resnet_compact; BATCHES="8"; REPEATS=1
  TESTS="tests/test_backend.py"
  TEST_SELECT=(-m "not slow" -k "selection or barriers or unknown_path or xla_options")
fi

stage devices 30 "$PY" -m benchmarks.gpu_check devices --work "$WORK"
stage peak 30 "$PY" -m benchmarks.gpu_check peak --work "$WORK" --size $SIZE
# Tests compare the two convolution paths at float32: XLA's default GPU precision (TF32)
# would round them differently.
stage tests 120 env JAX_DEFAULT_MATMUL_PRECISION=highest \
  "$PY" -m pytest -q -x -p no:cacheprovider "${TEST_SELECT[@]}" $TESTS
for batch in $BATCHES; do
  box_f32=$(( batch > 64 ? 100 : 75 )); box_bf16=$(( batch > 64 ? 60 : 45 ))
  stage "bench-b$batch-float32" $box_f32 "$PY" -m benchmarks.gpu_check bench --work "$WORK" \
    --arch $ARCH --batch "$batch" --precision float32 --repeats $REPEATS
  stage "bench-b$batch-bfloat16" $box_bf16 "$PY" -m benchmarks.gpu_check bench --work "$WORK" \
    --arch $ARCH --batch "$batch" --precision bfloat16 --repeats $REPEATS --no-torch
done
TOTAL_S=$(( TOTAL_S + 15 )) stage report 15 "$PY" -m benchmarks.gpu_check report --work "$WORK" \
  --out-dir "$RESULTS" ${OUT_DIR:+--copy-to "$OUT_DIR"}
log "done in $(( $(date +%s) - START ))s"
