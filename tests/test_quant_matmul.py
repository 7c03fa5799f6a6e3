"""tl.ops.quant_matmul against numpy float64 on a @ tl.dequantize(qt).

Every weight type runs once on the CPU, with the group sizes, zero-point
modes, activation types and odd shapes spread over the cases (not their
product), on both kernels (GEMV for M <= 16, GEMM above). A few small cases
run on the interpreter too.
"""
import ml_dtypes
import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.runtime.devices import has_cuda_gpu
from tvm_lite.ops import matmul as qm_module

INT_TYPES = [f"u{b}" for b in range(1, 9)] + [f"i{b}" for b in range(2, 9)]
FLOAT_TYPES = ["f3e1m1", "f4e2m1", "f5e2m2", "f6e2m3", "f6e3m2", "f7e3m3", "f8e4m3", "f8e5m2"]
GROUPS = [32, 64, 128, 256, -1]
M_VALUES = [1, 3, 16, 17, 40]
ACTIVATIONS = [np.float32, np.float16, ml_dtypes.bfloat16]


@pytest.fixture(autouse=True)
def no_autotuning(monkeypatch):
    monkeypatch.setenv("TL_AUTOTUNE", "0")


def check(a, qt, c):
    """c matches float64 a @ dequantize(qt) within f32 accumulation and the output rounding."""
    a64, w64 = a.astype(np.float64), tl.dequantize(qt).astype(np.float64)
    ref = a64 @ w64
    assert c.dtype == a.dtype and c.shape == ref.shape
    c64 = c.astype(np.float64)
    assert np.all(np.isfinite(c64))
    # Kernels may factor the zero point out of a group's sum (a.q - a.zero), so the
    # rounding error scales with |q| + |zero|, not with |q - zero|.
    k = qt.shape[0]
    q = tl.unpack(qt.data, qt.dtype, qt.shape).astype(np.float64)
    rows = np.arange(k) // qt.group
    s = qt.scales.astype(np.float64)[rows]
    z = qt.zeros.astype(np.float64)[rows] if qt.zeros is not None else \
        (0.0 if qt.dtype.is_signed else 2.0 ** (qt.dtype.nbits - 1))
    magnitude = np.abs(a64) @ ((np.abs(q) + np.abs(z)) * s)
    out_ulp = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float16): 2.0 ** -11}.get(c.dtype, 2.0 ** -8)
    bound = magnitude * 2.0 ** -24 * 4 * np.sqrt(a.shape[1]) + np.abs(ref) * out_ulp + 1e-30
    assert np.all(np.abs(c64 - ref) <= bound), np.max(np.abs(c64 - ref) / bound)


def case(i, name):
    """The i-th case's (M, K, N, group, zero_point, activation): spread, not crossed."""
    dt = tl.dtype(name)
    m = M_VALUES[i % len(M_VALUES)]
    group = GROUPS[i % len(GROUPS)]
    k = (group if group > 0 else 96) * (1 + i % 2) + 13 * (i % 3)       # a short last group often
    n = 37 + 29 * (i % 4)
    zero_point = dt.is_integer and i % 3 == 1
    act = ACTIVATIONS[i % len(ACTIVATIONS)]
    return m, k, n, group, zero_point, act


@pytest.mark.parametrize("i, name", list(enumerate(INT_TYPES + FLOAT_TYPES)))
def test_every_type_on_cpu(rng, i, name):
    m, k, n, group, zero_point, act = case(i, name)
    qt = tl.quantize(rng.standard_normal((k, n)), name, group, zero_point=zero_point)
    a = rng.standard_normal((m, k)).astype(act)
    check(a, qt, tl.ops.quant_matmul(a, qt, target="cpu"))


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("m", [2, 33])
def test_every_group_size_both_kernels(rng, group, m):
    k, n = 300, 70
    qt = tl.quantize(rng.standard_normal((k, n)), "u4", group, zero_point=group == 64)
    a = rng.standard_normal((m, k)).astype(np.float32)
    check(a, qt, tl.ops.quant_matmul(a, qt))


@pytest.mark.parametrize("scale_dtype", ["f32", "bf16"])
def test_scale_types(rng, scale_dtype):
    qt = tl.quantize(rng.standard_normal((96, 40)), "i4", 32, zero_point=True, scale_dtype=scale_dtype)
    for m in (1, 20):
        a = rng.standard_normal((m, 96)).astype(np.float32)
        check(a, qt, tl.ops.quant_matmul(a, qt))


def test_both_kernels_agree_at_every_m(rng):
    k, n = 160, 50
    qt = tl.quantize(rng.standard_normal((k, n)), "u3", 32)
    for m in (1, 16, 17):
        a = rng.standard_normal((m, k)).astype(np.float32)
        gemv = tl.ops.quant_matmul(a, qt, kernel="quant_gemv")
        gemm = tl.ops.quant_matmul(a, qt, kernel="quant_gemm")
        check(a, qt, gemv)
        check(a, qt, gemm)


def test_small_tiles_and_non_multiple_shapes(rng):
    """Tile constants that leave partial tiles in every dimension, and KB not dividing G."""
    k, n, m = 150, 45, 21
    qt = tl.quantize(rng.standard_normal((k, n)), "u5", 48, zero_point=True)
    a = rng.standard_normal((m, k)).astype(np.float16)
    c = tl.ops.quant_matmul(a, qt, kernel="quant_gemm", tiles=dict(BM=16, BN=32, BK=32))
    check(a, qt, c)


def test_vector_activation(rng):
    qt = tl.quantize(rng.standard_normal((64, 24)), "f4e2m1", 32)
    a = rng.standard_normal(64).astype(np.float32)
    c = tl.ops.quant_matmul(a, qt)
    assert c.shape == (24,)
    check(a[None], qt, c[None])


def test_dispatch_threshold():
    assert qm_module.choose_kernel(1) == "quant_gemv"
    assert qm_module.choose_kernel(qm_module.GEMV_MAX_M) == "quant_gemv"
    assert qm_module.choose_kernel(qm_module.GEMV_MAX_M + 1) == "quant_gemm"


@pytest.mark.parametrize("name, m, group, zero_point", [
    ("u4", 1, 32, False), ("i3", 17, 64, True), ("f6e3m2", 5, -1, False), ("u8", 18, 32, True),
])
def test_interpreter(rng, name, m, group, zero_point):
    k, n = 75, 19
    qt = tl.quantize(rng.standard_normal((k, n)), name, group, zero_point=zero_point)
    a = rng.standard_normal((m, k)).astype(np.float16)
    c = tl.ops.quant_matmul(a, qt, target="interp")
    check(a, qt, c)


def test_empty_dimensions(rng):
    qt = tl.quantize(rng.standard_normal((32, 8)), "u4", 32)
    c = tl.ops.quant_matmul(np.zeros((0, 32), np.float32), qt)
    assert c.shape == (0, 8) and c.dtype == np.float32


# ---------------------------------------------------------------- errors


def test_launch_errors(rng):
    qt = tl.quantize(rng.standard_normal((64, 8)), "u4", 32)
    with pytest.raises(tl.TLLaunchError, match="float32, float16 or bfloat16"):
        tl.ops.quant_matmul(rng.standard_normal((2, 64)), qt)
    with pytest.raises(tl.TLLaunchError, match="float32, float16 or bfloat16"):
        tl.ops.quant_matmul(np.ones((2, 64), np.int32), qt)
    with pytest.raises(tl.TLLaunchError, match="K = 64"):
        tl.ops.quant_matmul(np.ones((2, 63), np.float32), qt)
    with pytest.raises(tl.TLLaunchError, match="K = 64"):
        tl.ops.quant_matmul(np.ones((2, 2, 64), np.float32), qt)
    with pytest.raises(tl.TLLaunchError, match="numpy array"):
        tl.ops.quant_matmul([[1.0] * 64], qt)
    with pytest.raises(tl.TLError, match="QuantizedTensor"):
        tl.ops.quant_matmul(np.ones((2, 64), np.float32), np.ones((64, 8)))


def test_target_errors(rng):
    qt = tl.quantize(rng.standard_normal((64, 8)), "u4", 32)
    a = np.ones((2, 64), np.float32)
    if not has_cuda_gpu():
        with pytest.raises(tl.TLTargetError, match="CUDA driver"):
            tl.ops.quant_matmul(a, qt, target="cuda")
    with pytest.raises(tl.TLTargetError, match="unknown target"):
        tl.ops.quant_matmul(a, qt, target="tpu")
