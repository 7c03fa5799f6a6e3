"""target="cpu": compile a VM kernel to machine code and launch it on a thread pool.

The grid's blocks are split into contiguous ranges, one per worker; ctypes
releases the GIL during each call, so the ranges run on all cores at once.
Arguments are checked by runtime.args before any pointer reaches machine code.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import llvmlite.ir as ir

from ..errors import TLError
from ..ir import vm
from ..ir.printer import format_kernel
from ..runtime.args import bind_arguments, eval_expr
from ..runtime.cache import CompileCache, cache_key
from .cpu_codegen import KernelCodegen
from .cpu_math import STATUS_DIV_ZERO, STATUS_SHARED_RANGE, STATUS_ZERO_STEP
from .llvm import CodeLibrary, host

_STATUS_MESSAGES = {STATUS_DIV_ZERO: "integer division by zero",
                    STATUS_SHARED_RANGE: "shared memory access out of range",
                    STATUS_ZERO_STEP: "range step is 0"}
_pool: ThreadPoolExecutor | None = None


def _workers() -> int:
    return os.cpu_count() or 1


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="tl-cpu")
    return _pool


def lower_to_llvm(kernel: vm.Kernel, symbol: str) -> str:
    """LLVM IR text of the kernel's entry function, named `symbol`."""
    module = ir.Module(name=kernel.name)
    module.triple = host().triple
    KernelCodegen(kernel, module, symbol).build()
    return str(module)


@functools.lru_cache(maxsize=1)
def compiler_digest() -> str:
    """A hash of the compiler's own sources: a codegen change is a new key even
    when the package version stays the same."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".lark"):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


_cache = CompileCache()
_loaded: dict[str, object] = {}     # cache key -> ctypes function, per process
_loaded_lock = threading.Lock()
_SIGNATURE = (ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)


class CPUKernel:
    target = "cpu"

    def __init__(self, kernel: vm.Kernel):
        self.kernel = kernel
        key = cache_key(program=format_kernel(kernel), target="cpu", host=host().key,
                        compiler=compiler_digest())
        # One process-wide JIT engine holds every kernel: the symbol carries
        # the key, so two specializations of one kernel never collide.
        self.symbol = f"tl_{kernel.name}_{key[:16]}"
        self._library: CodeLibrary | None = None
        with _loaded_lock:
            fn = _loaded.get(key)
            if fn is None:
                obj = _cache.get_or_build(key, lambda: self._new_library().compile())
                library = CodeLibrary(kernel.name)
                library.load(obj)
                fn = library.function(self.symbol, *_SIGNATURE)
                _loaded[key] = fn
        self._fn = fn

    def _new_library(self) -> CodeLibrary:
        self._library = CodeLibrary(self.kernel.name)
        self._library.add_ir(lower_to_llvm(self.kernel, self.symbol))
        return self._library

    def source(self, stage: str) -> str:
        if stage not in ("llvm", "asm", "llvm-unoptimized"):
            raise TLError(f"target 'cpu' has stages 'llvm' and 'asm', not '{stage}'")
        if stage == "llvm-unoptimized":
            return lower_to_llvm(self.kernel, self.symbol)
        if self._library is None or not self._library.asm:
            self._new_library().compile()   # loaded from the cache: recompile for text only
        return self._library.optimized_ir if stage == "llvm" else self._library.asm

    @property
    def name(self) -> str:
        return self.kernel.name

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
