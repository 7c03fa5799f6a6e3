"""What hardware this process can use, probed without side effects."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def has_cuda_gpu() -> bool:
    """True when cuda-python is installed, a driver loads and a GPU answers."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return False
    try:
        (err,) = driver.cuInit(0)
        if err != driver.CUresult.CUDA_SUCCESS:
            return False
        err, count = driver.cuDeviceGetCount()
        return err == driver.CUresult.CUDA_SUCCESS and count > 0
    except Exception:  # the bindings raise when no driver library exists
        return False
