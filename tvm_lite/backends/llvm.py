"""The only module that touches llvmlite: host target, optimization and JIT.

One process-wide target machine and MCJIT engine live behind a lock (numba's
codegen.CodeLibrary is the model). A `CodeLibrary` collects LLVM IR text,
optimizes it at O3 with LLVM's new pass manager for the host CPU, finalizes
it into the engine and hands out function addresses; it keeps the optimized
IR and the assembly so that `source("llvm")` and `source("asm")` can show them.

Facts about llvmlite 0.50 (LLVM 22): `llvm.initialize()` raises, so targets and
asm printers are initialized explicitly; float loops vectorize only with
fast-math flags, which the code generator places where reassociation is
allowed.
"""
from __future__ import annotations

import ctypes
import functools
import threading

import llvmlite.binding as llvm

from ..errors import TLCompileError

_lock = threading.RLock()


@functools.lru_cache(maxsize=1)
def _initialize() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    llvm.initialize_native_asmparser()


@functools.lru_cache(maxsize=1)
def host() -> "HostTarget":
    _initialize()
    return HostTarget()


class HostTarget:
    """The host CPU: triple, name, features and the JIT engine."""

    def __init__(self):
        self.triple = llvm.get_process_triple()
        self.cpu_name = llvm.get_host_cpu_name()
        self.features = llvm.get_host_cpu_features().flatten()
        target = llvm.Target.from_triple(self.triple)
        self.machine = target.create_target_machine(cpu=self.cpu_name, features=self.features,
                                                    opt=3, reloc="default", codemodel="jitdefault")
        # The engine starts from an empty module; libraries are added to it.
        empty = llvm.parse_assembly("")
        empty.triple = self.triple
        self.engine = llvm.create_mcjit_compiler(empty, self.machine)

    @property
    def simd_bits(self) -> int:
        """Widest vector registers the host has (512 with AVX-512F, 256 with AVX2)."""
        flags = set(f[1:] for f in self.features.split(",") if f.startswith("+"))
        if "avx512f" in flags:
            return 512
        if "avx2" in flags or "avx" in flags:
            return 256
        return 128

    def has(self, feature: str) -> bool:
        return f"+{feature}" in self.features.split(",")

    @property
    def key(self) -> str:
        """Identifies the code this host gets, for compile-cache keys."""
        return f"{self.triple}|{self.cpu_name}|{self.features}"


class CodeLibrary:
    """LLVM IR in, callable machine code out.

    `compile()` optimizes the IR and emits an object file; `load()` puts an
    object file (fresh, or from the compile cache) into the JIT engine. The
    optimized module is kept, and its IR text and assembly are produced when
    first asked for (`optimized_ir`, `asm`: for `source("llvm"/"asm")`), so
    a compile does not pay for text nobody reads.
    """

    def __init__(self, name: str):
        self.name = name
        self._modules: list[str] = []
        self._loaded = False
        self._optimized = None      # the optimized ModuleRef, after compile()
        self._text: dict[str, str] = {}

    @property
    def compiled(self) -> bool:
        return self._optimized is not None

    @property
    def optimized_ir(self) -> str:
        return self._stage("llvm", str)

    @property
    def asm(self) -> str:
        return self._stage("asm", host().machine.emit_assembly)

    def _stage(self, name: str, render) -> str:
        if self._optimized is None:
            return ""
        with _lock:
            if name not in self._text:
                self._text[name] = render(self._optimized)
            return self._text[name]

    def add_ir(self, ir_text: str) -> None:
        if self._loaded:
            raise TLCompileError(f"library {self.name} is already loaded")
        self._modules.append(ir_text)

    def _optimized_module(self):
        target = host()
        module = None
        for text in self._modules:
            try:
                parsed = llvm.parse_assembly(text)
                parsed.verify()
            except RuntimeError as e:
                raise TLCompileError(f"invalid LLVM IR generated for {self.name}: {e}") from None
            if module is None:
                module = parsed
            else:
                module.link_in(parsed)
        module.triple = target.triple
        module.data_layout = str(target.machine.target_data)
        options = llvm.create_pipeline_tuning_options(speed_level=3)
        options.loop_vectorization = True
        options.slp_vectorization = True
        builder = llvm.create_pass_builder(target.machine, options)
        builder.getModulePassManager().run(module, builder)
        return module

    def compile(self) -> bytes:
        """Optimize (O3) and emit an object file for the host."""
        with _lock:
            self._optimized = self._optimized_module()
            self._text.clear()
            return host().machine.emit_object(self._optimized)

    def load(self, obj: bytes) -> None:
        """Add an object file to the process's JIT engine."""
        engine = host().engine
        with _lock:
            engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
            engine.finalize_object()
            self._loaded = True

    def finalize(self) -> None:
        self.load(self.compile())

    def address(self, symbol: str) -> int:
        if not self._loaded:
            self.finalize()
        addr = host().engine.get_function_address(symbol)
        if not addr:
            raise TLCompileError(f"symbol {symbol} not found in library {self.name}")
        return addr

    def function(self, symbol: str, restype, *argtypes):
        """A ctypes function for `symbol`; ctypes releases the GIL while it runs."""
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.address(symbol))
