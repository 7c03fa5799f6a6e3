"""tl.cuda: device arrays, streams, events and synchronization for target="cuda".

    x = tl.cuda.to_device(np_array)        # a DeviceArray (C-contiguous copy)
    y = tl.cuda.empty((m, n), np.float16)  # uninitialized; tl.cuda.zeros likewise
    mod.kernel(x, y, ...)                  # kernels take DeviceArrays, or any object with
                                           # __cuda_array_interface__ / __dlpack__ (torch, cupy)
    tl.cuda.synchronize(); y.numpy()       # back to the host
    ms = tl.cuda.time_ms(lambda: mod.kernel(x, y))   # CUDA-event timing

Nothing here touches the driver until it is called: `import tvm_lite` works
on machines without CUDA. Without a driver or a GPU every call raises a
TLError saying so ("no CUDA driver found" / "no CUDA GPU found").
"""
from __future__ import annotations

from typing import Callable

from .runtime.cuda import (CudaError, DeviceArray, Event, Stream, device_info, empty, synchronize,
                           to_device, zeros)


def is_available() -> bool:
    """True when a CUDA driver and a GPU are usable (never raises)."""
    from .runtime.devices import has_cuda_gpu
    return has_cuda_gpu()


def time_ms(fn: Callable[[], object], stream=None) -> float:
    """Milliseconds of device time between CUDA events recorded around `fn()`."""
    start = Event().record(stream)
    fn()
    end = Event().record(stream)
    return Event.elapsed_ms(start, end)


__all__ = ["CudaError", "DeviceArray", "Event", "Stream", "device_info", "empty", "is_available",
           "synchronize", "time_ms", "to_device", "zeros"]
