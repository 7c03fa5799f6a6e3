"""Run tl.ops.quant_matmul on a real GPU and check it against numpy float64.

    python benchmarks/gpu_flagship_check.py            # the flagship shapes
    python benchmarks/gpu_flagship_check.py --small    # small shapes, for compute-sanitizer

Meant to run under compute-sanitizer (scripts/gpu_session.sh `sanitize`):
every kernel variant tl.ops.quant_matmul launches on the GPU (M <= 16 and
M > 16), for u4 (the flagship) and a few other widths, at tile-multiple and
ragged shapes. Each output is poisoned with NaN before the call, so an element
the kernel never writes fails the check. Exit status 1 on a wrong result.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import tvm_lite as tl
from tvm_lite.ops.quantize import dequantize
from tvm_lite.runtime import cuda as rt
from tvm_lite.runtime.bench_cuda import random_quantized

# (dtype, M, K, N, group size)
FLAGSHIP = [("u4", 1, 8192, 8192, 128), ("u4", 16, 8192, 8192, 128), ("u4", 128, 4096, 4096, 128),
            ("u3", 1, 4096, 4096, 128), ("u1", 16, 4096, 4096, 128), ("f6e3m2", 1, 4096, 4096, 64)]
SMALL = [("u4", 1, 256, 256, 128), ("u4", 16, 256, 384, 128), ("u4", 3, 200, 72, 64), ("u4", 37, 264, 136, 128),
         ("u3", 5, 192, 72, 64), ("u1", 1, 256, 128, 128), ("u8", 20, 128, 64, -1), ("f6e3m2", 2, 160, 96, 32)]
# f16 outputs of f16 dots with f32 accumulation, against float64: a relative
# error of a few 2^-11 of the largest entry.
TOLERANCE = 1e-2


def check(dtype: str, m: int, k: int, n: int, group: int, rng) -> float:
    qt = random_quantized(dtype, k, n, group, rng)
    a = rng.standard_normal((m, k)).astype(np.float16)
    out = rt.to_device(np.full((m, n), np.nan, np.float16))
    from tvm_lite.ops import matmul as qm
    name, gpu = qm.gpu_config(m, "f16")
    kern = qm.compiled(name, "cuda", qm._items(dict(WT=qt.dtype.name, AT="f16", ST="f16", G=qt.group,
                                                    ZERO=0, **gpu)))
    args = [rt.to_device(x) if isinstance(x, np.ndarray) else x for x in qm.kernel_arguments(a, qt)]
    args[-1] = out
    kern(*args)
    got = out.numpy().astype(np.float64)
    ref = a.astype(np.float64) @ dequantize(qt).astype(np.float64)
    if not np.isfinite(got).all():
        return float("inf")
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small shapes (for compute-sanitizer)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng()
    try:
        device = tl.cuda.device_info()
    except tl.TLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{device.name} (sm_{device.sm})")
    ok = True
    for dtype, m, k, n, group in SMALL if args.small else FLAGSHIP:
        err = check(dtype, m, k, n, group, rng)
        good = err < TOLERANCE
        ok &= good
        print(f"{dtype:>7} M={m:<4} K={k:<5} N={n:<5} g{group:<4} max rel err {err:.2e}  {'ok' if good else 'WRONG'}")
    rt.synchronize()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
