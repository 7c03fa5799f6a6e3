"""The GPU lowering run in the thread-IR emulator, beyond the `target` fixture's tests.

* The DESIGN.md kernel (conftest.QMATMUL, default tiles BM=16, BN=128, BK=64, G=128) for
  every 1-8-bit weight type at M = 1 and at an odd M over two row blocks, with K and N
  not multiples of the tiles; M = 1 on sm_80 and the odd M on sm_90, so every type
  runs on both.
* `tl.ops.quant_matmul(..., target="cuda-emu")` on both of its kernels.
* Random element-wise kernels: the emulator agrees with the interpreter bit for bit.

References are numpy float64 on fresh random data; outputs are poisoned with NaN first.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tvm_lite as tl
from conftest import QMATMUL
from tvm_lite.ir import thread as T
from test_differential import FLOAT_EXPR, INT_EXPR, SETTINGS, kernel
from test_interp import WEIGHT_TYPES, qmatmul_reference, random_weights, storage
from test_quant_matmul import check

# (target, m): M = 1 is the GEMV-like case (one row of a 16-row tile); 19 rows take two
# row blocks, the second with 3 rows.
QMATMUL_CASES = [("cuda-emu:sm_80", 1), ("cuda-emu:sm_90", 19)]


@pytest.mark.parametrize("target, m", QMATMUL_CASES, ids=["sm80-m1", "sm90-m19"])
@pytest.mark.parametrize("wt", WEIGHT_TYPES)
def test_design_qmatmul_every_weight_type(rng, wt, target, m):
    assert len(WEIGHT_TYPES) == 23
    # K = 136: two full k tiles (BK = 64) and one of 8, and a short last group (8 of 128);
    # N = 72: one partial column block (BN = 128). tests/test_interp.py runs wider shapes.
    n, k, group = 72, 136, 128
    mod = tl.compile(QMATMUL, target=target, WT=wt)
    a = rng.standard_normal((m, k)).astype(np.float16)
    w = random_weights(rng, wt, (k, n))
    s = (rng.random((-(-k // group), n)) * 0.05 + 0.01).astype(np.float16)
    c = np.full((m, n), np.nan, np.float16)
    mod.qmatmul(m, n, k, a, storage(w, wt), s, c)
    ref = qmatmul_reference(a, w, s, group)
    np.testing.assert_allclose(c.astype(np.float64), ref, rtol=2 ** -9, atol=1e-2)


# (weight type, group (-1: all of K), m, k, n, zero point, activation, target): spread over
# both kernels (quant_gemv for M <= 16, quant_gemm above), every activation type, both
# archs, partial tiles in every dimension and short last groups.
OPS_CASES = [
    ("u4", 32, 1, 109, 37, False, np.float16, "cuda-emu"),
    ("i3", 64, 3, 101, 66, True, np.float32, "cuda-emu:sm_90"),
    ("f4e2m1", 128, 17, 150, 40, False, "bfloat16", "cuda-emu:sm_80"),
    ("u8", -1, 20, 70, 33, False, np.float16, "cuda-emu:sm_90"),
    ("f6e3m2", 32, 2, 96, 50, False, np.float32, "cuda-emu"),
    ("u5", 48, 21, 150, 45, True, np.float16, "cuda-emu:sm_80"),
]


@pytest.mark.parametrize("wt, group, m, k, n, zero_point, act, target", OPS_CASES,
                         ids=[f"{c[0]}-g{c[1]}-m{c[2]}" for c in OPS_CASES])
def test_quant_matmul_op(rng, wt, group, m, k, n, zero_point, act, target):
    import ml_dtypes
    act = ml_dtypes.bfloat16 if act == "bfloat16" else act
    qt = tl.quantize(rng.standard_normal((k, n)), wt, group if group > 0 else k, zero_point=zero_point)
    a = rng.standard_normal((m, k)).astype(act)
    check(a, qt, tl.ops.quant_matmul(a, qt, target=target))


def test_quant_matmul_op_both_kernels_at_the_threshold(rng):
    """M = 16 (the last GEMV size) through both kernels, forced, on the emulator; the
    GEMV kernel with all 16 rows in one block (its default BM = 1 and BN = 1024 would
    emulate 16 blocks of mostly masked-off columns)."""
    k, n, m = 70, 30, 16
    qt = tl.quantize(rng.standard_normal((k, n)), "i4", 32)
    a = rng.standard_normal((m, k)).astype(np.float16)
    for name, tiles in (("quant_gemv", dict(BM=16, BN=128)), ("quant_gemm", None)):
        check(a, qt, tl.ops.quant_matmul(a, qt, target="cuda-emu", kernel=name, tiles=tiles))


# ------------------------------------------------ random element-wise kernels

def run_on(target, src, *inputs, out_dtype):
    out = np.zeros(64, out_dtype)
    tl.compile(src, target=target).k(*inputs, out)
    return out


GPU_SETTINGS = settings(SETTINGS, max_examples=12)     # each example compiles a kernel twice


@GPU_SETTINGS
@given(FLOAT_EXPR, st.sampled_from(["f32", "f16"]), st.floats(-4, 4, width=16))
def test_float_kernels_agree_with_the_interpreter(expr, dtype, s):
    """+, -, *, / in f32 are IEEE-exact on a GPU; f16 computed in f32 and rounded once
    is exact too (24 >= 2 * 11 + 2 bits: no double-rounding error)."""
    rng = np.random.default_rng()
    np_dtype = np.float32 if dtype == "f32" else np.float16
    x = (rng.standard_normal(64) * 8).astype(np_dtype)
    y = (rng.standard_normal(64) * 8).astype(np_dtype)
    src = kernel(expr, dtype, "f32")
    try:
        want = run_on("interp", src, s, x, y, out_dtype=np_dtype)
    except tl.TLError as e:
        with pytest.raises(type(e)):
            run_on("cuda-emu:sm_80", src, s, x, y, out_dtype=np_dtype)
        return
    got = run_on("cuda-emu:sm_80", src, s, x, y, out_dtype=np_dtype)
    np.testing.assert_array_equal(got, want)


@GPU_SETTINGS
@given(INT_EXPR, st.sampled_from(["i32", "i8"]), st.integers(-9, 9))
def test_integer_kernels_agree_with_the_interpreter(expr, dtype, s):
    """Wrapping arithmetic and floor division/modulo; a division by zero is an
    error only on the interpreter (language.md section 3), so such draws compare nothing."""
    rng = np.random.default_rng()
    np_dtype = np.int32 if dtype == "i32" else np.int8
    x = rng.integers(-100, 100, 64).astype(np_dtype)
    y = rng.integers(-100, 100, 64).astype(np_dtype)
    src = kernel(expr, dtype, "i32")
    try:
        want = run_on("interp", src, s, x, y, out_dtype=np_dtype)
    except tl.TLError as e:
        if "by zero" in str(e):              # division or modulo
            return
        with pytest.raises(type(e)):
            run_on("cuda-emu:sm_90", src, s, x, y, out_dtype=np_dtype)
        return
    got = run_on("cuda-emu:sm_90", src, s, x, y, out_dtype=np_dtype)
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------ launch checks on the emulator

@pytest.mark.parametrize("target", ["cuda-emu:sm_80", "cuda-emu:sm_90"])
def test_launch_checks_and_keywords(rng, target):
    """tests/test_launch_checks.py's kernel (16x32 tiles of f16 x dequantized u4 on 4
    warps: another mma tiling than qmatmul's) runs right and binds its arguments as on
    the interpreter: positional or by keyword, with the same TLLaunchErrors."""
    from test_launch_checks import SRC, good_args
    qm = tl.compile(SRC, target=target).qm
    args, w = good_args(rng)
    qm(*args)
    np.testing.assert_allclose(args[5], args[3].astype(np.float64) @ w, rtol=1e-6, atol=1e-4)
    args, w = good_args(rng, m=17, n=33, k=70)
    qm(**dict(zip(["m", "n", "k", "a", "b", "c"], args)))
    np.testing.assert_allclose(args[5], args[3].astype(np.float64) @ w, rtol=1e-6, atol=1e-4)
    args, _ = good_args(rng)
    with pytest.raises(tl.TLLaunchError, match="argument 'a' must be float16"):
        qm(*args[:3], args[3].astype(np.float32), *args[4:])
    with pytest.raises(tl.TLLaunchError, match="must be 1000 uint8 bytes, got 999"):
        qm(*args[:4], args[4][:-1], args[5])
    args[5].setflags(write=False)
    with pytest.raises(tl.TLLaunchError, match="read-only"):
        qm(*args)


@pytest.mark.parametrize("start, stop", [(0, 8), (10, 8)])
def test_zero_range_step_runs_no_iterations(start, stop):
    """A runtime zero step is an error on interp and cpu (test_cpu.py); GPU kernels have
    no error channel, so the lowered loop leaves at once, whatever start and stop are,
    instead of spinning forever."""
    src = f"""
@kernel(warps=1)
def k(step: i32, y: f32[4]):
    acc = zeros(f32, [4])
    for i in range({start}, {stop}, step):
        acc = acc + 1.0
    store(y, acc, [0])
"""
    mod = tl.compile(src, target="cuda-emu:sm_80")
    y = np.full(4, np.nan, np.float32)
    mod.k(0, y)
    np.testing.assert_array_equal(y, [0, 0, 0, 0])
    mod.k(1 if start < stop else -1, y)
    np.testing.assert_array_equal(y, [abs(stop - start)] * 4)


# ------------------------------------------------ shared-memory reader tracking

def _broadcast_then_write(writer_tid: int, barrier: bool):
    """Every thread reads shared word 0 (one word, many readers), then thread
    `writer_tid` writes it, with or without a bar.sync in between."""
    from test_emulator_util import KernelBuilder
    kb = KernelBuilder("bcast", 64, shared_bytes=64)
    base, y, p = kb.reg("s", T.u32), kb.reg("y", T.b32), kb.reg("p", T.pred)
    kb.emit(T.SharedBase(base), T.Setp(T.Cmp.EQ, p, kb.tid, T.Imm(0, T.u32)),
            T.Store(T.Space.SHARED, base, 0, (T.Imm(7, T.b32),), pred=p), T.Barrier(),
            T.Load((y,), T.Space.SHARED, base))
    if barrier:
        kb.emit(T.Barrier())
    q = kb.reg("q", T.pred)
    kb.emit(T.Setp(T.Cmp.EQ, q, kb.tid, T.Imm(writer_tid, T.u32)),
            T.Store(T.Space.SHARED, base, 0, (T.Imm(9, T.b32),), pred=q))
    return kb.kernel()


@pytest.mark.parametrize("writer_tid", [0, 37, 63])
def test_write_after_a_broadcast_read_needs_a_barrier(writer_tid):
    """Any thread's write to a word several threads read in this barrier epoch races;
    after a bar.sync it does not. (Also: a lone reader may overwrite what it read.)"""
    from tvm_lite.backends.emulator import HazardError, run_thread_kernel
    run_thread_kernel(_broadcast_then_write(writer_tid, True), 1)
    with pytest.raises(HazardError, match="that several threads read with no bar.sync"):
        run_thread_kernel(_broadcast_then_write(writer_tid, False), 1)
    from test_emulator_util import KernelBuilder
    kb = KernelBuilder("own", 32, shared_bytes=128)
    base, a, y = kb.reg("s", T.u32), kb.reg("a", T.u32), kb.reg("y", T.b32)
    kb.emit(T.SharedBase(base), T.Fma(a, kb.tid, T.Imm(4, T.u32), base),
            T.Store(T.Space.SHARED, a, 0, (T.Imm(1, T.b32),)),
            T.Load((y,), T.Space.SHARED, a), T.Store(T.Space.SHARED, a, 0, (y,)))
    run_thread_kernel(kb.kernel(), 1)
