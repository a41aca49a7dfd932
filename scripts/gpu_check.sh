#!/usr/bin/env bash
# The accelerator check of functional_nn, one short script (about 6 minutes, 9 at most; the
# CUDA wheels' download is the longest step):
# the device and card, a fresh virtual environment with JAX's CUDA 12 wheels, then
# scripts/validate.py, scripts/benchmark.py --quick, and the tests that matter on an
# accelerator (float32 gradient checks, precision pinning, fit); with --scale instead,
# check_grad of a 100M-parameter transformer, right and with a planted bug. Every step has its own
# timeout, and all of them share one deadline (TOTAL_S).
#
#   bash scripts/gpu_check.sh                  # on a GPU machine, from the repository root
#   bash scripts/gpu_check.sh --cpu            # no GPU: still run the CPU parts
#   bash scripts/gpu_check.sh --cpu --smoke --no-install   # a try-out here, in about 2 minutes
#   bash scripts/gpu_check.sh --scale          # the 100M-parameter check_grad (its own run)
#
# Options:
#   --cpu         run without a GPU (otherwise the script stops after printing the devices)
#   --smoke       short settings: the lecture's network in validate.py, a few benchmark
#                 sections, a few tests
#   --no-install  use the python already on PATH instead of building a fresh venv
#   --scale       after the install and devices, only check_grad of the 100M transformer
# Environment: VENV (default /tmp/functional_nn-gpu-venv, outside the working tree),
#   JAX_VERSION (default 0.10.2: jax-cuda12-plugin 0.10.2 is on PyPI), WHEELS (a folder of
#   downloaded wheels, for a machine with no network), TOTAL_S (default 540), OUT (a folder
#   for the logs and the benchmark's JSON; default a temp folder). Without a network and
#   without WHEELS, the install fails and the script goes on with python3 if it has jax.
set -uo pipefail

cpu=0 smoke=0 install=1 scale=0
for arg in "$@"; do
    case "$arg" in
        --cpu) cpu=1 ;;
        --smoke) smoke=1 ;;
        --no-install) install=0 ;;
        --scale) scale=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.." || exit 2
VENV=${VENV:-/tmp/functional_nn-gpu-venv}
JAX_VERSION=${JAX_VERSION:-0.10.2}
TOTAL_S=${TOTAL_S:-540}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
# The benchmark's cold subprocesses start while its own process holds the GPU: no process
# may take 75% of the GPU's memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
start=$(date +%s)
failed=()

# step NAME LIMIT_S COMMAND...: run with a timeout of min(LIMIT_S, what is left of TOTAL_S)
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((TOTAL_S - ($(date +%s) - start)))
    if ((left < limit)); then limit=$left; fi
    echo
    echo "=== $name (timeout ${limit} s; $(($(date +%s) - start)) s elapsed) ==="
    if ((limit <= 5)); then
        echo "--- $name: skipped, the ${TOTAL_S} s deadline is reached"
        failed+=("$name (not run: deadline)")
        return
    fi
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "--- $name: exit $rc in $(($(date +%s) - t0)) s"
    if ((rc == 124 || rc == 137)); then failed+=("$name (timed out)");
    elif ((rc != 0)); then failed+=("$name (exit $rc)"); fi
}

echo "=== device ==="
date -u
gpu=0
if command -v nvidia-smi > /dev/null && nvidia-smi -L; then
    gpu=1
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
else
    echo "no NVIDIA GPU (nvidia-smi missing or failing)"
fi
if ((!gpu && !cpu)); then
    echo "gpu_check.sh: no GPU here; pass --cpu to run the CPU parts anyway" >&2
    exit 3
fi

PY=python3
if ((install)); then
    if ((gpu)); then jax_req="jax[cuda12]==$JAX_VERSION"; else jax_req="jax==$JAX_VERSION"; fi
    from=""
    if [ -n "${WHEELS:-}" ]; then from="--no-index --find-links $WHEELS"; fi
    step install 300 bash -c "python3 -m venv '$VENV' && . '$VENV/bin/activate' \
        && python -m pip install -q $from -e '.[test,scripts]' '$jax_req'"
    if "$VENV/bin/python" -c "import jax, functional_nn" 2> /dev/null; then
        PY="$VENV/bin/python"
    elif python3 -c "import jax, functional_nn" 2> /dev/null; then
        echo "gpu_check.sh: the venv at $VENV was not built (no network? see $OUT/install.log);" \
            "going on with $(command -v python3), which has jax and functional_nn" >&2
        failed+=("install (fell back to $(command -v python3))")
    else
        echo "gpu_check.sh: no python with jax and functional_nn (see $OUT/install.log)" >&2
        exit 4
    fi
else
    PY=$(command -v python || command -v python3)
fi

step devices 60 "$PY" -c "
import jax
print('jax', jax.__version__, '| backend:', jax.default_backend())
for d in jax.devices():
    print(' ', d, '|', d.device_kind, '|', d.platform)
"
if ((gpu)) && ! grep -q "backend: gpu" "$OUT/devices.log"; then
    echo "gpu_check.sh: a GPU is present but JAX does not use it (see $OUT/devices.log)" >&2
    failed+=("devices (JAX runs on no GPU)")
fi

if ((scale)); then
    # check_grad at research scale where the parameters live: a 97.7M-parameter transformer
    # (149 leaves), the right gradient, then a 5% scale planted in one weight matrix
    step check-100M 240 "$PY" scripts/check_model.py --model "transformer 100M" --no-taylor \
        --json "$OUT/check_100M.json"
    step check-100M-plant 180 "$PY" scripts/check_model.py --model "transformer 100M" \
        --no-taylor --plant scale --json "$OUT/check_100M_plant.json"
elif ((smoke)); then
    step validate 90 "$PY" scripts/validate.py --sizes 4,3,2 --batch 8
    step benchmark 120 "$PY" scripts/benchmark.py --quick --only peak,methods,chain \
        --json "$OUT/benchmark.json"
    step tests 120 "$PY" -m pytest -q -x -p no:cacheprovider tests/lecture/test_backprop.py \
        tests/checking/test_gradcheck.py -k "float32 or precision"
else
    step validate 120 "$PY" scripts/validate.py --json "$OUT/validate.json"
    # validate.py ran above; SymPy is CPU work; the simulated devices are forced onto the CPU
    step benchmark 180 "$PY" scripts/benchmark.py --quick --skip validate,sympy,data_parallel \
        --json "$OUT/benchmark.json"
    step tests-float32 90 "$PY" -m pytest -q -p no:cacheprovider tests/lecture/test_backprop.py \
        tests/checking/test_gradcheck.py tests/checking/test_check_grad.py \
        tests/differences/test_finite_differences.py -k "float32 or precision"
    step tests-fit 90 "$PY" -m pytest -q -p no:cacheprovider tests/training
fi

echo
echo "=== summary: $(($(date +%s) - start)) s; logs and JSON in $OUT ==="
if ((${#failed[@]})); then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all steps passed"
