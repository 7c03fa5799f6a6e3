"""The llvmlite code library: IR in, optimized machine code out."""
import ctypes

import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.backends.llvm import CodeLibrary, host

SAXPY = """
define void @saxpy(float* noalias %x, float* noalias %y, float %a, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %px = getelementptr float, float* %x, i64 %i
  %py = getelementptr float, float* %y, i64 %i
  %vx = load float, float* %px
  %vy = load float, float* %py
  %m = fmul contract float %a, %vx
  %s = fadd contract float %m, %vy
  store float %s, float* %py
  %next = add i64 %i, 1
  %done = icmp eq i64 %next, %n
  br i1 %done, label %exit, label %loop
exit:
  ret void
}
"""


def test_code_library_compiles_runs_and_shows_its_stages(rng):
    lib = CodeLibrary("saxpy_test")
    lib.add_ir(SAXPY.replace("float*", "ptr"))
    fn = lib.function("saxpy", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_int64)
    x = rng.standard_normal(1000).astype(np.float32)
    y = rng.standard_normal(1000).astype(np.float32)
    expect = (np.float32(1.5) * x.astype(np.float64) + y).astype(np.float32)
    fn(x.ctypes.data, y.ctypes.data, 1.5, 1000)
    np.testing.assert_allclose(y, expect, rtol=1e-6)
    assert "define void @saxpy" in lib.optimized_ir
    assert "saxpy" in lib.asm and ("vfmadd" in lib.asm or "mulps" in lib.asm or "fmul" in lib.asm)


def test_host_facts():
    h = host()
    assert h.simd_bits in (128, 256, 512)
    assert h.cpu_name and h.triple in h.key


def test_invalid_ir_is_a_compile_error():
    lib = CodeLibrary("bad")
    lib.add_ir("define void @f() { ret i32 0 }")
    with pytest.raises(tl.TLCompileError, match="invalid LLVM IR"):
        lib.finalize()
