"""The TL frontend: parsing, printing, the VM IR it builds, and its diagnostics."""
import glob
import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tvm_lite as tl
from conftest import EXAMPLES, QMATMUL, mutate_source
from tvm_lite.frontend.ast_printer import format_ast
from tvm_lite.frontend.parser import parse
from tvm_lite.ir import vm

EXAMPLE_FILES = sorted(glob.glob(os.path.join(EXAMPLES, "*.tl")))


QMATMUL_VM_U3_BN64 = """\
# constants: WT=u3, BM=16, BN=64, BK=64, G=128
kernel qmatmul(m: i32, n: i32, k: i32, %a: global f16[m, k], %b: global u3[k, n], %s: global f16[cdiv(k, 128), n], %c: global f16[m, n])
    warps=4 grid=(cdiv(m, 16), cdiv(n, 64)):
  %acc: reg f32[16, 64] = full(0.0)
  inv$0: i32 = block.x * 16
  inv$1: i32 = block.y * 64
  for kt in range(0, cdiv(k, 64), 1):
    %ta: reg f16[16, 64] = load(%a, offsets=[inv$0, kt * 64])
    %tb: reg u3[64, 64] = load(%b, offsets=[kt * 64, inv$1])
    %ts: reg f16[1, 64] = load(%s, offsets=[kt * 64 >> 7, inv$1])
    %acc_1: reg f16[64, 64] = cast(%tb)
    %acc_2: reg f16[64, 64] = elementwise(*, [%acc_1, %ts])
    %acc_3: reg f32[16, 64] = dot(%ta, %acc_2, acc=%acc)
    %acc <- %acc_3
  %t: reg f16[16, 64] = cast(%acc)
  store(%c, %t, offsets=[block.x * 16, block.y * 64])
"""


def test_examples_exist():
    names = {os.path.basename(f) for f in EXAMPLE_FILES}
    assert {"vector_add.tl", "softmax.tl", "matmul.tl", "qmatmul.tl"} <= names


def test_qmatmul_example_is_the_design_kernel_verbatim():
    with open(os.path.join(EXAMPLES, "qmatmul.tl")) as f:
        assert f.read() == QMATMUL


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=os.path.basename)
def test_example_parses_prints_and_round_trips(path):
    with open(path) as f:
        source = f.read()
    module = parse(source, path)
    printed = format_ast(module)
    assert parse(printed) == module
    mod = tl.compile(path, target="interp")
    text = mod.source("vm")
    for k in module.kernels:
        assert f"kernel {k.name}(" in text


def test_qmatmul_vm_ir_with_constants():
    mod = tl.compile(QMATMUL, target="interp", WT="u3", BN=64)
    assert mod.source("vm") == QMATMUL_VM_U3_BN64


def test_constants_accept_dtype_objects_and_change_types():
    mod = tl.compile(QMATMUL, target="interp", WT=tl.f6e3m2)
    b = mod.program.kernels[0].params[4]
    assert isinstance(b, vm.GlobalTensor) and b.dtype == tl.f6e3m2


def test_kernel_access_by_name_and_attribute():
    mod = tl.compile(QMATMUL, target="interp")
    assert mod["qmatmul"] is mod.qmatmul
    with pytest.raises(tl.TLError, match="no kernel named 'nope'"):
        mod["nope"]
    with pytest.raises(AttributeError):
        mod.nope


def test_several_kernels_in_one_source():
    src = "\n".join(open(f).read() for f in EXAMPLE_FILES)
    mod = tl.compile(src, target="interp")
    assert set(mod.kernels) == {"vector_add", "softmax", "matmul", "qmatmul"}


def test_unknown_target_and_constants_raise():
    with pytest.raises(tl.TLTargetError, match="valid targets"):
        tl.compile(QMATMUL, target="tpu")
    with pytest.raises(tl.TLTargetError, match="sm_"):
        tl.compile(QMATMUL, target="cpu:sm_90")
    with pytest.raises(tl.TLTypeError, match="unknown compile-time constant"):
        tl.compile(QMATMUL, target="interp", XX=3)
    with pytest.raises(tl.TLTypeError, match="dtype 'q4'"):
        tl.compile(QMATMUL, target="interp", WT="q4")
    with pytest.raises(tl.TLTypeError, match="is an int"):
        tl.compile(QMATMUL, target="interp", BN="wide")


def test_cuda_call_without_a_driver_raises_a_target_error():
    from tvm_lite.runtime import devices
    if devices.has_cuda_gpu():
        pytest.skip("a CUDA driver is present")
    mod = tl.compile(QMATMUL, target="cuda:sm_90")
    with pytest.raises(tl.TLTargetError, match="CUDA driver"):
        mod.qmatmul(1, 1, 1, None, None, None, None)


def test_missing_file_is_a_tl_error(tmp_path):
    with pytest.raises(tl.TLError, match="cannot read"):
        tl.compile(str(tmp_path / "missing.tl"))


HEAD = "@kernel(warps=4)\ndef k(n: i32, x: f32[n], y: f16[n]):\n"

# (body appended to HEAD, error class, line, column, words the message must contain)
MALFORMED = [
    ("x = (1 +\n", tl.TLSyntaxError, 3, 1, "indented block"),
    ("    x = 1 +\n", tl.TLSyntaxError, 3, 12, "expected an expression"),
    ("    x = 1\n      z = 2\n", tl.TLSyntaxError, 4, 7, "unexpected indent"),
    ("    if n > 0\n        pass\n", tl.TLSyntaxError, 3, 13, "expected ':'"),
    ("    x = 1\n  z = 2\n", tl.TLSyntaxError, 4, 3, "unindent"),
    ("    x = $\n", tl.TLSyntaxError, 3, 9, "unexpected character '$'"),
    ("    x = f(a=1, 2)\n", tl.TLSyntaxError, 3, 16, "positional argument"),
    ("    for i in range(3):\n    pass\n", tl.TLSyntaxError, 4, 5, "indented block after the ':' on line 3"),
    ("    x = [1, 2\n", tl.TLSyntaxError, 3, 9, "'[' is never closed"),
    ("    x = 1 2\n", tl.TLSyntaxError, 3, 11, "expected an operator"),
    ("    return 5\n", tl.TLSyntaxError, 3, 12, "'return' takes no value"),
    ("    x == \n", tl.TLSyntaxError, 3, 9, "expected an expression"),
    ("    x[0] = 1\n", tl.TLSyntaxError, 3, 10, "unexpected '='"),
    ("    t = load(x, [0], [64])\n    store(y, t, [0])\n", tl.TLTypeError, 4, 14, "loses information"),
    ("    t = undefined_thing + 1\n", tl.TLTypeError, 3, 9, "undefined name 'undefined_thing'"),
    ("    t = load(x, [0, 0], [64])\n", tl.TLTypeError, 3, 17, "2 offsets for a rank-1 tensor"),
    ("    t = load(x, [0], [0])\n", tl.TLTypeError, 3, 22, "must be positive"),
    ("    t = load(n, [0], [64])\n", tl.TLTypeError, 3, 14, "must be a global tensor"),
    ("    break\n", tl.TLTypeError, 3, 5, "'break' outside a loop"),
    ("    n = 3\n", tl.TLTypeError, 3, 5, "cannot assign to 'n'"),
    ("    t = zeros(f32, [4]) + zeros(f16, [4])\n", tl.TLTypeError, 3, 9, "mixes f16 and f32"),
    ("    t = zeros(f32, [4]) + zeros(f32, [5])\n", tl.TLTypeError, 3, 9, "do not broadcast"),
    ("    t = dot(zeros(f16, [4, 8]), zeros(f16, [4, 8]), zeros(f32, [4, 8]))\n", tl.TLTypeError, 3, 9,
     "inner dimensions differ"),
    ("    t = zeros(i32, [4]) / 2\n", tl.TLTypeError, 3, 9, "use '//'"),
    ("    grid(1)\n    grid(2)\n", tl.TLTypeError, 4, 5, "given twice"),
    ("    for i in range(3):\n        grid(2)\n", tl.TLTypeError, 4, 9, "top level"),
    ("    t = frobnicate(1)\n", tl.TLTypeError, 3, 9, "unknown function 'frobnicate'"),
    ("    t = zeros(q4, [4])\n", tl.TLTypeError, 3, 15, "undefined name 'q4'"),
    ("    t = exp(zeros(i32, [4]))\n", tl.TLTypeError, 3, 9, "needs a float tile"),
    ("    t = load(x, [0], [m])\n", tl.TLTypeError, 3, 23, "undefined name 'm'"),
    ("    t = cast(zeros(f32, [4]))\n", tl.TLTypeError, 3, 9, "needs the argument 'dtype'"),
    ("    t = zeros(f32, [4], 1)\n", tl.TLTypeError, 3, 9, "at most 2 arguments"),
    ("    acc = zeros(f32, [4])\n    for i in range(3):\n        acc = zeros(f32, [8])\n", tl.TLTypeError,
     5, 9, "keeps its shape"),
    ("    t = n.foo\n", tl.TLTypeError, 3, 9, "no attribute 'foo'"),
    ("    for i in foo(3):\n        pass\n", tl.TLTypeError, 3, 14, "range(...)"),
    ("    t = 1 // 0\n", tl.TLTypeError, 3, 9, "division by zero"),
    ("    t = view(zeros(u8, [3]), u16)\n", tl.TLTypeError, 3, 30, "not a multiple"),
    ("    3\n", tl.TLTypeError, 3, 5, "does nothing"),
    ("    t = annotate(load(x, [0], [64]), spatial(32))\n", tl.TLTypeError, 3, 38, "the layout covers [32]"),
    ("    t = annotate(load(x, [0], [64]), spatial(32).wide(2))\n", tl.TLTypeError, 3, 38, "not 'wide'"),
    ("    t = view(load(x, [0], [64]), i32, layout=spatial(32))\n", tl.TLTypeError, 3, 46, "the layout covers [32]"),
]


@pytest.mark.parametrize("body, cls, line, column, words", MALFORMED)
def test_malformed_kernel_diagnostics(body, cls, line, column, words):
    with pytest.raises(cls) as info:
        tl.compile(HEAD + body, target="interp")
    err = info.value
    assert (err.location.line, err.location.column) == (line, column), str(err)
    assert words in err.message
    text = str(err)
    # file:line:col, the source line, and a caret under the column.
    head, source_line, caret = text.splitlines()[:3]
    assert head == f"<string>:{line}:{column}"
    assert source_line.strip() == (HEAD + body).splitlines()[line - 1].strip()
    assert caret.index("^") - 4 == column - 1
    # No lark token names or internal paths leak into the message.
    assert not re.search(r"__ANON|RPAR|LPAR|_NEWLINE|Token\(|\.py\b|lark", text)


def test_malformed_table_is_large_enough():
    assert len(MALFORMED) >= 25


def test_error_names_the_file(tmp_path):
    path = tmp_path / "bad.tl"
    path.write_text(HEAD + "    x = $\n")
    with pytest.raises(tl.TLSyntaxError) as info:
        tl.compile(path)
    assert str(info.value).startswith(f"{path}:3:9")



_FUZZ_TOKENS = ["(", ")", "[", "]", ":", ",", "=", "+", "*", "//", "\n", "    ", "for", "if", "else",
                "load", "x", "1", "2.5", "@", "def", "block", ".", "#", "not", "and", "-"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(EXAMPLE_FILES), st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "swap"]), st.integers(0, 10_000),
              st.sampled_from(_FUZZ_TOKENS)), min_size=1, max_size=4))
def test_fuzzed_sources_raise_only_tl_errors(path, edits):
    source = mutate_source(path, edits)
    try:
        tl.compile(source, target="interp")
    except tl.TLError as e:
        assert not isinstance(e, tl.TLCompileError), f"compiler bug surfaced: {e}"


STATIC_IF = """\
@kernel(warps=1)
def k[MODE: int = 0](x: f32[32], y: f32[32]):
    t = load(x, [0], [32])
    if MODE == 0:
        t = t - 1.0
    elif MODE == 1:
        t = t * 2.0
    else:
        t = t + undefined_name
    store(y, t, [0])
"""


@pytest.mark.parametrize("mode, op", [(0, vm.ElementOp.SUB), (1, vm.ElementOp.MUL)])
def test_compile_time_if_rebinds_and_skips_the_other_branch(rng, mode, op):
    """A branch decided at compile time is built in the enclosing scope: `t =
    f(t)` rebinds t (no Assign into it), and the untaken branch, which would not
    compile (an unknown name), is never built."""
    kern = tl.compile(STATIC_IF, target="interp", MODE=mode).k
    body = kern.vm.body
    assert not [s for s in body if isinstance(s, vm.Assign)]
    assert [s.op for s in body if isinstance(s, vm.Elementwise)] == [op]
    x = rng.standard_normal(32).astype(np.float32)
    y = np.full(32, np.nan, np.float32)
    kern(x, y)
    np.testing.assert_array_equal(y, x - 1 if mode == 0 else x * 2)
    with pytest.raises(tl.TLError, match="undefined_name"):
        tl.compile(STATIC_IF, target="interp", MODE=2)


LAUNCH_BOUNDS = """\
@kernel(warps=W, min_blocks=B)
def k[W: int = 2, B: int = 3](x: f32[64], y: f32[64]):
    store(y, load(x, [0], [64]) * 3.0, [0])
"""


def test_launch_bounds_may_name_constants(rng):
    """`warps` and `min_blocks` are evaluated after the compile-time
    parameters are bound; the VM kernel records both and prints them."""
    mod = tl.compile(LAUNCH_BOUNDS, target="interp", W=8, B=2)
    assert (mod.k.vm.warps, mod.k.vm.min_blocks) == (8, 2)
    assert "warps=8 min_blocks=2 grid=" in mod.source("vm")
    x = rng.standard_normal(64).astype(np.float32)
    y = np.full(64, np.nan, np.float32)
    mod.k(x, y)
    np.testing.assert_array_equal(y, x * np.float32(3))
    assert "min_blocks" not in tl.compile(LAUNCH_BOUNDS.replace(", min_blocks=B", ""), target="interp").source("vm")


@pytest.mark.parametrize("constants, column, words", [
    ({"B": 33}, 29, "min_blocks must be between 0 and 32, got 33"),
    ({"W": 0}, 15, "warps must be between 1 and 32, got 0"),
    ({"W": 32, "B": 3}, 29, "exceed the 2048 threads an SM holds"),
])
def test_launch_bounds_out_of_range(constants, column, words):
    with pytest.raises(tl.TLTypeError) as info:
        tl.compile(LAUNCH_BOUNDS, target="interp", **constants)
    assert (info.value.location.line, info.value.location.column) == (1, column), str(info.value)
    assert words in info.value.message


@pytest.mark.parametrize("decorator, words", [
    ("@kernel(warps=4, blocks=2)", "takes only 'warps=' and 'min_blocks='"),
    ("@kernel(warps=4, warps=2)", "'warps=' is given twice"),
])
def test_launch_bounds_bad_keywords(decorator, words):
    with pytest.raises(tl.TLTypeError, match=words):
        tl.compile(LAUNCH_BOUNDS.replace("@kernel(warps=W, min_blocks=B)", decorator), target="interp")
