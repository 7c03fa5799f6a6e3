"""CPU-backend contracts beyond numerical agreement (tested in test_interp)."""
import numpy as np
import pytest

import tvm_lite as tl
from conftest import skip_on_gpu

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
    assert mod.vector_add.source("vm").splitlines()[1].startswith("kernel vector_add(")
    with pytest.raises(tl.TLError, match="stages"):
        mod.vector_add.source("ptx")


def test_integer_division_by_zero_is_an_error_not_a_crash(target, rng):
    skip_on_gpu(target, "language.md 3: integer division by zero stops the launch only on interp and cpu; "
                        "PTX div/rem by zero is unspecified and a GPU does not check it")
    mod = tl.compile(DIV, target=target)
    x = rng.integers(-100, 100, 8).astype(np.int32)
    y = rng.integers(1, 9, 8).astype(np.int32)
    y[3] = 0
    with pytest.raises(tl.TLError, match="division by zero"):
        mod.k(x, y)


def test_shared_access_out_of_range_is_an_error(target):
    skip_on_gpu(target, "language.md 3: a shared access out of range stops the launch only on interp and cpu "
                        "(a GPU neither bounds-checks nor zero-fills shared memory; the emulator checks only "
                        "the block's shared window)")
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
if sys.argv[1] == "warm":   # a cache hit needs no parser, code generator or networkx
    eager = {"lark", "networkx", "tvm_lite.backends.cpu_codegen", "cuda.bindings"} & set(sys.modules)
    assert not eager, eager
"""
    env = dict(__import__("os").environ, TL_CACHE_DIR=str(tmp_path))
    for phase in ("cold", "warm"):
        done = subprocess.run([sys.executable, "-c", script, phase], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert list(tmp_path.rglob("*.bin"))


def test_importing_the_package_loads_no_heavy_dependency_it_may_not_need():
    import subprocess
    import sys
    script = ("import sys, tvm_lite\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'networkx', 'llvmlite', 'cuda', 'lark'}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


FLOAT_TYPES = ["f16", "bf16", "f8e4m3", "f8e5m2", "f6e3m2", "f6e2m3", "f4e2m1", "f3e1m1", "f5e2m2",
               "f7e3m3", "f12e5m6", "f2e1m0"]


@pytest.mark.parametrize("name", FLOAT_TYPES)
def test_cpu_float_codec_matches_the_reference_encoder(name, rng):
    """Casts f32 -> any float type -> f32 on the CPU, bit for bit with ir.dtypes."""
    dt = tl.dtype(name)
    src = f"""
@kernel(warps=1)
def k(x: f32[4096], q: {name}[4096], y: f32[4096]):
    t = cast(load(x, [0], [4096]), {name})
    store(q, t, [0])
    store(y, cast(t, f32), [0])
"""
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, dt.max, -dt.max, dt.max * 3, 1e-30, -1e-30]
    values = decode_all_and_midpoints(dt)
    x = np.concatenate([special, values, rng.standard_normal(4096) * dt.max / 4])[:4096]
    with np.errstate(over="ignore"):   # bf16's 3*max overflows f32 to inf: also a case
        x = np.pad(x, (0, 4096 - x.size)).astype(np.float32)
    q = np.zeros(-(-4096 * dt.nbits // 8), np.uint8) if tl.ir.dtypes.numpy_dtype(dt) is None else \
        np.zeros(4096, tl.ir.dtypes.numpy_dtype(dt))
    y = np.full(4096, np.nan, np.float32)
    tl.compile(src, target="cpu").k(x, q, y)
    expect = tl.ir.dtypes.encode(x.astype(np.float64), dt)
    got = tl.ir.dtypes.unpack_bits(q.view(np.uint8), dt.nbits, 4096)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], expect[~nan])
    decoded = tl.ir.dtypes.decode(expect, dt).astype(np.float32)
    np.testing.assert_array_equal(y[~nan], decoded[~nan])
    assert np.isnan(y[nan]).all() == dt.has_nan


def decode_all_and_midpoints(dt):
    count = min(2 ** dt.nbits, 1024)
    values = tl.ir.dtypes.decode(np.arange(count, dtype=np.uint64), dt)
    values = values[np.isfinite(values)]
    return np.concatenate([values, (values[1:] + values[:-1]) / 2])


def test_zero_range_step_is_an_error_on_every_target(target):
    skip_on_gpu(target, "a zero range step is an error only on interp and cpu: a GPU kernel has no error "
                        "channel; the lowered loop runs no iterations (test_cuda_emu.py checks that)")
    src = """
@kernel(warps=1)
def k(step: i32, y: f32[4]):
    acc = zeros(f32, [4])
    for i in range(0, 8, step):
        acc = acc + 1.0
    store(y, acc, [0])
"""
    mod = tl.compile(src, target=target)
    y = np.zeros(4, np.float32)
    mod.k(2, y)
    np.testing.assert_array_equal(y, [4, 4, 4, 4])
    with pytest.raises(tl.TLError, match="step"):
        mod.k(0, y)
