"""Loop-invariant hoisting (passes/hoist.py): what moves, what stays, and the
law that the hoisted program computes the same values (hypothesis)."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tvm_lite as tl
from tvm_lite.backends.interp import InterpKernel
from tvm_lite.frontend.builder import build_program
from tvm_lite.frontend.parser import parse
from tvm_lite.ir import vm
from tvm_lite.ir.functor import collect
from tvm_lite.ir.printer import format_expr
from tvm_lite.passes.hoist import hoist_loop_invariants
from tvm_lite.passes.simplify import simplify

# out[i, 2*block.x + j] = VALUE for i < n, j < 2; out[i, 0] = GUARDED when d != 0.
# `s` changes every iteration of the i loop; x and d never change.
TEMPLATE = """\
@kernel(warps=1)
def k(x: i32, d: i32, n: i32, out: i32[6, 4]):
    grid(2)
    s = x
    for i in range(n):
        for j in range(2):
            store(out, full(i32, [1, 1], {value}), [i, block.x * 2 + j])
        if d != 0:
            store(out, full(i32, [1, 1], {guarded}), [i, 0])
        s = s + i
"""


def _program(value: str, guarded: str = "x // d") -> vm.Program:
    src = TEMPLATE.format(value=value, guarded=guarded)
    return simplify(build_program(parse(src, "<test>"), {}, src, "<test>"))


def _loops(body) -> list:
    return [s for s in body if isinstance(s, vm.For)]


def _hoisted(body) -> dict[str, str]:
    """Printed hoisted scalars just before a loop: name -> expression."""
    return {s.var.name: format_expr(s.value) for s in body
            if isinstance(s, vm.SetScalar) and "$" in s.var.name}


def test_an_invariant_expression_moves_out_of_the_loop():
    before = _program("x * 3 + block.x * (d << 2) + i * j + s")
    after = hoist_loop_invariants(before).kernels[0]
    assert "x * 3 + block.x * (d << 2)" in _hoisted(after.body).values()
    assert "block.x * 2" in _hoisted(after.body).values()
    (outer,) = _loops(after.body)
    (inner,) = _loops(outer.body)
    inner_exprs = {format_expr(f.value) for f in collect(inner.body, vm.Full)}
    assert inner_exprs == {f"{name} + i * j + s" for name, text in _hoisted(after.body).items()
                           if text == "x * 3 + block.x * (d << 2)"}


def test_an_expression_invariant_only_in_the_inner_loop_lands_before_it():
    after = hoist_loop_invariants(_program("i * 5 + x + j")).kernels[0]
    (outer,) = _loops(after.body)
    assert list(_hoisted(outer.body).values()) == ["i * 5 + x"]   # i varies in the outer loop
    assert "i * 5 + x" not in _hoisted(after.body).values()


def test_scalars_the_loop_writes_and_failing_divisions_stay_inside():
    after = hoist_loop_invariants(_program("s * 2 + j", guarded="(x * 7) // d")).kernels[0]
    out_of_i = set(_hoisted(after.body).values())
    out_of_j = set(_hoisted(_loops(after.body)[0].body).values())
    assert out_of_i == {"block.x * 2", "d != 0", "x * 7"}   # the division's operand may move
    assert out_of_j == {"s * 2"}     # s changes with i, not with j


def test_a_program_without_loop_invariants_is_returned_unchanged():
    program = _program("i + j + s")
    program = hoist_loop_invariants(program)   # block.x * 2 and d != 0 move
    assert hoist_loop_invariants(program) is program


@pytest.mark.parametrize("d", [0, 3])
def test_hoisted_kernel_agrees_on_every_target(target, d, rng):
    src = TEMPLATE.format(value="x * 3 + block.x * (d << 2) + i * j + s", guarded="(x * 7) // d + i")
    x, n = int(rng.integers(-1000, 1000)), 6
    out = np.full((6, 4), -1, np.int32)
    tl.compile(src, target=target).k(x, d, n, out)
    expect = np.full((6, 4), -1, np.int64)
    s = x
    for i in range(n):
        for bx in range(2):
            for j in range(2):
                expect[i, bx * 2 + j] = x * 3 + bx * (d << 2) + i * j + s
        if d:
            expect[i, 0] = (x * 7) // d + i
        s += i
    np.testing.assert_array_equal(out, expect)


# ------------------------------------------------------------------ the law

_LEAVES = ["x", "d", "i", "s", "block.x", "0", "1", "3", "-2", "16"]   # j: inner loop only
_OPS = ["+", "-", "*", "//", "%", "&", "|", "^", "<<", ">>"]


def _exprs(leaves):
    return st.recursive(
        st.sampled_from(leaves),
        lambda inner: st.one_of(
            st.builds(lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(_OPS), inner),
            st.builds(lambda f, a, b: f"{f}({a}, {b})", st.sampled_from(["min", "max"]), inner, inner)),
        max_leaves=7)


def _run(kernel: vm.Kernel, x: int, d: int, n: int):
    out = np.full((6, 4), -1, np.int32)
    try:
        InterpKernel(kernel)(x, d, n, out)
    except tl.TLError as e:
        return str(e)
    return out.tolist()


@settings(max_examples=60, deadline=None)
@given(_exprs(_LEAVES + ["j"]), _exprs(_LEAVES), st.sampled_from(["//", "%"]), st.integers(-50, 50),
       st.sampled_from([0, -3, 2, 5]), st.integers(0, 6))
def test_hoisting_preserves_every_value(value, guarded, division, x, d, n):
    """Same stores (and the same error, if any) with and without hoisting,
    zero-trip loops and untaken branches (a division by d == 0) included."""
    try:
        before = _program(value, f"({guarded}) {division} d")
    except tl.TLError:   # e.g. `1 << -2` between constants: refused at compile time
        assume(False)
    after = hoist_loop_invariants(before)
    assert _run(after.kernels[0], x, d, n) == _run(before.kernels[0], x, d, n)
