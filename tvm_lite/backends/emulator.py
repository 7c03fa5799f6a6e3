"""target="cuda-emu": the numpy emulator of the thread IR.

    k = EmulatedKernel(vm_kernel, target)   # lowers through backends/gpu_pipeline.lower_for_gpu
    k(*args, **kwargs)                      # binds like the CPU backend, runs every block
    k.source("thread" | "vm" | "ptx")

    run_thread_kernel(thread_kernel, grid, arrays={name: ndarray}, scalars={name: value})
        # runs a hand-built thread kernel (tests)

Execution (emulator_exec.py): all `threads` of a block run in lockstep as
numpy vector lanes, with active masks for divergent control flow; blocks run
one after the other. Instruction semantics (emulator_values.py) are PTX's,
bit for bit, except the .approx float functions (ex2, lg2, sin, cos, tanh),
which are computed exactly and rounded once, and mma, whose f32 result is the
exact sum of products rounded once.

Memory and hazard checks (emulator_memory.py): global memory is the caller's
arrays at fake, far-apart base addresses (writes go through to the arrays);
shared memory is per block, filled with random garbage at block start.
A HazardError (a TLCompileError: the lowering produced a kernel a GPU would
punish) names the statement, the thread and the address for: out-of-bounds
global or shared accesses, misaligned accesses, shared-memory races (read
after another thread's write, or write after another thread's read, with no
bar.sync in between), a cp.async destination touched before its
wait_group, a divergent bar.sync, and ldmatrix/mma/shfl executed with lanes
of the warp inactive. Registers start as random garbage too.
"""
from __future__ import annotations

import contextlib
import gc
import numbers

import numpy as np

from ..errors import TLError, TLLaunchError
from ..ir import thread as T
from ..ir import vm
from ..runtime.args import bind_arguments, eval_expr
from . import emulator_values as V
from .emulator_exec import CompiledKernel, compile_kernel, run_blocks
from .emulator_memory import EmulatorError, GlobalMemory, HazardError

STAGES = ("thread", "vm", "ptx")


@contextlib.contextmanager
def _gc_paused():
    """Lowering a kernel and compiling its closures allocate ~10^5 small objects that
    live as long as the kernel, and emulation allocates many short-lived ones: the
    cyclic collector, triggered by those allocations, rescans the whole (large) heap
    of a test session again and again, which cost 3-6x the work itself (measured on
    qmatmul). None of these objects form cycles that need collecting meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


__all__ = ["EmulatedKernel", "run_thread_kernel", "EmulatorError", "HazardError", "STAGES"]


def _grid_of(grid) -> tuple[int, int, int]:
    dims = [int(grid)] if isinstance(grid, numbers.Integral) else [int(g) for g in grid]
    if not 1 <= len(dims) <= 3:
        raise TLLaunchError(f"a grid has 1 to 3 dimensions, got {len(dims)}")
    dims += [1] * (3 - len(dims))
    return tuple(max(d, 0) for d in dims)


def _param_bits(reg: T.Reg, value) -> int:
    """The raw bits a scalar kernel parameter register holds for `value`."""
    if reg.type.is_pred:
        raise TLLaunchError(f"parameter {reg.name} is a predicate; kernels take no predicate parameters")
    if reg.type.is_float:
        return V.imm_bits(float(value), reg.type)
    return int(value) & ((1 << reg.type.nbits) - 1)


def run_thread_kernel(kernel: T.ThreadKernel, grid, arrays: dict | None = None, scalars: dict | None = None,
                      seed: int = 0, compiled: CompiledKernel | None = None) -> dict:
    """Run `kernel` for every block of `grid` (an int or up to 3 ints).

    `arrays` maps pointer parameter names to numpy arrays (C-contiguous; stores
    write into them); `scalars` maps the other parameter names to numbers.
    Returns {parameter name: fake base address} of the arrays."""
    arrays = dict(arrays or {})
    scalars = dict(scalars or {})
    names = [p.name for p in kernel.params]
    unknown = [n for n in list(arrays) + list(scalars) if n not in names]
    if unknown:
        raise TLLaunchError(f"{kernel.name}: no parameter named {', '.join(map(repr, unknown))} "
                            f"(parameters: {', '.join(names)})")
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            raise TLLaunchError(f"{kernel.name}: array argument '{name}' must be a C-contiguous numpy array")
    gmem = GlobalMemory(list(arrays.items()))
    bases = {name: gmem.base(i) for i, name in enumerate(arrays)}
    values = {}
    for p in kernel.params:
        if p.name in arrays:
            values[p] = bases[p.name]
        elif p.name in scalars:
            values[p] = _param_bits(p, scalars[p.name])
        else:
            raise TLLaunchError(f"{kernel.name}: missing argument '{p.name}'")
    prog = compiled or compile_kernel(kernel)
    dims = _grid_of(grid)
    if min(dims) > 0:
        run_blocks(prog, dims, gmem, values, seed)
    return bases


class EmulatedKernel:
    """A VM kernel lowered to thread IR and run by the numpy emulator."""

    target_kind = "cuda-emu"

    def __init__(self, kernel: vm.Kernel, target):
        from .gpu_pipeline import lower_for_gpu
        self.kernel = kernel
        self.target = target
        with _gc_paused():
            self.thread_kernel = lower_for_gpu(kernel, target)
            self._compiled = compile_kernel(self.thread_kernel)
        names = [p.name for p in self.thread_kernel.params]
        if names != [p.name for p in kernel.params]:
            raise EmulatorError(f"{kernel.name}: the thread kernel's parameters {names} do not match the "
                                f"VM kernel's {[p.name for p in kernel.params]}")

    @property
    def name(self) -> str:
        return self.kernel.name

    def source(self, stage: str) -> str:
        if stage == "thread":
            return T.format_thread_kernel(self.thread_kernel)
        if stage == "vm":
            from ..ir.printer import format_kernel
            return format_kernel(self.kernel)
        if stage == "ptx":
            from .ptx import emit_ptx
            return emit_ptx(self.thread_kernel, self.target.sm)
        raise TLError(f"target '{self.target}' has stages {', '.join(repr(s) for s in STAGES)}, not {stage!r}")

    def __call__(self, *args, **kwargs) -> None:
        bound = bind_arguments(self.kernel, args, kwargs)
        dims = self._grid(bound)
        # Global arrays: the bound tensors, plus arrays passed for raw pointers.
        arrays: list[tuple[str, np.ndarray]] = []
        for p in self.kernel.params:
            if isinstance(p, vm.GlobalTensor):
                arrays.append((p.name, bound.tensors[p]))
        raw_args = dict(zip([p.name for p in self.kernel.params], args))
        raw_args.update(kwargs)
        for p in self.kernel.params:
            if isinstance(p, vm.Pointer) and isinstance(raw_args.get(p.name), np.ndarray):
                arrays.append((p.name, np.ascontiguousarray(raw_args[p.name])
                               if not raw_args[p.name].flags.c_contiguous else raw_args[p.name]))
        gmem = GlobalMemory(arrays)
        index = {name: i for i, (name, _) in enumerate(arrays)}
        values = {}
        for p, reg in zip(self.kernel.params, self.thread_kernel.params):
            if isinstance(p, vm.GlobalTensor):
                values[reg] = gmem.base(index[p.name])
            elif isinstance(p, vm.Pointer):
                values[reg] = self._pointer_address(p, raw_args.get(p.name), arrays, gmem, index)
            else:
                values[reg] = _param_bits(reg, bound.scalars[p])
        if min(dims) > 0:
            with _gc_paused():
                run_blocks(self._compiled, dims, gmem, values)

    def _grid(self, bound) -> tuple[int, int, int]:
        if len(self.kernel.grid) > 3:
            raise TLError(f"{self.kernel.name}: grid has {len(self.kernel.grid)} dimensions, at most 3")
        dims = [int(eval_expr(g, bound.scalars)) for g in self.kernel.grid]
        return tuple(dims + [1] * (3 - len(dims)))

    def _pointer_address(self, p, value, arrays, gmem, index) -> int:
        if isinstance(value, np.ndarray):
            return gmem.base(index[p.name])
        address = int(value)
        for name, arr in arrays:
            start = arr.ctypes.data
            if start <= address < start + max(arr.nbytes, 1):
                return gmem.base(index[name]) + (address - start)
        raise TLLaunchError(f"{self.kernel.name}: argument '{p.name}' = 0x{address:x} is a raw address "
                            f"outside every array of this call; the cuda-emu target can only follow "
                            f"addresses into arrays passed to the same call")

    def __repr__(self) -> str:
        return f"<EmulatedKernel {self.kernel.name} ({self.target})>"


