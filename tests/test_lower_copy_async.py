"""copy_async -> cp.async 16-byte copies with commit/wait groups
(passes/lower_memory.py lower_copy_async): emulated against numpy, on the
cp.async path (aligned window) and the synchronous fallback (a window whose
column offset is not a multiple of the 16-byte chunk), ragged edges zero-filled."""
import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.backends.gpu_pipeline import lower_for_gpu
from tvm_lite.ir import thread as T

COPY = """\
@kernel(warps=2)
def cp(m: i32, n: i32, r: i32, c: i32, x: f16[m, n], y: f16[32, 64]):
    buf = shared(f16, [32, 64])
    copy_async(buf, x, [r, c])
    wait_async(0)
    barrier()
    store(y, load_shared(buf) * 2.0, [0, 0])
"""


def _statements(body):
    for s in body:
        yield s
        for field in ("body", "then", "orelse"):
            yield from _statements(getattr(s, field, ()))


def _expected(x, r, c):
    want = np.zeros((32, 64), np.float64)
    part = x[r:r + 32, c:c + 64].astype(np.float64)
    want[:part.shape[0], :part.shape[1]] = part
    return (want * 2).astype(np.float16)


@pytest.mark.parametrize("target", ["cuda-emu:sm_80", "cuda-emu:sm_90"])
@pytest.mark.parametrize("m,n,r,c", [(40, 80, 0, 0),      # full window, cp.async
                                     (40, 80, 16, 32),    # ragged rows and columns, zero-filled
                                     (40, 84, 3, 5)])     # misaligned: synchronous fallback
def test_copy_async_matches_numpy(rng, target, m, n, r, c):
    mod = tl.compile(COPY, target=target)
    x = rng.standard_normal((m, n)).astype(np.float16)
    y = np.full((32, 64), np.nan, np.float16)
    mod.cp(m, n, r, c, x, y)
    np.testing.assert_array_equal(y, _expected(x, r, c))


def test_copy_async_lowers_to_cp_async_groups():
    k = next(iter(tl.compile(COPY, target="interp"))).vm
    stmts = list(_statements(lower_for_gpu(k, "cuda-emu:sm_80").body))
    copies = [s for s in stmts if isinstance(s, T.CpAsync)]
    # 32 x 64 f16 = 4 KB = 256 chunks of 16 bytes over 64 threads.
    assert len(copies) == 4 and all(s.size == 16 and s.src_size is not None for s in copies)
    assert any(isinstance(s, T.CpAsyncCommit) for s in stmts)
    assert [s.n for s in stmts if isinstance(s, T.CpAsyncWait)] == [0]


@pytest.mark.parametrize("sm", [80, 90])
def test_copy_async_assembles(sm):
    pytest.importorskip("cuda.bindings.nvjitlink")
    from tvm_lite.backends.nvjitlink import compile_ptx
    from tvm_lite.backends.ptx import emit_ptx
    k = next(iter(tl.compile(COPY, target="interp"))).vm
    ptx = emit_ptx(lower_for_gpu(k, f"cuda-emu:sm_{sm}"), sm)
    assert "cp.async" in ptx
    result = compile_ptx(ptx, sm)
    assert result.spill_stores == 0 and result.spill_loads == 0
