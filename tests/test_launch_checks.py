"""Launch-time argument checks and the VM verifier: bad input gets a TLError."""
import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.ir import vm
from tvm_lite.ir.verifier import verify_program

SRC = """
@kernel(warps=4)
def qm[WT: dtype = u4](m: i32, n: i32, k: i32, a: f16[m, k], b: WT[k, n], c: f32[m, n]):
    grid(cdiv(m, 16), cdiv(n, 32))
    acc = zeros(f32, [16, 32])
    for kt in range(cdiv(k, 32)):
        acc = dot(load(a, [block.x * 16, kt * 32], [16, 32]),
                  cast(load(b, [kt * 32, block.y * 32], [32, 32]), f16), acc)
    store(c, acc, [block.x * 16, block.y * 32])
"""


@pytest.fixture(scope="module")
def qm():
    return tl.compile(SRC, target="interp").qm


def good_args(rng, m=5, n=40, k=50):
    a = rng.standard_normal((m, k)).astype(np.float16)
    w = rng.integers(0, 16, (k, n))
    c = np.full((m, n), np.nan, np.float32)
    return [m, n, k, a, tl.pack(w, "u4"), c], w


def test_good_call_runs(qm, rng):
    args, w = good_args(rng)
    qm(*args)
    ref = args[3].astype(np.float64) @ w
    np.testing.assert_allclose(args[5], ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("mutate, words", [
    (lambda a: a.__setitem__(3, a[3].astype(np.float32)), "argument 'a' must be float16 of shape (5, 50)"),
    (lambda a: a.__setitem__(3, a[3][:, :10]), "argument 'a' must be float16"),
    (lambda a: a.__setitem__(4, a[4][:-1]), "must be 1000 uint8 bytes, got 999"),
    (lambda a: a.__setitem__(4, a[4].astype(np.int8)), "packed as uint8"),
    (lambda a: a.__setitem__(5, np.zeros((5, 80), np.float32)[:, ::2]), "C-contiguous"),
    (lambda a: a.__setitem__(0, 2 ** 31), "out of range for i32"),
    (lambda a: a.__setitem__(0, 5.0), "must be an integer"),
    (lambda a: a.__setitem__(3, a[3].tolist()), "must be a numpy array"),
    (lambda a: a.pop(), "missing argument(s) c"),
    (lambda a: a.append(1), "takes 6 arguments"),
])
def test_bad_arguments_raise_launch_errors(qm, rng, mutate, words):
    args, _ = good_args(rng)
    mutate(args)
    with pytest.raises(tl.TLLaunchError) as info:
        qm(*args)
    assert words in str(info.value)
    assert str(info.value).startswith("qm: ")


def test_read_only_output_is_refused(qm, rng):
    args, _ = good_args(rng)
    args[5].setflags(write=False)
    with pytest.raises(tl.TLLaunchError, match="read-only"):
        qm(*args)


def test_keyword_arguments(qm, rng):
    args, w = good_args(rng)
    names = ["m", "n", "k", "a", "b", "c"]
    qm(**dict(zip(names, args)))
    assert np.isfinite(args[5]).all()
    with pytest.raises(tl.TLLaunchError, match="no parameter named 'zz'"):
        qm(*args, zz=1)


def _kernel(body, params=()):
    return vm.Program((vm.Kernel("k", tuple(params), 1, (vm.const(1),), tuple(body)),))


F32 = tl.f32


def test_verifier_accepts_builder_output():
    verify_program(tl.compile(SRC, target="interp").program)


def test_verifier_catches_use_before_definition():
    t = vm.RegisterTensor("t", F32, (4,))
    u = vm.RegisterTensor("u", F32, (4,))
    with pytest.raises(tl.TLCompileError, match="%t is used before it is defined"):
        verify_program(_kernel([vm.Elementwise(u, vm.ElementOp.NEG, (t,))]))


def test_verifier_catches_double_definition_and_shape_errors():
    t = vm.RegisterTensor("t", F32, (4,))
    with pytest.raises(tl.TLCompileError, match="defined twice"):
        verify_program(_kernel([vm.Full(t, vm.const(1.5)), vm.Full(t, vm.const(2.5))]))
    a = vm.RegisterTensor("a", tl.f16, (4, 8))
    acc = vm.RegisterTensor("acc", F32, (4, 4))
    out = vm.RegisterTensor("o", F32, (4, 4))
    with pytest.raises(tl.TLCompileError, match="contraction size"):
        verify_program(_kernel([vm.Full(a, vm.const(1.5)), vm.Full(acc, vm.const(0.5)),
                                vm.Dot(out, a, a, acc)]))


def test_verifier_catches_break_outside_loop_and_unknown_scalars():
    with pytest.raises(tl.TLCompileError, match="outside a loop"):
        verify_program(_kernel([vm.Break()]))
    x = vm.Var("x")
    t = vm.RegisterTensor("t", tl.i32, (4,))
    with pytest.raises(tl.TLCompileError, match="scalar 'x' is used before"):
        verify_program(_kernel([vm.Full(t, x)]))


def test_verifier_catches_global_tensor_of_another_kernel():
    g = vm.GlobalTensor("g", F32, (vm.const(4),))
    t = vm.RegisterTensor("t", F32, (4,))
    with pytest.raises(tl.TLCompileError, match="not a parameter"):
        verify_program(_kernel([vm.Load(t, g, (vm.const(0),))]))
