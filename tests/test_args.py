"""Launch-time argument binding (`runtime.args.bind_arguments`) on hand-built kernels.

Every bad call raises TLLaunchError naming the kernel, the parameter, what was
expected and what was given; no numpy exception escapes.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from tvm_lite.backends.interp import InterpKernel
from tvm_lite.errors import TLError, TLLaunchError
from tvm_lite.ir import vm
from tvm_lite.ir.dtypes import dtype, pack
from tvm_lite.runtime.args import bind_arguments, eval_expr

B = vm.BinaryOp


def binop(op, a, b):
    a = a if isinstance(a, vm.Expr) else vm.const(a)
    b = b if isinstance(b, vm.Expr) else vm.const(b)
    return vm.Binary(op, a, b, a.dtype)


def qmatmul_signature():
    """qmatmul(m, k, n, a: f16[m, k], w: u3[k, n], s: f16[cdiv(k, 32), n], c: f32[m, n])"""
    m, k, n = vm.Var("m"), vm.Var("k"), vm.Var("n")
    a = vm.GlobalTensor("a", dtype("f16"), (m, k))
    w = vm.GlobalTensor("w", dtype("u3"), (k, n))
    s = vm.GlobalTensor("s", dtype("f16"), (binop(B.CDIV, k, 32), n))
    c = vm.GlobalTensor("c", dtype("f32"), (m, n))
    out = vm.RegisterTensor("t", dtype("f32"), (4, 4))
    body = (vm.Full(out, vm.Const(0.0, dtype("f32"))), vm.Store(c, out, (vm.const(0), vm.const(0))))
    return vm.Kernel("qmatmul", (m, k, n, a, w, s, c), 4, (vm.const(1),), body)


KERNEL = qmatmul_signature()
M, K, N = 16, 64, 20


def good_args(rng):
    return [M, K, N,
            rng.standard_normal((M, K)).astype(np.float16),
            pack(rng.integers(0, 8, (K, N)), "u3"),
            rng.standard_normal((2, N)).astype(np.float16),
            np.zeros((M, N), np.float32)]


def launch_error(args, kwargs=None) -> str:
    with pytest.raises(TLLaunchError) as info:
        bind_arguments(KERNEL, tuple(args), kwargs)
    message = str(info.value)
    assert message.startswith("qmatmul: "), message
    return message


def test_good_arguments_bind_by_identity(rng):
    args = good_args(rng)
    bound = bind_arguments(KERNEL, tuple(args))
    m, k, n, a, w, s, c = KERNEL.params
    assert bound.scalars == {m: M, k: K, n: N}
    assert bound.tensors[a] is args[3] and bound.tensors[c] is args[6]
    assert bound.shape_of(s) == (2, N) and bound.shape_of(w) == (K, N)


def test_keyword_arguments(rng):
    args = good_args(rng)
    names = ["m", "k", "n", "a", "w", "s", "c"]
    bound = bind_arguments(KERNEL, tuple(args[:3]), dict(zip(names[3:], args[3:])))
    assert bound.tensors[KERNEL.params[6]] is args[6]
    assert "no parameter named 'zz'" in launch_error(args[:6], {"c": args[6], "zz": 1})
    assert "argument 'm' given twice" in launch_error(args, {"m": 3})


@pytest.mark.parametrize("index, value, words", [
    (3, lambda a: a.astype(np.float32), "argument 'a' must be float16 of shape (16, 64), got float32 (16, 64)"),
    (3, lambda a: a[:, :32].copy(), "argument 'a' must be float16 of shape (16, 64), got float16 (16, 32)"),
    (6, lambda c: c.T.copy(), "argument 'c' must be float32 of shape (16, 20), got float32 (20, 16)"),
    (4, lambda w: w[:-1].copy(), "'w' holds u3[64, 20] packed as a bit stream: it must be 480 uint8 bytes, "
                                 "got 479 bytes"),
    (4, lambda w: w.view(np.int8), "argument 'w' must be u3[64, 20] packed as uint8 bytes"),
    (3, lambda a: a.tolist(), "argument 'a' must be a numpy array (f16[16, 64]), got list"),
    (6, lambda c: np.zeros((16, 40), np.float32)[:, ::2], "argument 'c' must be C-contiguous"),
    (6, lambda c: np.zeros((20, 16), np.float32).T, "argument 'c' must be C-contiguous"),
])
def test_tensor_errors_name_the_parameter_and_the_expectation(rng, index, value, words):
    args = good_args(rng)
    args[index] = value(args[index])
    assert words in launch_error(args)


def test_misaligned_and_read_only_arrays(rng):
    args = good_args(rng)
    raw = np.zeros(M * N * 4 + 1, np.uint8)
    args[6] = raw[1:].view(np.float32).reshape(M, N)     # float32 starting at an odd address
    assert "argument 'c' must be aligned to its 4-byte elements" in launch_error(args)
    args = good_args(rng)
    args[6].setflags(write=False)
    assert "argument 'c' is written by the kernel but the array is read-only" in launch_error(args)
    args = good_args(rng)
    args[3].setflags(write=False)     # inputs may be read-only
    bind_arguments(KERNEL, tuple(args))


def test_packed_arrays_of_any_shape_and_ml_dtypes(rng):
    args = good_args(rng)
    args[4] = args[4].reshape(48, 10)     # the stream's bytes, any shape
    bind_arguments(KERNEL, tuple(args))
    kernel = vm.Kernel("bf", (vm.GlobalTensor("x", dtype("bf16"), (vm.const(3), vm.const(5))),
                              vm.GlobalTensor("y", dtype("f8e4m3"), (vm.const(7),))), 1, (vm.const(1),), ())
    x = rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16)
    y = rng.standard_normal(7).astype(ml_dtypes.float8_e4m3fn)
    bind_arguments(kernel, (x, y))
    bind_arguments(kernel, (x.view(np.uint8), y.view(np.uint8)))
    with pytest.raises(TLLaunchError, match=r"'x' must be bfloat16 of shape \(3, 5\), got bfloat16 \(5, 3\)"):
        bind_arguments(kernel, (x.reshape(5, 3), y))
    with pytest.raises(TLLaunchError, match=r"'y' must be f8e4m3\[7\] packed as uint8 bytes .*or float8_e4m3fn"):
        bind_arguments(kernel, (x, y.astype(ml_dtypes.float8_e5m2)))


@pytest.mark.parametrize("index, value, words", [
    (0, 2 ** 31, "argument 'm' = 2147483648 is out of range for i32 [-2147483648, 2147483647]"),
    (0, -2 ** 31 - 1, "out of range for i32"),
    (1, 64.0, "argument 'k' must be an integer (i32), got float 64.0"),
    (1, np.float32(64), "argument 'k' must be an integer (i32), got float32"),
    (2, True, "argument 'n' must be an i32 number, got a bool"),
    (2, "20", "argument 'n' must be an integer (i32), got str"),
    (2, None, "argument 'n' must be an integer (i32), got NoneType"),
    (2, 1 + 2j, "argument 'n' must be an integer (i32), got complex"),
])
def test_scalar_errors(rng, index, value, words):
    args = good_args(rng)
    args[index] = value
    assert words in launch_error(args)


def test_scalars_accept_numpy_integers_and_0d_arrays(rng):
    args = good_args(rng)
    args[0], args[1], args[2] = np.int64(M), np.array(K, np.int32), np.uint8(N)
    bound = bind_arguments(KERNEL, tuple(args))
    assert list(bound.scalars.values()) == [M, K, N]
    assert all(type(v) is int for v in bound.scalars.values())


def test_arity():
    assert "takes 7 arguments (m, k, n, a, w, s, c), got 8" in launch_error(list(range(8)))
    assert "missing argument(s) s, c (signature: m, k, n, a, w, s, c)" in launch_error([1, 2, 3, None, None])


def test_shapes_evaluate_from_scalars(rng):
    m, n = vm.Var("m"), vm.Var("n")
    dims = (binop(B.FLOOR_DIV, m, 3), binop(B.MIN, m, n), binop(B.MAX, m, n), binop(B.CDIV, n, 4),
            binop(B.MOD, n, 4), binop(B.SUB, binop(B.MUL, m, 2), n))
    g = vm.GlobalTensor("g", dtype("u4"), dims)
    kernel = vm.Kernel("shapes", (m, n, g), 1, (vm.const(1),), ())
    shape = (7 // 3, 5, 7, 2, 1, 9)
    bound = bind_arguments(kernel, (7, 5, np.zeros(-(-int(np.prod(shape)) * 4 // 8), np.uint8)))
    assert bound.shape_of(g) == shape
    with pytest.raises(TLLaunchError, match=r"shapes: tensor 'g' has a negative dimension"):
        bind_arguments(kernel, (1, 5, np.zeros(0, np.uint8)))
    div = vm.GlobalTensor("d", dtype("f32"), (binop(B.FLOOR_DIV, 8, n),))
    with pytest.raises(TLLaunchError, match="cannot evaluate the shape of 'd': integer division by zero"):
        bind_arguments(vm.Kernel("z", (n, div), 1, (vm.const(1),), ()), (0, np.zeros(1, np.float32)))


def test_float_scalars_are_range_checked_and_rounded_to_their_type():
    params = tuple(vm.Var(name, dtype(dt)) for name, dt in
                   [("a", "f32"), ("b", "f16"), ("c", "f6e3m2"), ("d", "f64")])
    kernel = vm.Kernel("floats", params, 1, (vm.const(1),), ())
    bound = bind_arguments(kernel, (0.1, 0.1, 3, np.float32(2.5)))
    assert list(bound.scalars.values()) == [float(np.float32(0.1)), float(np.float16(0.1)), 3.0, 2.5]
    bound = bind_arguments(kernel, (float("inf"), float("nan"), -28.0, 1e308))
    assert bound.scalars[params[0]] == float("inf") and np.isnan(bound.scalars[params[1]])
    for args, words in [((1e39, 0, 0, 0), "argument 'a' = 1e+39 is out of range for f32"),
                        ((0, 70000.0, 0, 0), "argument 'b' = 70000.0 is out of range for f16 [-65504.0, 65504.0]"),
                        ((0, 0, float("nan"), 0), "argument 'c' is NaN, which f6e3m2 cannot hold"),
                        ((0, 0, float("inf"), 0), "argument 'c' is inf, which f6e3m2 cannot hold"),
                        ((0, 0, 29, 0), "argument 'c' = 29 is out of range for f6e3m2"),
                        ((10 ** 400, 0, 0, 0), "out of range for f32"),
                        ((0, 0, 0, "1.0"), "argument 'd' must be an f64 number, got str")]:
        with pytest.raises(TLLaunchError) as info:
            bind_arguments(kernel, args)
        assert words in str(info.value)


def test_no_numpy_exception_escapes(rng):
    weird = [None, object(), "x", 1j, np.array([1, 2]), np.array(["a"]), np.zeros((2, 2), object),
             np.ma.masked_array(np.zeros((M, N), np.float32)), b"bytes", [1.0], 1e400, -1]
    for index in range(7):
        for value in weird:
            args = good_args(rng)
            args[index] = value
            try:
                bind_arguments(KERNEL, tuple(args))
            except TLLaunchError:
                pass


def test_interpreter_calls_check_their_arguments(rng):
    args = good_args(rng)
    args[0] = 2 ** 40
    with pytest.raises(TLLaunchError, match="qmatmul: argument 'm'"):
        InterpKernel(KERNEL)(*args)
    args = good_args(rng)
    args[6] = np.full((M, N), np.nan, np.float32)
    InterpKernel(KERNEL)(*args)
    assert (args[6][:4, :4] == 0).all() and np.isnan(args[6][4:]).all()


def test_eval_expr_block_indices_and_unknown_scalars():
    x = vm.Var("x")
    assert eval_expr(binop(B.ADD, vm.BlockIdx(1), x), {x: 5}, (0, 3, 0)) == 8
    with pytest.raises(TLError, match="scalar 'x' has no value here"):
        eval_expr(x, {})
