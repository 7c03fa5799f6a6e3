"""The CPU backend on VM IR built by hand (no frontend): every kernel is
verified, then run on target "cpu" and on the interpreter (the oracle), and
compared with numpy in float64. Outputs are poisoned with NaN (or random
bytes) first; inputs are fresh random data."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.backends.cpu import CPUKernel, lower_to_llvm
from tvm_lite.backends.interp import InterpKernel
from tvm_lite.ir import vm
from tvm_lite.ir.dtypes import numpy_dtype
from tvm_lite.ir.verifier import verify_program

I32, F32, F16 = tl.dtype("i32"), tl.dtype("f32"), tl.dtype("f16")


# --------------------------------------------------------------- IR helpers


def _exprs(values) -> tuple:
    return tuple(v if isinstance(v, vm.Expr) else vm.Const(v, I32) for v in values)


def gt(name, dt, shape) -> vm.GlobalTensor:
    return vm.GlobalTensor(name, tl.dtype(dt), _exprs(shape))


def ex(op: str, a, b, dt=I32) -> vm.Expr:
    a = a if isinstance(a, vm.Expr) else vm.Const(a, dt)
    b = b if isinstance(b, vm.Expr) else vm.Const(b, dt)
    return vm.Binary(vm.BinaryOp[op], a, b, dt)


def cdiv(a, b):
    return ex("CDIV", a, b)


BX, BY = vm.BlockIdx(0), vm.BlockIdx(1)


class KernelBuilder:
    """A few lines per VM instruction: tiles get fresh names, `emit` appends."""

    def __init__(self, first: int = 0):
        self.count = first
        self.body: list = []

    def tile(self, dt, shape) -> vm.RegisterTensor:
        self.count += 1
        return vm.RegisterTensor(f"t{self.count}", tl.dtype(dt), tuple(shape))

    def emit(self, instr):
        self.body.append(instr)
        return getattr(instr, "out", None)

    def load(self, g, offsets, shape):
        return self.emit(vm.Load(self.tile(g.dtype, shape), g, _exprs(offsets)))

    def store(self, g, value, offsets):
        self.emit(vm.Store(g, value, _exprs(offsets)))

    def full(self, dt, shape, value):
        return self.emit(vm.Full(self.tile(dt, shape), vm.Const(value, tl.dtype(dt))))

    def cast(self, x, dt):
        return self.emit(vm.Cast(self.tile(dt, x.shape), x))

    def ew(self, op: str, *args, dt=None):
        op = vm.ElementOp[op]
        tiles = [a for a in args if isinstance(a, vm.RegisterTensor)]
        dt = dt or (tl.dtype("u1") if op.name in ("LT", "LE", "GT", "GE", "EQ", "NE") else tiles[-1].dtype)
        shape = np.broadcast_shapes(*[t.shape for t in tiles])
        return self.emit(vm.Elementwise(self.tile(dt, shape), op, tuple(args)))

    def reduce(self, x, op: str, dim: int, keepdim=False):
        shape = list(x.shape)
        if keepdim:
            shape[dim] = 1
        else:
            del shape[dim]
        return self.emit(vm.Reduce(self.tile(x.dtype, shape), x, vm.ReduceOp[op], dim, keepdim))

    def dot(self, a, b, acc):
        return self.emit(vm.Dot(self.tile(acc.dtype, acc.shape), a, b, acc))


def make_kernel(name, params, grid, body) -> vm.Kernel:
    kernel = vm.Kernel(name, tuple(params), 1, tuple(grid), tuple(body))
    verify_program(vm.Program((kernel,)))
    return kernel


def run_both(kernel, *args, outputs=()):
    """Run on cpu and interp with copies of the arrays; returns the arrays at
    positions `outputs` after each run: (cpu list, interp list)."""
    results = []
    for impl in (CPUKernel(kernel), InterpKernel(kernel)):
        copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        impl(*copies)
        results.append([copies[i] for i in outputs])
    return results


def poisoned(shape, dt=np.float32):
    out = np.empty(shape, dt)
    if np.dtype(dt).kind == "f":
        out[...] = np.nan
    else:
        noise = np.random.default_rng().integers(0, 256, out.nbytes, dtype=np.uint8)
        out.view(np.uint8).reshape(-1)[...] = noise
    return out


def packed_or_native(dt, count):
    nd = numpy_dtype(dt)
    return poisoned(count, nd) if nd is not None else poisoned(-(-count * dt.nbits // 8), np.uint8)


def random_values(rng, dt, shape):
    """Random values of dt: every finite float pattern, or the integer range."""
    if dt.is_float:
        values = tl.ir.dtypes.decode(rng.integers(0, 2 ** dt.nbits, shape).astype(np.uint64), dt)
        return np.where(np.isfinite(values), values, 0.0)
    if dt.nbits >= 63:
        return rng.integers(-(2 ** 40), 2 ** 40, shape)
    return rng.integers(dt.min, dt.max + 1, shape)


# ------------------------------------------------------------------ kernels


def test_vector_add_with_a_tail(rng):
    n = vm.Var("n")
    x, y, z = (gt(s, F32, (n,)) for s in "xyz")
    kb = KernelBuilder()
    off = [ex("MUL", BX, 64)]
    kb.store(z, kb.ew("ADD", kb.load(x, off, [64]), kb.load(y, off, [64])), off)
    kernel = make_kernel("vadd", [n, x, y, z], [cdiv(n, 64)], kb.body)
    size = 64 * 5 + 37
    a, b = rng.standard_normal(size).astype(np.float32), rng.standard_normal(size).astype(np.float32)
    (cpu,), (ref,) = run_both(kernel, size, a, b, poisoned(size), outputs=[3])
    np.testing.assert_array_equal(cpu, (a.astype(np.float64) + b).astype(np.float32))
    np.testing.assert_array_equal(cpu, ref)


def test_masked_2d_loads_and_stores_at_every_edge(rng):
    m, n, oi, oj = vm.Var("m"), vm.Var("n"), vm.Var("oi"), vm.Var("oj")
    x, y = gt("x", F16, (m, n)), gt("y", F16, (m, n))
    kb = KernelBuilder()
    t = kb.load(x, [ex("ADD", ex("MUL", BX, 8), oi), ex("ADD", ex("MUL", BY, 16), oj)], [8, 16])
    kb.store(y, kb.ew("MUL", t, vm.Const(2.0, F16)), [ex("MUL", BX, 8), ex("MUL", BY, 16)])
    kernel = make_kernel("shifted", [m, n, oi, oj, x, y], [cdiv(m, 8), cdiv(n, 16)], kb.body)
    rows, cols = 21, 37
    a = rng.standard_normal((rows, cols)).astype(np.float16)
    src = np.zeros((rows + 80, cols + 120), np.float16)
    src[40:40 + rows, 60:60 + cols] = a
    for di, dj in [(0, 0), (-3, -5), (5, 11), (-30, 0), (0, 60)]:
        out = poisoned((rows, cols), np.float16)
        (cpu,), (ref,) = run_both(kernel, rows, cols, di, dj, a, out, outputs=[5])
        expect = src[40 + di:40 + di + rows, 60 + dj:60 + dj + cols] * np.float16(2)
        np.testing.assert_array_equal(cpu, expect)
        np.testing.assert_array_equal(cpu, ref)


def matmul_kernel(bm, bn, bk):
    m, n, k = vm.Var("m"), vm.Var("n"), vm.Var("k")
    a, b, c = gt("a", F32, (m, k)), gt("b", F32, (k, n)), gt("c", F32, (m, n))
    kb = KernelBuilder()
    acc = kb.full("f32", [bm, bn], 0.0)
    kt = vm.Var("kt")
    inner = KernelBuilder(first=100)
    ta = inner.load(a, [ex("MUL", BX, bm), ex("MUL", kt, bk)], [bm, bk])
    tb = inner.load(b, [ex("MUL", kt, bk), ex("MUL", BY, bn)], [bk, bn])
    inner.emit(vm.Assign(acc, inner.dot(ta, tb, acc)))
    kb.emit(vm.For(kt, vm.Const(0, I32), cdiv(k, bk), vm.Const(1, I32), tuple(inner.body)))
    kb.store(c, acc, [ex("MUL", BX, bm), ex("MUL", BY, bn)])
    return make_kernel("matmul", [m, n, k, a, b, c], [cdiv(m, bm), cdiv(n, bn)], kb.body)


def assert_dot_close(results, exact, scale, k):
    """f32 accumulation in any order: within k ulps of the magnitudes' sum."""
    for got in results:
        assert np.all(np.abs(got - exact) <= 4 * k * 2.0 ** -24 * scale + 1e-30)


@pytest.mark.parametrize("tiles, shape", [((16, 64, 16), (37, 70, 45)), ((5, 130, 7), (11, 131, 20)),
                                          ((1, 3, 1), (2, 7, 3))])
def test_matmul_with_a_k_loop(rng, tiles, shape):
    """Register-blocked dot with remainder rows and columns, a loop-carried
    accumulator (Assign), masked edges and a prefetched next k tile."""
    kernel = matmul_kernel(*tiles)
    m, n, k = shape
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    (cpu,), (ref,) = run_both(kernel, m, n, k, a, b, poisoned((m, n)), outputs=[5])
    # The interpreter rounds the accumulator to f32 after each k tile; the CPU sums in f32.
    assert_dot_close([cpu, ref], a.astype(np.float64) @ b, np.abs(a).astype(np.float64) @ np.abs(b), k)


def qmatmul_kernel(wt, bm=4, bn=32, bk=16, group=32):
    m, n, k = vm.Var("m"), vm.Var("n"), vm.Var("k")
    a, b = gt("a", F16, (m, k)), gt("b", wt, (k, n))
    s, c = gt("s", F16, (cdiv(k, group), n)), gt("c", F32, (m, n))
    kb = KernelBuilder()
    acc = kb.full("f32", [bm, bn], 0.0)
    kt = vm.Var("kt")
    inner = KernelBuilder(first=100)
    ta = inner.load(a, [ex("MUL", BX, bm), ex("MUL", kt, bk)], [bm, bk])
    tb = inner.load(b, [ex("MUL", kt, bk), ex("MUL", BY, bn)], [bk, bn])
    ts = inner.load(s, [ex("FLOOR_DIV", ex("MUL", kt, bk), group), ex("MUL", BY, bn)], [1, bn])
    w = inner.ew("MUL", inner.cast(tb, "f16"), ts)
    inner.emit(vm.Assign(acc, inner.dot(ta, w, acc)))
    kb.emit(vm.For(kt, vm.Const(0, I32), cdiv(k, bk), vm.Const(1, I32), tuple(inner.body)))
    kb.store(c, acc, [ex("MUL", BX, bm), ex("MUL", BY, bn)])
    return make_kernel("qmatmul", [m, n, k, a, b, s, c], [cdiv(m, bm), cdiv(n, bn)], kb.body)


@pytest.mark.parametrize("wt", ["u3", "u4", "i4", "f6e3m2", "u1", "i7"])
def test_quantized_matmul_with_packed_weights_and_f16_scales(rng, wt):
    dt = tl.dtype(wt)
    m, n, k, group = 9, 70, 100, 32
    w = random_values(rng, dt, (k, n))
    scales = (rng.random((-(-k // group), n)) * 0.1 + 0.01).astype(np.float16)
    a = rng.standard_normal((m, k)).astype(np.float16)
    (cpu,), (ref,) = run_both(qmatmul_kernel(wt, group=group), m, n, k, a, tl.pack(w, dt), scales,
                              poisoned((m, n)), outputs=[6])
    # The kernel's own rounding: cast to f16 (exact for these types), w * s rounded to f16.
    dequant = (w.astype(np.float16) * np.repeat(scales, group, axis=0)[:k]).astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(dequant)
    assert_dot_close([cpu, ref], a.astype(np.float64) @ dequant, scale, k)


def test_softmax_with_reductions(rng):
    r, n = vm.Var("r"), vm.Var("n")
    x, y = gt("x", F32, (r, n)), gt("y", F32, (r, n))
    kb = KernelBuilder()
    t = kb.load(x, [ex("MUL", BX, 4), 0], [4, 96])
    e = kb.ew("EXP", kb.ew("SUB", t, kb.reduce(t, "MAX", 1, keepdim=True)))
    kb.store(y, kb.ew("DIV", e, kb.reduce(e, "SUM", 1, keepdim=True)), [ex("MUL", BX, 4), 0])
    kernel = make_kernel("softmax", [r, n, x, y], [cdiv(r, 4)], kb.body)
    rows = 10
    a = (rng.standard_normal((rows, 96)) * 4).astype(np.float32)
    (cpu,), (ref,) = run_both(kernel, rows, 96, a, poisoned((rows, 96)), outputs=[3])
    ex64 = np.exp(a.astype(np.float64) - a.max(axis=1, keepdims=True))
    np.testing.assert_allclose(cpu, ex64 / ex64.sum(axis=1, keepdims=True), rtol=2e-6)
    np.testing.assert_allclose(cpu, ref, rtol=1e-6)


@pytest.mark.parametrize("name", ["f32", "i32", "u64", "f16"])
def test_reductions_over_every_dim(rng, name):
    dt = tl.dtype(name)
    shape = (3, 5, 7)
    x = gt("x", dt, shape)
    kb = KernelBuilder()
    t = kb.load(x, [0, 0, 0], shape)
    params, outs = [x], []
    for op in ("SUM", "MAX", "MIN"):
        for dim in range(3):
            red = kb.reduce(t, op, dim)
            g = gt(f"o{op}{dim}", dt, red.shape)
            kb.store(g, red, [0, 0])
            params.append(g)
            outs.append((op, dim, red.shape))
    kernel = make_kernel("reduce", params, [], kb.body)
    if dt.is_float:
        a = rng.standard_normal(shape).astype(numpy_dtype(dt))
    elif name == "u64":
        a = rng.integers(0, 2 ** 64, shape, dtype=np.uint64)
    else:
        a = rng.integers(-1000, 1000, shape).astype(np.int32)
    arrays = [a] + [poisoned(red_shape, numpy_dtype(dt)) for _, _, red_shape in outs]
    cpu, ref = run_both(kernel, *arrays, outputs=range(1, len(arrays)))
    for (op, dim, _), got, want in zip(outs, cpu, ref):
        if dt.is_float and op == "SUM":
            np.testing.assert_allclose(got, want, rtol=1e-6)
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{op} over dim {dim}")


# ---------------------------------------------------------------- sub-byte


@pytest.mark.parametrize("name", ["u1", "u2", "i2", "u3", "i3", "u4", "i4", "u5", "i6", "u7", "u9", "i12",
                                  "u15", "f4e2m1", "f6e3m2", "f12e5m6", "u24", "i40", "u60"])
def test_packed_loads_and_stores_at_any_alignment(rng, name):
    """Windows of a packed [rows, cols] tensor at every bit alignment, across
    the end of the buffer, stored into a packed output (atomic edge bytes)."""
    dt = tl.dtype(name)
    r, c, oi, oj = vm.Var("r"), vm.Var("c"), vm.Var("oi"), vm.Var("oj")
    x, y = gt("x", dt, (r, c)), gt("y", dt, (r, c))
    kb = KernelBuilder()
    t = kb.load(x, [ex("ADD", ex("MUL", BX, 4), oi), ex("ADD", ex("MUL", BY, 24), oj)], [4, 24])
    kb.store(y, t, [ex("MUL", BX, 4), ex("MUL", BY, 24)])
    kernel = make_kernel("copy", [r, c, oi, oj, x, y], [cdiv(r, 4), cdiv(c, 24)], kb.body)
    for rows, cols in [(9, 50), (5, 48), (3, 1)]:
        values = random_values(rng, dt, (rows, cols))
        packed = tl.pack(values, dt)
        src = np.zeros((rows + 20, cols + 60))
        src[10:10 + rows, 30:30 + cols] = values
        for di, dj in [(0, 0), (1, 3), (-2, -7), (0, 5)]:
            (cpu,), (ref,) = run_both(kernel, rows, cols, di, dj, packed, poisoned(packed.shape, np.uint8),
                                      outputs=[5])
            np.testing.assert_array_equal(cpu, ref, err_msg=f"{rows}x{cols} shifted by {di},{dj}")
            expect = src[10 + di:10 + di + rows, 30 + dj:30 + dj + cols]
            np.testing.assert_array_equal(tl.unpack(cpu, dt, (rows, cols)), expect)


@pytest.mark.parametrize("src, dst", [("u8", "u4"), ("u4", "u8"), ("u3", "u6"), ("f16", "i16"),
                                      ("f32", "u8"), ("i4", "u2"), ("u6", "u3"), ("u8", "f16")])
def test_view_reinterprets_the_bit_stream(rng, src, dst):
    sdt, ddt = tl.dtype(src), tl.dtype(dst)
    n = 48
    m = n * sdt.nbits // ddt.nbits
    x, y = gt("x", sdt, (n,)), gt("y", ddt, (m,))
    kb = KernelBuilder()
    kb.store(y, kb.emit(vm.View(kb.tile(ddt, [m]), kb.load(x, [0], [n]))), [0])
    kernel = make_kernel("view", [x, y], [], kb.body)
    data = rng.integers(0, 256, -(-n * sdt.nbits // 8), dtype=np.uint8)
    if "f16" in (src, dst):   # no NaN patterns: the interpreter holds values, not bits
        data[1::2] &= 0xBF
    if src == "f32":
        data[3::4] &= 0xBF
    native = numpy_dtype(sdt)
    arg = data.view(native) if native is not None else data
    (cpu,), (ref,) = run_both(kernel, arg, packed_or_native(ddt, m), outputs=[1])
    np.testing.assert_array_equal(cpu.view(np.uint8), ref.view(np.uint8))
    np.testing.assert_array_equal(cpu.view(np.uint8), data[:cpu.nbytes])


# ------------------------------------------------------------------- numbers


@pytest.mark.parametrize("name", ["f32", "f16", "f8e4m3", "f8e5m2", "f6e3m2", "bf16"])
def test_narrow_float_arithmetic_matches_the_interpreter(rng, name):
    """f32 and f16-sized formats compute in float on the CPU (twice the SIMD
    width of double): the results must still be the interpreter's, rounded
    once from the exact value, saturating where float overflows."""
    dt = tl.dtype(name)
    ops = ["ADD", "SUB", "MUL", "DIV", "SQRT", "MIN", "MAX", "LT", "EQ", "NE"]
    x, y = gt("x", dt, (1024,)), gt("y", dt, (1024,))
    kb = KernelBuilder()
    a, b = kb.load(x, [0], [1024]), kb.load(y, [0], [1024])
    params = [x, y]
    for op in ops:
        out = kb.ew(op, a) if op == "SQRT" else kb.ew(op, a, b)
        g = gt(f"o_{op.lower()}", out.dtype, (1024,))
        kb.store(g, out, [0])
        params.append(g)
    kernel = make_kernel("ew", params, [], kb.body)
    patterns = rng.integers(0, 2 ** dt.nbits, (2, 1024)).astype(np.uint64)
    patterns[:, :64] = np.arange(64)              # zeros and subnormals
    patterns[1, 64:128] = patterns[0, 64:128]     # equal operands
    if name == "f32":                             # overflow: products and sums beyond max
        patterns[:, 128:192] = np.float32(3e38).view(np.uint32) - rng.integers(0, 2 ** 22, (2, 64))
        patterns[1, 192:256] = np.float32(1e-30).view(np.uint32)
    native = numpy_dtype(dt)
    xs = [p.astype(f"uint{dt.nbits}").view(native) if native is not None
          else tl.ir.dtypes.pack_bits(p, dt.nbits) for p in patterns]
    odts = [tl.dtype("u1") if op in ("LT", "EQ", "NE") else dt for op in ops]
    outs = [packed_or_native(o, 1024) for o in odts]
    cpu, ref = run_both(kernel, *xs, *outs, outputs=range(2, 2 + len(ops)))
    for op, odt, got, want in zip(ops, odts, cpu, ref):
        if numpy_dtype(odt) is None:
            got, want = (tl.unpack(v.view(np.uint8), odt, (1024,)) for v in (got, want))
        # Every NaN is the same value; its sign and payload are not part of the result.
        np.testing.assert_array_equal(got, want, err_msg=op)


CAST_CASES = {
    ("i64", "f16"): [2 ** 53 + 1, 2 ** 60 + 2 ** 49 + 1, -(2 ** 62) - 1, 65519, 65520, 10 ** 18, -(2 ** 63)],
    ("i64", "bf16"): [2 ** 53 + 2 ** 45 + 1, 2 ** 53 + 2 ** 45, 3 * 2 ** 60 + 1, -(2 ** 63)],
    ("i64", "f32"): [2 ** 53 + 1, 2 ** 60 + 2 ** 36 + 1, 2 ** 60 + 2 ** 36, 2 ** 63 - 1],
    ("u64", "f32"): [2 ** 64 - 1, 2 ** 63 + 2 ** 39, 2 ** 63 + 2 ** 39 + 1, 12345],
    ("u64", "f8e4m3"): [2 ** 64 - 1, 447, 448, 464, 465, 0],
    ("f32", "i8"): [127.9, 128.0, -128.9, -129.5, float("nan"), float("inf"), -float("inf"), -0.5],
    ("f32", "u4"): [15.9, 16.0, -0.9, -1.0, float("nan"), 3e38],
    ("f32", "u64"): [1.8e19, 2.0 ** 64, -1.0, 2.0 ** 63, float("nan")],
    ("f16", "i2"): [1.5, 2.0, -2.5, -65504.0, float("inf")],
    ("f64", "f16"): [65519.99, 65520.0, 1e300, 2.0 ** -25, 2.0 ** -25 + 2.0 ** -60, -(2.0 ** -26)],
    ("f32", "f6e3m2"): [28.0, 30.0, 32.0, 1e30, 0.0625 * 1.5, -0.03125, float("inf")],
    ("u4", "f4e2m1"): [0, 5, 7, 9, 15, 3],
}


@pytest.mark.parametrize("src, dst", list(CAST_CASES))
def test_casts_round_once_and_saturate(src, dst):
    sdt, ddt = tl.dtype(src), tl.dtype(dst)
    count = 8
    x, y = gt("x", sdt, (count,)), gt("y", ddt, (count,))
    kb = KernelBuilder()
    kb.store(y, kb.cast(kb.load(x, [0], [count]), ddt), [0])
    kernel = make_kernel("cast", [x, y], [], kb.body)
    values = (CAST_CASES[src, dst] * 2)[:count]
    if numpy_dtype(sdt) is not None:
        arg = np.array(values, dtype=object).astype(numpy_dtype(sdt))
    else:
        arg = tl.pack(np.array(values), sdt)
    (cpu,), (ref,) = run_both(kernel, arg, packed_or_native(ddt, count), outputs=[1])
    np.testing.assert_array_equal(cpu.view(np.uint8), ref.view(np.uint8))


def test_integer_division_by_zero_sets_an_error_status(rng):
    x = gt("x", I32, (16,))
    kb = KernelBuilder()
    t = kb.load(x, [0], [16])
    kb.store(x, kb.ew("FLOOR_DIV", t, t), [0])
    a = rng.integers(1, 100, 16).astype(np.int32)
    a[7] = 0
    with pytest.raises(tl.TLError, match="division by zero"):
        CPUKernel(make_kernel("div", [x], [], kb.body))(a)


@pytest.mark.parametrize("name", ["f32", "f16", "bf16", "i16", "u8"])
def test_atomic_add_from_many_blocks(rng, name):
    dt = tl.dtype(name)
    n = vm.Var("n")
    x, y = gt("x", dt, (n, 32)), gt("y", dt, (32,))
    kb = KernelBuilder()
    row = kb.emit(vm.Reshape(kb.tile(dt, [32]), kb.load(x, [BX, 0], [1, 32])))
    kb.emit(vm.AtomicAdd(y, row, _exprs([0])))
    kernel = make_kernel("atomic", [n, x, y], [n], kb.body)
    rows = 40
    if dt.is_float:   # quarters: every partial sum is exact in each type
        values = rng.integers(-8, 8, (rows, 32)) / 4
    else:
        values = rng.integers(0, 6, (rows, 32))
    native = numpy_dtype(dt) or np.dtype("uint16")
    arg = values.astype(native) if numpy_dtype(dt) is not None else \
        tl.ir.dtypes.encode(values, dt).astype(np.uint16).view(np.uint8)
    start = np.zeros(32, native) if numpy_dtype(dt) is not None else np.zeros(64, np.uint8)
    (cpu,), (ref,) = run_both(kernel, rows, arg, start, outputs=[2])
    np.testing.assert_array_equal(cpu, ref)
    got = tl.unpack(cpu.view(np.uint8), dt, (32,))
    expect = values.sum(axis=0) % 256 if name == "u8" else values.sum(axis=0)
    np.testing.assert_array_equal(got, expect)


# ------------------------------------------------------ registry and shape


def test_every_vm_statement_has_a_cpu_lowering_and_duplicates_are_refused():
    from tvm_lite.backends.cpu_registry import register_lowering, registered
    statements = {c for c in vars(vm).values() if isinstance(c, type) and issubclass(c, vm.Instr)
                  and c is not vm.Instr} | {vm.For, vm.If, vm.While, vm.Break, vm.Continue, vm.Return}
    assert statements <= registered("cpu"), statements - registered("cpu")
    with pytest.raises(tl.TLCompileError, match="duplicate lowering for Load on cpu"):
        @register_lowering(vm.Load, "cpu")
        def lower_load_again(cg, s):
            pass


@dataclass(frozen=True)
class Prefetch(vm.Instr):
    """Not a VM instruction: stands for one added later without a CPU lowering."""


def test_a_statement_without_lowering_says_so():
    with pytest.raises(tl.TLTargetError, match="no lowering for Prefetch on cpu"):
        CPUKernel(vm.Kernel("k", (), 1, (), (Prefetch(),)))
    x = gt("x", "u3", (64,))
    kb = KernelBuilder()
    kb.emit(vm.AtomicAdd(x, kb.load(x, [0], [64]), _exprs([0])))
    with pytest.raises(tl.TLTargetError, match="no lowering for AtomicAdd on packed u3"):
        CPUKernel(make_kernel("k", [x], [], kb.body))


def test_tiles_lower_to_loops_not_unrolled_code():
    """The unoptimized IR does not grow with the tile: compile time stays flat."""
    sizes = []
    for tile in (16, 4096):
        x = gt("x", F16, (tile, 64))
        kb = KernelBuilder()
        t = kb.load(x, [0, 0], [tile, 64])
        kb.store(x, kb.ew("MUL", kb.cast(kb.cast(t, "u4"), "f16"), t), [0, 0])
        sizes.append(len(lower_to_llvm(make_kernel("k", [x], [], kb.body), "k").splitlines()))
    assert sizes[0] == sizes[1]


def test_narrow_float_loops_compute_in_float_vectors():
    from tvm_lite.backends.llvm import host
    x = gt("x", F16, (256,))
    kb = KernelBuilder()
    t = kb.load(x, [0], [256])
    kb.store(x, kb.ew("MUL", t, t), [0])
    text = CPUKernel(make_kernel("k", [x], [], kb.body)).source("llvm")
    if host().simd_bits >= 256:
        assert " x float>" in text and "fmul <" in text


# ------------------------------------------------------------------ fusion


def test_fused_element_wise_chains_keep_every_rounding_and_live_tile(rng):
    """cast -> mul -> add chains run as one loop on the CPU; an intermediate
    used later is still stored, one used only inside is not, and a dot right
    after the chain takes its operands from the chain's loop (dot(t, t, t))."""
    x, y, z = gt("x", "u4", (16, 16)), gt("y", F16, (16, 16)), gt("z", F32, (16, 16))
    kb = KernelBuilder()
    w = kb.ew("MUL", kb.cast(kb.load(x, [0, 0], [16, 16]), "f16"), kb.load(y, [0, 0], [16, 16]))
    v = kb.ew("ADD", w, vm.Const(0.0999755859375, F16))      # rounds in f16 again
    sq = kb.cast(v, "f32")
    acc = kb.dot(sq, sq, sq)                                   # operands and accumulator: one tile
    kb.store(y, w, [0, 0])                                     # w lives on after the chain
    kb.store(z, kb.ew("ADD", acc, kb.dot(v, v, kb.full("f32", [16, 16], 0.5))), [0, 0])
    kernel = make_kernel("fused", [x, y, z], [], kb.body)
    q = rng.integers(0, 16, (16, 16))
    s = (rng.random((16, 16)) * 4).astype(np.float16)
    (cy, cz), (ry, rz) = run_both(kernel, tl.pack(q, tl.u4), s, poisoned((16, 16)), outputs=[1, 2])
    np.testing.assert_array_equal(cy, ry)
    wv = (q.astype(np.float16) * s)
    np.testing.assert_array_equal(cy, wv)
    vv = (wv + np.float16(0.0999755859375)).astype(np.float64)
    exact = vv + vv @ vv + (0.5 + vv @ vv)
    scale = vv + 2 * np.abs(vv) @ np.abs(vv) + 0.5
    assert_dot_close([cz, rz], exact, scale, 32)


def test_fused_integer_chain_with_broadcast_and_division_by_zero(rng):
    x, y = gt("x", I32, (8, 32)), gt("y", I32, (1, 32))
    kb = KernelBuilder()
    a, d = kb.load(x, [0, 0], [8, 32]), kb.load(y, [0, 0], [1, 32])
    r = kb.ew("MOD", kb.ew("FLOOR_DIV", kb.ew("MUL", a, vm.Const(3, I32)), d), vm.Const(7, I32))
    kb.store(x, r, [0, 0])
    kernel = make_kernel("ints", [x, y], [], kb.body)
    a0 = rng.integers(-1000, 1000, (8, 32)).astype(np.int32)
    d0 = rng.integers(1, 9, (1, 32)).astype(np.int32) * rng.choice([-1, 1], (1, 32)).astype(np.int32)
    (cpu,), (ref,) = run_both(kernel, a0, d0, outputs=[0])
    np.testing.assert_array_equal(cpu, (a0 * 3 // d0) % 7)
    np.testing.assert_array_equal(cpu, ref)
    d0[0, 5] = 0
    with pytest.raises(tl.TLError, match="division by zero"):
        CPUKernel(kernel)(a0.copy(), d0)


def test_f16_without_f16c_uses_the_integer_codec(rng, monkeypatch):
    """Hosts without F16C encode and decode f16 with integer operations: same bits."""
    from tvm_lite.backends import cpu_codegen
    from tvm_lite.runtime.cpu_launch import STATUS_MESSAGES
    from tvm_lite.backends.llvm import CodeLibrary, host
    from tvm_lite.runtime.cpu_launch import KERNEL_SIGNATURE, launch
    real = host()

    class NoF16C:
        def __getattr__(self, name):
            return getattr(real, name)

        def has(self, feature):
            return feature != "f16c" and real.has(feature)
    x, y = gt("x", F32, (512,)), gt("y", F16, (512,))
    kb = KernelBuilder()
    h = kb.cast(kb.load(x, [0], [512]), "f16")
    kb.store(y, kb.ew("MUL", h, h), [0])
    kernel = make_kernel("nof16c", [x, y], [], kb.body)
    monkeypatch.setattr(cpu_codegen, "host", lambda: NoF16C())
    text = lower_to_llvm(kernel, "tl_nof16c_test")
    assert "half" not in text
    library = CodeLibrary("nof16c")
    library.add_ir(text)
    fn = library.function("tl_nof16c_test", *KERNEL_SIGNATURE)
    a = (rng.standard_normal(512) * 300).astype(np.float32)
    a[:8] = [65519.0, 65520.0, 1e-8, -3e-8, np.inf, -1e30, 2.0 ** -25, 0.0]
    out = poisoned(512, np.float16)
    launch(kernel, fn, (a, out), None, STATUS_MESSAGES)
    (ref,) = run_both(kernel, a, poisoned(512, np.float16), outputs=[1])[1]
    np.testing.assert_array_equal(out, ref)
