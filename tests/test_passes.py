"""The pass manager and its instruments, and dead-code elimination."""
import numpy as np

import tvm_lite as tl
from tvm_lite.ir import vm
from tvm_lite.ir.functor import collect
from tvm_lite.passes.dead_code import eliminate_dead_code

SRC = """
@kernel(warps=1)
def k(n: i32, x: f32[n], y: f32[n]):
    unused = load(x, [1], [8]) * 2.0
    acc = zeros(f32, [8])
    dead_acc = zeros(f32, [8])
    for i in range(3):
        acc = acc + load(x, [i], [8])
        dead_acc = dead_acc + 1.0
    store(y, acc, [0])
"""


def test_dead_code_is_removed_and_live_code_kept(rng):
    mod = tl.compile(SRC, target="interp")
    kernel = mod.program.kernels[0]
    names = {s.out.name for s in collect(kernel, vm.Instr) if getattr(s, "out", None) is not None}
    assert not any(n.startswith("unused") or n.startswith("dead_acc") for n in names), names
    assert len(collect(kernel, vm.Assign)) == 1 and len(collect(kernel, vm.Store)) == 1
    x = rng.integers(-1000, 1000, 10).astype(np.float32)   # exact sums: no cancellation noise
    y = np.full(10, np.nan, np.float32)
    mod.k(10, x, y)
    ref = sum(x[i:i + 8].astype(np.float64) for i in range(3))
    np.testing.assert_array_equal(y[:8], ref)


def test_dead_code_returns_the_same_program_when_nothing_is_dead():
    program = tl.compile(SRC, target="interp").program
    assert eliminate_dead_code(program) is program


def test_dump_and_timing_instruments(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TL_DUMP_IR", str(tmp_path / "dumps"))
    monkeypatch.setenv("TL_TIME_PASSES", "1")
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "keep.txt").write_text("the user's file")
    tl.compile(SRC, target="interp")
    files = sorted(p.name for p in (tmp_path / "dumps").iterdir())
    assert files == ["keep.txt", "string.00_input.vm", "string.01_simplify.vm",
                     "string.02_hoist_loop_invariants.vm", "string.03_eliminate_dead_code.vm"]
    before = (tmp_path / "dumps" / "string.01_simplify.vm").read_text()
    after = (tmp_path / "dumps" / "string.03_eliminate_dead_code.vm").read_text()
    assert "%unused" in before and "%unused" not in after
    err = capsys.readouterr().err
    assert "simplify" in err and "eliminate_dead_code" in err and "total" in err


# ------------------------------------------------------------------ simplifier
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tvm_lite.ir.printer import format_expr  # noqa: E402
from tvm_lite.passes.simplify import simplify_expr  # noqa: E402
from tvm_lite.runtime.args import eval_expr  # noqa: E402

X, Y = vm.Var("x"), vm.Var("y")
_OPS = [vm.BinaryOp.ADD, vm.BinaryOp.SUB, vm.BinaryOp.MUL, vm.BinaryOp.FLOOR_DIV, vm.BinaryOp.MOD,
        vm.BinaryOp.BIT_AND, vm.BinaryOp.BIT_OR, vm.BinaryOp.BIT_XOR, vm.BinaryOp.SHL, vm.BinaryOp.SHR,
        vm.BinaryOp.MIN, vm.BinaryOp.MAX, vm.BinaryOp.CDIV, vm.BinaryOp.LT]

leaves = st.one_of(st.sampled_from([X, Y]), st.sampled_from([-3, -1, 0, 1, 2, 3, 4, 8, 64, 1000]).map(vm.const))
int_exprs = st.recursive(leaves, lambda inner: st.builds(
    lambda op, a, b: vm.Binary(op, a, b, vm.BOOL if op is vm.BinaryOp.LT else vm.I32),
    st.sampled_from(_OPS), inner, inner), max_leaves=8)


def _value(e, env):
    try:
        return eval_expr(e, env)
    except tl.TLError:
        return "error"


@settings(max_examples=400, deadline=None)
@given(int_exprs, st.integers(-2 ** 31, 2 ** 31 - 1), st.integers(-300, 300))
def test_simplify_preserves_values(e, x, y):
    env = {X: x, Y: y}
    simple = simplify_expr(e)
    before, after = _value(e, env), _value(simple, env)
    if before != "error":
        assert after == before, f"{format_expr(e)} -> {format_expr(simple)}"


def test_simplify_folds_and_strength_reduces():
    two = vm.const(2)
    e = vm.Binary(vm.BinaryOp.ADD, vm.Binary(vm.BinaryOp.ADD, X, two), vm.const(3))
    assert format_expr(simplify_expr(e)) == "x + 5"
    assert format_expr(simplify_expr(vm.Binary(vm.BinaryOp.FLOOR_DIV, X, vm.const(16)))) == "x >> 4"
    assert format_expr(simplify_expr(vm.Binary(vm.BinaryOp.MOD, X, vm.const(16)))) == "x & 15"
    assert format_expr(simplify_expr(vm.Binary(vm.BinaryOp.MUL, vm.const(1), X))) == "x"
    folded = simplify_expr(vm.Binary(vm.BinaryOp.MUL, vm.const(6), vm.const(7)))
    assert isinstance(folded, vm.Const) and folded.value == 42
    div0 = vm.Binary(vm.BinaryOp.FLOOR_DIV, vm.const(6), vm.const(0))
    assert simplify_expr(div0) == div0   # left for run time to report
    f = vm.Binary(vm.BinaryOp.MUL, vm.Var("z", tl.f32), vm.Const(0.0, tl.f32), tl.f32)
    assert simplify_expr(f) is f          # x * 0 is not 0 for floats
