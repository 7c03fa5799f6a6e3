"""tl.ops.quant_matmul on target "cuda" against numpy float64 (marked gpu:
they run with `pytest -m gpu` on a machine with an NVIDIA GPU and skip
elsewhere). The host-side logic of the same path is checked without a GPU in
tests/test_cuda_mock.py, and the kernels' assembly in test_ptx_kernels.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import tvm_lite as tl

pytestmark = pytest.mark.gpu


def _check(c, a, qt):
    ref = a.astype(np.float64) @ tl.dequantize(qt).astype(np.float64)
    tol = 2e-2 * max(np.abs(ref).max(), 1e-6)
    np.testing.assert_allclose(np.asarray(c, np.float64), ref, rtol=0, atol=tol)


@pytest.mark.parametrize("wt", ["u1", "u3", "u4", "u8", "i4", "f4e2m1", "f6e3m2", "f8e4m3"])
@pytest.mark.parametrize("m", [1, 7, 16, 40])
def test_quant_matmul_numpy_inputs(rng, wt, m):
    k, n = 512, 320
    qt = tl.quantize(rng.standard_normal((k, n)).astype(np.float32), wt, group_size=128)
    a = rng.standard_normal((m, k)).astype(np.float16)
    c = tl.ops.quant_matmul(a, qt, target="cuda")
    assert isinstance(c, np.ndarray) and c.dtype == np.float16 and c.shape == (m, n)
    _check(c, a, qt)


@pytest.mark.parametrize("act", ["float16", "bfloat16"])
def test_quant_matmul_device_inputs(rng, act):
    import ml_dtypes
    dtype = np.float16 if act == "float16" else ml_dtypes.bfloat16
    k, n = 256, 200
    qt = tl.quantize(rng.standard_normal((k, n)).astype(np.float32), "u4", group_size=64, zero_point=True)
    for m in (1, 33):
        a = rng.standard_normal((m, k)).astype(dtype)
        c = tl.ops.quant_matmul(tl.cuda.to_device(a), qt, target="cuda")
        assert isinstance(c, tl.cuda.DeviceArray) and c.shape == (m, n)
        _check(c.numpy(), a, qt)


def test_quant_matmul_on_a_torch_tensor(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    k, n = 256, 128
    qt = tl.quantize(rng.standard_normal((k, n)).astype(np.float32), "u4", group_size=128)
    a = rng.standard_normal((4, k)).astype(np.float16)
    c = tl.ops.quant_matmul(torch.from_numpy(a).cuda(), qt, target="cuda")
    _check(c.numpy(), a, qt)
