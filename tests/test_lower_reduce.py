"""GPU reductions (passes/lower_reduce.py): per-thread slots, shfl.sync.bfly over
the reduced lanes, a shared exchange of per-warp partials when warps span the
reduced dim; checked in the emulator against numpy on fresh random data, and
assembled by ptxas (nvJitLink) for sm_80 and sm_90."""
from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest

import tvm_lite as tl
from conftest import EXAMPLES
from tvm_lite.backends.emulator import run_thread_kernel
from tvm_lite.backends.gpu_pipeline import lower_for_gpu
from tvm_lite.ir import thread as T
from tvm_lite.passes.lower_layouts import default_layout
from tvm_lite.passes.lower_reduce import split_reduced_digits
from tvm_lite.passes.lower_to_threads import lower_to_threads

EMU = [pytest.param("cuda-emu:sm_80", id="emu-sm80"), pytest.param("cuda-emu:sm_90", id="emu-sm90")]
NP = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "i64": np.int64}


def _counts(tk) -> Counter:
    c = Counter()
    for s in T.walk(tk.body):
        name = type(s).__name__
        if isinstance(s, (T.Load, T.Store)):
            name += "." + s.space.name
        c[name] += 1
    return c


def _data(rng, dt: str, shape):
    if dt.startswith("i"):   # full range: the sums wrap
        info = np.iinfo(NP[dt])
        return rng.integers(info.min, info.max, shape, dtype=NP[dt], endpoint=True)
    return rng.standard_normal(shape).astype(NP[dt])


def _check(op: str, dt: str, x: np.ndarray, dim: int, got: np.ndarray) -> None:
    got = got.reshape(-1)
    if op != "sum":
        want = (x.max if op == "max" else x.min)(axis=dim)
        np.testing.assert_array_equal(got, want)
    elif dt.startswith("i"):
        np.testing.assert_array_equal(got, x.sum(axis=dim, dtype=x.dtype))   # numpy wraps too
    else:
        x64 = x.astype(np.float64)
        want = x64.sum(axis=dim)
        # Reassociated accumulation: a few ulps of sum|x|, plus the final rounding to dt.
        eps = np.finfo(x.dtype).eps
        bound = 2.0 ** -18 * np.abs(x64).sum(axis=dim) + eps * np.abs(want)
        assert np.all(np.abs(got.astype(np.float64) - want) <= bound), (got, want)


def test_softmax_reduces_with_shuffles_not_shared_lines():
    """Before lower_reduce the softmax kernel (BM=4, BN=128, 4 warps) read every
    row from shared scratch: 256 shared loads, no shfl."""
    mod = tl.compile(os.path.join(EXAMPLES, "softmax.tl"), target="interp")
    counts = _counts(lower_for_gpu(next(iter(mod)).vm, "cuda-emu:sm_80"))
    assert counts["Shfl"] >= 10          # 5 butterfly steps for max, at least 5 for sum
    assert counts["Load.SHARED"] == 0 and counts["Barrier"] == 0


@pytest.mark.parametrize("target", EMU)
@pytest.mark.parametrize("dt", ["f32", "f16", "i32", "i64"])
@pytest.mark.parametrize("op", ["sum", "max", "min"])
def test_reduce_each_dim_matches_numpy(target, op, dt, rng):
    src = f"""
@kernel(warps=4)
def red(x: {dt}[24, 64], r0: {dt}[64], r1: {dt}[24, 1]):
    t = load(x, [0, 0], [24, 64])
    store(r0, {op}(t, dim=0), [0])
    store(r1, {op}(t, dim=1, keepdim=True), [0, 0])
"""
    mod = tl.compile(src, target=target)
    counts = _counts(lower_for_gpu(next(iter(mod)).vm, target))
    assert counts["Shfl"] > 0
    x = _data(rng, dt, (24, 64))
    r0, r1 = np.zeros(64, NP[dt]), np.zeros((24, 1), NP[dt])
    mod.red(x, r0, r1)
    _check(op, dt, x, 0, r0)
    _check(op, dt, x, 1, r1)


@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_propagate_nan(op, rng):
    src = f"""
@kernel(warps=2)
def red(x: f32[16, 64], r: f32[16]):
    store(r, {op}(load(x, [0, 0], [16, 64]), dim=1), [0])
"""
    mod = tl.compile(src, target="cuda-emu:sm_80")
    x = rng.standard_normal((16, 64)).astype(np.float32)
    rows = rng.choice(16, 5, replace=False)
    x[rows, rng.integers(0, 64, 5)] = np.nan
    r = np.zeros(16, np.float32)
    mod.red(x, r)
    np.testing.assert_array_equal(r, (np.max if op == "max" else np.min)(x, axis=1))
    assert np.isnan(r[rows]).all()


WARPS_SRC = """
@kernel(warps=4)
def red(x: {dt}[256, 8], r0: {dt}[8], r1: {dt}[8], r2: {dt}[8]):
    t = load(x, [0, 0], [256, 8])
    store(r0, sum(t, dim=0), [0])
    store(r1, max(t, dim=0), [0])
    store(r2, min(t, dim=0), [0])
"""


def _warp_spanning_kernel(dt: str):
    """Lowered with the lowering's default layouts (no layout inference, which
    would convert to a lane-only layout first): dim 0 of [256, 8] spans lanes
    and all 4 warps."""
    kernel = next(iter(tl.compile(WARPS_SRC.format(dt=dt), target="interp"))).vm
    return kernel, lower_to_threads(kernel, None, "cuda-emu:sm_80")


@pytest.mark.parametrize("dt", ["f32", "f16", "i32", "i64"])
def test_reduce_across_warps_matches_numpy(dt, rng):
    _, tk = _warp_spanning_kernel(dt)
    bits, _, warps = split_reduced_digits(default_layout((256, 8), 128, np.dtype(NP[dt]).itemsize * 8), 0)
    assert bits and warps == [(32, 4)]
    counts = _counts(tk)
    assert counts["Shfl"] > 0 and counts["Barrier"] > 0
    # Three reductions of 8 lines: only the per-warp partials go through shared memory.
    assert 0 < counts["Load.SHARED"] <= 3 * 8 * 4
    x = _data(rng, dt, (256, 8))
    outs = {f"r{i}": np.zeros(8, NP[dt]) for i in range(3)}
    run_thread_kernel(tk, 1, {"x": x, **outs})
    for i, op in enumerate(("sum", "max", "min")):
        _check(op, dt, x, 0, outs[f"r{i}"])


# ------------------------------------------------------------ PTX assembly
@pytest.mark.parametrize("sm", [80, 90])
def test_reductions_assemble(sm):
    pytest.importorskip("cuda.bindings.nvjitlink")
    from tvm_lite.backends.nvjitlink import compile_ptx
    from tvm_lite.backends.ptx import emit_ptx
    kernels = [lower_for_gpu(next(iter(tl.compile(os.path.join(EXAMPLES, "softmax.tl"), target="interp"))).vm,
                             f"cuda:sm_{sm}")]
    kernels += [_warp_spanning_kernel(dt)[1] for dt in ("f32", "f16", "i32")]
    for tk in kernels:
        ptx = emit_ptx(tk, sm)
        assert "shfl.sync.bfly.b32" in ptx
        cubin = compile_ptx(ptx, sm)
        assert cubin.cubin[:4] == b"\x7fELF"
        assert (cubin.spill_stores, cubin.spill_loads) == (0, 0), cubin.log
