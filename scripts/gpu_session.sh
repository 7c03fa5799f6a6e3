#!/usr/bin/env bash
# The GPU checks of a lent machine, in as few device calls as possible.
#
#   bash scripts/gpu_session.sh STAGE [STAGE ...]
#
# Stages, in the order a session needs them (docs/gpu_session.md):
#   env          GPU, driver and package versions; the device as tvm_lite sees it
#   test         pytest -m gpu: every kernel test on the real GPU against numpy
#   sanitize     compute-sanitizer memcheck and racecheck of quant_matmul's kernels
#   check        the flagship shapes against numpy float64 (no sanitizer)
#   bench-goals  the issue's goal rows: every weight type at K=8192, N=57344, M=1 and 16
#   bench        the whole benchmark (K=8192, N in {8192, 28672, 57344}, M in {1, 16, 128, 4096})
#
# Logs go to $OUT (the device tool's folder that comes back), else ./gpu_out.
# Packages the image lacks travel as wheels in .whl/ (scripts/gpu_wheels.sh,
# run where pip works; name .whl in the call's carry). Each stage's exit
# status is printed; the script's status is the first failure's.
set -uo pipefail
[ $# -gt 0 ] || { sed -n 2,18p "$0"; exit 2; }
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
export TL_CACHE_DIR=${TL_CACHE_DIR:-/tmp/tl-cache}

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/tl-site .whl/*.whl || { echo "installing .whl/ failed"; exit 1; }
    export PYTHONPATH=/tmp/tl-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

stage_env() {
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
    "$PY" - <<'PY'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("numpy", "llvmlite", "lark", "networkx", "ml_dtypes", "cuda.bindings", "nvmath", "cupy", "torch"):
    try:
        module = importlib.import_module(name)
        print(f"{name:14} {getattr(module, '__version__', '?')}")
    except Exception as e:
        print(f"{name:14} missing ({type(e).__name__}: {e})")
import tvm_lite as tl
from tvm_lite.backends.nvjitlink import find_ptxas
print("device       ", tl.cuda.device_info())
print("ptxas        ", find_ptxas())
PY
}

stage_test() {
    local jobs=()
    "$PY" -c "import xdist" 2>/dev/null && jobs=(-n 4)
    # A module that fails to import (say, an older llvmlite in the image) must
    # not stop the GPU tests, which need none of the CPU backend.
    timeout 540 "$PY" -m pytest -m gpu -q -p no:cacheprovider "${jobs[@]}" --continue-on-collection-errors \
        --junitxml "$OUT/gpu_tests.xml" 2>&1 \
        | tee "$OUT/gpu_tests.log"
}

stage_sanitize() {
    local status=0
    for tool in memcheck racecheck; do
        timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 --print-limit 20 \
            "$PY" benchmarks/gpu_flagship_check.py --small 2>&1 | tee "$OUT/sanitize_$tool.log"
        local s=${PIPESTATUS[0]}
        echo "compute-sanitizer --tool $tool: exit $s"
        [ "$status" -eq 0 ] && status=$s
    done
    return "$status"
}

stage_check() {
    timeout 300 "$PY" benchmarks/gpu_flagship_check.py 2>&1 | tee "$OUT/flagship_check.log"
}

stage_bench_goals() {
    timeout 540 "$PY" -m tvm_lite bench --target cuda --n 57344 --m 1,16 2>&1 | tee "$OUT/bench_goals.txt"
}

stage_bench() {
    timeout 580 "$PY" -m tvm_lite bench --target cuda 2>&1 | tee "$OUT/bench_all.txt"
}

first_failure=0
for stage in "$@"; do
    fn="stage_${stage//-/_}"
    if ! declare -F "$fn" >/dev/null; then
        echo "unknown stage '$stage'"; exit 2
    fi
    echo "=== $stage ($(date -u +%H:%M:%S))"
    "$fn"
    status=$?
    echo "=== $stage: exit $status"
    [ "$first_failure" -eq 0 ] && first_failure=$status
done
exit "$first_failure"
