"""The reference interpreter on hand-built VM IR, against numpy float64.

No frontend here: each kernel is built with the small `KernelBuilder` below,
checked by the VM verifier, and run by `InterpKernel`. Data is fresh random
data on every run, and outputs are poisoned with NaN first, so a kernel that
skips a write cannot pass.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import math
import os
import time

import ml_dtypes
import numpy as np
import pytest

from tvm_lite.backends.interp import InterpKernel, run_kernel
from tvm_lite.errors import TLError
from tvm_lite.ir import vm
from tvm_lite.ir.dtypes import dtype, numpy_dtype, pack, pack_bits, unpack, unpack_bits
from tvm_lite.ir.verifier import verify_program
from tvm_lite.ir.functor import collect
from tvm_lite.runtime.args import BoundArguments, bind_arguments, eval_expr

B = vm.BinaryOp
E = vm.ElementOp
R = vm.ReduceOp
BX, BY, BZ = vm.BlockIdx(0), vm.BlockIdx(1), vm.BlockIdx(2)
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")

# ============================================================ IR builder


def expr(x) -> vm.Expr:
    return x if isinstance(x, vm.Expr) else vm.const(x)


def c(value, dt) -> vm.Const:
    return vm.Const(value, dtype(dt))


def binop(op: vm.BinaryOp, a, b, dt=None) -> vm.Binary:
    a, b = expr(a), expr(b)
    if dt is None:
        dt = vm.BOOL if op.is_comparison or op in (B.AND, B.OR) else a.dtype
    return vm.Binary(op, a, b, dtype(dt))


def add(a, b):
    return binop(B.ADD, a, b)


def mul(a, b):
    return binop(B.MUL, a, b)


def cdiv(a, b):
    return binop(B.CDIV, a, b)


_BOOL_OPS = {E.LT, E.LE, E.GT, E.GE, E.EQ, E.NE, E.AND, E.OR, E.NOT}


class KernelBuilder:
    """Builds one vm.Kernel statement by statement; `build()` verifies it."""

    def __init__(self, name: str = "k", warps: int = 1):
        self.name = name
        self.warps = warps
        self.params: list = []
        self.grid: tuple = (vm.const(1),)
        self.bodies: list[list] = [[]]
        self.count = 0

    # ---- signature and launch shape
    def scalar(self, name: str, dt="i32") -> vm.Var:
        v = vm.Var(name, dtype(dt))
        self.params.append(v)
        return v

    def tensor(self, name: str, dt, *shape) -> vm.GlobalTensor:
        g = vm.GlobalTensor(name, dtype(dt), tuple(expr(s) for s in shape))
        self.params.append(g)
        return g

    def set_grid(self, *dims) -> None:
        self.grid = tuple(expr(d) for d in dims)

    # ---- statements
    def emit(self, stmt) -> None:
        self.bodies[-1].append(stmt)

    def tile(self, dt, shape) -> vm.RegisterTensor:
        self.count += 1
        return vm.RegisterTensor(f"t{self.count}", dtype(dt), tuple(shape))

    def var(self, name: str, value) -> vm.Var:
        value = expr(value)
        v = vm.Var(name, value.dtype)
        self.emit(vm.SetScalar(v, value))
        return v

    def set(self, v: vm.Var, value) -> None:
        self.emit(vm.SetScalar(v, expr(value)))

    def load(self, g, offsets, shape) -> vm.RegisterTensor:
        out = self.tile(g.dtype, shape)
        self.emit(vm.Load(out, g, tuple(expr(o) for o in offsets)))
        return out

    def store(self, g, value, offsets) -> None:
        self.emit(vm.Store(g, value, tuple(expr(o) for o in offsets)))

    def atomic_add(self, g, value, offsets) -> None:
        self.emit(vm.AtomicAdd(g, value, tuple(expr(o) for o in offsets)))

    def shared(self, dt, shape) -> vm.SharedTensor:
        self.count += 1
        s = vm.SharedTensor(f"s{self.count}", dtype(dt), tuple(shape))
        self.emit(vm.AllocShared(s))
        return s

    def load_shared(self, s, offsets, shape) -> vm.RegisterTensor:
        out = self.tile(s.dtype, shape)
        self.emit(vm.LoadShared(out, s, tuple(expr(o) for o in offsets)))
        return out

    def store_shared(self, s, value, offsets) -> None:
        self.emit(vm.StoreShared(s, value, tuple(expr(o) for o in offsets)))

    def full(self, dt, shape, value) -> vm.RegisterTensor:
        out = self.tile(dt, shape)
        self.emit(vm.Full(out, value if isinstance(value, vm.Expr) else vm.Const(value, dtype(dt))))
        return out

    def arange(self, n: int, start=0) -> vm.RegisterTensor:
        out = self.tile("i32", (n,))
        self.emit(vm.Arange(out, expr(start)))
        return out

    def cast(self, x, dt) -> vm.RegisterTensor:
        out = self.tile(dt, x.shape)
        self.emit(vm.Cast(out, x))
        return out

    def view(self, x, dt, shape) -> vm.RegisterTensor:
        out = self.tile(dt, shape)
        self.emit(vm.View(out, x))
        return out

    def dot(self, a, b, acc) -> vm.RegisterTensor:
        out = self.tile(acc.dtype, acc.shape)
        self.emit(vm.Dot(out, a, b, acc))
        return out

    def ew(self, op: vm.ElementOp, *args, dt=None) -> vm.RegisterTensor:
        """Element-wise op; Python numbers become constants of the tiles' dtype."""
        tiles = [a for a in args if isinstance(a, vm.RegisterTensor)]
        shape = tuple(np.broadcast_shapes(*(t.shape for t in tiles)))
        like = tiles[-1].dtype
        if dt is None:
            dt = vm.BOOL if op in _BOOL_OPS else like
        operands = tuple(a if isinstance(a, (vm.RegisterTensor, vm.Expr)) else vm.Const(a, like) for a in args)
        out = self.tile(dt, shape)
        self.emit(vm.Elementwise(out, op, operands))
        return out

    def reduce(self, x, op: vm.ReduceOp, dim: int, keepdim: bool = False) -> vm.RegisterTensor:
        shape = list(x.shape)
        if keepdim:
            shape[dim] = 1
        else:
            del shape[dim]
        out = self.tile(x.dtype, shape)
        self.emit(vm.Reduce(out, x, op, dim, keepdim))
        return out

    def shape_op(self, cls, x, shape, *extra) -> vm.RegisterTensor:
        out = self.tile(x.dtype, shape)
        self.emit(cls(out, x, *extra))
        return out

    def assign(self, out, x) -> None:
        self.emit(vm.Assign(out, x))

    @contextlib.contextmanager
    def block(self):
        self.bodies.append([])
        body: list = []
        yield body
        body.extend(self.bodies.pop())

    @contextlib.contextmanager
    def loop(self, name: str, start, stop, step=1):
        var = vm.Var(name, vm.I32)
        with self.block() as body:
            yield var
        self.emit(vm.For(var, expr(start), expr(stop), expr(step), tuple(body)))

    @contextlib.contextmanager
    def while_(self, cond):
        with self.block() as body:
            yield
        self.emit(vm.While(expr(cond), tuple(body)))

    def if_(self, cond, then, orelse=()) -> None:
        """then / orelse: lists of statements built with `block()`."""
        self.emit(vm.If(expr(cond), tuple(then), tuple(orelse)))

    def build(self, verify: bool = True) -> vm.Kernel:
        assert len(self.bodies) == 1
        k = vm.Kernel(self.name, tuple(self.params), self.warps, self.grid, tuple(self.bodies[0]))
        if verify:
            verify_program(vm.Program((k,)))
        return k


def run(kernel: vm.Kernel, *args, **kwargs) -> None:
    InterpKernel(kernel)(*args, **kwargs)


def poisoned(shape, np_dtype=np.float32):
    return np.full(shape, np.nan, np_dtype)


def random_values(rng, dt, shape) -> np.ndarray:
    """Random values representable in dt (finite), as float64."""
    dt = dtype(dt)
    if dt.name in ("f16", "f32", "f64"):
        return rng.standard_normal(shape).astype(numpy_dtype(dt)).astype(np.float64)
    if dt.is_float:
        bits = rng.integers(0, 2 ** dt.nbits, shape)
        values = unpack(pack_bits(bits, dt.nbits), dt, shape).astype(np.float64)
        return np.where(np.isfinite(values), values, 0.0)
    return rng.integers(dt.min, dt.max + 1, shape).astype(np.float64)


def storage(values, dt) -> np.ndarray:
    native = numpy_dtype(dtype(dt))
    return values.astype(native) if native is not None else pack(values, dt)


# ====================================================== memory and grid


def vector_add_kernel(block: int = 64) -> vm.Kernel:
    kb = KernelBuilder("vector_add")
    n = kb.scalar("n")
    x, y, z = (kb.tensor(name, "f32", n) for name in "xyz")
    kb.set_grid(cdiv(n, block))
    offset = mul(BX, block)
    a, b = kb.load(x, [offset], [block]), kb.load(y, [offset], [block])
    kb.store(z, kb.ew(E.ADD, a, b), [offset])
    return kb.build()


@pytest.mark.parametrize("n", [1, 63, 64, 1000])
def test_vector_add_with_a_tail(rng, n):
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    out = poisoned(n)
    run(vector_add_kernel(), n, a, b, out)
    np.testing.assert_array_equal(out, (a.astype(np.float64) + b).astype(np.float32))


@pytest.mark.parametrize("dr, dc", [(-3, 4), (2, -5), (-10, 0), (5, 9), (0, 0), (-7, -7)])
def test_masked_loads_with_negative_offsets(rng, dr, dc):
    kb = KernelBuilder("window")
    r, c_ = kb.scalar("r"), kb.scalar("c")
    x = kb.tensor("x", "f32", 6, 10)
    y = kb.tensor("y", "f32", 8, 8)
    kb.store(y, kb.load(x, [r, c_], [8, 8]), [0, 0])
    x_data = rng.standard_normal((6, 10)).astype(np.float32)
    out = poisoned((8, 8))
    run(kb.build(), dr, dc, x_data, out)
    padded = np.zeros((6 + 32, 10 + 32), np.float32)
    padded[16:22, 16:26] = x_data
    np.testing.assert_array_equal(out, padded[16 + dr:24 + dr, 16 + dc:24 + dc])


def test_stores_drop_out_of_range_elements(rng):
    kb = KernelBuilder("put")
    r, c_ = kb.scalar("r"), kb.scalar("c")
    x = kb.tensor("x", "f32", 4, 4)
    y = kb.tensor("y", "f32", 6, 5)
    kb.store(y, kb.load(x, [0, 0], [4, 4]), [r, c_])
    x_data = rng.standard_normal((4, 4)).astype(np.float32)
    for r0, c0 in [(-2, 3), (4, -1), (6, 0), (1, 1)]:
        y_data = rng.standard_normal((6, 5)).astype(np.float32)
        expected = y_data.copy()
        for i in range(4):
            for j in range(4):
                if 0 <= r0 + i < 6 and 0 <= c0 + j < 5:
                    expected[r0 + i, c0 + j] = x_data[i, j]
        run(kb.build(), r0, c0, x_data, y_data)
        np.testing.assert_array_equal(y_data, expected)


def test_grid_runs_block_x_fastest_then_y_then_z(rng):
    gx, gy, gz = 3, 2, 4
    kb = KernelBuilder("order")
    counter = kb.tensor("counter", "i32", 1)
    order = kb.tensor("order", "i32", gz, gy, gx)
    kb.set_grid(gx, gy, gz)
    t = kb.load(counter, [0], [1])
    kb.store(order, kb.shape_op(vm.Reshape, t, (1, 1, 1)), [BZ, BY, BX])
    kb.store(counter, kb.ew(E.ADD, t, 1), [0])
    start = int(rng.integers(-1000, 1000))
    cnt = np.array([start], np.int32)
    out = np.full((gz, gy, gx), -1, np.int32)
    run(kb.build(), cnt, out)
    np.testing.assert_array_equal(out.reshape(-1), start + np.arange(gx * gy * gz))
    assert cnt[0] == start + gx * gy * gz


@pytest.mark.parametrize("n", [0, -5])
def test_a_grid_dimension_below_one_runs_no_block(n):
    kb = KernelBuilder("none")
    size = kb.scalar("size")
    y = kb.tensor("y", "f32", 4)
    kb.set_grid(4, size)
    kb.store(y, kb.full("f32", (4,), 1.5), [0])
    out = poisoned(4)
    run(kb.build(), n, out)
    assert np.isnan(out).all()


def test_atomic_add_accumulates_over_blocks_and_wraps(rng):
    kb = KernelBuilder("acc")
    n = kb.scalar("n")
    x = kb.tensor("x", "f32", n)
    q = kb.tensor("q", "i8", n)
    total = kb.tensor("total", "f32", 1)
    qtotal = kb.tensor("qtotal", "i8", 1)
    kb.set_grid(cdiv(n, 32))
    t = kb.load(x, [mul(BX, 32)], [32])
    kb.atomic_add(total, kb.reduce(kb.shape_op(vm.Reshape, t, (1, 32)), R.SUM, 1), [0])
    tq = kb.load(q, [mul(BX, 32)], [32])
    kb.atomic_add(qtotal, kb.reduce(kb.shape_op(vm.Reshape, tq, (1, 32)), R.SUM, 1), [0])
    x_data = rng.integers(-100, 100, 200).astype(np.float32)
    q_data = rng.integers(-128, 128, 200).astype(np.int8)
    tot, qtot = np.zeros(1, np.float32), np.array([5], np.int8)
    run(kb.build(), 200, x_data, q_data, tot, qtot)
    assert tot[0] == x_data.astype(np.float64).sum()
    assert qtot[0] == ((5 + q_data.astype(np.int64).sum() + 128) % 256) - 128


def test_shared_memory_and_masked_copy_async(rng):
    kb = KernelBuilder("sh", warps=2)
    r = kb.scalar("r")
    x = kb.tensor("x", "f16", 10, 16)
    y = kb.tensor("y", "f16", 8, 16)
    buf = kb.shared("f16", (8, 16))
    kb.emit(vm.CopyAsync(buf, x, (expr(r), expr(0))))
    kb.emit(vm.CommitAsync())
    kb.emit(vm.WaitAsync(0))
    kb.emit(vm.Barrier())
    top = kb.load_shared(buf, [0, 0], (4, 16))
    kb.store_shared(buf, kb.ew(E.MUL, top, 2.0), [4, 0])   # rows 4..7 <- 2 * rows 0..3
    kb.emit(vm.Barrier())
    kb.store(y, kb.load_shared(buf, [0, 0], (8, 16)), [0, 0])
    x_data = rng.standard_normal((10, 16)).astype(np.float16)
    out = poisoned((8, 16), np.float16)
    run(kb.build(), 5, x_data, out)
    window = np.zeros((8, 16), np.float16)
    window[:5] = x_data[5:]
    np.testing.assert_array_equal(out[:4], window[:4])
    np.testing.assert_array_equal(out[4:], window[:4] * np.float16(2))


@pytest.mark.parametrize("offsets", [(-1, 0), (0, 1), (5, 0)])
def test_shared_access_out_of_range_is_an_error(offsets):
    kb = KernelBuilder("bad")
    a, b = kb.scalar("a"), kb.scalar("b")
    y = kb.tensor("y", "f32", 4, 4)
    buf = kb.shared("f32", (8, 4))
    kb.store(y, kb.load_shared(buf, [a, b], (4, 4)), [0, 0])
    with pytest.raises(TLError, match="shared access out of range"):
        run(kb.build(), *offsets, poisoned((4, 4)))


@pytest.mark.parametrize("wt", ["u3", "i4", "f6e3m2", "bf16"])
def test_stores_into_packed_tensors_keep_every_other_bit(rng, wt):
    n = 11   # 11 * nbits is not a multiple of 8 for the sub-byte types: padding bits follow
    kb = KernelBuilder("put")
    off = kb.scalar("off")
    x = kb.tensor("x", wt, 4)
    y = kb.tensor("y", wt, n)
    kb.store(y, kb.load(x, [0], [4]), [off])
    values = random_values(rng, wt, 4)
    nbytes = -(-n * dtype(wt).nbits // 8)
    for offset in (-2, 0, 5, 9):
        y_bytes = rng.integers(0, 256, nbytes).astype(np.uint8)
        expected_bits = unpack_bits(y_bytes, dtype(wt).nbits, n).copy()
        new_bits = unpack_bits(pack(values, wt), dtype(wt).nbits, 4)
        for i in range(4):
            if 0 <= offset + i < n:
                expected_bits[offset + i] = new_bits[i]
        expected = pack_bits(expected_bits, dtype(wt).nbits)
        tail = (n * dtype(wt).nbits) % 8
        if tail:
            expected[-1] = (int(expected[-1]) & ((1 << tail) - 1)) | (int(y_bytes[-1]) & (0xFF << tail) & 0xFF)
        run(kb.build(), offset, pack(values, wt), y_bytes)
        np.testing.assert_array_equal(y_bytes, expected)


# ======================================================= matmul kernels


def matmul_kernel(bm=16, bn=32, bk=16) -> vm.Kernel:
    kb = KernelBuilder("matmul", warps=4)
    m, n, k = kb.scalar("m"), kb.scalar("n"), kb.scalar("k")
    a = kb.tensor("a", "f16", m, k)
    b = kb.tensor("b", "f16", k, n)
    cc = kb.tensor("c", "f32", m, n)
    kb.set_grid(cdiv(m, bm), cdiv(n, bn))
    acc = kb.full("f32", (bm, bn), 0.0)
    with kb.loop("kt", 0, cdiv(k, bk)) as kt:
        ta = kb.load(a, [mul(BX, bm), mul(kt, bk)], (bm, bk))
        tb = kb.load(b, [mul(kt, bk), mul(BY, bn)], (bk, bn))
        kb.assign(acc, kb.dot(ta, tb, acc))
    kb.store(cc, acc, [mul(BX, bm), mul(BY, bn)])
    return kb.build()


def assert_close_to_f32_accumulation(out, a64, b64, steps):
    """|out - a@b| within `steps` f32 roundings of the magnitudes involved."""
    ref = a64 @ b64
    bound = (steps + 1) * 2.0 ** -24 * (np.abs(a64) @ np.abs(b64)) + 1e-30
    assert np.all(np.abs(out.astype(np.float64) - ref) <= bound), np.max(np.abs(out - ref) / bound)


@pytest.mark.parametrize("m, n, k", [(37, 45, 50), (16, 32, 16), (1, 7, 3)])
def test_matmul_with_a_k_loop(rng, m, n, k):
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    out = poisoned((m, n))
    run(matmul_kernel(), m, n, k, a, b, out)
    assert_close_to_f32_accumulation(out, a.astype(np.float64), b.astype(np.float64), -(-k // 16))


def test_integer_dot_is_exact_and_wraps(rng):
    kb = KernelBuilder("idot")
    a = kb.tensor("a", "i8", 8, 32)
    b = kb.tensor("b", "u4", 32, 8)
    out = kb.tensor("out", "i16", 8, 8)
    acc = kb.full("i16", (8, 8), 30000)
    ta = kb.load(a, [0, 0], (8, 32))
    tb = kb.cast(kb.load(b, [0, 0], (32, 8)), "i8")
    kb.store(out, kb.dot(ta, tb, acc), [0, 0])
    a_data = rng.integers(-128, 128, (8, 32))
    b_data = rng.integers(0, 16, (32, 8))
    result = np.zeros((8, 8), np.int16)
    run(kb.build(), a_data.astype(np.int8), pack(b_data, "u4"), result)
    exact = 30000 + a_data @ b_data
    np.testing.assert_array_equal(result, ((exact + 2 ** 15) % 2 ** 16) - 2 ** 15)


def qmatmul_kernel(wt, bm=16, bn=32, bk=32, group=64, out_dt="f32") -> vm.Kernel:
    """C = A @ (cast(W, f16) * scale[k // group]), the flagship's shape."""
    kb = KernelBuilder("qmatmul", warps=4)
    m, n, k = kb.scalar("m"), kb.scalar("n"), kb.scalar("k")
    a = kb.tensor("a", "f16", m, k)
    w = kb.tensor("w", wt, k, n)
    s = kb.tensor("s", "f16", cdiv(k, group), n)
    cc = kb.tensor("c", out_dt, m, n)
    kb.set_grid(cdiv(m, bm), cdiv(n, bn))
    acc = kb.full("f32", (bm, bn), 0.0)
    with kb.loop("kt", 0, cdiv(k, bk)) as kt:
        ta = kb.load(a, [mul(BX, bm), mul(kt, bk)], (bm, bk))
        tw = kb.load(w, [mul(kt, bk), mul(BY, bn)], (bk, bn))
        ts = kb.load(s, [binop(B.FLOOR_DIV, mul(kt, bk), group), mul(BY, bn)], (1, bn))
        scaled = kb.ew(E.MUL, kb.cast(tw, "f16"), ts)
        kb.assign(acc, kb.dot(ta, scaled, acc))
    result = acc if out_dt == "f32" else kb.cast(acc, out_dt)
    kb.store(cc, result, [mul(BX, bm), mul(BY, bn)])
    return kb.build()


def dequantized(w, s, group):
    scales = np.repeat(s.astype(np.float64), group, axis=0)[: w.shape[0]]
    return (w * scales).astype(np.float16).astype(np.float64)   # the kernel's f16 product


@pytest.mark.parametrize("wt", ["u3", "u4", "i4", "f6e3m2"])
def test_quantized_matmul_with_packed_weights(rng, wt):
    m, n, k, group = 5, 70, 200, 64
    a = rng.standard_normal((m, k)).astype(np.float16)
    w = random_values(rng, wt, (k, n))
    s = (rng.random((-(-k // group), n)) * 0.1 + 0.01).astype(np.float16)
    out = poisoned((m, n))
    run(qmatmul_kernel(wt, group=group), m, n, k, a, pack(w, wt), s, out)
    assert_close_to_f32_accumulation(out, a.astype(np.float64), dequantized(w, s, group), -(-k // 32))


def test_quantized_matmul_at_flagship_size(rng):
    """M=16, K=N=1024 with BM=16, BN=128, BK=64: a few seconds at most."""
    m, n, k, group = 16, 1024, 1024, 128
    kernel = qmatmul_kernel("u4", bm=16, bn=128, bk=64, group=group, out_dt="f16")
    a = rng.standard_normal((m, k)).astype(np.float16)
    w = random_values(rng, "u4", (k, n))
    s = (rng.random((k // group, n)) * 0.01).astype(np.float16)
    out = poisoned((m, n), np.float16)
    start = time.perf_counter()
    run(kernel, m, n, k, a, pack(w, "u4"), s, out)
    assert time.perf_counter() - start < 10.0
    ref = a.astype(np.float64) @ dequantized(w, s, group)
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=2 ** -10, atol=2 ** -14 + 1e-6 * np.abs(ref).max())


# =========================================================== reductions


def test_row_softmax_with_reductions(rng):
    bm, bn = 4, 128
    kb = KernelBuilder("softmax")
    m, n = kb.scalar("m"), kb.scalar("n")
    x = kb.tensor("x", "f32", m, n)
    y = kb.tensor("y", "f32", m, n)
    kb.set_grid(cdiv(m, bm))
    t = kb.load(x, [mul(BX, bm), 0], (bm, bn))
    inside = kb.ew(E.LT, kb.arange(bn), n)
    t = kb.ew(E.WHERE, inside, t, c(-math.inf, "f32"), dt="f32")
    row_max = kb.reduce(t, R.MAX, 1, keepdim=True)
    e = kb.ew(E.EXP, kb.ew(E.SUB, t, row_max))
    total = kb.reduce(e, R.SUM, 1, keepdim=True)
    kb.store(y, kb.ew(E.DIV, e, total), [mul(BX, bm), 0])
    rows, cols = 9, 100
    x_data = (rng.standard_normal((rows, cols)) * 4).astype(np.float32)
    out = poisoned((rows, cols))
    run(kb.build(), rows, cols, x_data, out)
    # Each instruction rounds to f32 once: replicate that, then allow one f32
    # rounding of difference (the float64 sum may be ordered differently).
    f32 = lambda v: v.astype(np.float32).astype(np.float64)  # noqa: E731
    x64 = x_data.astype(np.float64)
    ex = f32(np.exp(f32(x64 - x64.max(axis=1, keepdims=True))))
    ref = f32(ex / f32(ex.sum(axis=1, keepdims=True)))
    np.testing.assert_allclose(out, ref, rtol=2 ** -23, atol=0)


def test_reductions_over_each_dim_and_nan(rng):
    kb = KernelBuilder("red")
    x = kb.tensor("x", "f32", 6, 5)
    i = kb.tensor("i", "i16", 6, 5)
    outs = [kb.tensor(name, dt, *shape) for name, dt, shape in
            [("s0", "f32", (5,)), ("mx1", "f32", (6, 1)), ("mn0", "f32", (1, 5)),
             ("is", "i16", (6,)), ("im", "i16", (5,))]]
    t, ti = kb.load(x, [0, 0], (6, 5)), kb.load(i, [0, 0], (6, 5))
    kb.store(outs[0], kb.reduce(t, R.SUM, 0), [0])
    kb.store(outs[1], kb.reduce(t, R.MAX, 1, keepdim=True), [0, 0])
    kb.store(outs[2], kb.reduce(t, R.MIN, 0, keepdim=True), [0, 0])
    kb.store(outs[3], kb.reduce(ti, R.SUM, 1), [0])
    kb.store(outs[4], kb.reduce(ti, R.MAX, 0), [0])
    x_data = rng.standard_normal((6, 5)).astype(np.float32)
    x_data[2, 3] = np.nan
    i_data = rng.integers(-2 ** 15, 2 ** 15, (6, 5)).astype(np.int16)
    results = [poisoned(5), poisoned((6, 1)), poisoned((1, 5)), np.zeros(6, np.int16), np.zeros(5, np.int16)]
    run(kb.build(), x_data, i_data, *results)
    x64 = x_data.astype(np.float64)
    np.testing.assert_array_equal(results[0], x64.sum(axis=0).astype(np.float32))   # NaN in column 3
    np.testing.assert_array_equal(results[1], x_data.max(axis=1, keepdims=True))    # NaN in row 2
    np.testing.assert_array_equal(results[2], x_data.min(axis=0, keepdims=True))
    wrapped = ((i_data.astype(np.int64).sum(axis=1) + 2 ** 15) % 2 ** 16) - 2 ** 15
    np.testing.assert_array_equal(results[3], wrapped)
    np.testing.assert_array_equal(results[4], i_data.max(axis=0))


# ========================================================= element-wise


def elementwise_kernel(dt, ops, n=64, scalar_dt=None):
    """out[j] = ops[j](a, b) for binary ops on two loaded dt tiles."""
    kb = KernelBuilder("ew")
    x, y = kb.tensor("x", dt, n), kb.tensor("y", dt, n)
    out = kb.tensor("out", dt, len(ops), n)
    a, b = kb.load(x, [0], [n]), kb.load(y, [0], [n])
    for j, op in enumerate(ops):
        r = kb.ew(op, a, b) if op.arity == 2 else kb.ew(op, a)
        kb.store(out, kb.shape_op(vm.Reshape, r, (1, n)), [j, 0])
    return kb.build()


def test_float_elementwise_rounds_once_per_instruction(rng):
    ops = [E.ADD, E.SUB, E.MUL, E.DIV, E.MIN, E.MAX, E.NEG, E.ABS, E.EXP, E.LOG, E.SQRT, E.RSQRT,
           E.FLOOR_DIV, E.MOD]
    for dt, np_dt in [("f32", np.float32), ("f16", np.float16)]:
        a = (rng.standard_normal(64) * 3).astype(np_dt)
        b = (rng.random(64) * 4 + 0.25).astype(np_dt) * rng.choice([-1, 1], 64).astype(np_dt)
        out = poisoned((len(ops), 64), np_dt)
        run(elementwise_kernel(dt, ops), a, b, out)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        with np.errstate(all="ignore"):
            exact = [a64 + b64, a64 - b64, a64 * b64, a64 / b64, np.minimum(a64, b64), np.maximum(a64, b64),
                     -a64, np.abs(a64), np.exp(a64), np.log(a64), np.sqrt(a64), 1 / np.sqrt(a64),
                     np.floor(a64 / b64), np.mod(a64, b64)]
        np.testing.assert_array_equal(out, np.stack(exact).astype(np_dt))


def test_integer_elementwise_wraps_and_floors(rng):
    ops = [E.ADD, E.SUB, E.MUL, E.FLOOR_DIV, E.MOD, E.BIT_AND, E.BIT_OR, E.BIT_XOR, E.MIN, E.MAX,
           E.NEG, E.INVERT, E.ABS]
    for dt, bits, signed in [("i8", 8, True), ("u8", 8, False), ("i32", 32, True)]:
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2 ** bits)
        a = rng.integers(lo, hi, 64)
        b = rng.integers(lo, hi, 64)
        b[b == 0] = 1
        out = np.zeros((len(ops), 64), numpy_dtype(dtype(dt)))
        run(elementwise_kernel(dt, ops), a.astype(out.dtype), b.astype(out.dtype), out)
        exact = [a + b, a - b, a * b, a // b, a % b, a & b, a | b, a ^ b, np.minimum(a, b), np.maximum(a, b),
                 -a, ~a, np.abs(a)]
        wrapped = [(v - lo) % 2 ** bits + lo for v in exact]   # two's complement / modulo 2^N
        np.testing.assert_array_equal(out, np.stack(wrapped), err_msg=dt)


def test_shifts_and_comparisons(rng):
    kb = KernelBuilder("shift")
    x, y = kb.tensor("x", "i32", 64), kb.tensor("y", "i32", 64)
    out = kb.tensor("out", "i32", 2, 64)
    cmp = kb.tensor("cmp", "u1", 6, 64)
    a, b = kb.load(x, [0], [64]), kb.load(y, [0], [64])
    kb.store(out, kb.shape_op(vm.Reshape, kb.ew(E.SHL, a, b), (1, 64)), [0, 0])
    kb.store(out, kb.shape_op(vm.Reshape, kb.ew(E.SHR, a, b), (1, 64)), [1, 0])
    for j, op in enumerate([E.LT, E.LE, E.GT, E.GE, E.EQ, E.NE]):
        kb.store(cmp, kb.shape_op(vm.Reshape, kb.ew(op, a, b), (1, 64)), [j, 0])
    a_data = rng.integers(-1000, 1000, 64)
    b_data = rng.integers(-3, 70, 64)
    b_data[:4] = [0, 64, -1, 31]
    result = np.zeros((2, 64), np.int32)
    flags = np.zeros(-(-6 * 64 // 8), np.uint8)
    run(kb.build(), a_data.astype(np.int32), b_data.astype(np.int32), result, flags)
    inside = (b_data >= 0) & (b_data < 64)
    shl = np.where(inside, a_data * 2.0 ** np.clip(b_data, 0, 63), 0)
    shl = np.array([(int(v) + 2 ** 31) % 2 ** 32 - 2 ** 31 for v in shl])
    shr = a_data >> np.where(inside, b_data, 63)
    np.testing.assert_array_equal(result, np.stack([shl, shr]))
    cmps = [a_data < b_data, a_data <= b_data, a_data > b_data, a_data >= b_data, a_data == b_data, a_data != b_data]
    np.testing.assert_array_equal(unpack(flags, "u1", (6, 64)), np.stack(cmps).astype(np.int64))


def test_u64_values_above_two_to_the_63(rng):
    kb = KernelBuilder("u64")
    x, y = kb.tensor("x", "u64", 16), kb.tensor("y", "u64", 16)
    out = kb.tensor("out", "u64", 4, 16)
    lt = kb.tensor("lt", "u8", 16)
    f = kb.tensor("f", "f64", 16)
    a, b = kb.load(x, [0], [16]), kb.load(y, [0], [16])
    for j, op in enumerate([E.FLOOR_DIV, E.MOD, E.MAX, E.SHR]):
        operand = kb.ew(E.BIT_AND, b, 63) if op is E.SHR else b
        kb.store(out, kb.shape_op(vm.Reshape, kb.ew(op, a, operand), (1, 16)), [j, 0])
    kb.store(lt, kb.cast(kb.ew(E.LT, a, b), "u8"), [0])
    kb.store(f, kb.cast(a, "f64"), [0])
    a_data = rng.integers(0, 2 ** 64, 16, dtype=np.uint64)
    b_data = rng.integers(1, 2 ** 64, 16, dtype=np.uint64)
    results, less, as_float = np.zeros((4, 16), np.uint64), np.zeros(16, np.uint8), poisoned(16, np.float64)
    run(kb.build(), a_data, b_data, results, less, as_float)
    ai, bi = [int(v) for v in a_data], [int(v) for v in b_data]
    expected = [[p // q for p, q in zip(ai, bi)], [p % q for p, q in zip(ai, bi)],
                [max(p, q) for p, q in zip(ai, bi)], [p >> (q & 63) for p, q in zip(ai, bi)]]
    assert results.tolist() == expected
    assert less.tolist() == [int(p < q) for p, q in zip(ai, bi)]
    assert as_float.tolist() == [float(p) for p in ai]


def test_integer_division_by_zero_is_an_error_and_float_division_is_ieee():
    kb = KernelBuilder("div")
    x = kb.tensor("x", "i32", 4)
    y = kb.tensor("y", "i32", 4)
    kb.store(y, kb.ew(E.FLOOR_DIV, kb.load(x, [0], [4]), 0), [0])
    with pytest.raises(TLError, match="division by zero"):
        run(kb.build(), np.arange(4, dtype=np.int32), np.zeros(4, np.int32))
    kb = KernelBuilder("fdiv")
    x = kb.tensor("x", "f32", 4)
    y = kb.tensor("y", "f32", 4)
    kb.store(y, kb.ew(E.DIV, kb.load(x, [0], [4]), 0.0), [0])
    out = poisoned(4)
    run(kb.build(), np.array([1, -2, 0, np.inf], np.float32), out)
    np.testing.assert_array_equal(out, [np.inf, -np.inf, np.nan, np.inf])


def test_where_takes_nan_as_true_and_scalar_operands_broadcast(rng):
    kb = KernelBuilder("where")
    cnd = kb.tensor("cnd", "f32", 8)
    x = kb.tensor("x", "f32", 4, 8)
    y = kb.tensor("y", "f32", 4, 8)
    lim = kb.scalar("lim", "f32")
    t = kb.load(x, [0, 0], (4, 8))
    picked = kb.ew(E.WHERE, kb.load(cnd, [0], [8]), t, lim, dt="f32")
    kb.store(y, picked, [0, 0])
    cond = np.array([0, 1, np.nan, -0.0, 2, 0, np.inf, 0], np.float32)
    x_data = rng.standard_normal((4, 8)).astype(np.float32)
    out = poisoned((4, 8))
    run(kb.build(), cond, x_data, out, 7.25)
    np.testing.assert_array_equal(out, np.where(np.isnan(cond) | (cond != 0), x_data, np.float32(7.25)))


def test_float_constants_and_scalar_parameters_take_their_dtype(rng):
    # 0.1 as an f16 constant is 0.0999755859375; x * 0.1 rounds with that value.
    kb = KernelBuilder("scale")
    s = kb.scalar("s", "f32")
    x = kb.tensor("x", "f16", 256)
    y = kb.tensor("y", "f16", 2, 256)
    t = kb.load(x, [0], [256])
    kb.store(y, kb.shape_op(vm.Reshape, kb.ew(E.MUL, t, c(0.1, "f16")), (1, 256)), [0, 0])
    as_f16 = vm.ScalarCast(binop(B.MUL, s, c(3.0, "f32")), dtype("f16"))
    kb.store(y, kb.shape_op(vm.Reshape, kb.ew(E.ADD, t, as_f16), (1, 256)), [1, 0])
    x_data = (rng.standard_normal(256) * 100).astype(np.float16)
    out = poisoned((2, 256), np.float16)
    run(kb.build(), 0.1, x_data, out)
    x64 = x_data.astype(np.float64)
    np.testing.assert_array_equal(out[0], (x64 * float(np.float16(0.1))).astype(np.float16))
    three_s = np.float16(np.float64(np.float32(np.float64(np.float32(0.1)) * 3.0)))
    np.testing.assert_array_equal(out[1], (x64 + float(three_s)).astype(np.float16))


# ============================================================ conversions


def cast_kernel(src, dst, n):
    kb = KernelBuilder("cast")
    x = kb.tensor("x", src, n)
    y = kb.tensor("y", dst, n)
    kb.store(y, kb.cast(kb.load(x, [0], [n]), dst), [0])
    return kb.build()


def cast_values(src, dst, values):
    out_dt = dtype(dst)
    native = numpy_dtype(out_dt)
    n = len(values)
    out = np.zeros(n, native) if native is not None else np.zeros(-(-n * out_dt.nbits // 8), np.uint8)
    run(cast_kernel(src, dst, n), storage(np.asarray(values, np.float64), src), out)
    result = out if native is not None else unpack(out, out_dt, n)
    return result.astype(np.float64) if out_dt.is_float else result   # integers stay exact


def test_float_casts_round_to_nearest_even_and_saturate():
    # f16 neighbours of 1: 1 and 1 + 2^-10; the midpoint ties to the even one.
    ties = [1 + 2 ** -11, 1 + 3 * 2 ** -11, -(1 + 2 ** -11), 2049.0, 2051.0]
    big = [65519.0, 65520.0, 1e6, -1e6, np.inf, -np.inf]
    got = cast_values("f32", "f16", ties + big)
    assert got.tolist() == [1.0, 1 + 2 * 2 ** -10, -1.0, 2048.0, 2052.0,
                            65504.0, 65504.0, 65504.0, -65504.0, np.inf, -np.inf]
    got = cast_values("f32", "f8e4m3", [17.0, 19.0, 1000.0, -1000.0, 0.3, 464.0, np.inf])
    assert got.tolist() == [16.0, 20.0, 448.0, -448.0, 0.3125, 448.0, 448.0]   # e4m3fn: no inf
    got = cast_values("f32", "f6e3m2", [100.0, -0.01, 0.09375, np.nan])
    assert got.tolist() == [28.0, -0.0, 0.125, 0.0]   # 0.09375 ties to the even 0.125; no NaN -> 0


@pytest.mark.parametrize("dst, ml", [("bf16", ml_dtypes.bfloat16), ("f8e4m3", ml_dtypes.float8_e4m3fn),
                                     ("f8e5m2", ml_dtypes.float8_e5m2), ("f6e3m2", ml_dtypes.float6_e3m2fn),
                                     ("f4e2m1", ml_dtypes.float4_e2m1fn), ("f16", np.float16)])
def test_float_casts_match_ml_dtypes_within_range(rng, dst, ml):
    values = (rng.standard_normal(512) * 2.0 ** rng.integers(-12, 10, 512)).astype(np.float32)
    limit = dtype(dst).max
    values = values[np.abs(values) <= limit]
    got = cast_values("f32", dst, values)
    np.testing.assert_array_equal(got, values.astype(ml).astype(np.float64))


def test_float_to_int_truncates_saturates_and_maps_nan_to_zero():
    values = [2.9, -2.9, 127.5, 128.0, -129.0, 1e10, -np.inf, np.inf, np.nan, -0.5]
    assert cast_values("f32", "i8", values).tolist() == [2, -2, 127, 127, -128, 127, -128, 127, 0, 0]
    assert cast_values("f32", "u4", values).tolist() == [2, 0, 15, 15, 0, 15, 0, 15, 0, 0]
    assert cast_values("f64", "i64", [1e300, -1e300, 2.0 ** 62]).tolist() == [2 ** 63 - 1, -2 ** 63, 2 ** 62]


def test_int_to_int_wraps_and_int_to_float_rounds_once():
    assert cast_values("i32", "i8", [200, -129, 127, 256]).tolist() == [-56, 127, 127, 0]
    assert cast_values("i32", "u4", [17, -1, 15, 16]).tolist() == [1, 15, 15, 0]
    assert cast_values("i32", "f16", [65519, 65520, 100000, 2049]).tolist() == [65504, 65504, 65504, 2048]
    # Through a double this would round twice (to 2^53 + 2^29, then to 2^53).
    kb = KernelBuilder("big")
    x = kb.tensor("x", "i64", 2)
    y = kb.tensor("y", "f32", 2)
    kb.store(y, kb.cast(kb.load(x, [0], [2]), "f32"), [0])
    out = poisoned(2)
    run(kb.build(), np.array([2 ** 53 + 2 ** 29 + 1, -(2 ** 53 + 2 ** 29 + 1)], np.int64), out)
    assert out.tolist() == [2.0 ** 53 + 2 ** 30, -(2.0 ** 53 + 2 ** 30)]


def test_view_reinterprets_bits_in_row_major_order(rng):
    kb = KernelBuilder("view")
    x = kb.tensor("x", "f16", 4, 8)
    y = kb.tensor("y", "f16", 4, 8)
    nib = kb.tensor("nib", "u4", 4, 32)
    bytes_ = kb.tensor("bytes", "u8", 4, 16)
    t = kb.load(x, [0, 0], (4, 8))
    as_bytes = kb.view(t, "u8", (4, 16))
    as_nibbles = kb.view(as_bytes, "u4", (4, 32))
    kb.store(bytes_, as_bytes, [0, 0])
    kb.store(nib, as_nibbles, [0, 0])
    kb.store(y, kb.view(kb.view(as_nibbles, "i32", (16,)), "f16", (4, 8)), [0, 0])
    bits = rng.integers(0, 2 ** 16, (4, 8)).astype(np.uint16)
    bits[(bits & 0x7C00) == 0x7C00] &= 0xBFFF    # finite values only (NaN payloads are not kept)
    bits[0, 0] = 0x8000                          # -0.0
    x_data = bits.view(np.float16)
    out, nibbles, raw = poisoned((4, 8), np.float16), np.zeros(64, np.uint8), np.zeros((4, 16), np.uint8)
    run(kb.build(), x_data, out, nibbles, raw)
    np.testing.assert_array_equal(out.view(np.uint16), bits)
    np.testing.assert_array_equal(raw, bits.view(np.uint8))
    np.testing.assert_array_equal(nibbles, bits.view(np.uint8).reshape(-1))   # u4 stream = the bytes


def test_view_of_sub_byte_signed_and_float_types(rng):
    kb = KernelBuilder("view")
    x = kb.tensor("x", "u8", 12)
    y = kb.tensor("y", "i4", 24)
    z = kb.tensor("z", "f6e3m2", 16)
    t = kb.load(x, [0], [12])
    kb.store(y, kb.view(t, "i4", (24,)), [0])
    kb.store(z, kb.view(t, "f6e3m2", (16,)), [0])
    data = rng.integers(0, 256, 12).astype(np.uint8)
    out_i4, out_f6 = np.zeros(12, np.uint8), np.zeros(12, np.uint8)
    run(kb.build(), data, out_i4, out_f6)
    np.testing.assert_array_equal(out_i4, data)
    np.testing.assert_array_equal(out_f6, data)


@pytest.mark.parametrize("name", ["f16", "f32", "bf16", "f8e5m2"])
def test_fast_float_rounding_agrees_with_the_reference_encoder(rng, name):
    """The interpreter's numpy fast paths (f16, f32) against dtypes.encode/decode."""
    from tvm_lite.backends.interp_values import round_float
    from tvm_lite.ir.dtypes import decode, encode
    dt = dtype(name)
    with np.errstate(invalid="ignore"):   # NaN patterns among the random bits
        grid = decode(rng.integers(0, 2 ** dt.nbits, 4000).astype(np.uint64), dt)
    grid = np.sort(np.abs(grid[np.isfinite(grid)]))
    mids = (grid[:-1] + grid[1:]) / 2    # ties between neighbours, and just off them
    x = np.concatenate([mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf), grid * 1.5])
    x = np.concatenate([x, -x, [dt.max * 2, -dt.max * 2, np.inf, -np.inf, np.nan, 1e-300, -0.0]])
    got = round_float(x, dt)
    want = decode(encode(x, dt), dt)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


# ============================================================== shapes


def test_shape_instructions_match_numpy(rng):
    kb = KernelBuilder("shapes")
    x = kb.tensor("x", "i16", 4, 6)
    outs = [kb.tensor(f"o{i}", "i16", *shape) for i, shape in
            enumerate([(6, 4), (8, 3), (3, 4, 6), (4, 12), (8, 6), (2, 3), (4, 6)])]
    t = kb.load(x, [0, 0], (4, 6))
    kb.store(outs[0], kb.shape_op(vm.Transpose, t, (6, 4), (1, 0)), [0, 0])
    kb.store(outs[1], kb.shape_op(vm.Reshape, t, (8, 3)), [0, 0])
    row = kb.shape_op(vm.Reshape, t, (1, 4, 6))
    kb.store(outs[2], kb.shape_op(vm.BroadcastTo, row, (3, 4, 6)), [0, 0, 0])
    kb.store(outs[3], _concat(kb, [t, t], 1), [0, 0])
    kb.store(outs[4], _concat(kb, [t, kb.ew(E.NEG, t)], 0), [0, 0])
    kb.store(outs[5], kb.shape_op(vm.Slice, t, (2, 3), (1, 2)), [0, 0])
    annotated = kb.tile("i16", (4, 6))
    kb.emit(vm.Annotate(annotated, t, None))
    kb.store(outs[6], annotated, [0, 0])
    data = rng.integers(-2 ** 15, 2 ** 15, (4, 6)).astype(np.int16)
    results = [np.zeros(tuple(int(d.value) for d in o.shape), np.int16) for o in outs]
    run(kb.build(), data, *results)
    expected = [data.T, data.reshape(8, 3), np.broadcast_to(data, (3, 4, 6)), np.concatenate([data, data], 1),
                np.concatenate([data, -data.astype(np.int32)], 0).astype(np.int16), data[1:3, 2:5], data]
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def _concat(kb, parts, dim):
    shape = list(parts[0].shape)
    shape[dim] = sum(p.shape[dim] for p in parts)
    out = kb.tile(parts[0].dtype, shape)
    kb.emit(vm.Concat(out, tuple(parts), dim))
    return out


# ======================================================= scalar control


def test_while_break_continue_if_and_set_scalar(rng):
    kb = KernelBuilder("loop")
    n = kb.scalar("n")
    x = kb.tensor("x", "i32", 8)
    y = kb.tensor("y", "i32", 8)
    i = kb.var("i", 0)
    total = kb.var("total", 0)
    acc = kb.full("i32", (8,), 0)
    with kb.while_(binop(B.LT, i, 100)):
        with kb.block() as stop:
            kb.emit(vm.Break())
        kb.if_(binop(B.GE, i, n), stop)
        with kb.block() as skip:
            kb.set(i, add(i, 1))
            kb.emit(vm.Continue())
        kb.if_(binop(B.EQ, binop(B.MOD, i, 3), 0), skip)
        with kb.block() as even:
            kb.assign(acc, kb.ew(E.ADD, acc, kb.load(x, [0], [8])))
        with kb.block() as odd:
            kb.assign(acc, kb.ew(E.SUB, acc, 1))
        kb.if_(binop(B.EQ, binop(B.MOD, i, 2), 0), even, odd)
        kb.set(total, add(total, i))
        kb.set(i, add(i, 1))
    kb.store(y, kb.ew(E.ADD, acc, total), [0])
    x_data = rng.integers(-50, 50, 8).astype(np.int32)
    for n_value in (0, 7, 20, 1000):
        out = np.zeros(8, np.int32)
        run(kb.build(), n_value, x_data, out)
        kept = [v for v in range(min(n_value, 100)) if v % 3]
        evens = sum(1 for v in kept if v % 2 == 0)
        expected = evens * x_data.astype(np.int64) - (len(kept) - evens) + sum(kept)
        np.testing.assert_array_equal(out, expected)


def test_for_with_negative_step_and_return(rng):
    kb = KernelBuilder("ret")
    y = kb.tensor("y", "i32", 10)
    with kb.loop("j", 9, -1, -2) as j:
        kb.store(y, kb.full("i32", (1,), j), [j])
        with kb.block() as leave:
            kb.emit(vm.Return())
        kb.if_(binop(B.LT, j, 4), leave)
    kb.store(y, kb.full("i32", (10,), -7), [0])   # never reached
    out = np.full(10, 99, np.int32)
    run(kb.build(), out)
    assert out.tolist() == [99, 99, 99, 3, 99, 5, 99, 7, 99, 9]


def test_scalar_expressions_wrap_floor_and_cast():
    i32, f32 = dtype("i32"), dtype("f32")
    nan = binop(B.DIV, c(0.0, "f32"), c(0.0, "f32"))
    cases = [
        (binop(B.ADD, c(2 ** 31 - 1, "i32"), 1), -2 ** 31),
        (binop(B.MUL, c(65536, "i32"), 65536), 0),
        (binop(B.FLOOR_DIV, -7, 2), -4),
        (binop(B.MOD, -7, 2), 1),
        (binop(B.MOD, 7, -2), -1),
        (binop(B.CDIV, 7, 2), 4),
        (binop(B.CDIV, -7, 2), -3),
        (binop(B.MIN, -3, 5), -3),
        (binop(B.MAX, -3, 5), 5),
        (binop(B.SHL, 1, 40), 0),             # wraps to i32
        (binop(B.SHR, -64, 3), -8),
        (binop(B.SHL, 3, 64), 0),
        (vm.Select(binop(B.LT, 1, 2), c(10, "i32"), c(20, "i32")), 10),
        (vm.Unary(vm.UnaryOp.NEG, c(-2 ** 31, "i32"), i32), -2 ** 31),
        (vm.ScalarCast(c(300, "i32"), dtype("i8")), 44),
        (vm.ScalarCast(c(-2.75, "f32"), dtype("i8")), -2),
        (vm.ScalarCast(c(1e9, "f32"), dtype("i8")), 127),
        (vm.ScalarCast(nan, dtype("i16")), 0),
        (vm.ScalarCast(vm.ScalarCast(c(0.1, "f64"), f32), dtype("f64")), float(np.float32(0.1))),
    ]
    kb = KernelBuilder("scalars")
    out = kb.tensor("out", "f64", len(cases))
    for idx, (e, _) in enumerate(cases):
        value = e if e.dtype.is_float else vm.ScalarCast(e, dtype("f64"))
        kb.store(out, kb.full("f64", (1,), value), [idx])
    result = poisoned(len(cases), np.float64)
    run(kb.build(), result)
    assert result.tolist() == [float(v) for _, v in cases]


# =================================================== errors and entry points


def test_unknown_instruction_is_an_error_not_a_no_op():
    @dataclasses.dataclass(frozen=True)
    class Mystery(vm.Instr):
        pass

    kernel = vm.Kernel("k", (), 1, (vm.const(1),), (Mystery(),))
    with pytest.raises(TLError, match="interp: no rule for Mystery"):
        run_kernel(kernel, BoundArguments())


def test_source_stages_and_run_kernel_entry(rng):
    kernel = vector_add_kernel()
    ik = InterpKernel(kernel)
    assert "vector_add" in ik.source("vm")
    with pytest.raises(TLError, match="only the stage 'vm'"):
        ik.source("ptx")
    a, b = rng.standard_normal(10).astype(np.float32), rng.standard_normal(10).astype(np.float32)
    out = poisoned(10)
    run_kernel(kernel, bind_arguments(kernel, (10, a, b), {"z": out}))
    np.testing.assert_array_equal(out, (a.astype(np.float64) + b).astype(np.float32))


def test_compiled_examples_run_on_the_interpreter(rng):
    """Every examples/*.tl through the frontend (skipped without one): each
    kernel's outputs are fully written for odd sizes."""
    try:
        import tvm_lite as tl
        tl.compile  # noqa: B018
    except (ImportError, AttributeError):
        pytest.skip("no frontend")
    paths = sorted(glob.glob(os.path.join(EXAMPLES, "*.tl")))
    assert paths
    for path in paths:
        mod = tl.compile(path, target="interp")
        for kernel in mod:
            k = kernel.vm
            scalars = {p: 37 for p in k.scalar_params}
            args, outputs = [], []
            written = {id(s.dst) for s in _stores(k)}
            for p in k.params:
                if isinstance(p, vm.Var):
                    args.append(37 if p.dtype.is_integer else 0.5)
                    continue
                shape = tuple(int(eval_expr(d, scalars)) for d in p.shape)
                values = random_values(rng, p.dtype, shape)
                if id(p) in written and numpy_dtype(p.dtype) is not None and p.dtype.is_float:
                    arr = poisoned(shape, numpy_dtype(p.dtype))
                    outputs.append(arr)
                else:
                    arr = storage(values, p.dtype)
                args.append(arr)
            kernel(*args)
            for arr in outputs:
                assert not np.isnan(arr).any(), f"{path}: {k.name} left elements unwritten"


def _stores(k):
    return collect(k.body, vm.Store) + collect(k.body, vm.AtomicAdd)
