"""Instruction selection in the GPU lowering of the flagship `qmatmul` kernel
(tests/conftest.py QMATMUL, f16 activations): issue 6's last bullet.

* structure: the thread IR uses mma, ldmatrix and 128-bit global loads, and
  dequantizes without a per-element cvt from an integer type;
* numbers: the emulator agrees with numpy (float64) for several weight types,
  at M = 1 and at odd M/N/K;
* assembly: the PTX goes through nvJitLink for sm_80/89/90 with no spills.
"""
from collections import Counter

import numpy as np
import pytest

import tvm_lite as tl
from conftest import QMATMUL
from tvm_lite.backends.gpu_pipeline import lower_for_gpu
from tvm_lite.ir import thread as T
from tvm_lite.passes.select_dequant import instruction_mix

WEIGHT_TYPES = ["u4", "u3", "i4", "f4e2m1", "u8", "u1"]


def _vm(wt="u4", **constants):
    return next(iter(tl.compile(QMATMUL, target="interp", WT=wt, **constants))).vm


def _statements(body):
    for s in body:
        yield s
        for field in ("body", "then", "orelse"):
            yield from _statements(getattr(s, field, ()))


def _mix(tk) -> Counter:
    counts = Counter()
    for s in _statements(tk.body):
        name = type(s).__name__
        if isinstance(s, T.Load):
            name = f"Load.{s.space.name}.{sum(d.type.nbits for d in s.dsts)}"
        elif isinstance(s, T.Cvt) and isinstance(s.src, T.Reg) and s.src.type.is_float is False \
                and s.dst.type.is_float:
            name = "Cvt.int->float"
        counts[name] += 1
    return counts


@pytest.mark.parametrize("wt", ["u4", "u3", "f4e2m1"])
def test_qmatmul_thread_ir_instruction_mix(wt):
    tk = lower_for_gpu(_vm(wt), "cuda-emu:sm_80")
    mix = _mix(tk)
    assert mix["Mma"] >= 16                    # BM x BN x BK / (16 x 8 x 16) per k tile
    assert mix["Ldmatrix"] > 0
    assert mix["Load.GLOBAL.128"] > 0
    assert mix["Cvt.int->float"] == 0          # dequant by bit tricks
    assert mix["Lop3"] + mix["Prmt"] > 0
    # select_dequant's own tally agrees: no conversion from an integer to a float.
    assert not [s for s in _statements(tk.body) if isinstance(s, T.Cvt) and instruction_mix([s])["Cvt(int->)"]
                and s.dst.type.is_float]


def test_u4_tiles_are_read_with_128_bit_loads():
    """Per thread and k tile: the u4 weight tile (64 x 128 x 4 bits = 4 KB over
    128 threads) takes two v4.b32 loads, the activation tile (16 x 64 f16) one,
    the scale row (broadcast to every thread group, 32 f16 each) four."""
    tk = lower_for_gpu(_vm("u4"), "cuda-emu:sm_80")
    wide = [s for s in _statements(tk.body) if isinstance(s, T.Load) and s.space is T.Space.GLOBAL
            and len(s.dsts) == 4 and all(d.type.nbits == 32 for d in s.dsts)]
    assert len(wide) >= 7


def test_special_registers_are_read_once_at_entry():
    """%ctaid / %tid are block- or thread-constant: read once in the prologue,
    never inside the k loop."""
    tk = lower_for_gpu(_vm("u4"), "cuda-emu:sm_80")
    loops = [s for s in _statements(tk.body) if isinstance(s, (T.Loop, T.For))]
    assert loops
    assert not [s for loop in loops for s in _statements(loop.body) if isinstance(s, T.SpecialReg)]
    reads = Counter(s.which for s in tk.body if isinstance(s, T.SpecialReg))
    assert reads[T.SReg.CTAID_X] == reads[T.SReg.CTAID_Y] == reads[T.SReg.TID_X] == 1


@pytest.mark.parametrize("wt", ["u3", "u5", "u7", "u1"])
def test_packed_weight_tile_is_not_replicated(wt):
    """The 64 x 128 weight tile over 128 threads: 64 fields per thread, read as
    whole words (u3: 6 words, three v2 loads), not a 128-field row per thread
    with every row loaded and dequantized by two threads."""
    tk = lower_for_gpu(_vm(wt), "cuda-emu:sm_80")
    words = [d for s in _statements(tk.body) if isinstance(s, T.Load) and s.space is T.Space.GLOBAL
             and all(d.type.nbits == 32 for d in s.dsts) and len(s.dsts) == 2 for d in s.dsts]
    nbits = tl.dtype(wt).nbits
    assert len(words) == 64 * nbits // 32     # the fast path's v2 loads of one thread's weights


def _reference(a, w, s, group):
    scales = np.repeat(s.astype(np.float64), group, axis=0)[: w.shape[0]]
    wq = (w * scales).astype(np.float16).astype(np.float64)
    return a.astype(np.float64) @ wq


def _weights(rng, dt, shape):
    dt = tl.dtype(dt)
    if dt.is_float:
        bits = rng.integers(0, 2 ** dt.nbits, shape)
        values = tl.unpack(tl.ir.dtypes.pack_bits(bits, dt.nbits), dt, shape).astype(np.float64)
        return np.where(np.isfinite(values), values, 0.0)
    return rng.integers(dt.min, dt.max + 1, shape).astype(np.float64)


def _storage(values, dt):
    native = tl.ir.dtypes.numpy_dtype(tl.dtype(dt))
    return values.astype(native) if native is not None else tl.pack(values, dt)


@pytest.mark.parametrize("wt", WEIGHT_TYPES)
@pytest.mark.parametrize("m,n,k", [(1, 128, 128), (17, 136, 200)])
def test_qmatmul_emulated_matches_numpy(rng, wt, m, n, k):
    target = "cuda-emu:sm_90" if wt in ("u3", "u1") else "cuda-emu:sm_80"
    mod = tl.compile(QMATMUL, target=target, WT=wt)
    group = 128
    a = rng.standard_normal((m, k)).astype(np.float16)
    w = _weights(rng, wt, (k, n))
    s = (rng.random((-(-k // group), n)) * 0.05 + 0.01).astype(np.float16)
    c = np.full((m, n), np.nan, np.float16)
    mod.qmatmul(m, n, k, a, _storage(w, wt), s, c)
    np.testing.assert_allclose(c.astype(np.float64), _reference(a, w, s, group), rtol=2 ** -9, atol=1e-2)


@pytest.mark.parametrize("wt,sm", [("u4", 80), ("u4", 89), ("u4", 90), ("u3", 80), ("u7", 90), ("u1", 89),
                                   ("f8e5m2", 80)])
def test_qmatmul_assembles_without_spills(wt, sm):
    pytest.importorskip("cuda.bindings.nvjitlink")
    from tvm_lite.backends.nvjitlink import compile_ptx
    from tvm_lite.backends.ptx import emit_ptx
    ptx = emit_ptx(lower_for_gpu(_vm(wt), f"cuda-emu:sm_{sm}"), sm)
    assert "ldmatrix.sync.aligned" in ptx and "mma.sync.aligned" in ptx and "ld.global.v4" in ptx
    result = compile_ptx(ptx, sm)
    assert result.spill_stores == 0 and result.spill_loads == 0, result.log
    assert 0 < result.registers <= 255
