#!/usr/bin/env bash
# Run HERE (a machine with pip access) before using a lent GPU machine: it
# downloads, into .whl/, the wheels of tvm_lite's dependencies that the GPU
# machine's image lacks (it has numpy, llvmlite, networkx, ml-dtypes, pytest,
# hypothesis, tqdm, cuda-bindings, cuda-core, nvJitLink, cuBLAS, cupy and
# torch, but no lark), for its Python 3.12: lark, interegular (lark's strict
# grammar checks) and nvmath-python (the issue's first choice of cuBLAS
# binding; without it the baseline is cupy.matmul, also cuBLAS). Name .whl in the device call's `carry`; then
# scripts/gpu_session.sh installs them there. See docs/gpu_session.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
mkdir -p .whl
for spec in "lark==1.3.1" "interegular==0.3.3" "nvmath-python==1.0.0"; do
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
        -d .whl "$spec"
done
ls -l .whl
