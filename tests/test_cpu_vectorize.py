"""Explicit LLVM vectors for global loads and stores on the CPU: the width
comes from the layout algebra's contiguity query and the host's SIMD width."""
import re

import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.backends.cpu_memory import vector_width
from tvm_lite.backends.llvm import host

COPY = """\
@kernel(warps=1)
def copy[R: int = 4, C: int = 64, DT: dtype = f32](m: i32, n: i32, a: DT[m, n], c: DT[m, n]):
    grid(cdiv(m, R), cdiv(n, C))
    store(c, load(a, [block.x * R, block.y * C], [R, C]) + load(a, [block.x * R, block.y * C], [R, C]),
          [block.x * R, block.y * C])
"""


def _vector_ops(text: str) -> set[tuple[str, int, str]]:
    """(load|store, lanes, element type) of every vector memory operation."""
    ops = set()
    for op, lanes, ety in re.findall(r"\b(load|store) <(\d+) x (\w+)>", text):
        ops.add((op, int(lanes), ety))
    return ops


def test_vector_add_uses_host_width_vector_loads_and_stores():
    lanes = host().simd_bits // 32
    mod = tl.compile("examples/vector_add.tl", target="cpu")
    unoptimized = mod.vector_add.source("llvm-unoptimized")   # what the code generator emits
    assert {("load", lanes, "float"), ("store", lanes, "float")} <= _vector_ops(unoptimized)
    assert ("load", lanes, "float") in _vector_ops(mod.vector_add.source("llvm"))


@pytest.mark.parametrize("shape, dt, expected", [
    ((4, 64), "f32", None), ((4, 12), "f32", 4), ((2, 7), "f32", 1), ((1, 256), "f16", None),
    ((8, 8), "f64", 8), ((3, 1), "i8", 1),
])
def test_width_is_the_contiguous_run_capped_at_the_simd_width(shape, dt, expected):
    from tvm_lite.backends.cpu_types import storage_bytes
    lanes = host().simd_bits // (8 * storage_bytes(tl.dtype(dt)))
    assert vector_width(shape, tl.dtype(dt)) == (lanes if expected is None else min(lanes, expected))


@pytest.mark.parametrize("cols, dt", [(64, "f32"), (12, "f32"), (7, "f32"), (32, "f16"), (16, "i8"), (8, "f64")])
def test_vector_copies_agree_with_numpy_inside_and_at_the_edges(cols, dt, rng):
    """Interior windows take the vector path, edge windows the clipped scalar one."""
    mod = tl.compile(COPY, target="cpu", C=cols, DT=dt)
    if vector_width((4, cols), tl.dtype(dt)) > 1:
        width = vector_width((4, cols), tl.dtype(dt))
        assert any(lanes == width for _, lanes, _ in _vector_ops(mod.copy.source("llvm-unoptimized")))
    m, n = 4 * 3 + 1, cols * 2 + 3     # partial tiles in both dimensions
    npdt = np.dtype("float16" if dt == "f16" else "float32" if dt == "f32" else "float64" if dt == "f64"
                    else "int8")
    a = (rng.standard_normal((m, n)) * 20).astype(npdt)
    c = np.full((m, n), np.nan if npdt.kind == "f" else 0, npdt)
    mod.copy(m, n, a, c)
    ref = np.zeros_like(c)
    tl.compile(COPY, target="interp", C=cols, DT=dt).copy(m, n, a, ref)
    np.testing.assert_array_equal(c, ref)
    if npdt.kind == "f":
        np.testing.assert_array_equal(c, (a.astype(np.float64) * 2).astype(npdt))


CHAIN = """\
@kernel(warps=1)
def chain[C: int = 64](s: f32, x: f32[4, C], y: f32[4, C], out: f32[4, C], out2: f32[4, C]):
    a = load(x, [0, 0], [4, C])
    b = load(y, [0, 0], [4, C])
    t = a * b + s
    u = max(t, -a) / b
    store(out, sqrt(abs(u)) - min(t, b), [0, 0])
    store(out2, -t, [0, 0])
"""


@pytest.mark.parametrize("cols", [64, 12, 7])
def test_f32_element_wise_chains_use_vectors_and_match_the_interpreter(cols, rng):
    """Overflow to ±inf saturates to ±max, division by zero stays infinite,
    NaN propagates: the vector chain agrees bit for bit with the interpreter."""
    mod = tl.compile(CHAIN, target="cpu", C=cols)
    width = vector_width((4, cols), tl.f32)
    text = mod.chain.source("llvm-unoptimized")
    for op in ("fmul", "fadd", "fdiv", "fsub"):
        assert (f"{op} <{width} x float>" in text) == (width > 1), op
    if width > 1:
        assert f"llvm.maximum.v{width}f32" in text and f"llvm.sqrt.v{width}f32" in text
    x = (rng.standard_normal((4, cols)) * 1e19).astype(np.float32)
    y = (rng.standard_normal((4, cols)) * 1e19).astype(np.float32)
    x[0, :3] = [np.nan, np.inf, 3.0e38]
    y[1, :3] = [0.0, -0.0, np.nan]
    s = float(rng.standard_normal())
    got = [np.full((4, cols), np.nan, np.float32) for _ in range(2)]
    ref = [np.zeros((4, cols), np.float32) for _ in range(2)]
    mod.chain(s, x, y, *got)
    tl.compile(CHAIN, target="interp", C=cols).chain(s, x, y, *ref)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g.view(np.uint32), r.view(np.uint32))
    assert abs(got[1][0, 2]) == np.finfo(np.float32).max   # 3e38 * y overflowed and saturated
