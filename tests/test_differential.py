"""Random element-wise kernels: the CPU backend must agree with the interpreter
bit for bit (both follow the same rounding and wrapping rules)."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tvm_lite as tl

FLOAT_OPS = ["+", "-", "*", "/"]
FLOAT_CALLS = ["min", "max"]
INT_OPS = ["+", "-", "*", "//", "%", "&", "|", "^", ">>"]


def expressions(ops, calls, leaves):
    def extend(inner):
        binary = st.tuples(st.sampled_from(ops), inner, inner).map(lambda t: f"({t[1]} {t[0]} {t[2]})")
        call = st.tuples(st.sampled_from(calls), inner, inner).map(lambda t: f"{t[0]}({t[1]}, {t[2]})")
        unary = inner.map(lambda e: f"(-{e})")
        return st.one_of(binary, call, unary)
    return st.recursive(st.sampled_from(leaves), extend, max_leaves=6)


FLOAT_EXPR = expressions(FLOAT_OPS, FLOAT_CALLS + ["where_lt"], ["a", "b", "1.5", "0.25", "s"])
INT_EXPR = expressions(INT_OPS, ["min", "max"], ["a", "b", "3", "7", "s"])


def kernel(expr: str, dtype: str, scalar: str) -> str:
    expr = expr.replace("where_lt(", "pick(")
    while "pick(" in expr:   # where(a < b, a, b) written out, to cover comparisons and where
        start = expr.index("pick(")
        depth, i = 0, start + 5
        parts, last = [], start + 5
        while True:
            ch = expr[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    parts.append(expr[last:i])
                    break
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(expr[last:i])
                last = i + 1
            i += 1
        a, b = (p.strip() for p in parts)
        expr = expr[:start] + f"where({a} < {b}, {a}, {b})" + expr[i + 1:]
    return f"""
@kernel(warps=1)
def k(s: {scalar}, x: {dtype}[64], y: {dtype}[64], out: {dtype}[64]):
    a = load(x, [0], [64])
    b = load(y, [0], [64])
    store(out, {expr} + zeros({dtype}, [64]), [0])
"""


def run_both(src, *inputs, out_dtype):
    results = []
    for target in ("interp", "cpu"):
        out = np.zeros(64, out_dtype)
        try:
            tl.compile(src, target=target).k(*inputs, out)
            results.append(("ok", out))
        except tl.TLError as e:
            results.append(("error", type(e).__name__))
    return results


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(FLOAT_EXPR, st.sampled_from(["f32", "f16"]), st.floats(-4, 4, width=16))
def test_float_kernels_agree(expr, dtype, s):
    rng = np.random.default_rng()
    np_dtype = np.float32 if dtype == "f32" else np.float16
    x = (rng.standard_normal(64) * 8).astype(np_dtype)
    y = (rng.standard_normal(64) * 8).astype(np_dtype)
    (ka, a), (kb, b) = run_both(kernel(expr, dtype, "f32"), s, x, y, out_dtype=np_dtype)
    assert ka == kb   # the same TLError on both, e.g. where() given no tile
    if ka == "ok":
        np.testing.assert_array_equal(a, b)


@SETTINGS
@given(INT_EXPR, st.sampled_from(["i32", "i8"]), st.integers(-9, 9))
def test_integer_kernels_agree(expr, dtype, s):
    rng = np.random.default_rng()
    np_dtype = np.int32 if dtype == "i32" else np.int8
    x = rng.integers(-100, 100, 64).astype(np_dtype)
    y = rng.integers(-100, 100, 64).astype(np_dtype)
    (ka, a), (kb, b) = run_both(kernel(expr, dtype, "i32"), s, x, y, out_dtype=np_dtype)
    assert ka == kb
    if ka == "ok":
        np.testing.assert_array_equal(a, b)
