"""target="cpu": compile a VM kernel to machine code; a callable kernel object.

    CPUKernel(vm_kernel)            # compiles (or loads from the compile cache)
    kernel(*args)                   # runs it (runtime.cpu_launch)
    kernel.source("llvm" | "asm" | "llvm-unoptimized")

Stages: VM kernel --cpu_codegen--> LLVM IR text --llvm.CodeLibrary (O3, host
CPU)--> object code --MCJIT--> a function address. The object code is what
the compile cache stores, keyed by the printed kernel, the host CPU and the
compiler's own sources, so a warm compile skips LLVM entirely.
"""
from __future__ import annotations

import struct
import threading

from ..errors import TLError
from ..ir import vm
from ..ir.printer import format_kernel
from ..runtime.args import plan_arguments
from ..runtime.cache import CompileCache, cache_key, compiler_digest
from ..runtime.cpu_launch import KERNEL_SIGNATURE, STATUS_MESSAGES, launch
from .llvm import CodeLibrary, host

STAGES = ("vm", "llvm", "asm", "llvm-unoptimized")


def lower_to_llvm(kernel: vm.Kernel, symbol: str) -> str:
    """LLVM IR text of the kernel's entry function, named `symbol`."""
    # Imported here: a kernel loaded from the compile cache never needs the
    # code generator (or llvmlite.ir), which would add tens of ms to a cold start.
    import llvmlite.ir as ir

    from .cpu_codegen import KernelCodegen

    module = ir.Module(name=kernel.name)
    module.triple = host().triple
    KernelCodegen(kernel, module, symbol).build()
    return str(module)


def kernel_cache_key(kernel: vm.Kernel) -> str:
    return cache_key(program=format_kernel(kernel), constants=kernel.constants, target="cpu",
                     host=host().key, compiler=compiler_digest())


def plausible_object(obj: bytes, symbol: str) -> bool:
    """A relocatable 64-bit little-endian ELF file for this machine that names
    `symbol`: checked before LLVM sees it, because a malformed object file
    crashes the JIT instead of raising."""
    machines = {"x86_64": 62, "aarch64": 183}
    arch = host().triple.split("-")[0]
    if "linux" not in host().triple:      # Mach-O / COFF: only the symbol check
        return symbol.encode() in obj
    if len(obj) < 64 or obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        return False
    e_type, e_machine = struct.unpack_from("<HH", obj, 16)
    if e_type != 1 or (arch in machines and e_machine != machines[arch]):
        return False
    return symbol.encode() + b"\0" in obj


_cache = CompileCache()
_loaded: dict[str, object] = {}     # cache key -> ctypes function, per process
_loaded_lock = threading.Lock()


class CPUKernel:
    target = "cpu"

    def __init__(self, kernel: vm.Kernel):
        self.kernel = kernel
        key = kernel_cache_key(kernel)
        # One process-wide JIT engine holds every kernel: the symbol carries
        # the key, so two specializations of one kernel never collide.
        self.symbol = f"tl_{kernel.name}_{key[:16]}"
        self._library: CodeLibrary | None = None
        with _loaded_lock:
            fn = _loaded.get(key)
            if fn is None:
                obj = _cache.get_or_build(key, lambda: self._new_library().compile())
                if not plausible_object(obj, self.symbol):
                    # A checksummed entry that is still not our object code (a
                    # bug, or another writer): loading it could crash LLVM.
                    obj = self._new_library().compile()
                    _cache.put(key, obj)
                library = CodeLibrary(kernel.name)
                library.load(obj)
                fn = library.function(self.symbol, *KERNEL_SIGNATURE)
                _loaded[key] = fn
        self._fn = fn
        self._plan = plan_arguments(kernel)

    def _new_library(self) -> CodeLibrary:
        self._library = CodeLibrary(self.kernel.name)
        self._library.add_ir(lower_to_llvm(self.kernel, self.symbol))
        return self._library

    @property
    def name(self) -> str:
        return self.kernel.name

    def source(self, stage: str) -> str:
        if stage not in STAGES:
            raise TLError(f"target 'cpu' has stages {', '.join(repr(s) for s in STAGES)}, not {stage!r}")
        if stage == "vm":
            from ..ir.printer import format_kernel
            return format_kernel(self.kernel)
        if stage == "llvm-unoptimized":
            return lower_to_llvm(self.kernel, self.symbol)
        if self._library is None or not self._library.compiled:
            self._new_library().compile()   # loaded from the cache: recompile for the text only
        return self._library.optimized_ir if stage == "llvm" else self._library.asm

    def __call__(self, *args, **kwargs) -> None:
        launch(self.kernel, self._fn, args, kwargs, STATUS_MESSAGES, self._plan)


__all__ = ["CPUKernel", "lower_to_llvm", "kernel_cache_key", "compiler_digest"]
