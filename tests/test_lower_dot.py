"""`dot` operands through shared memory and ldmatrix (passes/lower_dot.py
lower_convert_for_mma): the A operand with ldmatrix.x4, the B operand (stored
k-major) with ldmatrix.x4.trans; emulated against numpy for f16 and bf16."""
import ml_dtypes
import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.backends.gpu_pipeline import lower_for_gpu
from tvm_lite.ir import thread as T

MATMUL = """\
@kernel(warps=4)
def mm[DT: dtype = f16](m: i32, n: i32, k: i32, a: DT[m, k], b: DT[k, n], c: f32[m, n]):
    grid(cdiv(m, 32), cdiv(n, 64))
    acc = zeros(f32, [32, 64])
    for kt in range(cdiv(k, 32)):
        ta = load(a, [block.x * 32, kt * 32], [32, 32])
        tb = load(b, [kt * 32, block.y * 64], [32, 64])
        acc = dot(ta, tb, acc)
    store(c, acc, [block.x * 32, block.y * 64])
"""


def _statements(body):
    for s in body:
        yield s
        for field in ("body", "then", "orelse"):
            yield from _statements(getattr(s, field, ()))


@pytest.mark.parametrize("dt", ["f16", "bf16"])
def test_dot_operands_come_from_ldmatrix(dt):
    k = next(iter(tl.compile(MATMUL, target="interp", DT=dt))).vm
    stmts = list(_statements(lower_for_gpu(k, "cuda-emu:sm_80").body))
    ldm = [s for s in stmts if isinstance(s, T.Ldmatrix)]
    mma = [s for s in stmts if isinstance(s, T.Mma)]
    assert mma and ldm
    assert any(s.trans for s in ldm) and any(not s.trans for s in ldm)
    assert all(len(s.dsts) in (2, 4) for s in ldm)
    # Every mma operand register is an ldmatrix result (no repacking).
    loaded = {d for s in ldm for d in s.dsts}
    assert all(r in loaded for s in mma for r in s.a + s.b)


@pytest.mark.parametrize("dt", ["f16", "bf16"])
@pytest.mark.parametrize("m,n,k", [(1, 64, 32), (33, 70, 45)])
def test_dot_through_ldmatrix_matches_numpy(rng, dt, m, n, k):
    vdt = np.float16 if dt == "f16" else ml_dtypes.bfloat16
    a = rng.standard_normal((m, k)).astype(vdt)
    b = rng.standard_normal((k, n)).astype(vdt)
    c = np.full((m, n), np.nan, np.float32)
    tl.compile(MATMUL, target="cuda-emu:sm_90", DT=dt).mm(m, n, k, a, b, c)
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-4)
