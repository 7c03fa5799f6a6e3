"""Backends: each turns a VM kernel into a callable for one target kind."""
from __future__ import annotations

from ..errors import TLTargetError
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
    raise TLTargetError(f"target '{target}' has no backend in this version of tvm_lite yet; "
                        f"use target='interp' or 'cpu'")
