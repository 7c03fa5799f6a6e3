"""CPU-backend contracts beyond numerical agreement (tested in test_interp)."""
import numpy as np
import pytest

import tvm_lite as tl

DIV = """
@kernel(warps=1)
def k(x: i32[8], y: i32[8]):
    store(y, load(x, [0], [8]) // load(y, [0], [8]), [0])
"""

SHARED = """
@kernel(warps=1)
def k(n: i32, y: f32[8]):
    buf = shared(f32, [8])
    store_shared(buf, zeros(f32, [4]) + 1.5, [n])
    store(y, load_shared(buf), [0])
"""


def test_stages_are_kept_on_the_kernel():
    mod = tl.compile("examples/vector_add.tl", target="cpu")
    llvm_ir = mod.vector_add.source("llvm")
    asm = mod.vector_add.source("asm")
    assert "define" in llvm_ir and "tl_vector_add" in llvm_ir
    assert "tl_vector_add" in asm
    assert "vector_add" in mod.source("asm")
    with pytest.raises(tl.TLError, match="stages"):
        mod.vector_add.source("ptx")


def test_integer_division_by_zero_is_an_error_not_a_crash(target, rng):
    mod = tl.compile(DIV, target=target)
    x = rng.integers(-100, 100, 8).astype(np.int32)
    y = rng.integers(1, 9, 8).astype(np.int32)
    y[3] = 0
    with pytest.raises(tl.TLError, match="division by zero"):
        mod.k(x, y)


def test_shared_access_out_of_range_is_an_error(target):
    mod = tl.compile(SHARED, target=target)
    y = np.zeros(8, np.float32)
    mod.k(4, y)
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 1.5, 1.5, 1.5, 1.5])
    with pytest.raises(tl.TLError, match="out of range"):
        mod.k(6, y)


def test_many_blocks_run_on_the_thread_pool(rng):
    mod = tl.compile("examples/vector_add.tl", target="cpu", BLOCK=16)
    n = 16 * 97 + 5
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    c = np.full(n, np.nan, np.float32)
    mod.vector_add(n, a, b, c)
    np.testing.assert_array_equal(c, a + b)


def test_sub_byte_stores_from_parallel_blocks_do_not_race(rng):
    # Rows of 3 u3 values: 9 bits, so neighbouring blocks share bytes.
    src = """
@kernel(warps=1)
def k(m: i32, x: i32[m, 3], y: u3[m, 3]):
    grid(m)
    store(y, cast(load(x, [block.x, 0], [1, 3]), u3), [block.x, 0])
"""
    m = 501
    x = rng.integers(0, 8, (m, 3)).astype(np.int32)
    y = np.zeros(-(-m * 3 * 3 // 8), np.uint8)
    tl.compile(src, target="cpu").k(m, x, y)
    np.testing.assert_array_equal(tl.unpack(y, "u3", (m, 3)), x)


def test_a_new_process_loads_cached_machine_code(tmp_path):
    import subprocess
    import sys
    script = """
import sys, numpy as np, tvm_lite as tl
from tvm_lite.backends import llvm
if sys.argv[1] == "warm":
    def refuse(self):
        raise AssertionError("compiled although the cache holds this kernel")
    llvm.CodeLibrary.compile = refuse
mod = tl.compile("examples/vector_add.tl", target="cpu", BLOCK=64)
a = np.arange(100, dtype=np.float32) * 0.5
c = np.zeros(100, np.float32)
mod.vector_add(100, a, a, c)
assert (c == a + a).all()
"""
    env = dict(__import__("os").environ, TL_CACHE_DIR=str(tmp_path))
    for phase in ("cold", "warm"):
        done = subprocess.run([sys.executable, "-c", script, phase], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert list(tmp_path.rglob("*.bin"))
