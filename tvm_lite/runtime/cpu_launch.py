"""Launching compiled CPU kernels: argument marshalling and the thread pool.

The kernel ABI (backends/cpu_codegen.py) is
`i32 kernel(i64* args, i64 begin, i64 end)`: `args` holds one 8-byte slot per
parameter (an integer, the bits of a float64, or an address), and the call
runs the grid's linear blocks [begin, end), block.x fastest. It returns 0, or
a nonzero status the caller turns into a TLError.

Arguments are bound and checked by runtime.args before any address reaches
machine code. The blocks are split into contiguous ranges, one per worker of
a process-wide pool of os.cpu_count() threads; ctypes releases the GIL during
each call, so the ranges run on all cores at once.
"""
from __future__ import annotations

import ctypes
import functools
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ..errors import TLError
from ..ir import vm
from .args import ArgumentPlan, BoundArguments, bind_arguments, eval_expr

KERNEL_SIGNATURE = (ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
# The status codes a kernel returns (part of the ABI; the code generator emits them).
STATUS_OK, STATUS_DIV_ZERO, STATUS_SHARED_RANGE, STATUS_ZERO_STEP = 0, 1, 2, 3
STATUS_MESSAGES = {STATUS_DIV_ZERO: "integer division by zero",
                   STATUS_SHARED_RANGE: "shared memory access out of range",
                   STATUS_ZERO_STEP: "range step is 0"}

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def workers() -> int:
    return os.cpu_count() or 1


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, workers() - 1), thread_name_prefix="tl-cpu")
        return _pool


def _signed64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def marshal(kernel: vm.Kernel, bound: BoundArguments):
    """The `args` array of the ABI (keep it alive during the call)."""
    slots = (ctypes.c_int64 * max(1, len(kernel.params)))()
    for i, p in enumerate(kernel.params):
        if isinstance(p, vm.Var):
            value = bound.scalars[p]
            if p.dtype.is_float:
                slots[i] = struct.unpack("<q", struct.pack("<d", value))[0]
            else:
                slots[i] = _signed64(value)
        elif isinstance(p, vm.GlobalTensor):
            slots[i] = bound.tensors[p].ctypes.data
        else:
            slots[i] = bound.pointers[p]
    return slots


def grid_blocks(kernel: vm.Kernel, bound: BoundArguments) -> int:
    blocks = 1
    for g in kernel.grid:
        blocks *= max(int(eval_expr(g, bound.scalars)), 0)
    return blocks


def block_ranges(blocks: int, parts: int) -> list[tuple[int, int]]:
    """[0, blocks) as at most `parts` contiguous, non-empty ranges of near-equal size."""
    parts = max(1, min(parts, blocks))
    return [(blocks * i // parts, blocks * (i + 1) // parts) for i in range(parts)]


def launch(kernel: vm.Kernel, fn: Callable, args: tuple, kwargs: dict | None,
           status_messages: dict[int, str], plan: ArgumentPlan | None = None) -> None:
    """Bind and check `args`, then run every block of the grid through `fn`
    (`plan`: runtime.args.plan_arguments(kernel), kept by the caller)."""
    bound = bind_arguments(kernel, args, kwargs, plan)
    blocks = grid_blocks(kernel, bound)
    if blocks == 0:
        return
    slots = marshal(kernel, bound)
    address = ctypes.addressof(slots)
    ranges = block_ranges(blocks, workers())
    if len(ranges) == 1:
        statuses = [fn(address, 0, blocks)]
    else:
        # The calling thread runs the first range itself: one hand-off fewer.
        futures = [_get_pool().submit(fn, address, lo, hi) for lo, hi in ranges[1:]]
        statuses = [fn(address, *ranges[0])] + [f.result() for f in futures]
    for status in statuses:
        if status:
            message = status_messages.get(status, f"status {status}")
            raise TLError(f"{kernel.name}: {message} while running on cpu")
