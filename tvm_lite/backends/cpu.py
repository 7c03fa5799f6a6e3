"""target="cpu": compile a VM kernel to machine code and launch it on a thread pool.

The grid's blocks are split into contiguous ranges, one per worker; ctypes
releases the GIL during each call, so the ranges run on all cores at once.
Arguments are checked by runtime.args before any pointer reaches machine code.
"""
from __future__ import annotations

import ctypes
import itertools
import os
import struct
from concurrent.futures import ThreadPoolExecutor

import llvmlite.ir as ir

from ..errors import TLError
from ..ir import vm
from ..runtime.args import bind_arguments, eval_expr
from .cpu_codegen import KernelCodegen
from .cpu_math import STATUS_DIV_ZERO, STATUS_SHARED_RANGE
from .llvm import CodeLibrary, host

_STATUS_MESSAGES = {STATUS_DIV_ZERO: "integer division by zero",
                    STATUS_SHARED_RANGE: "shared memory access out of range"}
_pool: ThreadPoolExecutor | None = None


def _workers() -> int:
    return os.cpu_count() or 1


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="tl-cpu")
    return _pool


_symbols = itertools.count()


def lower_to_llvm(kernel: vm.Kernel, symbol: str) -> str:
    """LLVM IR text of the kernel's entry function, named `symbol`."""
    module = ir.Module(name=kernel.name)
    module.triple = host().triple
    KernelCodegen(kernel, module, symbol).build()
    return str(module)


class CPUKernel:
    target = "cpu"

    def __init__(self, kernel: vm.Kernel):
        self.kernel = kernel
        # Every compiled kernel lives in one process-wide JIT engine, so its
        # symbol must be unique: two specializations share a kernel name.
        symbol = f"tl_{kernel.name}_{next(_symbols)}"
        self.llvm_ir = lower_to_llvm(kernel, symbol)
        self.library = CodeLibrary(kernel.name)
        self.library.add_ir(self.llvm_ir)
        self.library.finalize()
        self._fn = self.library.function(symbol, ctypes.c_int32, ctypes.c_void_p,
                                         ctypes.c_int64, ctypes.c_int64)

    @property
    def name(self) -> str:
        return self.kernel.name

    def source(self, stage: str) -> str:
        if stage == "llvm":
            return self.library.optimized_ir
        if stage == "llvm-unoptimized":
            return self.llvm_ir
        if stage == "asm":
            return self.library.asm
        raise TLError(f"target 'cpu' has stages 'llvm' and 'asm', not '{stage}'")

    def __call__(self, *args, **kwargs) -> None:
        bound = bind_arguments(self.kernel, args, kwargs)
        slots = (ctypes.c_int64 * max(1, len(self.kernel.params)))()
        for i, p in enumerate(self.kernel.params):
            if isinstance(p, vm.Var):
                value = bound.scalars[p]
                slots[i] = struct.unpack("<q", struct.pack("<d", value))[0] if p.dtype.is_float else value
            elif isinstance(p, vm.GlobalTensor):
                slots[i] = bound.tensors[p].ctypes.data
            else:
                slots[i] = bound.pointers[p]
        grid = [int(eval_expr(g, bound.scalars)) for g in self.kernel.grid]
        blocks = 1
        for g in grid:
            blocks *= max(g, 0)
        if blocks == 0:
            return
        address = ctypes.addressof(slots)
        chunks = min(_workers(), blocks)
        bounds = [(blocks * i // chunks, blocks * (i + 1) // chunks) for i in range(chunks)]
        if chunks == 1:
            statuses = [self._fn(address, 0, blocks)]
        else:
            futures = [_get_pool().submit(self._fn, address, lo, hi) for lo, hi in bounds]
            statuses = [f.result() for f in futures]
        for status in statuses:
            if status:
                raise TLError(f"{self.kernel.name}: {_STATUS_MESSAGES.get(status, f'status {status}')} "
                              f"while running on cpu")
