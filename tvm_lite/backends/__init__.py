"""Backends: each turns a VM kernel into a callable for one target kind.

    interp    backends.interp.InterpKernel      numpy, directly on the VM IR (the reference)
    cpu       backends.cpu.CPUKernel            VM IR -> LLVM IR -> host machine code
    cuda-emu  backends.emulator.EmulatedKernel  VM IR -> thread IR, run by the numpy emulator
    cuda      backends.cuda.CUDAKernel          VM IR -> thread IR -> PTX -> driver JIT
"""
from __future__ import annotations

from ..ir import vm
from ..runtime.target import Target


def build_kernel(kernel: vm.Kernel, target: Target):
    """A callable object with `__call__(*args)` and `source(stage)`."""
    if target.kind == "interp":
        from .interp import InterpKernel
        return InterpKernel(kernel)
    if target.kind == "cpu":
        from .cpu import CPUKernel
        return CPUKernel(kernel)
    if target.kind == "cuda-emu":
        from .emulator import EmulatedKernel
        return EmulatedKernel(kernel, target)
    assert target.kind == "cuda", target
    from .cuda import CUDAKernel
    return CUDAKernel(kernel, target)
