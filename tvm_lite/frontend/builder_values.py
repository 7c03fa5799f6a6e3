"""Values while building VM IR: what they are, how to describe them, and which
implicit conversions are allowed.

A value is one of: a Python int / float / bool (a compile-time constant), a
DataType, a vm.Expr (a runtime scalar), a vm.RegisterTensor, vm.SharedTensor,
vm.GlobalTensor or vm.Pointer, a register or shared layout, BLOCK (the name
`block`), or a tuple (a list literal).
"""
from __future__ import annotations

from typing import Any

from ..ir import vm
from ..ir.dtypes import DataType
from ..ir.layout import RegisterLayout
from ..ir.shared_layout import SharedLayout
from .builder_layouts import describe_layout

BLOCK = object()          # the `block` name; `block.x` is a BlockIdx


def is_const(v: Any) -> bool:
    return isinstance(v, (bool, int, float)) and not isinstance(v, DataType)


def is_scalar(v: Any) -> bool:
    return is_const(v) or isinstance(v, vm.Expr)


def is_lossless(src: DataType, dst: DataType) -> bool:
    """Every value of src is exactly a value of dst."""
    if src == dst:
        return True
    if src.is_integer and dst.is_integer:
        return dst.min <= src.min and src.max <= dst.max
    if src.is_integer:
        magnitude_bits = src.nbits - (1 if src.is_signed else 0)
        return dst.mantissa_bits + 1 >= magnitude_bits and dst.max >= src.max
    if dst.is_integer:
        return False
    return (dst.mantissa_bits >= src.mantissa_bits and dst.max >= src.max
            and _smallest_exponent(dst) <= _smallest_exponent(src)
            and (dst.has_inf or not src.has_inf) and (dst.has_nan or not src.has_nan))


def _smallest_exponent(t: DataType) -> int:
    """The exponent of a float type's smallest subnormal."""
    return 1 - t.bias - t.mantissa_bits


def _article(word: str) -> str:
    return "an" if word[0] in "aefhilmnorsx" else "a"   # by sound: "an i32", "an f16", "a u4"


def describe(v: Any) -> str:
    if v is BLOCK:
        return "'block'"
    if isinstance(v, bool):
        return f"the bool {v}"
    if isinstance(v, int):
        return f"the integer {v}"
    if isinstance(v, float):
        return f"the number {v}"
    if isinstance(v, DataType):
        return f"the dtype {v.name}"
    if isinstance(v, vm.RegisterTensor):
        return f"{_article(v.dtype.name)} {v.dtype.name}{list(v.shape)} tile"
    if isinstance(v, vm.SharedTensor):
        return f"the shared tensor {v.dtype.name}{list(v.shape)}"
    if isinstance(v, vm.GlobalTensor):
        return f"the global tensor '{v.name}'"
    if isinstance(v, vm.Pointer):
        return f"the pointer '{v.name}'"
    if isinstance(v, vm.Expr):
        return f"{_article(v.dtype.name)} {v.dtype.name} scalar"
    if isinstance(v, tuple):
        return f"a list of {len(v)}"
    if isinstance(v, (RegisterLayout, SharedLayout)):
        return describe_layout(v)
    return type(v).__name__
