"""Launch-time argument binding and checks, shared by every backend, and the
evaluation of block-uniform scalar expressions.

`bind_arguments` matches a call's arguments to a kernel's parameters and checks
each one against the signature *before* any backend touches memory, so a bad
call raises `TLLaunchError` (naming the kernel, the parameter, what was
expected and what was given) instead of reading out of bounds. No numpy
exception escapes it.

Scalar parameters take Python or numpy scalars (or 0-d arrays) of a
compatible kind: integer types take integers in the type's range (a bool only
for u1); float types take real numbers within ±max (inf and NaN only where the
format has them), and the value is rounded to the type (round to nearest
even), so every backend sees the same f32 or f16 number.

Storage convention for global tensors:
* dtypes numpy has natively (u8..u64, i8..i64, f16, f32, f64) are passed as
  arrays of exactly that dtype and shape;
* every other dtype (sub-byte ints, bf16, f8 and custom floats, i2..i7 ...)
  is passed as its packed little-endian bit stream (DESIGN.md section 4): a
  uint8 array of ceil(numel * nbits / 8) bytes (any shape; 1-D is typical),
  or an ml_dtypes array of the identical format and the exact shape
  (bfloat16 for bf16, float8_e4m3fn for f8e4m3, float8_e5m2 for f8e5m2).
Every array must be C-contiguous and aligned, and writeable if the kernel
stores to it.

Scalar expressions (`eval_expr`) use Python numbers. Integer results wrap to
the expression's dtype; `//`, `%` and `cdiv` use floor semantics; float
results are rounded to the expression's dtype (RNE, saturating), like tiles.
"""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass, field

import numpy as np

from ..errors import TLError, TLLaunchError
from ..ir import vm
from ..ir.dtypes import DataType, decode, encode, nbytes_for, numpy_dtype
from ..ir.functor import collect

# ml_dtypes names of the byte-sized formats whose bits match ours exactly. (Its
# 4- and 6-bit types keep one element per byte, which is not our bit stream.)
ML_DTYPES_NAMES = {"bf16": "bfloat16", "f8e4m3": "float8_e4m3fn", "f8e5m2": "float8_e5m2"}

_NUMPY_FLOATS = {"f16": np.float16, "f32": np.float32}


@dataclass(frozen=True)
class BoundArguments:
    """A call's arguments matched to the kernel's parameters."""
    scalars: dict = field(default_factory=dict)   # vm.Var -> int | float
    tensors: dict = field(default_factory=dict)   # vm.GlobalTensor -> the user's np.ndarray
    pointers: dict = field(default_factory=dict)  # vm.Pointer -> int

    def shape_of(self, g: vm.GlobalTensor) -> tuple[int, ...]:
        """g's shape with its symbolic dims evaluated from the bound scalars."""
        return tuple(int(eval_expr(s, self.scalars)) for s in g.shape)


# ------------------------------------------------------------ number rules


def round_float(values, dt: DataType) -> np.ndarray:
    """float64 values rounded to float type dt: round to nearest even, finite
    values beyond ±max saturate to ±max; ±inf and NaN follow `dtypes.encode`.
    Returns a new float64 array."""
    values = np.asarray(values, dtype=np.float64)
    if dt.name == "f64":
        return values.copy()
    native = _NUMPY_FLOATS.get(dt.name)
    if native is None:
        return decode(encode(values, dt), dt)
    # numpy's float64 -> float16/float32 conversions round to nearest even
    # directly from the double; only overflow differs (inf, where TL saturates).
    with np.errstate(over="ignore"):
        out = values.astype(native).astype(np.float64)
    over = np.isinf(out) & np.isfinite(values)
    if over.any():
        out = np.where(over, np.copysign(dt.max, values), out)
    return out


def round_scalar(value: float, dt: DataType) -> float:
    """One float rounded to dt (see `round_float`)."""
    if dt.name == "f64":
        return float(value)
    return float(round_float(np.float64(value), dt))


def int_to_float(value: int, dt: DataType) -> float:
    """An integer rounded once to float type dt (no double rounding above 2^53)."""
    if dt.mantissa_bits < 52 and abs(value) >= 1 << 53:
        keep = dt.mantissa_bits + 1
        shift = abs(value).bit_length() - keep
        q, rem = divmod(abs(value), 1 << shift)
        half = 1 << (shift - 1)
        q += rem > half or (rem == half and q & 1)
        value = (q << shift) * (1 if value > 0 else -1)   # exact in a double
    try:
        as_double = float(value)
    except OverflowError:
        as_double = math.copysign(math.inf, value)
    return round_scalar(as_double, dt)


def float_to_int(value: float, dt: DataType) -> int:
    """Round toward zero, saturate to dt's range, NaN -> 0 (the cast rule)."""
    if math.isnan(value):
        return 0
    if math.isinf(value):
        return dt.max if value > 0 else dt.min
    return min(max(int(value), dt.min), dt.max)


def wrap_int(value: int, dt: DataType) -> int:
    """Wrap a Python int to dt's width (two's complement for signed types)."""
    value &= dt.mask
    if dt.is_signed and value >> (dt.nbits - 1):
        value -= 1 << dt.nbits
    return value


# --------------------------------------------------------------- expressions


def _int_divisor(b: int, what: str) -> int:
    if b == 0:
        raise TLLaunchError(f"integer {what} by zero in a scalar expression")
    return b


def _floordiv(a, b):
    return a // _int_divisor(b, "division")


def _mod(a, b):
    return a % _int_divisor(b, "modulo")


def _cdiv(a, b):
    return -(-a // _int_divisor(b, "division (cdiv)"))


def shift_left(a: int, b: int) -> int:
    """TL's <<: an amount outside [0, 64) gives 0 (no undefined shifts)."""
    return a << b if 0 <= b < 64 else 0


def shift_right(a: int, b: int) -> int:
    """TL's >> (arithmetic): an amount outside [0, 64) shifts by 63."""
    return a >> (b if 0 <= b < 64 else 63)


def _bool(x) -> bool:
    return bool(x)   # NaN is true, as `x != 0` is for NaN


def _logical_and(a, b) -> bool:
    return _bool(a) and _bool(b)


def _logical_or(a, b) -> bool:
    return _bool(a) or _bool(b)


def _float_floordiv(a, b):
    return np.floor(np.true_divide(a, b))


def _float_cdiv(a, b):
    return np.ceil(np.true_divide(a, b))


def _rsqrt(a):
    return 1.0 / np.sqrt(a)


_COMPARE = {
    vm.BinaryOp.LT: operator.lt,
    vm.BinaryOp.LE: operator.le,
    vm.BinaryOp.GT: operator.gt,
    vm.BinaryOp.GE: operator.ge,
    vm.BinaryOp.EQ: operator.eq,
    vm.BinaryOp.NE: operator.ne,
    vm.BinaryOp.AND: _logical_and,
    vm.BinaryOp.OR: _logical_or,
}

_INT_BINARY = {
    vm.BinaryOp.ADD: operator.add,
    vm.BinaryOp.SUB: operator.sub,
    vm.BinaryOp.MUL: operator.mul,
    vm.BinaryOp.DIV: _floordiv,         # never built from TL ('/' needs floats); floors like //
    vm.BinaryOp.FLOOR_DIV: _floordiv,
    vm.BinaryOp.MOD: _mod,
    vm.BinaryOp.CDIV: _cdiv,
    vm.BinaryOp.BIT_AND: operator.and_,
    vm.BinaryOp.BIT_OR: operator.or_,
    vm.BinaryOp.BIT_XOR: operator.xor,
    vm.BinaryOp.SHL: shift_left,
    vm.BinaryOp.SHR: shift_right,
    vm.BinaryOp.MIN: min,
    vm.BinaryOp.MAX: max,
}

# Float scalars follow IEEE arithmetic (x / 0 is inf, log(-1) is NaN), as
# tiles do, rather than Python's exceptions; min/max propagate NaN.
_FLOAT_BINARY = {
    vm.BinaryOp.ADD: np.add,
    vm.BinaryOp.SUB: np.subtract,
    vm.BinaryOp.MUL: np.multiply,
    vm.BinaryOp.DIV: np.true_divide,
    vm.BinaryOp.FLOOR_DIV: _float_floordiv,
    vm.BinaryOp.MOD: np.mod,
    vm.BinaryOp.CDIV: _float_cdiv,
    vm.BinaryOp.MIN: np.minimum,
    vm.BinaryOp.MAX: np.maximum,
}

_FLOAT_UNARY = {
    vm.UnaryOp.NEG: np.negative,
    vm.UnaryOp.ABS: np.abs,
    vm.UnaryOp.EXP: np.exp,
    vm.UnaryOp.LOG: np.log,
    vm.UnaryOp.SQRT: np.sqrt,
    vm.UnaryOp.RSQRT: _rsqrt,
}


def _binary(e: vm.Binary, a, b):
    if e.op in _COMPARE:
        return int(_COMPARE[e.op](a, b))
    if isinstance(a, float) or isinstance(b, float):
        rule = _FLOAT_BINARY.get(e.op)
        if rule is None:
            raise TLError(f"'{e.op.value}' needs integer operands in a scalar expression")
        with np.errstate(all="ignore"):
            return float(rule(np.float64(a), np.float64(b)))
    return _INT_BINARY[e.op](a, b)


def _unary(e: vm.Unary, a):
    if e.op is vm.UnaryOp.NOT:
        return int(not _bool(a))
    if e.op is vm.UnaryOp.INVERT:
        if isinstance(a, float):
            raise TLError("'~' needs an integer in a scalar expression")
        return ~a
    if isinstance(a, int) and e.op in (vm.UnaryOp.NEG, vm.UnaryOp.ABS):
        return -a if e.op is vm.UnaryOp.NEG else abs(a)
    with np.errstate(all="ignore"):
        return float(_FLOAT_UNARY[e.op](np.float64(a)))


def canonical_scalar(value, dt: DataType):
    """A computed Python number in dt's canonical form."""
    if dt.is_float:
        return int_to_float(value, dt) if isinstance(value, int) else round_scalar(value, dt)
    if isinstance(value, float):
        return float_to_int(value, dt)
    return wrap_int(int(value), dt)


def eval_expr(e: vm.Expr, scalars: dict, block: tuple[int, int, int] = (0, 0, 0)):
    """Evaluate a block-uniform scalar expression with Python numbers (int or
    float), in the expression's dtype (module docstring). `scalars` maps
    `vm.Var`s to values; `block` is (block.x, block.y, block.z)."""
    if isinstance(e, vm.Const):
        return canonical_scalar(int(e.value) if isinstance(e.value, bool) else e.value, e.dtype)
    if isinstance(e, vm.Var):
        try:
            return scalars[e]
        except KeyError:
            raise TLError(f"scalar '{e.name}' has no value here") from None
    if isinstance(e, vm.BlockIdx):
        return block[e.axis]
    if isinstance(e, vm.Binary):
        value = _binary(e, eval_expr(e.lhs, scalars, block), eval_expr(e.rhs, scalars, block))
    elif isinstance(e, vm.Unary):
        value = _unary(e, eval_expr(e.operand, scalars, block))
    elif isinstance(e, vm.Select):
        cond = eval_expr(e.cond, scalars, block)
        value = eval_expr(e.true_value if _bool(cond) else e.false_value, scalars, block)
    elif isinstance(e, vm.ScalarCast):
        value = eval_expr(e.value, scalars, block)   # canonical_scalar applies the cast rule
    else:
        raise TLError(f"cannot evaluate scalar expression {type(e).__name__}")
    return canonical_scalar(value, e.dtype)


# ------------------------------------------------------------------ binding


@dataclass(frozen=True)
class ArgumentPlan:
    """What binding needs to know about a kernel, computed once per kernel
    (walking the body for the stored-to tensors costs more than the checks)."""
    names: tuple[str, ...]
    written: frozenset       # ids of the global tensors the kernel stores to


def plan_arguments(kernel: vm.Kernel) -> ArgumentPlan:
    written = {id(s.dst) for s in collect(kernel.body, vm.Store) + collect(kernel.body, vm.AtomicAdd)}
    return ArgumentPlan(tuple(p.name for p in kernel.params), frozenset(written))


def bind_arguments(kernel: vm.Kernel, args: tuple, kwargs: dict | None = None,
                   plan: ArgumentPlan | None = None) -> BoundArguments:
    """Match args/kwargs to kernel.params and check every one (module docstring).
    `plan` is plan_arguments(kernel), passed by callers that launch a kernel often."""
    plan = plan or plan_arguments(kernel)
    params = kernel.params
    names = plan.names
    if not kwargs and len(args) == len(params):
        values = dict(zip(names, args))
        return _bind_values(kernel, values, plan)
    return _bind_values(kernel, match_arguments(kernel, args, kwargs or {}, names), plan)


def match_arguments(kernel: vm.Kernel, args: tuple, kwargs: dict, names=None) -> dict:
    """{parameter name: value} from positional and keyword arguments, or a
    TLLaunchError naming what is extra, repeated or missing."""
    names = names or tuple(p.name for p in kernel.params)
    if len(args) > len(names):
        raise TLLaunchError(f"{kernel.name}: takes {len(names)} arguments "
                            f"({', '.join(names)}), got {len(args) + len(kwargs)}")
    values = dict(zip(names, args))
    for name, value in kwargs.items():
        if name not in names:
            raise TLLaunchError(f"{kernel.name}: no parameter named '{name}' "
                                f"(signature: {', '.join(names)})")
        if name in values:
            raise TLLaunchError(f"{kernel.name}: argument '{name}' given twice")
        values[name] = value
    missing = [n for n in names if n not in values]
    if missing:
        raise TLLaunchError(f"{kernel.name}: missing argument(s) {', '.join(missing)} "
                            f"(signature: {', '.join(names)})")
    return values


def _bind_values(kernel: vm.Kernel, values: dict, plan: ArgumentPlan) -> BoundArguments:
    params = kernel.params
    written = plan.written
    scalars: dict = {}
    for p in params:
        if isinstance(p, vm.Var):
            scalars[p] = check_scalar(kernel.name, p, values[p.name])
    tensors: dict = {}
    pointers: dict = {}
    for p in params:
        if isinstance(p, vm.GlobalTensor):
            shape = eval_shape(kernel.name, p, scalars)
            tensors[p] = check_tensor(kernel.name, p, shape, values[p.name], id(p) in written)
        elif isinstance(p, vm.Pointer):
            pointers[p] = _check_pointer(kernel.name, p, values[p.name])
    return BoundArguments(scalars, tensors, pointers)


def check_scalar(kname: str, p: vm.Var, value) -> int | float:
    dt = p.dtype
    where = f"{kname}: argument '{p.name}'"
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) and dt.nbits != 1:
        raise TLLaunchError(f"{where} must be {_a(dt.name)} {dt.name} number, got a bool")
    if dt.is_float:
        if not isinstance(value, numbers.Real):
            raise TLLaunchError(f"{where} must be {_a(dt.name)} {dt.name} number, "
                                f"got {type(value).__name__}")
        return _check_float_scalar(where, dt, value)
    if not isinstance(value, numbers.Integral):
        raise TLLaunchError(f"{where} must be an integer ({dt.name}), got {type(value).__name__}"
                            + (f" {value!r}" if isinstance(value, numbers.Real) else ""))
    value = int(value)
    if not dt.min <= value <= dt.max:
        raise TLLaunchError(f"{where} = {value} is out of range for {dt.name} [{dt.min}, {dt.max}]")
    return value


def _check_float_scalar(where: str, dt: DataType, value) -> float:
    if isinstance(value, numbers.Integral):
        value = int(value)
        if abs(value) > dt.max:
            raise TLLaunchError(f"{where} = {value} is out of range for {dt.name} [{dt.min}, {dt.max}]")
        return int_to_float(value, dt)
    value = float(value)
    if math.isnan(value) and not dt.has_nan:
        raise TLLaunchError(f"{where} is NaN, which {dt.name} cannot hold")
    if math.isinf(value) and not dt.has_inf:
        raise TLLaunchError(f"{where} is {value}, which {dt.name} cannot hold (max {dt.max})")
    if math.isfinite(value) and abs(value) > dt.max:
        raise TLLaunchError(f"{where} = {value} is out of range for {dt.name} [{dt.min}, {dt.max}]")
    return round_scalar(value, dt)


def _a(word: str) -> str:
    return "an" if word[0] in "aefhilmnorsx" else "a"   # by sound: "an f16", "a u4"


def eval_shape(kname: str, g: vm.GlobalTensor, scalars: dict) -> tuple[int, ...]:
    try:
        shape = tuple(eval_expr(s, scalars) for s in g.shape)
    except TLError as e:
        raise TLLaunchError(f"{kname}: cannot evaluate the shape of '{g.name}': {e.message}") from None
    if any(isinstance(d, float) for d in shape):
        raise TLLaunchError(f"{kname}: tensor '{g.name}' has a non-integer dimension {shape}")
    if any(d < 0 for d in shape):
        raise TLLaunchError(f"{kname}: tensor '{g.name}' has a negative dimension {shape} "
                            f"for the given scalar arguments")
    return shape


def _check_pointer(kname: str, p: vm.Pointer, value) -> int:
    if isinstance(value, np.ndarray):
        return value.ctypes.data
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and int(value) >= 0:
        return int(value)
    raise TLLaunchError(f"{kname}: argument '{p.name}' must be an array or an address, "
                        f"got {type(value).__name__}")


def _describe(a: np.ndarray) -> str:
    return f"{a.dtype} {tuple(a.shape)}"


def check_element_type(where: str, g: vm.GlobalTensor, shape: tuple[int, ...], dtype: np.dtype,
                       got_shape: tuple[int, ...], nbytes: int, got) -> None:
    """The array rule shared by every runtime: a type numpy has is passed with that
    dtype and shape; bf16/f8 as their ml_dtypes type; any other type as uint8 bytes
    of its packed bit stream (tl.pack). `got()` describes the argument for a
    message (called only on failure: formatting costs more than the checks)."""
    native = numpy_dtype(g.dtype)
    if native is not None:
        if dtype != native or got_shape != shape:
            raise TLLaunchError(f"{where} must be {np.dtype(native)} of shape {shape}, got {got()}")
        return
    ml_name = ML_DTYPES_NAMES.get(g.dtype.name)
    if ml_name is not None and dtype.name == ml_name:
        if got_shape != shape:
            raise TLLaunchError(f"{where} must be {ml_name} of shape {shape}, got {got()}")
    elif dtype == np.uint8:
        need = nbytes_for(math.prod(shape), g.dtype)
        if nbytes != need:
            raise TLLaunchError(f"{where} holds {g.dtype.name}{list(shape)} packed as a bit stream: "
                                f"it must be {need} uint8 bytes, got {nbytes} bytes")
    else:
        also = f" or {ml_name} of shape {shape}" if ml_name else ""
        raise TLLaunchError(f"{where} must be {g.dtype.name}{list(shape)} packed as uint8 bytes "
                            f"(see tl.pack){also}, got {got()}")


def check_tensor(kname: str, g: vm.GlobalTensor, shape: tuple[int, ...], value, written: bool) -> np.ndarray:
    where = f"{kname}: argument '{g.name}'"
    if not isinstance(value, np.ndarray):
        raise TLLaunchError(f"{where} must be a numpy array ({g.dtype.name}{list(shape)}), "
                            f"got {type(value).__name__}")
    check_element_type(where, g, shape, value.dtype, tuple(value.shape), value.nbytes, lambda: _describe(value))
    if not value.flags.c_contiguous:
        raise TLLaunchError(f"{where} must be C-contiguous, got strides {value.strides}")
    if not value.flags.aligned:
        raise TLLaunchError(f"{where} must be aligned to its {value.itemsize}-byte elements")
    if written and not value.flags.writeable:
        raise TLLaunchError(f"{where} is written by the kernel but the array is read-only")
    return value
