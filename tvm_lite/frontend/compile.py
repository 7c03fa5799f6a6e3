"""`tl.compile`: TL source or path -> a Module of callable kernels.

Stages are kept on the module (Triton's CompiledKernel.asm does the same), so
`mod.source("ast")`, `mod.source("vm")` and the backend stages can be read
without running anything.
"""
from __future__ import annotations

import os
import pickle
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..errors import TLCompileError, TLError, TLTargetError
from ..ir import vm
from ..ir.printer import format_program
from ..passes.manager import default_vm_passes, run_passes
from ..runtime.cache import CompileCache, cache_key, compiler_digest
from ..runtime.target import Target, parse_target
from . import ast
from .ast_printer import format_ast
from .builder import build_program

_PARSE_CACHE_SIZE = 256
_parse_cache: "OrderedDict[tuple[str, str], ast.Module]" = OrderedDict()   # least recently used first
_parse_lock = threading.Lock()
_ast_cache = CompileCache()


def _read_source(source_or_path: Any) -> tuple[str, str]:
    """(text, filename). A Path, or a one-line string naming a .tl or existing file, is read."""
    # A kernel takes at least two lines, so a one-line string is a path when it
    # names a .tl file or any existing file.
    if isinstance(source_or_path, os.PathLike) or (
            isinstance(source_or_path, str) and "\n" not in source_or_path
            and (source_or_path.endswith(".tl") or os.path.isfile(source_or_path))):
        path = Path(source_or_path)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as e:
            raise TLError(f"cannot read TL source {str(path)!r}: not UTF-8 text ({e.reason} "
                          f"at byte {e.start})") from None
        except (OSError, ValueError) as e:   # ValueError: a NUL byte in the path
            raise TLError(f"cannot read TL source {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(source_or_path, str):
        raise TLError(f"tl.compile takes TL source text or a path, got {type(source_or_path).__name__}")
    return source_or_path, "<string>"


def _ast_key(text: str, filename: str) -> str:
    return cache_key(stage="ast", text=text, filename=filename, compiler=compiler_digest())


def _load_ast(key: str) -> ast.Module | None:
    """A parsed AST from the disk cache. Entries are checksummed, and the key
    holds the compiler's sources; anything unreadable is parsed again."""
    blob = _ast_cache.get(key)
    if blob is None:
        return None
    try:
        tree = pickle.loads(blob)
    except Exception:   # unpickling can fail with almost any exception
        return None
    return tree if isinstance(tree, ast.Module) else None


def parse_cached(text: str, filename: str) -> ast.Module:
    """parse(), memoized by (source text, file name) in a bounded LRU table
    and on disk (the compile cache), so that a new process compiling a cached
    kernel neither parses nor imports lark (together ~40 ms).

    The file name is part of the key because diagnostics raised later (by the
    builder) name it; ASTs are immutable, so sharing them is safe.
    """
    key = (text, filename)
    with _parse_lock:
        hit = _parse_cache.get(key)
        if hit is not None:
            _parse_cache.move_to_end(key)
            return hit
    disk_key = _ast_key(text, filename)
    tree = _load_ast(disk_key)
    if tree is None:
        from .parser import parse   # imports lark: only when something must be parsed
        tree = parse(text, filename)
        _ast_cache.put(disk_key, pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL))
    with _parse_lock:
        _parse_cache[key] = tree
        while len(_parse_cache) > _PARSE_CACHE_SIZE:
            _parse_cache.popitem(last=False)
    return tree


class Kernel:
    """One compiled kernel: call it with the kernel's arguments."""

    def __init__(self, vm_kernel: vm.Kernel, target: Target):
        self.vm = vm_kernel
        self.target = target
        self._impl = None

    @property
    def name(self) -> str:
        return self.vm.name

    def build(self) -> "Kernel":
        """Compile for the target now instead of at the first call."""
        self._backend()
        return self

    def _backend(self):
        if self._impl is None:
            from ..backends import build_kernel
            self._impl = build_kernel(self.vm, self.target)
        return self._impl

    def __call__(self, *args, **kwargs):
        return self._backend()(*args, **kwargs)

    def source(self, stage: str) -> str:
        return self._backend().source(stage)

    def __repr__(self) -> str:
        return f"<tl kernel {self.name} for {self.target}>"


class Module:
    """The kernels of one TL source, compiled for one target."""

    def __init__(self, module_ast: ast.Module, program: vm.Program, target: Target):
        self.ast = module_ast
        self.program = program
        self.target = target
        self.kernels = {k.name: Kernel(k, target) for k in program.kernels}

    def __getitem__(self, name: str) -> Kernel:
        try:
            return self.kernels[name]
        except KeyError:
            raise TLError(f"no kernel named {name!r}; this module has "
                          f"{', '.join(self.kernels) or 'none'}") from None

    def __getattr__(self, name: str) -> Kernel:
        kernels = self.__dict__.get("kernels", {})
        if name in kernels:
            return kernels[name]
        raise AttributeError(f"module has no kernel {name!r}; it has {', '.join(kernels) or 'none'}")

    def __iter__(self):
        return iter(self.kernels.values())

    def source(self, stage: str) -> str:
        if stage == "ast":
            return format_ast(self.ast)
        if stage == "vm":
            return format_program(self.program)
        texts = [f"// kernel {k.name}\n{k.source(stage)}" for k in self.kernels.values()]
        return "\n".join(texts)


def compile(source_or_path: Any, target: str = "cpu", **constants) -> Module:
    """Compile TL source (text or a path to a .tl file) for `target`.

    Keyword arguments set compile-time parameters, e.g. WT="u3", BN=64.
    Every failure is a TLError; anything else escaping is a compiler bug and
    is reported as TLCompileError.
    """
    try:
        tgt = parse_target(target)
        text, filename = _read_source(source_or_path)
        module_ast = parse_cached(text, filename)
        program = run_passes(build_program(module_ast, constants, text, filename), default_vm_passes())
        return Module(module_ast, program, tgt)
    except TLError:
        raise
    except RecursionError:
        raise TLCompileError("the program is nested too deeply to compile") from None
    except Exception as e:  # a compiler bug: never let a raw traceback through
        raise TLCompileError(f"internal compiler error ({type(e).__name__}: {e}); "
                             f"please report this with the kernel source") from e


__all__ = ["compile", "Module", "Kernel", "TLTargetError"]
