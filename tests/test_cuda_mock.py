"""The CUDA runtime's host logic against a fake driver (no GPU needed).

`FakeDriver` stands in for `cuda.bindings.driver`: it keeps the real module's
enums and answers the driver calls the runtime makes with host memory
(device pointers are addresses of host buffers), records every call, and
checks argument types the way cuda.bindings does. A "launch" decodes the
kernelParams array with the thread kernel's parameter types and lets the test
play the kernel. This checks what a real GPU run would exercise on the host
side: context setup, allocation, copies in and back, parameter packing
(pointer / int / float sizes and order), the >48 KB dynamic shared memory
opt-in, the grid, stream and event calls, error wrapping, and
tl.ops.quant_matmul(target="cuda") end to end (kernel choice, GPU tiles,
device-array inputs, weights kept on the device).
"""
from __future__ import annotations

import ctypes
import gc
import threading

import numpy as np
import pytest

driver = pytest.importorskip("cuda.bindings.driver")
pytest.importorskip("cuda.bindings.nvjitlink")

import tvm_lite as tl  # noqa: E402
from tvm_lite.errors import TLCompileError, TLError, TLLaunchError  # noqa: E402
from tvm_lite.runtime import cuda as rt  # noqa: E402

OK = driver.CUresult.CUDA_SUCCESS


class FakeDriver:
    """Host-memory stand-in for cuda.bindings.driver (see the module docstring)."""

    def __init__(self, sm: int = 90, l2: int = 50 << 20, optin: int = 227 << 10):
        self.calls: list[tuple] = []
        self.buffers: dict[int, ctypes.Array] = {}
        self.launches: list[dict] = []
        self.attributes = {"COMPUTE_CAPABILITY_MAJOR": sm // 10, "COMPUTE_CAPABILITY_MINOR": sm % 10,
                           "L2_CACHE_SIZE": l2, "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN": optin,
                           "MULTIPROCESSOR_COUNT": 132}
        self.func_attributes: dict = {}
        self.on_launch = None          # fn(launch dict) playing the kernel
        self.fail: dict[str, driver.CUresult] = {}
        self.param_types: list[str] = []
        self.static_shared = 1024       # what ptxas reports for sm_90 kernels

    def __getattr__(self, name):      # enums and types come from the real module
        if name.startswith("cu"):
            raise AttributeError(f"FakeDriver has no {name}")
        return getattr(driver, name)

    def _rec(self, name, *args):
        self.calls.append((name,) + args)
        return self.fail.get(name, OK)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    # context and device
    def cuInit(self, flags):
        return (self._rec("cuInit", flags),)

    def cuDeviceGetCount(self):
        return self._rec("cuDeviceGetCount"), 1

    def cuDeviceGet(self, ordinal):
        return self._rec("cuDeviceGet", ordinal), driver.CUdevice(ordinal)

    def cuDevicePrimaryCtxRetain(self, dev):
        return self._rec("cuDevicePrimaryCtxRetain", dev), driver.CUcontext(0x1234)

    def cuCtxSetCurrent(self, ctx):
        assert isinstance(ctx, driver.CUcontext)
        return (self._rec("cuCtxSetCurrent", ctx),)

    def cuDeviceGetAttribute(self, attrib, dev):
        assert isinstance(attrib, driver.CUdevice_attribute)
        key = attrib.name.replace("CU_DEVICE_ATTRIBUTE_", "")
        return self._rec("cuDeviceGetAttribute", key), self.attributes[key]

    def cuDeviceGetName(self, length, dev):
        return self._rec("cuDeviceGetName"), b"Fake H100\0" + b"\0" * (length - 10)

    def cuGetErrorString(self, err):
        return OK, b"fake error text"

    def cuCtxSynchronize(self):
        return (self._rec("cuCtxSynchronize"),)

    # memory
    def cuMemAlloc(self, nbytes):
        assert isinstance(nbytes, int) and nbytes > 0
        buf = (ctypes.c_uint8 * (nbytes + 256))()
        ptr = (ctypes.addressof(buf) + 255) // 256 * 256      # cuMemAlloc aligns to 256
        self.buffers[ptr] = buf
        return self._rec("cuMemAlloc", nbytes), driver.CUdeviceptr(ptr)

    def cuMemFree(self, ptr):
        self.buffers.pop(int(ptr), None)
        return (self._rec("cuMemFree", int(ptr)),)

    def _check_device(self, ptr: int, nbytes: int) -> None:
        assert any(base <= ptr and ptr + nbytes <= base + len(buf) - 255 for base, buf in self.buffers.items()), \
            f"0x{ptr:x}+{nbytes} is not inside an allocation"

    def cuMemcpyHtoD(self, dst, src, nbytes):
        self._check_device(int(dst), nbytes)
        ctypes.memmove(int(dst), src, nbytes)
        return (self._rec("cuMemcpyHtoD", int(dst), nbytes),)

    def cuMemcpyHtoDAsync(self, dst, src, nbytes, stream):
        assert isinstance(stream, int)
        self._check_device(int(dst), nbytes)
        ctypes.memmove(int(dst), src, nbytes)
        return (self._rec("cuMemcpyHtoDAsync", int(dst), nbytes, stream),)

    def cuMemcpyDtoH(self, dst, src, nbytes):
        self._check_device(int(src), nbytes)
        ctypes.memmove(dst, int(src), nbytes)
        return (self._rec("cuMemcpyDtoH", int(src), nbytes),)

    def cuMemcpyDtoD(self, dst, src, nbytes):
        self._check_device(int(dst), nbytes)
        self._check_device(int(src), nbytes)
        ctypes.memmove(int(dst), int(src), nbytes)
        return (self._rec("cuMemcpyDtoD", int(dst), nbytes),)

    def cuMemsetD8(self, dst, value, nbytes):
        self._check_device(int(dst), nbytes)
        ctypes.memset(int(dst), value, nbytes)
        return (self._rec("cuMemsetD8", int(dst), nbytes),)

    # modules and launch
    def cuModuleLoadDataEx(self, image, n, options, values):
        assert isinstance(image, bytes) and image.endswith(b"\0") and n == len(options) == len(values)
        assert all(isinstance(o, driver.CUjit_option) for o in options)
        return self._rec("cuModuleLoadDataEx"), driver.CUmodule(0x5678)

    def cuModuleGetFunction(self, module, name):
        assert isinstance(name, bytes)
        return self._rec("cuModuleGetFunction", name.decode()), driver.CUfunction(0x9ABC)

    def cuModuleUnload(self, module):
        return (self._rec("cuModuleUnload"),)

    def cuFuncGetAttribute(self, attr, fn):
        assert isinstance(attr, driver.CUfunction_attribute) and isinstance(fn, driver.CUfunction)
        assert attr.name == "CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES"
        return self._rec("cuFuncGetAttribute", attr.name), self.static_shared

    def cuFuncSetAttribute(self, fn, attr, value):
        assert isinstance(attr, driver.CUfunction_attribute) and isinstance(value, int)
        self.func_attributes[attr.name] = value
        return (self._rec("cuFuncSetAttribute", attr.name, value),)

    def cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        assert all(isinstance(x, int) for x in (gx, gy, gz, bx, by, bz, shared, params, extra))
        limit = self.func_attributes.get("CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES",
                                         (48 << 10) - self.static_shared)
        assert shared <= limit, f"{shared} B dynamic shared memory without the opt-in attribute"
        sizes = {"u64": ctypes.c_uint64, "s32": ctypes.c_int32, "u32": ctypes.c_uint32, "f32": ctypes.c_float,
                 "s64": ctypes.c_int64}
        pointers = (ctypes.c_void_p * len(self.param_types)).from_address(params)
        values = [sizes[t].from_address(pointers[i]).value for i, t in enumerate(self.param_types)]
        launch = dict(grid=(gx, gy, gz), block=(bx, by, bz), shared=shared, stream=int(stream), params=values)
        self.launches.append(launch)
        if self.on_launch is not None:
            self.on_launch(launch)
        return self._rec("cuLaunchKernel")

    # streams and events
    def cuStreamCreate(self, flags):
        return self._rec("cuStreamCreate", flags), driver.CUstream(0x77)

    def cuStreamSynchronize(self, stream):
        return (self._rec("cuStreamSynchronize", int(stream)),)

    def cuStreamDestroy(self, stream):
        return (self._rec("cuStreamDestroy"),)

    def cuEventCreate(self, flags):
        return self._rec("cuEventCreate", flags), driver.CUevent(0x88)

    def cuEventRecord(self, event, stream):
        assert isinstance(stream, int)
        return (self._rec("cuEventRecord", int(stream)),)

    def cuEventSynchronize(self, event):
        return (self._rec("cuEventSynchronize"),)

    def cuEventElapsedTime(self, start, end):
        return self._rec("cuEventElapsedTime"), 0.25

    def cuEventDestroy(self, event):
        return (self._rec("cuEventDestroy"),)


def _real_driver_absent() -> bool:
    """Whether libcuda cannot be loaded here: then a real cuda.bindings call
    converts its arguments and fails at the library lookup, touching nothing."""
    try:
        driver.cuDriverGetVersion()
    except RuntimeError as e:
        return rt._is_missing_driver(e)
    return False


class BindingsChecked:
    """Forwards to a FakeDriver, first replaying each driver call with the same
    arguments into the real cuda.bindings function (only where no driver is
    installed). The real bindings convert every argument before they look for
    libcuda, so an argument they would reject raises its TypeError here: the
    fake's own checks cannot drift from the real signatures."""

    def __init__(self, fake: FakeDriver):
        self._fake = fake

    def __getattr__(self, name):
        target = getattr(self._fake, name)
        if not name.startswith("cu") or name == "cuGetErrorString":
            return target

        def checked(*args):
            try:
                getattr(driver, name)(*args)
            except RuntimeError as e:
                assert rt._is_missing_driver(e), f"{name}{args}: {e}"
            return target(*args)
        return checked


REPLAY_INTO_BINDINGS = _real_driver_absent()


@pytest.fixture
def fake(monkeypatch):
    """A fresh runtime whose driver is a FakeDriver (checked against the real
    bindings' argument conversion where that is safe)."""
    drv = FakeDriver()
    front = BindingsChecked(drv) if REPLAY_INTO_BINDINGS else drv
    monkeypatch.setattr(rt, "driver", lambda: front)
    monkeypatch.setattr(rt, "_context", rt._Context())
    monkeypatch.setattr(rt, "_modules", {})
    return drv


def test_context_and_device_info(fake):
    device = tl.cuda.device_info()
    assert (device.name, device.sm, device.l2_bytes, device.sm_count) == ("Fake H100", 90, 50 << 20, 132)
    assert fake.names()[:4] == ["cuInit", "cuDeviceGetCount", "cuDeviceGet", "cuDevicePrimaryCtxRetain"]
    tl.cuda.device_info()
    assert fake.names().count("cuInit") == 1           # created once


def test_device_array_roundtrip(fake, rng):
    x = rng.standard_normal((5, 7)).astype(np.float16)
    d = tl.cuda.to_device(x)
    assert d.ptr % 256 == 0 and d.nbytes == x.nbytes
    np.testing.assert_array_equal(d.numpy(), x)
    np.testing.assert_array_equal(tl.cuda.zeros(9, np.int32).numpy(), np.zeros(9, np.int32))
    assert d.__cuda_array_interface__["data"] == (d.ptr, False)


def _collect_holding(lock, drop) -> bool:
    """Run `drop()` and a garbage collection while holding `lock`, on a worker
    thread; whether it finished (a finalizer that waits for the lock never does)."""
    def run():
        with lock:
            drop()
            gc.collect()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)
    return not worker.is_alive()


def test_finalizers_never_wait_for_the_context_lock(fake, monkeypatch):
    """A collection can run inside `_Context.current()` while it holds the
    lock (creating the context allocates): freeing an array there must not
    take the lock. An array of the live context is freed; one of a replaced
    context (the tests' fresh runtimes) is left alone."""
    arrays = [tl.cuda.empty(64, np.float32)]
    ptr = arrays[0].ptr
    assert _collect_holding(rt._context._lock, arrays.clear)
    assert ("cuMemFree", ptr) in fake.calls
    arrays.append(tl.cuda.empty(64, np.float32))
    frees = fake.names().count("cuMemFree")
    monkeypatch.setattr(rt, "_context", rt._Context())
    assert _collect_holding(rt._context._lock, arrays.clear)
    assert fake.names().count("cuMemFree") == frees


def test_driver_errors_are_tl_errors(fake):
    fake.fail["cuMemAlloc"] = driver.CUresult.CUDA_ERROR_OUT_OF_MEMORY
    with pytest.raises(rt.CudaError, match="cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY \\(fake error text\\)"):
        tl.cuda.empty(4, np.float32)


def test_events_and_streams(fake):
    s = tl.cuda.Stream()
    assert tl.cuda.time_ms(lambda: None, stream=s) == 0.25
    assert [c[1] for c in fake.calls if c[0] == "cuEventRecord"] == [0x77, 0x77]
    s.synchronize()
    assert ("cuStreamSynchronize", 0x77) in fake.calls


def test_jit_failure_is_a_compile_error(fake):
    fake.fail["cuModuleLoadDataEx"] = driver.CUresult.CUDA_ERROR_INVALID_PTX
    with pytest.raises(TLCompileError, match="CUDA_ERROR_INVALID_PTX"):
        rt.load_module(".version 8.0\n.target sm_80\n.address_size 64\n")


VADD = """
@kernel(warps=4)
def vadd(n: i32, alpha: f32, x: f32[n], y: f32[n]):
    grid(cdiv(n, 512))
    i = block.x * 512
    store(y, load(x, [i], [512]) * alpha, [i])
"""


def _playing(fake, kernel):
    """Let launches of `kernel` decode their parameters by the thread kernel's types."""
    fake.param_types = [p.type.name for p in kernel._backend().thread_kernel.params]


def _emulating(fake, kernel):
    """Launches of `kernel` run its thread kernel in the emulator (cuda-emu) on
    the fake device memory: pointer parameters become numpy views of the
    allocations they point into."""
    from tvm_lite.backends.emulator import run_thread_kernel
    tk = kernel._backend().thread_kernel
    _playing(fake, kernel)

    def play(launch):
        arrays, scalars = {}, {}
        for p, value in zip(tk.params, launch["params"]):
            if p.type.name != "u64":
                scalars[p.name] = value
                continue
            base, buf = next((b, buf) for b, buf in fake.buffers.items() if b <= value < b + len(buf) - 255)
            size = base + len(buf) - 256 - value
            arrays[p.name] = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(value))
        assert launch["block"] == (tk.threads, 1, 1)
        run_thread_kernel(tk, launch["grid"], arrays, scalars)
    fake.on_launch = play


def test_launch_packs_arguments_and_copies_back(fake, rng):
    mod = tl.compile(VADD, target="cuda:sm_90")
    _playing(fake, mod.vadd)
    n = 1000
    x = rng.standard_normal(n).astype(np.float32)
    y = np.zeros(n, np.float32)

    def play(launch):   # the kernel: y = x * alpha, on the fake device memory
        n_, alpha, px, py = launch["params"]
        src = np.ctypeslib.as_array((ctypes.c_float * n_).from_address(px))
        np.ctypeslib.as_array((ctypes.c_float * n_).from_address(py))[:] = src * np.float32(alpha)
    fake.on_launch = play
    mod.vadd(n, 1.5, x, y)
    (launch,) = fake.launches
    assert launch["grid"] == (2, 1, 1) and launch["block"] == (128, 1, 1) and launch["stream"] == 0
    assert launch["params"][:2] == [n, 1.5]
    np.testing.assert_array_equal(y, x * np.float32(1.5))       # copied back after the launch
    with pytest.raises(TLLaunchError, match="must be float32"):
        mod.vadd(n, 1.0, x.astype(np.float16), y)


def test_quant_matmul_on_cuda(fake, rng):
    """The numpy path: the GPU kernel configuration, operands in the
    signature's order, the result copied back."""
    k, n, m = 256, 96, 1
    qt = tl.quantize(rng.standard_normal((k, n)).astype(np.float32), "u4", group_size=128)
    a = rng.standard_normal((m, k)).astype(np.float16)
    from tvm_lite.ops import matmul as qm
    name, gpu = qm.gpu_config(m, "f16")
    kern = qm.compiled(name, "cuda", qm._items(dict(WT="u4", AT="f16", ST="f16", G=128, ZERO=0, **gpu)))
    _emulating(fake, kern)
    ref = a.astype(np.float64) @ tl.dequantize(qt).astype(np.float64)
    c = tl.ops.quant_matmul(a, qt, target="cuda")
    (launch,) = fake.launches
    assert launch["params"][:5] == [m, n, k, 1, 1]
    assert launch["grid"] == (1, 1, 1)                         # cdiv(96, BN=128), cdiv(1, BM=16)
    assert launch["shared"] == kern._backend().thread_kernel.shared_bytes
    assert c.dtype == np.float16 and c.shape == (m, n)
    np.testing.assert_allclose(c.astype(np.float64), ref, rtol=0, atol=2e-3 * np.abs(ref).max())


class FakeTensor:
    """A device tensor of another library: only __cuda_array_interface__."""

    def __init__(self, device_array):
        self._d = device_array
        self.__cuda_array_interface__ = dict(device_array.__cuda_array_interface__)


def test_quant_matmul_device_arrays(fake, rng):
    """Device-resident activations: the result is a DeviceArray; the weights
    are copied to the device once per QuantizedTensor."""
    k, n = 128, 64
    qt = tl.quantize(rng.standard_normal((k, n)).astype(np.float32), "u3", group_size=64)
    from tvm_lite.ops import matmul as qm
    for m in (1, 20):
        name, gpu = qm.gpu_config(m, "f16")
        kern = qm.compiled(name, "cuda", qm._items(dict(WT="u3", AT="f16", ST="f16", G=64, ZERO=0, **gpu)))
        _emulating(fake, kern)
        a = rng.standard_normal((m, k)).astype(np.float16)
        out = tl.ops.quant_matmul(FakeTensor(tl.cuda.to_device(a)), qt, target="cuda")
        assert isinstance(out, tl.cuda.DeviceArray) and out.shape == (m, n) and out.dtype == np.float16
        ref = a.astype(np.float64) @ tl.dequantize(qt).astype(np.float64)
        np.testing.assert_allclose(out.numpy().astype(np.float64), ref, rtol=0, atol=2e-3 * np.abs(ref).max())
        assert fake.launches[-1]["params"][:3] == [m, n, k]
        assert fake.launches[-1]["params"][-1] == out.ptr
    import ml_dtypes
    a = rng.standard_normal((3, k)).astype(ml_dtypes.bfloat16)
    name, gpu = qm.gpu_config(3, "bf16")
    kern = qm.compiled(name, "cuda", qm._items(dict(WT="u3", AT="bf16", ST="f16", G=64, ZERO=0, **gpu)))
    _emulating(fake, kern)
    out = tl.ops.quant_matmul(tl.cuda.to_device(a), qt, target="cuda")     # bf16 activations
    assert out.dtype == a.dtype
    ref = a.astype(np.float64) @ tl.dequantize(qt).astype(np.float64)
    np.testing.assert_allclose(out.numpy().astype(np.float64), ref, rtol=0, atol=1e-2 * np.abs(ref).max())
    weight_bytes = qt.data.nbytes
    assert [c[2] for c in fake.calls if c[0] == "cuMemcpyHtoD"].count(weight_bytes) == 1
    fake.on_launch = None
    vec = tl.ops.quant_matmul(tl.cuda.to_device(rng.standard_normal(k).astype(np.float16)), qt, target="cuda")
    assert vec.shape == (n,)
    with pytest.raises(TLLaunchError, match="must be \\[M, 128\\]"):
        tl.ops.quant_matmul(tl.cuda.zeros((2, 100), np.float16), qt, target="cuda")
    with pytest.raises(TLLaunchError, match="float32, float16 or bfloat16"):
        tl.ops.quant_matmul(tl.cuda.zeros((2, k), np.int32), qt, target="cuda")
    with pytest.raises(TLError, match="numpy array or a CUDA device array"):
        tl.ops.quant_matmul([1.0] * k, qt, target="cuda")


def test_bench_timing_uses_events_and_flushes_l2(fake):
    from tvm_lite.runtime import bench_cuda
    flush = bench_cuda.L2Flusher(1 << 20)
    fake.param_types = ["u64"]
    prepare = bench_cuda.before_each_run(flush, bench_cuda.DeviceHold(us=300))
    runs = []
    ms = bench_cuda.time_median_ms(lambda: runs.append(len(fake.calls)), prepare, repeat=10)
    assert ms == 0.25
    assert len(runs) == bench_cuda.WARMUP + bench_cuda.MIN_REPEAT          # at least 50 timed runs
    memsets = [c for c in fake.calls if c[0] == "cuMemsetD8"]
    assert len(memsets) == bench_cuda.MIN_REPEAT and memsets[0][2] >= 2 << 20
    # Each timed run: flush, then the hold kernel (1 thread, 300 us), then the start event.
    assert fake.launches == [dict(grid=(1, 1, 1), block=(1, 1, 1), shared=0, stream=0, params=[300_000])] \
        * bench_cuda.MIN_REPEAT
    names = fake.names()
    second = runs[bench_cuda.WARMUP + 1]      # the first also queries the function's attributes
    assert names[second - 3:second] == ["cuMemsetD8", "cuLaunchKernel", "cuEventRecord"]
    assert bench_cuda.device_target(tl.cuda.device_info()) == "cuda:sm_90"


@pytest.mark.parametrize("sm", [80, 89, 90])
def test_bench_hold_kernel_assembles(sm):
    from tvm_lite.backends.nvjitlink import compile_ptx
    from tvm_lite.runtime import bench_cuda
    figures = compile_ptx(bench_cuda._HOLD_PTX, sm).resources()
    assert figures["spill_stores"] == 0 and figures["registers"] <= 16


def test_driver_calls_are_checked_against_the_real_bindings():
    """The fixture's replay into cuda.bindings catches an argument the real
    bindings reject (a str where they take bytes), which FakeDriver alone accepts."""
    if not REPLAY_INTO_BINDINGS:
        pytest.skip("a CUDA driver is installed: replaying fake calls into it is unsafe")
    checked = BindingsChecked(FakeDriver())
    assert checked.cuModuleGetFunction(driver.CUmodule(0x5678), b"k")[0] == OK
    with pytest.raises(TypeError):
        checked.cuModuleGetFunction(driver.CUmodule(0x5678), "k")


def test_numpy_arguments_on_a_stream_are_copied_on_that_stream(fake, rng):
    mod = tl.compile(VADD, target="cuda:sm_90")
    _playing(fake, mod.vadd)
    s = tl.cuda.Stream()
    x, y = rng.standard_normal(64).astype(np.float32), np.zeros(64, np.float32)
    mod.vadd(64, 2.0, x, y, stream=s)
    assert fake.launches[-1]["stream"] == 0x77
    assert [c[3] for c in fake.calls if c[0] == "cuMemcpyHtoDAsync"] == [0x77, 0x77]
    after = fake.names()[fake.names().index("cuLaunchKernel"):]
    assert after.index("cuStreamSynchronize") < after.index("cuMemcpyDtoH")   # wait, then copy y back
    assert rt._stream_handle(driver.CUstream(0x99)) == 0x99     # cuda.bindings stream objects


def test_other_runtime_errors_are_cuda_errors(fake, monkeypatch):
    tl.cuda.device_info()

    def old_driver(*args):
        raise RuntimeError("Function \"cuMemAlloc_v2\" not found")
    monkeypatch.setattr(fake, "cuMemAlloc", old_driver, raising=False)
    with pytest.raises(rt.CudaError, match="cuMemAlloc: Function"):
        tl.cuda.empty(4, np.float32)


def test_bench_runs_end_to_end(fake, monkeypatch):
    """run_cuda_bench on tiny shapes: every kernel launch is emulated, so the
    correctness check it reports is real; the timings are the fake's."""
    from tvm_lite.ops import matmul as qm
    from tvm_lite.runtime import bench_cuda
    monkeypatch.setattr(bench_cuda, "COPY_BYTES", 1 << 20)
    monkeypatch.setattr(bench_cuda, "L2Flusher", lambda l2: (lambda: None))
    monkeypatch.setattr(bench_cuda, "DeviceHold", lambda: (lambda: None))
    monkeypatch.setattr(bench_cuda, "_array_lib", lambda: (None, None))      # no cupy/torch baselines
    monkeypatch.setattr(bench_cuda, "MIN_REPEAT", 1)
    monkeypatch.setattr(bench_cuda, "WARMUP", 0)
    real_compiled = qm.compiled

    def compiled(name, target, constants):   # emulate whatever the bench launches
        kern = real_compiled(name, target, constants)
        _emulating(fake, kern)
        return kern
    monkeypatch.setattr(qm, "compiled", compiled)
    rows = bench_cuda.run_cuda_bench(("u4", "f8e4m3"), ms=(1, 20), ns=(64,), k=256, group_size=128, repeat=1)
    assert [(r["dtype"], r["m"]) for r in rows] == [("u4", 1), ("u4", 20), ("f8e4m3", 1), ("f8e4m3", 20)]
    for r in rows:
        assert isinstance(r["max_rel_err"], float) and r["max_rel_err"] < 2e-2, r
        assert r["time_ms"] == 0.25 and r["gbps"] > 0 and r["pct_copy_bw"] > 0
    assert any("quant_gemv BM=64" in n and "DT=f16" in n for n in rows[1]["notes"])
    assert "no cuBLAS baseline" in bench_cuda.format_rows(rows)


def test_dynamic_shared_memory_opt_in(fake):
    """Static plus dynamic shared memory above 48 KB needs the attribute; the
    device's opt-in limit counts both."""
    fn = rt.load_module(".version 8.0\n").function("k")
    fn.reserve_dynamic_shared((48 << 10) - 1024)                  # fits beside 1 KB static
    assert "cuFuncSetAttribute" not in fake.names()
    fn.reserve_dynamic_shared((48 << 10) - 1023)
    assert fake.func_attributes["CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES"] == (48 << 10) - 1023
    fn.reserve_dynamic_shared((227 << 10) - 1024)
    with pytest.raises(TLLaunchError, match="allows at most 232448 in all"):
        fn.reserve_dynamic_shared((227 << 10) - 1023)
