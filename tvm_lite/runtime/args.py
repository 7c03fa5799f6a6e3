"""Launch-time argument binding and checks, shared by every backend.

`bind_arguments` matches a call's arguments to a kernel's parameters and checks
each one against the signature *before* any backend touches memory, so a bad
call raises `TLLaunchError` instead of reading out of bounds.

Storage convention for global tensors:
* dtypes numpy has natively (u8..u64, i8..i64, f16, f32, f64) are passed as
  arrays of exactly that dtype and shape;
* every other dtype (sub-byte ints, bf16, f8 and custom floats, i2..i7 ...)
  is passed as its packed little-endian bit stream (DESIGN.md section 4): a
  uint8 array of ceil(numel * nbits / 8) bytes, or an ml_dtypes array of the
  identical format and the exact shape.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..errors import TLLaunchError
from ..ir import vm
from ..ir.dtypes import DataType, nbytes_for, numpy_dtype
from ..ir.functor import collect

# ml_dtypes names of the byte-sized formats whose bits match ours exactly. (Its
# 4- and 6-bit types keep one element per byte, which is not our bit stream.)
_ML_DTYPES_NAMES = {"bf16": "bfloat16", "f8e4m3": "float8_e4m3fn", "f8e5m2": "float8_e5m2"}


@dataclass(frozen=True)
class BoundArguments:
    """A call's arguments matched to the kernel's parameters."""
    scalars: dict = field(default_factory=dict)   # vm.Var -> int | float
    tensors: dict = field(default_factory=dict)   # vm.GlobalTensor -> np.ndarray
    pointers: dict = field(default_factory=dict)  # vm.Pointer -> int

    def shape_of(self, g: vm.GlobalTensor) -> tuple[int, ...]:
        return tuple(int(eval_expr(s, self.scalars)) for s in g.shape)


# --------------------------------------------------------------- expressions


def _floordiv(a, b):
    if b == 0:
        raise TLLaunchError("integer division by zero in a scalar expression")
    return a // b


def _mod(a, b):
    if b == 0:
        raise TLLaunchError("integer modulo by zero in a scalar expression")
    return a % b


def _cdiv(a, b):
    if b == 0:
        raise TLLaunchError("cdiv by zero in a scalar expression")
    return -(-a // b)


def shift_left(a: int, b: int) -> int:
    """TL's <<: an amount outside [0, 64) gives 0 (no undefined shifts)."""
    return a << b if 0 <= b < 64 else 0


def shift_right(a: int, b: int) -> int:
    """TL's >> (arithmetic): an amount outside [0, 64) shifts by 63."""
    return a >> (b if 0 <= b < 64 else 63)


_BINARY = {
    vm.BinaryOp.ADD: lambda a, b: a + b,
    vm.BinaryOp.SUB: lambda a, b: a - b,
    vm.BinaryOp.MUL: lambda a, b: a * b,
    vm.BinaryOp.DIV: lambda a, b: a / b,
    vm.BinaryOp.FLOOR_DIV: _floordiv,
    vm.BinaryOp.MOD: _mod,
    vm.BinaryOp.CDIV: _cdiv,
    vm.BinaryOp.BIT_AND: lambda a, b: a & b,
    vm.BinaryOp.BIT_OR: lambda a, b: a | b,
    vm.BinaryOp.BIT_XOR: lambda a, b: a ^ b,
    vm.BinaryOp.SHL: shift_left,
    vm.BinaryOp.SHR: shift_right,
    vm.BinaryOp.LT: lambda a, b: int(a < b),
    vm.BinaryOp.LE: lambda a, b: int(a <= b),
    vm.BinaryOp.GT: lambda a, b: int(a > b),
    vm.BinaryOp.GE: lambda a, b: int(a >= b),
    vm.BinaryOp.EQ: lambda a, b: int(a == b),
    vm.BinaryOp.NE: lambda a, b: int(a != b),
    vm.BinaryOp.AND: lambda a, b: int(bool(a) and bool(b)),
    vm.BinaryOp.OR: lambda a, b: int(bool(a) or bool(b)),
    vm.BinaryOp.MIN: min,
    vm.BinaryOp.MAX: max,
}

# Float scalars follow IEEE arithmetic (x / 0 is inf, log(-1) is NaN), as tiles
# do, rather than Python's exceptions.
_FLOAT_BINARY = {
    vm.BinaryOp.DIV: np.true_divide,
    vm.BinaryOp.FLOOR_DIV: lambda a, b: np.floor(np.true_divide(a, b)),
    vm.BinaryOp.MOD: np.mod,
}

_UNARY = {
    vm.UnaryOp.NEG: lambda a: -a,
    vm.UnaryOp.INVERT: lambda a: ~a,
    vm.UnaryOp.NOT: lambda a: int(not a),
    vm.UnaryOp.ABS: abs,
    vm.UnaryOp.EXP: np.exp,
    vm.UnaryOp.LOG: np.log,
    vm.UnaryOp.SQRT: np.sqrt,
    vm.UnaryOp.RSQRT: lambda a: 1.0 / np.sqrt(a),
}


def wrap_int(value: int, dt: DataType) -> int:
    """Wrap a Python int to dt's width (two's complement for signed types)."""
    value &= dt.mask
    if dt.is_signed and value >> (dt.nbits - 1):
        value -= 1 << dt.nbits
    return value


def eval_expr(e: vm.Expr, scalars: dict, block: tuple[int, int, int] = (0, 0, 0)):
    """Evaluate a block-uniform scalar expression with Python numbers.

    Integer results wrap to the expression's dtype; `//` and `%` follow
    Python's floor semantics (the TL rule).
    """
    if isinstance(e, vm.Const):
        return e.value
    if isinstance(e, vm.Var):
        return scalars[e]
    if isinstance(e, vm.BlockIdx):
        return block[e.axis]
    if isinstance(e, vm.Binary):
        a, b = eval_expr(e.lhs, scalars, block), eval_expr(e.rhs, scalars, block)
        if e.op in _FLOAT_BINARY and (isinstance(a, float) or isinstance(b, float)):
            with np.errstate(all="ignore"):
                value = float(_FLOAT_BINARY[e.op](np.float64(a), np.float64(b)))
        else:
            value = _BINARY[e.op](a, b)
    elif isinstance(e, vm.Unary):
        operand = eval_expr(e.operand, scalars, block)
        with np.errstate(all="ignore"):
            value = _UNARY[e.op](np.float64(operand) if e.op.is_function and e.op != vm.UnaryOp.ABS
                                 else operand)
    elif isinstance(e, vm.Select):
        cond = eval_expr(e.cond, scalars, block)
        return eval_expr(e.true_value if cond else e.false_value, scalars, block)
    elif isinstance(e, vm.ScalarCast):
        value = eval_expr(e.value, scalars, block)
        if e.type.is_float:
            return float(value)
        value = int(value)  # toward zero
    else:
        raise TLLaunchError(f"cannot evaluate scalar expression {type(e).__name__}")
    if e.dtype.is_float:
        return float(value)
    return wrap_int(int(value), e.dtype)


# ------------------------------------------------------------------ binding


def bind_arguments(kernel: vm.Kernel, args: tuple, kwargs: dict | None = None) -> BoundArguments:
    """Match args/kwargs to kernel.params and check every one (see module doc)."""
    kwargs = dict(kwargs or {})
    params = kernel.params
    if len(args) > len(params):
        raise TLLaunchError(f"{kernel.name}: takes {len(params)} arguments, got {len(args) + len(kwargs)}")
    values = dict(zip((p.name for p in params), args))
    for name, value in kwargs.items():
        if name not in {p.name for p in params}:
            raise TLLaunchError(f"{kernel.name}: no parameter named '{name}'")
        if name in values:
            raise TLLaunchError(f"{kernel.name}: argument '{name}' given twice")
        values[name] = value
    missing = [p.name for p in params if p.name not in values]
    if missing:
        raise TLLaunchError(f"{kernel.name}: missing argument(s) {', '.join(missing)} "
                            f"(signature: {', '.join(p.name for p in params)})")
    scalars: dict = {}
    for p in params:
        if isinstance(p, vm.Var):
            scalars[p] = _check_scalar(kernel.name, p, values[p.name])
    written = {id(s.dst) for s in collect(kernel, vm.Store) + collect(kernel, vm.AtomicAdd)}
    tensors: dict = {}
    pointers: dict = {}
    for p in params:
        if isinstance(p, vm.GlobalTensor):
            shape = _eval_shape(kernel.name, p, scalars)
            tensors[p] = _check_tensor(kernel.name, p, shape, values[p.name], id(p) in written)
        elif isinstance(p, vm.Pointer):
            pointers[p] = _check_pointer(kernel.name, p, values[p.name])
    return BoundArguments(scalars, tensors, pointers)


def _check_scalar(kname: str, p: vm.Var, value) -> int | float:
    dt = p.dtype
    if isinstance(value, (bool, np.bool_)) and dt.nbits != 1:
        raise TLLaunchError(f"{kname}: argument '{p.name}' must be {dt.name}, got a bool")
    if dt.is_float:
        if not isinstance(value, numbers.Real):
            raise TLLaunchError(f"{kname}: argument '{p.name}' must be a {dt.name} number, "
                                f"got {type(value).__name__}")
        return float(value)
    if not isinstance(value, numbers.Integral):
        raise TLLaunchError(f"{kname}: argument '{p.name}' must be an integer ({dt.name}), "
                            f"got {type(value).__name__}")
    value = int(value)
    if not dt.min <= value <= dt.max:
        raise TLLaunchError(f"{kname}: argument '{p.name}' = {value} is out of range for "
                            f"{dt.name} [{dt.min}, {dt.max}]")
    return value


def _eval_shape(kname: str, g: vm.GlobalTensor, scalars: dict) -> tuple[int, ...]:
    shape = tuple(int(eval_expr(s, scalars)) for s in g.shape)
    if any(d < 0 for d in shape):
        raise TLLaunchError(f"{kname}: tensor '{g.name}' has a negative dimension {shape} "
                            f"for the given scalar arguments")
    return shape


def _check_pointer(kname: str, p: vm.Pointer, value) -> int:
    if isinstance(value, np.ndarray):
        return value.ctypes.data
    if isinstance(value, numbers.Integral) and int(value) >= 0:
        return int(value)
    raise TLLaunchError(f"{kname}: argument '{p.name}' must be an array or an address")


def _describe(a: np.ndarray) -> str:
    return f"{a.dtype} {tuple(a.shape)}"


def _check_tensor(kname: str, g: vm.GlobalTensor, shape: tuple[int, ...], value, written: bool) -> np.ndarray:
    where = f"{kname}: argument '{g.name}'"
    if not isinstance(value, np.ndarray):
        raise TLLaunchError(f"{where} must be a numpy array, got {type(value).__name__}")
    native = numpy_dtype(g.dtype)
    if native is not None:
        if value.dtype != native or tuple(value.shape) != shape:
            raise TLLaunchError(f"{where} must be {np.dtype(native)} of shape {shape}, "
                                f"got {_describe(value)}")
    else:
        ml_name = _ML_DTYPES_NAMES.get(g.dtype.name)
        if ml_name is not None and value.dtype.name == ml_name:
            if tuple(value.shape) != shape:
                raise TLLaunchError(f"{where} must have shape {shape}, got {_describe(value)}")
        elif value.dtype == np.uint8:
            need = nbytes_for(math.prod(shape), g.dtype)
            if value.nbytes != need:
                raise TLLaunchError(
                    f"{where} holds {g.dtype.name}{list(shape)} packed as a bit stream: it must be "
                    f"{need} uint8 bytes, got {value.nbytes} bytes")
        else:
            raise TLLaunchError(f"{where} must be {g.dtype.name} packed as uint8 bytes "
                                f"(see tl.pack), got {_describe(value)}")
    if not value.flags.c_contiguous:
        raise TLLaunchError(f"{where} must be C-contiguous")
    if not value.flags.aligned:
        raise TLLaunchError(f"{where} is not aligned to its element size")
    if written and not value.flags.writeable:
        raise TLLaunchError(f"{where} is written by the kernel but the array is read-only")
    return value
