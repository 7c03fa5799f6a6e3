"""The CUDA runtime, on `cuda.bindings.driver` only (no toolkit, no nvcc).

Everything is lazy: importing this module touches no driver. The first call
that needs the GPU runs cuInit, takes device 0's primary context and makes it
current on the calling thread (and on every other thread that later calls in).

Errors. Every failing driver call raises `CudaError` (a TLError) naming the
call and the CUresult (e.g. "cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY (out of
memory)"). Without a driver library `cuda.bindings` raises a RuntimeError
subclass at cuInit; that becomes `TLTargetError("no CUDA driver found ...")`,
and a driver that sees no device gives `TLTargetError("no CUDA GPU found ...")`.
No exception from cuda.bindings escapes.

Memory.
* `DeviceArray`: a C-contiguous device buffer with a numpy dtype and shape;
  `numpy()` copies it back; freed by a finalizer when unreferenced. It exposes
  `__cuda_array_interface__` (v3), so cupy/torch/numba can use it too.
* `device_view(obj)` accepts a DeviceArray or any object with
  `__cuda_array_interface__` or `__dlpack__` (torch, cupy, jax ...) without
  importing those libraries, and returns a `DeviceView` (address, shape,
  dtype, contiguity, read-only flag, and a reference that keeps the memory
  alive).

Modules load from PTX text through the driver JIT (cuModuleLoadDataEx); a JIT
failure raises TLCompileError with the JIT's log and the PTX line it names.
Launches go through cuLaunchKernel on the legacy default stream or a `Stream`.
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import TLCompileError, TLError, TLLaunchError, TLTargetError


class CudaError(TLError):
    """A CUDA driver call failed; `result` is the CUresult name."""

    def __init__(self, message: str, result: str = ""):
        self.result = result
        super().__init__(message)


NO_DRIVER = "no CUDA driver found"
NO_GPU = "no CUDA GPU found"


# ------------------------------------------------------------------ driver


def driver():
    """The `cuda.bindings.driver` module, or TLTargetError when cuda-python is absent."""
    try:
        from cuda.bindings import driver as drv
    except ImportError:
        raise TLTargetError(f"{NO_DRIVER}: the cuda target needs cuda-python "
                            f"(pip install 'tvm_lite[cuda]')") from None
    return drv


def result_name(drv, err) -> str:
    name = getattr(err, "name", None)
    return name if name else f"CUresult {int(err)}"


def _describe(drv, err) -> str:
    try:
        status, text = drv.cuGetErrorString(err)
        if status == drv.CUresult.CUDA_SUCCESS and text:
            return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:   # the description is a courtesy; the name is enough
        pass
    return ""


def check(call: str, returned) -> Any:
    """Unpack a cuda.bindings result tuple: raise CudaError unless CUDA_SUCCESS;
    return None, the single value, or the tuple of values."""
    drv = driver()
    err, *values = returned if isinstance(returned, tuple) else (returned,)
    if err != drv.CUresult.CUDA_SUCCESS:
        name = result_name(drv, err)
        text = _describe(drv, err)
        raise CudaError(f"{call}: {name}" + (f" ({text})" if text else ""), name)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _is_missing_driver(e: RuntimeError) -> bool:
    """Whether cuda.bindings raised `e` because libcuda.so cannot be loaded
    (cuda.pathfinder's DynamicLibNotFoundError, a RuntimeError subclass)."""
    return any(c.__name__ == "DynamicLibNotFoundError" for c in type(e).__mro__) \
        or "driver library" in str(e)


def call(name: str, *args) -> Any:
    """`driver().<name>(*args)` through `check`. A RuntimeError raised by the
    bindings becomes TLTargetError when the driver library is missing, else
    CudaError (e.g. a driver too old to have the entry point)."""
    drv = driver()
    try:
        returned = getattr(drv, name)(*args)
    except TLError:
        raise
    except RuntimeError as e:
        if _is_missing_driver(e):
            raise TLTargetError(f"{NO_DRIVER} ({name}: {e})") from None
        raise CudaError(f"{name}: {e}") from None
    except (TypeError, ValueError, OverflowError) as e:
        raise CudaError(f"{name}: invalid argument ({e})") from None
    return check(name, returned)


# ----------------------------------------------------------------- context


@dataclass(frozen=True)
class Device:
    """The GPU this process uses (device 0 of the visible ones)."""
    ordinal: int
    name: str
    sm: int                       # compute capability as major*10 + minor
    l2_bytes: int
    max_shared_optin: int         # the most dynamic shared memory one block may opt into
    sm_count: int


class _Context:
    """Device 0's primary context, created on first use; made current on each
    thread that calls `current()`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._local = threading.local()
        self._handle = None
        self.device: Device | None = None

    def current(self) -> "_Context":
        if self._handle is None:
            with self._lock:
                if self._handle is None:
                    self._create()
        self._make_current()
        return self

    def _make_current(self) -> None:
        """Make the (created) context current on this thread; takes no lock."""
        if getattr(self._local, "handle", None) is not self._handle:
            call("cuCtxSetCurrent", self._handle)
            self._local.handle = self._handle

    def _create(self) -> None:
        drv = driver()
        try:
            (err,) = drv.cuInit(0)
        except RuntimeError as e:   # DynamicLibNotFoundError: no libcuda.so
            raise TLTargetError(f"{NO_DRIVER}: {e}") from None
        if result_name(drv, err) == "CUDA_ERROR_NO_DEVICE":
            raise TLTargetError(f"{NO_GPU}: the driver reports no device ({result_name(drv, err)})")
        check("cuInit", (err,))
        if call("cuDeviceGetCount") < 1:
            raise TLTargetError(f"{NO_GPU}: the driver reports 0 devices")
        dev = call("cuDeviceGet", 0)
        handle = call("cuDevicePrimaryCtxRetain", dev)
        call("cuCtxSetCurrent", handle)
        attr = drv.CUdevice_attribute

        def get(a):
            return int(call("cuDeviceGetAttribute", getattr(attr, a), dev))

        raw_name = call("cuDeviceGetName", 256, dev)
        name = raw_name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw_name, bytes) else str(raw_name)
        self.device = Device(
            ordinal=0, name=name,
            sm=get("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR") * 10
            + get("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR"),
            l2_bytes=get("CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE"),
            max_shared_optin=get("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN"),
            sm_count=get("CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT"))
        self._handle = handle
        self._local.handle = handle


_context = _Context()


def ensure_context() -> Device:
    """Initialize the driver and context if needed; the device in use."""
    return _context.current().device


def device_info() -> Device:
    return ensure_context()


def synchronize() -> None:
    """Wait for all work on the device to finish."""
    ensure_context()
    call("cuCtxSynchronize")


# ----------------------------------------------------------------- streams


class Stream:
    """A CUDA stream (non-blocking with respect to the legacy default stream)."""

    def __init__(self):
        ensure_context()
        drv = driver()
        self._handle = call("cuStreamCreate", drv.CUstream_flags.CU_STREAM_NON_BLOCKING)
        self._finalizer = _release_later(self, "cuStreamDestroy", self._handle)

    @property
    def handle(self) -> int:
        return int(self._handle)

    def synchronize(self) -> None:
        call("cuStreamSynchronize", self._handle)


def _stream_handle(stream) -> int:
    """A stream argument as a raw handle: None is the legacy default stream (0)."""
    if stream is None:
        return 0
    if isinstance(stream, Stream):
        return stream.handle
    if isinstance(stream, int) and not isinstance(stream, bool) and stream >= 0:
        return stream
    if type(stream).__module__.startswith("cuda.bindings"):   # a CUstream object
        return int(stream)
    handle = getattr(stream, "cuda_stream", None)     # torch / cupy stream objects
    if handle is None:
        handle = getattr(stream, "ptr", None)
    if isinstance(handle, int):
        return handle
    raise TLLaunchError(f"stream must be a tl.cuda.Stream, a raw handle or None, "
                        f"got {type(stream).__name__}")


def _release_later(owner, name: str, handle) -> weakref.finalize:
    """Call driver function `name` on `handle` when `owner` is collected, in
    the context that is current now."""
    return weakref.finalize(owner, _destroy_quietly, _context, name, handle)


def _destroy_quietly(context: _Context, name: str, handle) -> None:
    # Finalizers run at any time: at interpreter exit after the context is
    # gone (a failure has nobody to report to), or in a garbage collection
    # inside `_Context.current()` on this very thread while it holds the
    # context lock - so this never takes that lock, and never creates a
    # context. A context that was replaced or never finished took its
    # resources with it.
    if context is not _context or context._handle is None:
        return
    try:
        context._make_current()   # the finalizing thread may never have made it current
        getattr(driver(), name)(handle)
    except Exception:
        pass


class Event:
    """A CUDA event for timing: `e.record(stream)`, `Event.elapsed_ms(a, b)`."""

    def __init__(self):
        ensure_context()
        drv = driver()
        self._handle = call("cuEventCreate", drv.CUevent_flags.CU_EVENT_DEFAULT)
        self._finalizer = _release_later(self, "cuEventDestroy", self._handle)

    def record(self, stream=None) -> "Event":
        call("cuEventRecord", self._handle, _stream_handle(stream))
        return self

    def synchronize(self) -> None:
        call("cuEventSynchronize", self._handle)

    @staticmethod
    def elapsed_ms(start: "Event", end: "Event") -> float:
        end.synchronize()
        return float(call("cuEventElapsedTime", start._handle, end._handle))


# ------------------------------------------------------------ device memory


def as_numpy_dtype(dtype) -> np.dtype:
    """A numpy dtype from a numpy dtype/name or a tvm_lite DataType with a
    byte-sized storage (u8..f64, and bf16/f8e4m3/f8e5m2 through ml_dtypes)."""
    from ..ir.dtypes import DataType, numpy_dtype
    if isinstance(dtype, DataType):
        native = numpy_dtype(dtype)
        if native is not None:
            return np.dtype(native)
        ml_names = {"bf16": "bfloat16", "f8e4m3": "float8_e4m3fn", "f8e5m2": "float8_e5m2"}
        if dtype.name in ml_names:
            import ml_dtypes
            return np.dtype(getattr(ml_dtypes, ml_names[dtype.name]))
        raise TLError(f"{dtype.name} has no byte-sized storage: allocate its packed bit "
                      f"stream as uint8 bytes (see tl.pack)")
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TLError(f"not a data type: {dtype!r}") from None


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


class DeviceArray:
    """A C-contiguous array in device memory (see the module docstring)."""

    def __init__(self, shape, dtype):
        self.shape = tuple(int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        if any(d < 0 for d in self.shape):
            raise TLError(f"negative dimension in shape {self.shape}")
        self.dtype = as_numpy_dtype(dtype)
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize
        ensure_context()
        # A zero-size array owns no memory; its address is 0.
        self.ptr = int(call("cuMemAlloc", self.nbytes)) if self.nbytes else 0
        self._finalizer = _release_later(self, "cuMemFree", self.ptr) if self.ptr else None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d device array")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<tl.cuda.DeviceArray {self.dtype} {self.shape} at 0x{self.ptr:x}>"

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False),
                "strides": None, "version": 3, "stream": None}

    def copy_from_host(self, array, stream=None) -> "DeviceArray":
        host = np.ascontiguousarray(array)
        if host.dtype != self.dtype or host.nbytes != self.nbytes:
            raise TLError(f"cannot copy {host.dtype} {host.shape} into {self!r}")
        if self.nbytes:
            if stream is None:
                call("cuMemcpyHtoD", self.ptr, host.ctypes.data, self.nbytes)
            else:
                call("cuMemcpyHtoDAsync", self.ptr, host.ctypes.data, self.nbytes, _stream_handle(stream))
                call("cuStreamSynchronize", _stream_handle(stream))   # `host` may be a temporary
        return self

    def numpy(self) -> np.ndarray:
        """A host copy (waits for the device's pending work on the default stream)."""
        out = np.empty(self.shape, self.dtype)
        if self.nbytes:
            ensure_context()
            call("cuMemcpyDtoH", out.ctypes.data, self.ptr, self.nbytes)
        return out

    def fill_zero(self) -> "DeviceArray":
        if self.nbytes:
            ensure_context()
            call("cuMemsetD8", self.ptr, 0, self.nbytes)
        return self


def empty(shape, dtype=np.float32) -> DeviceArray:
    """An uninitialized device array."""
    return DeviceArray(shape, dtype)


def zeros(shape, dtype=np.float32) -> DeviceArray:
    return DeviceArray(shape, dtype).fill_zero()


def to_device(array, stream=None) -> DeviceArray:
    """A device copy of a numpy array (or anything np.asarray accepts)."""
    host = np.ascontiguousarray(array)
    return DeviceArray(host.shape, host.dtype).copy_from_host(host, stream)


def memcpy_dtod(dst: int, src: int, nbytes: int, stream=None) -> None:
    ensure_context()
    if stream is None:
        call("cuMemcpyDtoD", dst, src, nbytes)
    else:
        call("cuMemcpyDtoDAsync", dst, src, nbytes, _stream_handle(stream))


def memset_d8(dst: int, value: int, nbytes: int, stream=None) -> None:
    ensure_context()
    if stream is None:
        call("cuMemsetD8", dst, value, nbytes)
    else:
        call("cuMemsetD8Async", dst, value, nbytes, _stream_handle(stream))


# ----------------------------------------------- foreign arrays: CAI and DLPack


@dataclass(frozen=True)
class DeviceView:
    """Where a device array argument lives and what it holds."""
    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    c_contiguous: bool
    readonly: bool
    owner: Any          # keeps the memory (and a DLPack capsule) alive

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def is_device_array(obj) -> bool:
    return isinstance(obj, (DeviceArray, DeviceView)) or hasattr(obj, "__cuda_array_interface__") \
        or (hasattr(obj, "__dlpack__") and not isinstance(obj, np.ndarray))


def device_view(obj, stream=None) -> DeviceView:
    """A DeviceView of a DeviceArray, a `__cuda_array_interface__` object or a
    `__dlpack__` object on a CUDA device (a DeviceView is returned as is);
    TLLaunchError for anything else."""
    if isinstance(obj, DeviceArray):
        return DeviceView(obj.ptr, obj.shape, obj.dtype, True, False, obj)
    if isinstance(obj, DeviceView):
        return obj
    cai_error = None
    if hasattr(obj, "__cuda_array_interface__"):
        try:
            return _view_from_cai(obj, obj.__cuda_array_interface__)
        except TLError:
            raise
        except Exception as e:   # e.g. torch raises for bf16 / requires_grad: try DLPack
            cai_error = e
    if hasattr(obj, "__dlpack__") and not isinstance(obj, np.ndarray):
        return _view_from_dlpack(obj, stream)
    why = f" (__cuda_array_interface__ failed: {cai_error})" if cai_error else ""
    raise TLLaunchError(f"expected a device array (tl.cuda.DeviceArray, or an object with "
                        f"__cuda_array_interface__ or __dlpack__), got {type(obj).__name__}{why}")


def _view_from_cai(obj, cai: dict) -> DeviceView:
    shape = tuple(int(d) for d in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    ptr, readonly = cai["data"]
    if cai.get("mask") is not None:
        raise TLLaunchError(f"{type(obj).__name__}: masked device arrays are not supported")
    strides = cai.get("strides")
    contiguous = strides is None or math.prod(shape) <= 1 or \
        tuple(int(s) for s in strides) == _c_strides(shape, dtype.itemsize)
    stream = cai.get("stream")
    # Protocol v3: the producer's pending work is on `stream`; 1 (legacy
    # default) is already ordered before our launches on the legacy stream.
    if isinstance(stream, int) and stream not in (0, 1):
        ensure_context()
        call("cuStreamSynchronize", stream)
    return DeviceView(int(ptr or 0), shape, dtype, contiguous, bool(readonly), obj)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


_KDL_CUDA, _KDL_CUDA_MANAGED = 2, 13


def _dlpack_dtype(code: int, bits: int, lanes: int) -> np.dtype:
    if lanes == 1:
        if code == 0 and bits in (8, 16, 32, 64):
            return np.dtype(f"int{bits}")
        if code == 1 and bits in (8, 16, 32, 64):
            return np.dtype(f"uint{bits}")
        if code == 2 and bits in (16, 32, 64):
            return np.dtype(f"float{bits}")
        if code == 6 and bits == 8:
            return np.dtype(bool)
        if code == 4 and bits == 16:
            import ml_dtypes
            return np.dtype(ml_dtypes.bfloat16)
    raise TLLaunchError(f"unsupported DLPack dtype (code {code}, {bits} bits, {lanes} lanes)")


def _capsule_pointer(capsule) -> int:
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    try:
        return int(get(capsule, b"dltensor") or 0)
    except ValueError:
        raise TLLaunchError("__dlpack__ did not return an unconsumed 'dltensor' capsule") from None


def parse_dlpack_capsule(capsule) -> tuple:
    """(address, shape, dtype, c_contiguous, (device_type, device_id)) of an
    unconsumed DLPack 'dltensor' capsule. The capsule must outlive any use of
    the address."""
    managed = _DLManagedTensor.from_address(_capsule_pointer(capsule))
    t = managed.dl_tensor
    shape = tuple(int(t.shape[i]) for i in range(t.ndim))
    dtype = _dlpack_dtype(t.dtype.code, t.dtype.bits, t.dtype.lanes)
    contiguous = True
    if t.strides:
        strides = tuple(int(t.strides[i]) * dtype.itemsize for i in range(t.ndim))
        contiguous = math.prod(shape) <= 1 or all(
            s == c for s, c, d in zip(strides, _c_strides(shape, dtype.itemsize), shape) if d > 1)
    ptr = int(t.data or 0) + int(t.byte_offset)
    return ptr, shape, dtype, contiguous, (int(t.device.device_type), int(t.device.device_id))


def _view_from_dlpack(obj, stream) -> DeviceView:
    where = type(obj).__name__
    if hasattr(obj, "__dlpack_device__"):
        dev_type, dev_id = obj.__dlpack_device__()
        if int(dev_type) not in (_KDL_CUDA, _KDL_CUDA_MANAGED):
            raise TLLaunchError(f"{where} lives on DLPack device type {int(dev_type)}, not a CUDA "
                                f"device (pass numpy arrays or CUDA arrays)")
        if int(dev_id) != ensure_context().ordinal:
            raise TLLaunchError(f"{where} is on CUDA device {int(dev_id)}; tvm_lite runs on device 0")
    # Array API convention: stream=1 is the legacy default stream; the
    # producer orders its pending work before our launch on that stream.
    handle = _stream_handle(stream)
    try:
        capsule = obj.__dlpack__(stream=handle if handle else 1)
    except TypeError:
        capsule = obj.__dlpack__()
    ptr, shape, dtype, contiguous, (dev_type, _) = parse_dlpack_capsule(capsule)
    if dev_type not in (_KDL_CUDA, _KDL_CUDA_MANAGED):
        raise TLLaunchError(f"{where} is not on a CUDA device (DLPack device type {dev_type})")
    # The capsule stays referenced by the view; its destructor releases the
    # producer's tensor when the view is dropped (DLPack's unconsumed path).
    return DeviceView(ptr, shape, dtype, contiguous, False, (obj, capsule))


# ------------------------------------------------------- modules and launch


class Function:
    """A kernel entry point of a loaded module."""

    def __init__(self, module: "Module", name: str):
        self.module = module
        self.name = name
        self._handle = call("cuModuleGetFunction", module._handle, name.encode())
        self._dynamic_shared_limit: int | None = None   # bytes allowed now (queried on first launch)
        self._static_shared = 0

    def reserve_dynamic_shared(self, nbytes: int) -> None:
        """Allow `nbytes` of dynamic shared memory. Without an opt-in a block
        may use 48 KB of static plus dynamic shared memory; above that the
        function attribute MAX_DYNAMIC_SHARED_SIZE_BYTES must be raised, up to
        the device's opt-in limit minus the static part (ptxas reports 1 KB of
        static shared memory on sm_90 even for kernels that declare none)."""
        attrs = driver().CUfunction_attribute
        if self._dynamic_shared_limit is None:
            self._static_shared = int(call("cuFuncGetAttribute", attrs.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
                                           self._handle))
            self._dynamic_shared_limit = max(0, 48 * 1024 - self._static_shared)
        if nbytes <= self._dynamic_shared_limit:
            return
        device = ensure_context()
        if self._static_shared + nbytes > device.max_shared_optin:
            raise TLLaunchError(f"{self.name}: needs {nbytes} bytes of dynamic shared memory per block "
                                f"(plus {self._static_shared} static); {device.name} allows at most "
                                f"{device.max_shared_optin} in all")
        call("cuFuncSetAttribute", self._handle, attrs.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, int(nbytes))
        self._dynamic_shared_limit = nbytes

    def launch(self, grid: tuple[int, int, int], threads: int, shared_bytes: int,
               params: list, stream=None) -> None:
        """Launch with `params`: ctypes scalars, one per kernel parameter, in order."""
        ensure_context()
        self.reserve_dynamic_shared(shared_bytes)
        pointers = (ctypes.c_void_p * max(1, len(params)))(
            *[ctypes.addressof(p) for p in params])
        call("cuLaunchKernel", self._handle, grid[0], grid[1], grid[2], threads, 1, 1,
             shared_bytes, _stream_handle(stream), ctypes.addressof(pointers) if params else 0, 0)


class Module:
    """A module JIT-compiled by the driver from PTX text."""

    def __init__(self, ptx: str):
        ensure_context()
        drv = driver()
        size = 1 << 16
        error_log, info_log = bytearray(size), bytearray(size)
        opt = drv.CUjit_option
        options = [opt.CU_JIT_ERROR_LOG_BUFFER, opt.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                   opt.CU_JIT_INFO_LOG_BUFFER, opt.CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES]
        values = [error_log, size, info_log, size]
        image = ptx.encode() + b"\0"
        try:
            err, handle = drv.cuModuleLoadDataEx(image, len(options), options, values)
        except RuntimeError as e:
            raise TLTargetError(f"{NO_DRIVER} (cuModuleLoadDataEx: {e})") from None
        if err != drv.CUresult.CUDA_SUCCESS:
            from ..backends.nvjitlink import quote_ptx_line
            log = bytes(error_log).split(b"\0", 1)[0].decode(errors="replace").strip()
            text = f"the CUDA driver JIT rejected the PTX: {result_name(drv, err)}"
            if log:
                text += f"\n{log}"
            quoted = quote_ptx_line(ptx, log)
            if quoted:
                text += f"\noffending PTX line:\n{quoted}"
            raise TLCompileError(text)
        self._handle = handle
        self.jit_log = bytes(info_log).split(b"\0", 1)[0].decode(errors="replace")
        self._functions: dict[str, Function] = {}
        self._finalizer = _release_later(self, "cuModuleUnload", handle)

    def function(self, name: str) -> Function:
        fn = self._functions.get(name)
        if fn is None:
            fn = self._functions[name] = Function(self, name)
        return fn


_modules: dict[str, Module] = {}
_modules_lock = threading.Lock()


def load_module(ptx: str) -> Module:
    """The module for `ptx`, JIT-compiled once per process."""
    key = hashlib.sha256(ptx.encode()).hexdigest()
    with _modules_lock:
        module = _modules.get(key)
        if module is None:
            module = _modules[key] = Module(ptx)
    return module


__all__ = ["CudaError", "Device", "DeviceArray", "DeviceView", "Event", "Function", "Module",
           "Stream", "device_info", "device_view", "empty", "ensure_context", "is_device_array",
           "load_module", "memcpy_dtod", "parse_dlpack_capsule", "memset_d8", "synchronize", "to_device", "zeros"]
