"""What hardware this process can use, probed without side effects beyond
initializing the CUDA driver (runtime/cuda.py) when it is present."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def has_cuda_gpu() -> bool:
    """True when cuda-python is installed, a driver loads and a GPU answers.
    Never raises."""
    try:
        from ..errors import TLError
        from .cuda import ensure_context
    except ImportError:
        return False
    try:
        ensure_context()
        return True
    except TLError:
        return False
    except Exception:   # belt and braces: a probe must not fail the caller
        return False
