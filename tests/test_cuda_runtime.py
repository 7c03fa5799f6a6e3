"""The CUDA runtime (runtime/cuda.py, runtime/cuda_launch.py, tl.cuda).

Without a driver every entry point raises a TLError saying so (cuInit is
patched to fail, so these tests are the same on a GPU machine). Argument
binding is checked with fake `__cuda_array_interface__` objects, which need
no driver. Tests marked `gpu` launch the hand-built kernels of test_ptx.py
on a real GPU and compare with numpy; they skip without one.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.errors import TLError, TLLaunchError, TLTargetError
from tvm_lite.runtime import cuda as rt
from tvm_lite.runtime import cuda_launch

driver = pytest.importorskip("cuda.bindings.driver")


class _NoDriver(RuntimeError):
    """What cuda.bindings raises when libcuda.so is missing (DynamicLibNotFoundError)."""


@pytest.fixture
def no_driver(monkeypatch):
    """A fresh, uninitialized runtime whose cuInit raises like a machine without a driver."""
    def fail(flags):
        raise _NoDriver('"cuda" is an NVIDIA driver library and can only be found via system search')
    monkeypatch.setattr(rt, "_context", rt._Context())
    monkeypatch.setattr(driver, "cuInit", fail)
    from tvm_lite.runtime import devices
    devices.has_cuda_gpu.cache_clear()
    yield
    devices.has_cuda_gpu.cache_clear()


@pytest.fixture
def no_gpu(monkeypatch):
    """cuInit answers CUDA_ERROR_NO_DEVICE, as on a machine with a driver but no GPU."""
    monkeypatch.setattr(rt, "_context", rt._Context())
    monkeypatch.setattr(driver, "cuInit", lambda flags: (driver.CUresult.CUDA_ERROR_NO_DEVICE,))
    from tvm_lite.runtime import devices
    devices.has_cuda_gpu.cache_clear()
    yield
    devices.has_cuda_gpu.cache_clear()


ENTRY_POINTS = {
    "to_device": lambda: tl.cuda.to_device(np.arange(4, dtype=np.float32)),
    "empty": lambda: tl.cuda.empty((2, 3), np.float16),
    "zeros": lambda: tl.cuda.zeros(8, np.int32),
    "synchronize": lambda: tl.cuda.synchronize(),
    "device_info": lambda: tl.cuda.device_info(),
    "event": lambda: tl.cuda.Event(),
    "stream": lambda: tl.cuda.Stream(),
    "time_ms": lambda: tl.cuda.time_ms(lambda: None),
    "load_module": lambda: rt.load_module(".version 8.0\n.target sm_80\n.address_size 64\n"),
    "memcpy": lambda: rt.memcpy_dtod(0, 0, 0),
    "quant_matmul": lambda: tl.ops.quant_matmul(
        np.ones((2, 64), np.float16), tl.quantize(np.ones((64, 32), np.float32), "u4", 32), target="cuda"),
    "bench": lambda: __import__("tvm_lite.runtime.bench_cuda", fromlist=["x"]).run_cuda_bench(("u4",), (1,), (64,), 64),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_no_driver_is_a_tl_error(no_driver, entry):
    with pytest.raises(TLTargetError, match="no CUDA driver found"):
        ENTRY_POINTS[entry]()


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_no_gpu_is_a_tl_error(no_gpu, entry):
    with pytest.raises(TLTargetError, match="no CUDA GPU found"):
        ENTRY_POINTS[entry]()


def test_has_cuda_gpu_never_raises(no_driver):
    from tvm_lite.runtime.devices import has_cuda_gpu
    assert has_cuda_gpu() is False
    assert tl.cuda.is_available() is False


def test_driver_error_names_the_result(monkeypatch):
    err = driver.CUresult.CUDA_ERROR_OUT_OF_MEMORY
    with pytest.raises(rt.CudaError, match="cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY") as info:
        rt.check("cuMemAlloc", (err, None))
    assert info.value.result == "CUDA_ERROR_OUT_OF_MEMORY"
    assert isinstance(info.value, TLError)
    assert rt.check("cuDeviceGetCount", (driver.CUresult.CUDA_SUCCESS, 3)) == 3


def test_import_does_not_load_cuda_bindings():
    code = "import sys, tvm_lite; assert 'cuda.bindings' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(
        tl.__file__).resolve().parent.parent))


# ------------------------------------------- foreign arrays (no driver needed)


class FakeCAI:
    """An object exposing __cuda_array_interface__ at a made-up address."""

    def __init__(self, shape, typestr, ptr=0x7F0000000000, strides=None, readonly=False):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr, "data": (ptr, readonly),
                                         "strides": strides, "version": 3}


def test_cuda_array_interface_view():
    view = rt.device_view(FakeCAI((3, 5), "<f2"))
    assert (view.ptr, view.shape, view.dtype, view.c_contiguous) == (0x7F0000000000, (3, 5), np.float16, True)
    strided = rt.device_view(FakeCAI((3, 5), "<f4", strides=(40, 4)))
    assert not strided.c_contiguous
    explicit = rt.device_view(FakeCAI((3, 5), "<f4", strides=(20, 4)))
    assert explicit.c_contiguous


def test_dlpack_capsule_parsing():
    # numpy's DLPack capsule has the same layout a CUDA producer's has.
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    ptr, shape, dtype, contiguous, device = rt.parse_dlpack_capsule(a.__dlpack__())
    assert (ptr, shape, dtype, contiguous, device) == (a.ctypes.data, (3, 4), np.float32, True, (1, 0))
    t = a[:, ::2]
    ptr, shape, dtype, contiguous, _ = rt.parse_dlpack_capsule(t.__dlpack__())
    assert (ptr, shape, contiguous) == (t.ctypes.data, (3, 2), False)


def test_host_dlpack_objects_are_rejected():
    class HostTensor:
        def __dlpack_device__(self):
            return (1, 0)

        def __dlpack__(self, stream=None):
            raise AssertionError("not reached")

    with pytest.raises(TLLaunchError, match="not a CUDA device"):
        rt.device_view(HostTensor())
    with pytest.raises(TLLaunchError, match="expected a device array"):
        rt.device_view([1, 2, 3])


VADD = """
@kernel(warps=4)
def vadd(n: i32, x: f32[n], y: f32[n], z: f32[n]):
    grid(cdiv(n, 512))
    i = block.x * 512
    store(z, load(x, [i], [512]) + load(y, [i], [512]), [i])
"""

QSRC = """
@kernel(warps=4)
def qk(n: i32, w: u4[n], s: bf16[n], o: f32[n]):
    grid(cdiv(n, 128))
    store(o, cast(load(w, [block.x * 128], [128]), f32) * cast(load(s, [block.x * 128], [128]), f32),
          [block.x * 128])
"""


@pytest.fixture(scope="module")
def vadd():
    return tl.compile(VADD, target="interp").vadd.vm


def test_bind_device_arrays(vadd):
    x, y, z = (FakeCAI((1000,), "<f4", ptr=0x10000 * (i + 1)) for i in range(3))
    bound = cuda_launch.bind_cuda_arguments(vadd, (1000, x, y), {"z": z})
    assert sorted(bound.addresses.values()) == [0x10000, 0x20000, 0x30000]
    assert cuda_launch.grid_dims(vadd, bound) == (2, 1, 1)
    params = tuple(tl.ir.thread.Reg(p.name, tl.ir.thread.hw_type(t))
                   for p, t in zip(vadd.params, ("s32", "u64", "u64", "u64"))) \
        if _has_thread_ir() else None
    if params is not None:
        values = cuda_launch.marshal(vadd, params, bound)
        assert [v.value for v in values] == [1000, 0x10000, 0x20000, 0x30000]


def _has_thread_ir() -> bool:
    try:
        import tvm_lite.ir.thread  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.mark.parametrize("bad, match", [
    ((FakeCAI((999,), "<f4"),), "must be float32 of shape \\(1000,\\)"),
    ((FakeCAI((1000,), "<f2"),), "must be float32"),
    ((FakeCAI((1000,), "<f4", ptr=0x10004),), "16-byte aligned"),
    ((FakeCAI((1000,), "<f4", strides=(8,)),), "C-contiguous"),
    (("not an array",), "must be a device array"),
])
def test_bind_rejects_bad_device_arrays(vadd, bad, match):
    good = FakeCAI((1000,), "<f4")
    with pytest.raises(TLLaunchError, match=match):
        cuda_launch.bind_cuda_arguments(vadd, (1000, good, good, bad[0]))


def test_bind_rejects_readonly_output(vadd):
    good, ro = FakeCAI((1000,), "<f4"), FakeCAI((1000,), "<f4", readonly=True)
    cuda_launch.bind_cuda_arguments(vadd, (1000, ro, ro, good))   # read-only inputs are fine
    with pytest.raises(TLLaunchError, match="read-only"):
        cuda_launch.bind_cuda_arguments(vadd, (1000, good, good, ro))


def test_bind_checks_scalars_and_names(vadd):
    good = FakeCAI((1000,), "<f4")
    with pytest.raises(TLLaunchError, match="out of range"):
        cuda_launch.bind_cuda_arguments(vadd, (2**40, good, good, good))
    with pytest.raises(TLLaunchError, match="missing"):
        cuda_launch.bind_cuda_arguments(vadd, (1000, good, good))
    with pytest.raises(TLLaunchError, match="no parameter named"):
        cuda_launch.bind_cuda_arguments(vadd, (1000, good, good, good), {"q": 1})


def test_bind_packed_and_bf16():
    qk = tl.compile(QSRC, target="interp").qk.vm
    w, s, o = FakeCAI((50,), "|u1"), FakeCAI((100,), "<u2"), FakeCAI((100,), "<f4")
    cuda_launch.bind_cuda_arguments(qk, (100, w, FakeCAI((200,), "|u1"), o))   # bf16 as raw bytes
    with pytest.raises(TLLaunchError, match="50 uint8 bytes"):
        cuda_launch.bind_cuda_arguments(qk, (100, FakeCAI((51,), "|u1"), FakeCAI((200,), "|u1"), o))
    with pytest.raises(TLLaunchError, match="packed as uint8"):
        cuda_launch.bind_cuda_arguments(qk, (100, w, s, o))   # uint16 is not bf16


def test_scalar_ctypes():
    assert cuda_launch.scalar_ctype("s32", -5).value == -5
    assert cuda_launch.scalar_ctype("u32", 2**32 - 1).value == 2**32 - 1
    assert cuda_launch.scalar_ctype("f32", 1.5).value == 1.5
    assert cuda_launch.scalar_ctype("f16", 1.0).value == 0x3C00
    assert cuda_launch.scalar_ctype("bf16", -2.0).value == 0xC000
    with pytest.raises(TLLaunchError):
        cuda_launch.scalar_ctype("pred", 1)


# ------------------------------------------------------ on a real GPU (gpu)


def _run(kernel, grid, args):
    """Launch a hand-built thread kernel through the runtime."""
    from tvm_lite.backends.ptx import ENTRY_NAME, emit_ptx
    device = rt.ensure_context()
    fn = rt.load_module(emit_ptx(kernel, device.sm)).function(ENTRY_NAME(kernel.name))
    params = [cuda_launch.scalar_ctype(p.type.name, a.ptr if isinstance(a, rt.DeviceArray) else a)
              for p, a in zip(kernel.params, args)]
    fn.launch(grid, kernel.threads, kernel.shared_bytes, params)
    rt.synchronize()


@pytest.mark.gpu
@pytest.mark.parametrize("n", [1, 511, 512, 1000, 4099])
def test_gpu_vector_add(rng, n):
    from test_ptx import vector_add_kernel
    k = vector_add_kernel(128)
    x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    dx, dy = tl.cuda.to_device(x), tl.cuda.to_device(y)
    dz = tl.cuda.to_device(np.full(n + 8, np.nan, np.float32))
    _run(k, (-(-n // 512), 1, 1), (dx, dy, dz, n))
    z = dz.numpy()
    np.testing.assert_array_equal(z[:n], x + y)
    assert np.isnan(z[n:]).all()     # the predicated tail wrote nothing past n


@pytest.mark.gpu
@pytest.mark.parametrize("ab, shape", [("f16", "M16N8K16"), ("bf16", "M16N8K16"), ("f16", "M16N8K8")])
def test_gpu_mma(rng, ab, shape):
    import ml_dtypes
    from test_ptx import mma_kernel
    k = 16 if shape == "M16N8K16" else 8
    np_type = np.float16 if ab == "f16" else ml_dtypes.bfloat16
    a = rng.standard_normal((16, k)).astype(np_type)
    bt = rng.standard_normal((8, k)).astype(np_type)
    da, db, dd = tl.cuda.to_device(a), tl.cuda.to_device(bt), tl.cuda.zeros((16, 8), np.float32)
    _run(mma_kernel(ab, shape), (1, 1, 1), (da, db, dd))
    ref = a.astype(np.float64) @ bt.astype(np.float64).T
    np.testing.assert_allclose(dd.numpy(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [256, 255, 3])
def test_gpu_cp_async_reverse(rng, n):
    from test_ptx import cp_async_kernel
    threads = 64
    x = rng.integers(0, 2**32, threads * 4, dtype=np.uint32)
    dx, dout = tl.cuda.to_device(x), tl.cuda.zeros(threads * 4, np.uint32)
    _run(cp_async_kernel(threads), (1, 1, 1), (dx, dout, n))
    padded = np.where(np.arange(threads * 4) < n, x, 0).astype(np.uint32)   # src-size zero fill
    np.testing.assert_array_equal(dout.numpy(), padded[::-1])


@pytest.mark.gpu
def test_gpu_shfl_sum(rng):
    from test_ptx import shfl_sum_kernel
    n = 5000
    x = rng.standard_normal(n).astype(np.float32)
    dx, dout = tl.cuda.to_device(x), tl.cuda.zeros(1, np.float32)
    _run(shfl_sum_kernel(128), (1, 1, 1), (dx, dout, n))
    np.testing.assert_allclose(dout.numpy()[0], x.astype(np.float64).sum(), rtol=1e-4, atol=1e-3)


@pytest.mark.gpu
def test_gpu_device_array_roundtrip_and_events(rng):
    x = rng.standard_normal((7, 9)).astype(np.float16)
    d = tl.cuda.to_device(x)
    assert d.shape == (7, 9) and d.dtype == np.float16
    np.testing.assert_array_equal(d.numpy(), x)
    e = tl.cuda.empty((3,), np.int64)
    rt.memcpy_dtod(e.ptr, tl.cuda.to_device(np.array([1, 2, 3])).ptr, 24)
    assert e.numpy().tolist() == [1, 2, 3]
    assert tl.cuda.time_ms(lambda: rt.memset_d8(d.ptr, 0, d.nbytes)) >= 0.0
    assert not d.numpy().any()
    assert rt.device_view(d).ptr == d.ptr


@pytest.mark.gpu
def test_gpu_jit_error_quotes_the_line():
    from tvm_lite.errors import TLCompileError
    ptx = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n\tbogus.u32 %r1;\n\tret;\n}\n"
    with pytest.raises(TLCompileError, match="bogus"):
        rt.load_module(ptx)


@pytest.mark.gpu
def test_gpu_compiled_kernel_end_to_end(rng):
    pytest.importorskip("tvm_lite.backends.gpu_pipeline")
    device = rt.ensure_context()
    mod = tl.compile(VADD, target=f"cuda:sm_{min(device.sm, 90)}")
    n = 1500
    x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    z = np.zeros(n, np.float32)
    mod.vadd(n, x, y, z)                          # numpy arrays: copied in and out
    np.testing.assert_array_equal(z, x + y)
    dz = tl.cuda.empty(n, np.float32)
    mod.vadd(n, tl.cuda.to_device(x), tl.cuda.to_device(y), dz)
    np.testing.assert_array_equal(dz.numpy(), x + y)


@pytest.mark.gpu
def test_gpu_byte_arithmetic(rng):
    """8-bit values in 16-bit registers (backends/ptx.py _reg_bits) on the device."""
    from test_ptx import byte_kernel, byte_reference
    n = 1000
    x = rng.integers(0, 256, n, dtype=np.uint8)
    y = rng.integers(-128, 128, n, dtype=np.int8)
    y[:2] = (-128, 127)
    outs = (tl.cuda.zeros(n, np.uint8), tl.cuda.zeros(n, np.int8), tl.cuda.zeros(n, np.int32))
    _run(byte_kernel(64), (-(-n // 64), 1, 1), (tl.cuda.to_device(x), tl.cuda.to_device(y)) + outs + (n,))
    for got, want in zip(outs, byte_reference(x, y)):
        np.testing.assert_array_equal(got.numpy(), want)
