"""Kernels on the interpreter and the CPU backend against numpy float64.

Every test uses fresh random data and poisons outputs with NaN first, so a
kernel that skips a write cannot pass.
"""
import os

import numpy as np
import pytest

import tvm_lite as tl
from conftest import EXAMPLES, is_gpu_target

TARGETS = ["interp", "cpu"]

WEIGHT_TYPES = ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "i2", "i3", "i4", "i5", "i6", "i7",
                "i8", "f3e1m1", "f4e2m1", "f5e2m2", "f6e2m3", "f6e3m2", "f7e3m3", "f8e4m3", "f8e5m2"]


def example(name, target, **constants):
    return tl.compile(os.path.join(EXAMPLES, name), target=target, **constants)


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype)


def random_weights(rng, dt, shape):
    """Random values of dtype dt (all representable), as float64."""
    dt = tl.dtype(dt)
    if dt.is_float:
        bits = rng.integers(0, 2 ** dt.nbits, shape)
        values = tl.unpack(tl.ir.dtypes.pack_bits(bits, dt.nbits), dt, shape).astype(np.float64)
        return np.where(np.isfinite(values), values, 0.0)
    return rng.integers(dt.min, dt.max + 1, shape).astype(np.float64)


def test_vector_add_with_tail(target, rng):
    mod = example("vector_add.tl", target)
    for n in (1, 255, 1000):
        a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
        c = poisoned(n, np.float32)
        mod.vector_add(n, a, b, c)
        np.testing.assert_array_equal(c, (a.astype(np.float64) + b).astype(np.float32))


def test_softmax_rows(target, rng):
    mod = example("softmax.tl", target)
    m, n = 9, 100
    x = (rng.standard_normal((m, n)) * 3).astype(np.float32)
    y = poisoned((m, n), np.float32)
    mod.softmax(m, n, x, y)
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(50, 70, 90), (1, 32, 32), (33, 1, 65)])
def test_matmul(target, rng, shape):
    m, n, k = shape
    mod = example("matmul.tl", target)
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    c = poisoned((m, n), np.float16)
    mod.matmul(m, n, k, a, b, c)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    # One f16 rounding of the f32 accumulator: half an f16 ulp of the result.
    np.testing.assert_allclose(c.astype(np.float64), ref, rtol=2 ** -10, atol=2 ** -14)


def qmatmul_reference(a, w, s, group):
    scales = np.repeat(s.astype(np.float64), group, axis=0)[: w.shape[0]]
    # The kernel rounds the dequantized weight to f16 before the dot.
    wq = (w * scales).astype(np.float16).astype(np.float64)
    return a.astype(np.float64) @ wq


@pytest.mark.parametrize("wt", WEIGHT_TYPES)
def test_qmatmul_every_weight_type(target, rng, wt):
    m, n, k, group = 3, 130, 200, 128
    mod = example("qmatmul.tl", target, WT=wt, BN=64)
    a = rng.standard_normal((m, k)).astype(np.float16)
    w = random_weights(rng, wt, (k, n))
    s = (rng.random((-(-k // group), n)) * 0.05 + 0.01).astype(np.float16)
    c = poisoned((m, n), np.float16)
    mod.qmatmul(m, n, k, a, storage(w, wt), s, c)
    ref = qmatmul_reference(a, w, s, group)
    np.testing.assert_allclose(c.astype(np.float64), ref, rtol=2 ** -9, atol=1e-2)


@pytest.mark.parametrize("m", [1, 16, 17])
def test_qmatmul_shapes(target, rng, m):
    n, k = 200, 320
    mod = example("qmatmul.tl", target, WT="u3", G=64)
    a = rng.standard_normal((m, k)).astype(np.float16)
    w = random_weights(rng, "u3", (k, n))
    s = (rng.random((-(-k // 64), n)) * 0.05 + 0.01).astype(np.float16)
    c = poisoned((m, n), np.float16)
    mod.qmatmul(m, n, k, a, tl.pack(w, "u3"), s, c)
    np.testing.assert_allclose(c.astype(np.float64), qmatmul_reference(a, w, s, 64), rtol=2 ** -9, atol=1e-2)


def storage(values, dt):
    """How a kernel argument of dtype dt is passed: native numpy or packed bytes."""
    native = tl.ir.dtypes.numpy_dtype(tl.dtype(dt))
    return values.astype(native) if native is not None else tl.pack(values, dt)


def run(src, target, *args, **constants):
    mod = tl.compile(src, target=target, **constants)
    next(iter(mod))(*args)


def test_masked_loads_with_negative_offsets(target, rng):
    src = """
@kernel(warps=1)
def shift(n: i32, d: i32, x: f32[n], y: f32[n]):
    t = load(x, [0 - d], [16])
    store(y, t, [0])
"""
    x = rng.standard_normal(16).astype(np.float32)
    y = poisoned(16, np.float32)
    run(src, target, 16, 5, x, y)
    np.testing.assert_array_equal(y, np.concatenate([np.zeros(5), x[:11]]).astype(np.float32))


def test_store_drops_out_of_range(target, rng):
    src = """
@kernel(warps=1)
def put(n: i32, x: f32[n], y: f32[n]):
    store(y, load(x, [0], [8]), [n - 3])
"""
    x = rng.standard_normal(10).astype(np.float32)
    y = rng.standard_normal(10).astype(np.float32)
    before = y.copy()
    run(src, target, 10, x, y)
    np.testing.assert_array_equal(y[:7], before[:7])
    np.testing.assert_array_equal(y[7:], x[:3])


def test_elementwise_and_math(target, rng):
    src = """
@kernel(warps=1)
def ops(x: f32[32], y: f32[32], out: f32[8, 32]):
    a = load(x, [0], [32])
    b = load(y, [0], [32])
    store(out, reshape(concat([a + b, a - b, a * b, a / b, min(a, b), max(a, b), abs(a) , exp(a)], dim=0), [8, 32]), [0, 0])
"""
    x = rng.standard_normal(32).astype(np.float32)
    y = (rng.random(32) + 0.5).astype(np.float32)
    out = poisoned((8, 32), np.float32)
    run(src, target, x, y, out)
    a, b = x.astype(np.float64), y.astype(np.float64)
    ref = np.stack([a + b, a - b, a * b, a / b, np.minimum(a, b), np.maximum(a, b), np.abs(a), np.exp(a)])
    np.testing.assert_allclose(out[:7], ref[:7], rtol=2 ** -23)
    # GPUs compute exp as ex2.approx(x * log2(e)): the product's rounding costs |x| * 2^-24 of
    # relative error and ex2.approx.f32 adds up to 2 ulp (PTX ISA), so 2^-20 for |x| < 8.
    np.testing.assert_allclose(out[7], ref[7], rtol=2 ** -20 if is_gpu_target(target) else 2 ** -23)


def test_integer_ops_floor_semantics(target, rng):
    src = """
@kernel(warps=1)
def iops(x: i32[64], y: i32[64], out: i32[6, 64]):
    a = load(x, [0], [64])
    b = load(y, [0], [64])
    r = concat([a // b, a % b, a & b, a | b, a ^ b, (a << 2) >> 1], dim=0)
    store(out, reshape(r, [6, 64]), [0, 0])
"""
    x = rng.integers(-1000, 1000, 64).astype(np.int32)
    y = rng.integers(1, 50, 64).astype(np.int32) * rng.choice([-1, 1], 64).astype(np.int32)
    out = np.zeros((6, 64), np.int32)
    run(src, target, x, y, out)
    a, b = x.astype(np.int64), y.astype(np.int64)
    np.testing.assert_array_equal(out, np.stack([a // b, a % b, a & b, a | b, a ^ b, (a << 2) >> 1]))


def test_reductions_and_shape_ops(target, rng):
    src = """
@kernel(warps=1)
def red(x: f32[8, 16], s: f32[8], mx: f32[16], t: f32[16, 8], sl: f32[4, 4], bc: f32[8, 16]):
    a = load(x, [0, 0], [8, 16])
    store(s, sum(a, dim=1), [0])
    store(mx, max(a, dim=0), [0])
    store(t, transpose(a), [0, 0])
    store(sl, slice(a, [2, 3], [4, 4]), [0, 0])
    store(bc, broadcast_to(min(a, dim=1, keepdim=True), [8, 16]), [0, 0])
"""
    x = rng.standard_normal((8, 16)).astype(np.float32)
    outs = [poisoned(s, np.float32) for s in [(8,), (16,), (16, 8), (4, 4), (8, 16)]]
    run(src, target, x, *outs)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(outs[0], x64.sum(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(outs[1], x.max(axis=0))
    np.testing.assert_array_equal(outs[2], x.T)
    np.testing.assert_array_equal(outs[3], x[2:6, 3:7])
    np.testing.assert_array_equal(outs[4], np.broadcast_to(x.min(axis=1, keepdims=True), (8, 16)))


def test_cast_rounds_to_nearest_even_and_saturates(target):
    src = """
@kernel(warps=1)
def c(x: f32[8], y: f8e4m3[8], z: i8[8]):
    a = load(x, [0], [8])
    store(y, cast(a, f8e4m3), [0])
    store(z, cast(a, i8), [0])
"""
    # 17 is a tie between 16 and 18 in e4m3 (3 mantissa bits): even wins (16).
    x = np.array([17.0, 19.0, 1000.0, -1000.0, 0.3, -2.5, 300.7, -300.7], np.float32)
    y = np.zeros(8, np.uint8)
    z = np.zeros(8, np.int8)
    run(src, target, x, y, z)
    np.testing.assert_array_equal(tl.unpack(y, "f8e4m3", 8), [16, 20, 448, -448, 0.3125, -2.5, 288, -288])
    np.testing.assert_array_equal(z, [17, 19, 127, -128, 0, -2, 127, -128])


def test_view_round_trip(target, rng):
    src = """
@kernel(warps=1)
def v(x: u8[4, 8], y: u8[4, 8], w: u4[4, 16]):
    a = load(x, [0, 0], [4, 8])
    q = view(a, u4, layout=spatial(4, 2).local(1, 8))
    store(w, q, [0, 0])
    store(y, view(q, u8), [0, 0])
"""
    x = rng.integers(0, 256, (4, 8)).astype(np.uint8)
    y = np.zeros((4, 8), np.uint8)
    w = np.zeros(32, np.uint8)
    run(src, target, x, y, w)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(w, x.reshape(-1))   # u4 nibbles are the same bit stream


def test_scalar_control_flow(target, rng):
    src = """
@kernel(warps=1)
def loop(n: i32, x: i32[16], y: i32[16]):
    acc = zeros(i32, [16])
    i = 0
    while i < 100:
        if i >= n:
            break
        elif i % 2 == 0:
            acc = acc + load(x, [0], [16])
        else:
            acc = acc - 1
        i = i + 1
    store(y, acc, [0])
"""
    x = rng.integers(-50, 50, 16).astype(np.int32)
    y = np.zeros(16, np.int32)
    run(src, target, 7, x, y)
    np.testing.assert_array_equal(y, 4 * x.astype(np.int64) - 3)


def test_shared_memory_round_trip(target, rng):
    src = """
@kernel(warps=2)
def sh(x: f16[32, 32], y: f16[32, 32]):
    buf = shared(f16, [32, 32])
    copy_async(buf, x, [0, 0])
    wait_async(0)
    barrier()
    t = load_shared(buf, [0, 0], [32, 32])
    store_shared(buf, t * 2.0)
    barrier()
    store(y, load_shared(buf), [0, 0])
"""
    x = rng.standard_normal((32, 32)).astype(np.float16)
    y = poisoned((32, 32), np.float16)
    run(src, target, x, y)
    np.testing.assert_array_equal(y, x * np.float16(2))


def test_atomic_add_accumulates_over_blocks(target, rng):
    src = """
@kernel(warps=1)
def acc(n: i32, x: f32[n], total: f32[1]):
    grid(cdiv(n, 64))
    t = load(x, [block.x * 64], [64])
    atomic_add(total, sum(t, dim=0), [0])
"""
    x = rng.integers(-100, 100, 300).astype(np.float32)
    total = np.zeros(1, np.float32)
    run(src, target, 300, x, total)
    assert total[0] == x.astype(np.float64).sum()


def test_arange_where_and_full(target, rng):
    src = """
@kernel(warps=1)
def aw(n: i32, y: f32[32]):
    i = arange(32)
    store(y, where(i < n, full(f32, [32], 2.5), cast(i, f32)), [0])
"""
    y = poisoned(32, np.float32)
    run(src, target, 10, y)
    np.testing.assert_array_equal(y, np.where(np.arange(32) < 10, 2.5, np.arange(32)))


def test_annotate_pins_layouts_without_changing_values(target, rng):
    src = """
@kernel(warps=1)
def k(x: f32[16, 16], y: f32[16, 16]):
    t = annotate(load(x, [0, 0], [16, 16]), column_local(2, 2).spatial(8, 4).local(1, 2))
    store(y, annotate(t, spatial(16, 2) * local(1, 8)), [0, 0])
"""
    mod = tl.compile(src, target=target)
    layouts = [s.layout for s in mod.program.kernels[0].body if isinstance(s, tl.ir.vm.Annotate)]
    assert layouts[0] == tl.ir.layout.mma_m16n8k16_a()
    x = rng.standard_normal((16, 16)).astype(np.float32)
    y = poisoned((16, 16), np.float32)
    mod.k(x, y)
    np.testing.assert_array_equal(y, x)
