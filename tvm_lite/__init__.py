"""tvm_lite: a kernel compiler and VM for arbitrary-bit-width GPU and CPU computation.

The public API (DESIGN.md section 6) lives here. Data types are module
attributes for every valid name: ``tl.u3``, ``tl.f6e3m2``, ``tl.bf16``.
"""
from .errors import (
    SourceLocation,
    TLCompileError,
    TLDTypeError,
    TLError,
    TLLaunchError,
    TLLayoutError,
    TLSyntaxError,
    TLTargetError,
    TLTypeError,
)
from .ir.dtypes import DataType, dtype, pack, unpack
from .frontend.compile import compile
from . import cuda, ops
from .ops.quantize import QuantizedTensor, dequantize, quantize

__version__ = "0.1.0"


def __getattr__(name: str):
    # Any valid dtype name is an attribute (tl.u3, tl.f6e3m2); everything else
    # is a normal AttributeError so that hasattr() and tooling behave.
    try:
        return dtype(name)
    except TLDTypeError:
        raise AttributeError(f"module 'tvm_lite' has no attribute {name!r}") from None
