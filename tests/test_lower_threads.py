"""VM -> thread IR lowering (passes/lower_*.py, backends/gpu_pipeline.py).

Structure tests need only the thread IR (tvm_lite.ir.thread); numeric tests
run the lowered kernels in the emulator (backends/emulator.py) against the
reference interpreter on fresh random data. Both skip, saying why, while
those modules are missing.
"""
import os
from collections import Counter

import numpy as np
import pytest

import tvm_lite as tl
from conftest import EXAMPLES

thread = pytest.importorskip("tvm_lite.ir.thread", reason="the thread IR (B1) is not in the tree yet")
from tvm_lite.backends.gpu_pipeline import lower_for_gpu  # noqa: E402


def _mix(body, counts=None):
    counts = Counter() if counts is None else counts
    for s in body:
        name = type(s).__name__
        if name == "Load":
            name = f"Load.{s.space.name}.{len(s.dsts) * s.dsts[0].type.nbits}"
        counts[name] += 1
        for field in ("body", "then", "orelse"):
            if hasattr(s, field):
                _mix(getattr(s, field), counts)
    return counts


def _qmatmul(wt="u4"):
    mod = tl.compile(os.path.join(EXAMPLES, "qmatmul.tl"), target="interp", WT=wt)
    return next(iter(mod)).vm


def test_qmatmul_uses_mma_and_128_bit_global_loads():
    counts = _mix(lower_for_gpu(_qmatmul(), "cuda-emu:sm_80").body)
    assert counts["Mma"] > 0
    assert counts["Load.GLOBAL.128"] > 0


def test_lowering_is_memoized_per_kernel_and_target():
    k = _qmatmul("u3")
    assert lower_for_gpu(k, "cuda-emu:sm_80") is lower_for_gpu(k, "cuda-emu:sm_80")


def test_every_example_lowers(rng):
    for name in ("vector_add.tl", "softmax.tl", "matmul.tl", "qmatmul.tl"):
        mod = tl.compile(os.path.join(EXAMPLES, name), target="interp")
        for k in mod:
            tk = lower_for_gpu(k.vm, "cuda-emu:sm_90")
            assert tk.threads == k.vm.num_threads and tk.body


def _emulated(name, **constants):
    pytest.importorskip("tvm_lite.backends.emulator", reason="the emulator (B1) is not in the tree yet")
    return tl.compile(os.path.join(EXAMPLES, name), target="cuda-emu:sm_80", **constants)


@pytest.mark.parametrize("wt", ["u1", "u3", "i4", "u8", "f4e2m1", "f8e5m2"])
@pytest.mark.parametrize("m", [1, 17])
def test_qmatmul_on_the_emulator_matches_the_interpreter(rng, wt, m):
    n, k, group = 70, 160, 128
    emu = _emulated("qmatmul.tl", WT=wt, BN=64)
    ref = tl.compile(os.path.join(EXAMPLES, "qmatmul.tl"), target="interp", WT=wt, BN=64)
    dt = tl.dtype(wt)
    bits = rng.integers(0, 2 ** dt.nbits, (k, n))
    w = tl.unpack(tl.ir.dtypes.pack_bits(bits, dt.nbits), dt, (k, n)).astype(np.float64)
    w = np.where(np.isfinite(w), w, 0.0)
    a = rng.standard_normal((m, k)).astype(np.float16)
    s = (rng.random((-(-k // group), n)) * 0.05 + 0.01).astype(np.float16)
    native = tl.ir.dtypes.numpy_dtype(dt)
    wq = w.astype(native) if native is not None else tl.pack(w, wt)
    c_emu, c_ref = np.full((m, n), np.nan, np.float16), np.full((m, n), np.nan, np.float16)
    emu.qmatmul(m, n, k, a, wq, s, c_emu)
    ref.qmatmul(m, n, k, a, wq, s, c_ref)
    np.testing.assert_allclose(c_emu.astype(np.float64), c_ref.astype(np.float64), rtol=2 ** -9, atol=1e-2)
