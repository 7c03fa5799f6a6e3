"""Value rules of the reference interpreter: canonical tiles, rounding,
conversions and the element-wise operations.

Canonical form of a tile of dtype dt (every instruction leaves its result in it):
* integers: an int64 array holding the value, wrapped to dt's width (two's
  complement for iN, modulo 2^N for uN). u64 is the one type whose values do
  not all fit in int64: its array holds the *bit pattern* (int64 view), and
  every operation whose result depends on signedness (comparisons, //, %,
  >>, min/max, conversion to float) works on the uint64 view of it;
* floats: a float64 array whose values are exactly representable in dt:
  every result is rounded to nearest, ties to even, and finite values beyond
  ±max saturate to ±max (±inf and NaN stay where dt has them; a format with
  no NaN turns NaN into +0, the `ir.dtypes.encode` rule).

Conversions (`convert`, the `cast` rule):
* to a float: RNE + saturation as above (integers above 2^53 are rounded
  exactly, not through float64 first);
* float -> integer: round toward zero, saturate to the integer range,
  NaN -> 0;
* integer -> integer: wrap (keep the low N bits), as C and PTX `cvt` do.
"""
from __future__ import annotations

import numpy as np

from ..errors import TLError
from ..ir import vm
from ..ir.dtypes import DataType, decode, encode
from ..runtime.args import round_float   # the one float rounding rule, shared with scalars


def is_u64(dt: DataType) -> bool:
    return dt.kind == "uint" and dt.nbits == 64


def empty_value(dt: DataType) -> type:
    """The numpy type of dt's canonical arrays."""
    return np.float64 if dt.is_float else np.int64


# ------------------------------------------------------------------- rounding


def wrap_int(values: np.ndarray, dt: DataType) -> np.ndarray:
    """Integer values (int64, uint64 or bool arrays) wrapped to dt's width, as int64."""
    values = np.asarray(values)
    if values.dtype == np.uint64:
        values = values.view(np.int64)
    values = values.astype(np.int64)   # a copy: tiles never share storage
    if dt.nbits >= 64:
        return values
    wrapped = values & np.int64(dt.mask)
    if dt.is_signed:
        sign = np.int64(1 << (dt.nbits - 1))
        wrapped = np.where(wrapped & sign, wrapped - (sign << 1), wrapped)
    return wrapped


def float_to_int(values: np.ndarray, dt: DataType) -> np.ndarray:
    """Round toward zero, saturate to dt's range, NaN -> 0 (canonical int64)."""
    v = np.nan_to_num(np.trunc(np.asarray(values, dtype=np.float64)), nan=0.0, posinf=np.inf, neginf=-np.inf)
    lo, hi = float(dt.min), float(dt.max)   # dt.max of a 64-bit type rounds up to 2^63 or 2^64
    small = v <= lo
    big = v >= hi
    inside = np.where(small | big, 0.0, v)
    if is_u64(dt):
        out = inside.astype(np.uint64)
        out = np.where(big, np.uint64(dt.max), np.where(small, np.uint64(0), out))
        return out.view(np.int64)
    out = inside.astype(np.int64)
    return np.where(big, np.int64(dt.max), np.where(small, np.int64(dt.min), out))


def int_to_float(values: np.ndarray, src: DataType, dt: DataType) -> np.ndarray:
    """Canonical integers of dtype src -> canonical floats of dtype dt, rounded once."""
    v = unsigned_view(values) if is_u64(src) else np.asarray(values, dtype=np.int64)
    as_double = v.astype(np.float64)
    if dt.mantissa_bits >= 52:
        return round_float(as_double, dt)
    # float64 holds every integer below 2^53 exactly; above it, converting to
    # double first would round twice. Round the magnitude to dt's precision
    # with integer arithmetic instead: the result is then exact in float64.
    large = np.abs(as_double) >= 2.0 ** 53
    if large.any():
        negative = np.zeros(int(large.sum()), bool) if is_u64(src) else v[large] < 0
        # |int64 min| wraps to itself, whose uint64 view is the right 2^63.
        mag = v[large] if is_u64(src) else np.abs(v[large]).view(np.uint64)
        # Bit length: float rounding can only overestimate it, by one.
        length = np.floor(np.log2(mag.astype(np.float64))).astype(np.int64) + 1
        length -= ((mag >> (length - 1).astype(np.uint64)) == 0).astype(np.int64)
        shift = (length - (dt.mantissa_bits + 1)).astype(np.uint64)    # >= 1 here
        q = mag >> shift
        rem = mag - (q << shift)
        half = np.uint64(1) << (shift - np.uint64(1))
        up = (rem > half) | ((rem == half) & ((q & np.uint64(1)) == 1))
        rounded = (q + up.astype(np.uint64)).astype(np.float64) * np.exp2(shift.astype(np.float64))
        as_double[large] = np.where(negative, -rounded, rounded)
    return round_float(as_double, dt)


def canonical(values, dt: DataType) -> np.ndarray:
    """Any computed array (bool, int64, uint64, float64) in dt's canonical form."""
    values = np.asarray(values)
    if dt.is_float:
        return round_float(values, dt)
    if values.dtype.kind == "f":
        return float_to_int(values, dt)
    return wrap_int(values, dt)


def convert(values: np.ndarray, src: DataType, dst: DataType) -> np.ndarray:
    """The `cast` rule (module docstring)."""
    if dst.is_float:
        return round_float(values, dst) if src.is_float else int_to_float(values, src, dst)
    if src.is_float:
        return float_to_int(values, dst)
    return wrap_int(values, dst)


def unsigned_view(values: np.ndarray) -> np.ndarray:
    """A canonical u64 array (bit patterns in int64) as uint64 values."""
    return np.asarray(values, dtype=np.int64).view(np.uint64)


def compute_form(values: np.ndarray, dt: DataType) -> np.ndarray:
    """The array an operation works on: the uint64 view for u64, else the values."""
    return unsigned_view(values) if is_u64(dt) else values


def to_bits(values: np.ndarray, dt: DataType) -> np.ndarray:
    """Bit patterns (uint64) of a canonical value array."""
    if dt.is_float:
        return encode(values, dt).astype(np.uint64)
    bits = np.asarray(values, dtype=np.int64).view(np.uint64)
    return bits & np.uint64(dt.mask) if dt.nbits < 64 else bits.copy()


def from_bits(bits: np.ndarray, dt: DataType) -> np.ndarray:
    """Bit patterns (uint64) -> canonical values of dt."""
    if dt.is_float:
        return decode(bits, dt)
    if is_u64(dt):
        return np.asarray(bits, dtype=np.uint64).view(np.int64).copy()
    return decode(bits, dt).astype(np.int64)


# ------------------------------------------------------- element-wise rules
# Each rule takes the instruction and its operands in compute form (float64,
# int64, uint64 for u64; numpy scalars for scalar operands) and returns the
# raw result, which the interpreter then puts in out.dtype's canonical form.


def _require_int(s: vm.Elementwise, *args) -> None:
    for a in args:
        if np.asarray(a).dtype.kind == "f":
            raise TLError(f"interp: '{s.op.value}' needs integer operands")


def _check_divisor(s: vm.Elementwise, a, b) -> None:
    if np.asarray(a).dtype.kind != "f" and np.asarray(b).dtype.kind != "f" and np.any(np.asarray(b) == 0):
        raise TLError(f"interp: integer {'modulo' if s.op is vm.ElementOp.MOD else 'division'} by zero")


def rule_add(s, a, b):
    return a + b


def rule_sub(s, a, b):
    return a - b


def rule_mul(s, a, b):
    return a * b


def rule_div(s, a, b):
    """True division for floats; on integers (never built from TL) it floors like //."""
    if s.out.dtype.is_float:
        return np.true_divide(a, b)
    return rule_floor_div(s, a, b)


def rule_floor_div(s, a, b):
    _check_divisor(s, a, b)
    if np.asarray(a).dtype.kind == "f" or np.asarray(b).dtype.kind == "f":
        return np.floor(np.true_divide(a, b))
    return np.floor_divide(a, b)


def rule_mod(s, a, b):
    """Python's %: the result takes the divisor's sign (floats too)."""
    _check_divisor(s, a, b)
    return np.mod(a, b)


def rule_bit_and(s, a, b):
    _require_int(s, a, b)
    return np.bitwise_and(a, b)


def rule_bit_or(s, a, b):
    _require_int(s, a, b)
    return np.bitwise_or(a, b)


def rule_bit_xor(s, a, b):
    _require_int(s, a, b)
    return np.bitwise_xor(a, b)


def _shift_amounts(a, b):
    b = np.asarray(b)
    inside = (b >= 0) & (b < 64) if b.dtype != np.uint64 else b < 64
    amount = np.where(inside, b, 63).astype(np.asarray(a).dtype)
    return inside, amount


def rule_shl(s, a, b):
    """An amount outside [0, 64) gives 0 (as on every backend)."""
    _require_int(s, a, b)
    inside, amount = _shift_amounts(a, b)
    return np.where(inside, np.left_shift(a, amount), 0).astype(np.asarray(a).dtype)


def rule_shr(s, a, b):
    """Arithmetic for signed, logical for unsigned; outside [0, 64) shifts by 63."""
    _require_int(s, a, b)
    _, amount = _shift_amounts(a, b)
    return np.right_shift(a, amount)


def rule_lt(s, a, b):
    return np.less(a, b)


def rule_le(s, a, b):
    return np.less_equal(a, b)


def rule_gt(s, a, b):
    return np.greater(a, b)


def rule_ge(s, a, b):
    return np.greater_equal(a, b)


def rule_eq(s, a, b):
    return np.equal(a, b)


def rule_ne(s, a, b):
    return np.not_equal(a, b)


def rule_and(s, a, b):
    return np.logical_and(a, b)


def rule_or(s, a, b):
    return np.logical_or(a, b)


def rule_min(s, a, b):
    """NaN propagates (IEEE 754-2019 minimum), as numpy.minimum."""
    return np.minimum(a, b)


def rule_max(s, a, b):
    return np.maximum(a, b)


def rule_neg(s, a):
    return np.negative(a)


def rule_invert(s, a):
    _require_int(s, a)
    return np.invert(a)


def rule_not(s, a):
    return np.logical_not(a)


def rule_abs(s, a):
    return np.abs(a)


def _as_float(a):
    return np.asarray(a, dtype=np.float64)


def rule_exp(s, a):
    return np.exp(_as_float(a))


def rule_log(s, a):
    return np.log(_as_float(a))


def rule_sqrt(s, a):
    return np.sqrt(_as_float(a))


def rule_rsqrt(s, a):
    """1 / sqrt(x) in float64, then rounded once to the result type."""
    return 1.0 / np.sqrt(_as_float(a))


def rule_where(s, c, a, b):
    """A nonzero condition (NaN included) selects the first value."""
    return np.where(np.asarray(c) != 0, a, b)


ELEMENT_RULES = {
    vm.ElementOp.ADD: rule_add,
    vm.ElementOp.SUB: rule_sub,
    vm.ElementOp.MUL: rule_mul,
    vm.ElementOp.DIV: rule_div,
    vm.ElementOp.FLOOR_DIV: rule_floor_div,
    vm.ElementOp.MOD: rule_mod,
    vm.ElementOp.BIT_AND: rule_bit_and,
    vm.ElementOp.BIT_OR: rule_bit_or,
    vm.ElementOp.BIT_XOR: rule_bit_xor,
    vm.ElementOp.SHL: rule_shl,
    vm.ElementOp.SHR: rule_shr,
    vm.ElementOp.LT: rule_lt,
    vm.ElementOp.LE: rule_le,
    vm.ElementOp.GT: rule_gt,
    vm.ElementOp.GE: rule_ge,
    vm.ElementOp.EQ: rule_eq,
    vm.ElementOp.NE: rule_ne,
    vm.ElementOp.AND: rule_and,
    vm.ElementOp.OR: rule_or,
    vm.ElementOp.MIN: rule_min,
    vm.ElementOp.MAX: rule_max,
    vm.ElementOp.NEG: rule_neg,
    vm.ElementOp.INVERT: rule_invert,
    vm.ElementOp.NOT: rule_not,
    vm.ElementOp.ABS: rule_abs,
    vm.ElementOp.EXP: rule_exp,
    vm.ElementOp.LOG: rule_log,
    vm.ElementOp.SQRT: rule_sqrt,
    vm.ElementOp.RSQRT: rule_rsqrt,
    vm.ElementOp.WHERE: rule_where,
}

assert set(ELEMENT_RULES) == set(vm.ElementOp), "every element-wise op needs an interpreter rule"
