"""Exact, vectorized conversions between reals and the bit patterns of a float type.

This module holds the arithmetic; `tvm_lite.ir.dtypes` holds the types and
derives every constant used here (bias, max_bits, inf_bits, nan_bits) in one
place, `DataType`. The functions take any object with those attributes, so
this module imports nothing from `dtypes` at run time.

Encoding (`encode_floats`) rounds a float64 to nearest, ties to even, with no
double rounding and without a Python loop per element:
* when the result is a normal number of the target, the rounding is integer
  arithmetic on the float64 bit pattern: add half an ulp of the target minus
  one, plus the bit that will become the last mantissa bit, then shift right.
  A carry out of the mantissa moves into the exponent field, which is exactly
  the next binade, so no special case is needed;
* when the result is a subnormal of the target (or zero), the step between
  values is the constant 2^(1-bias-M). Adding C = 2^52 * step to |x| makes
  the FPU round |x| to a multiple of step (IEEE addition rounds to nearest
  even by default), and bits(C + |x|) - bits(C) is that multiple, which is the
  subnormal pattern (2^M when it rounds up to the smallest normal).
Then: finite values beyond ±max saturate to ±max in every format, ±inf
becomes ±inf where the format has infinities and ±max elsewhere, NaN becomes
the format's canonical NaN (positive sign) or +0 in a format without NaN,
and -0.0 keeps its sign bit.

Decoding (`decode_floats`) is exact: every value of a float type with at most
10 exponent bits, and of f32/f64, is a float64. Formats of at most 16 bits go
through a table of all 2^N values, built once with the vectorized formula.
"""
from __future__ import annotations

import functools
import math

import numpy as np

_F64_MAG = np.uint64((1 << 63) - 1)      # everything but the sign bit
_F64_INF = np.uint64(0x7FF << 52)        # bits of +inf; larger magnitudes are NaN


def pattern_value(pattern: int, dt) -> float:
    """The value of one finite bit pattern of float type `dt` (pure Python, exact).

    Assumes `pattern` is not an inf/NaN pattern of `dt`; used to derive
    properties such as max and the smallest subnormal.
    """
    e, m = dt.exponent_bits, dt.mantissa_bits
    sign = -1.0 if pattern >> (e + m) & 1 else 1.0
    exp = pattern >> m & ((1 << e) - 1)
    man = pattern & ((1 << m) - 1)
    if exp == 0:
        return sign * math.ldexp(man, 1 - dt.bias - m)
    return sign * math.ldexp((1 << m) | man, exp - dt.bias - m)


def decode_formula(bits: np.ndarray, dt) -> np.ndarray:
    """Values (float64) of uint64 patterns of `dt` by the field formula.

    Assumes `bits` are already masked to dt.nbits. NaN and inf keep the
    pattern's sign, as hardware conversions do. Exact for every format this
    package accepts (exponent fields of at most 11 bits).
    """
    e, m = dt.exponent_bits, dt.mantissa_bits
    bits = np.asarray(bits, dtype=np.uint64)
    negative = (bits >> np.uint64(e + m)) != 0
    exp = ((bits >> np.uint64(m)) & np.uint64((1 << e) - 1)).astype(np.int64)
    man = (bits & np.uint64((1 << m) - 1)).astype(np.int64)
    normal = exp != 0
    # significand * 2^scale; both parts are exact in float64 (M <= 52).
    significand = np.where(normal, man | (1 << m), man).astype(np.float64)
    scale = np.where(normal, exp, 1) - dt.bias - m
    values = np.ldexp(significand, scale)
    if dt.inf_bits is not None:                      # "ieee": all-ones exponent
        top = exp == (1 << e) - 1
        values[top] = np.where(man[top] == 0, np.inf, np.nan)
    elif dt.nan_bits is not None:                    # "fn": only S.1..1.1..1 is NaN
        values[(bits & np.uint64(dt.mask >> 1)) == np.uint64(dt.nan_bits)] = np.nan
    return np.where(negative, -values, values)


@functools.lru_cache(maxsize=None)
def decode_table(dt) -> np.ndarray:
    """All 2^N values of a float type of at most 16 bits, indexed by pattern (read-only)."""
    table = decode_formula(np.arange(1 << dt.nbits, dtype=np.uint64), dt)
    table.flags.writeable = False
    return table


def decode_floats(bits: np.ndarray, dt) -> np.ndarray:
    """Values (float64, same shape) of uint64 patterns of float type `dt`.

    Assumes `bits` are masked to dt.nbits. Exact; NaN/inf per the flavour.
    """
    if dt.name == "f64":
        return bits.view(np.float64).copy()
    if dt.name == "f32":     # the hardware format: a view is exact and fast
        return bits.astype(np.uint32).view(np.float32).astype(np.float64)
    if dt.nbits <= 16:
        # Index with a 1-D view so that 0-d input still gives an array.
        return decode_table(dt)[bits.reshape(-1)].reshape(bits.shape)
    return decode_formula(bits, dt)


def encode_floats(values, dt) -> np.ndarray:
    """Bit patterns (uint64, same shape) of reals for float type `dt`.

    `values` may be any real array-like; it is first converted to float64
    (exact for float16/float32/float64 input and integers up to 2^53).
    Rounding, saturation, inf, NaN and -0 follow the module docstring.
    """
    x = np.asarray(values, dtype=np.float64)
    shape = x.shape
    x = x.reshape(-1)                # 1-D, so that 0-d input still gets arrays below
    raw = x.view(np.uint64)
    mag = raw & _F64_MAG
    if dt.name == "f64":
        bits = raw.copy()
    else:
        bits = _round_magnitude(x, mag, dt)
        if dt.inf_bits is not None:
            bits[mag == _F64_INF] = dt.inf_bits
        bits |= (raw >> np.uint64(63)) << np.uint64(dt.nbits - 1)
    nan = mag > _F64_INF
    if nan.any():
        bits[nan] = dt.nan_bits if dt.nan_bits is not None else 0
    return bits.reshape(shape)


def _round_magnitude(x: np.ndarray, mag: np.ndarray, dt) -> np.ndarray:
    """Pattern of |x| rounded to nearest even, saturated at dt.max_bits.

    `mag` is the float64 pattern of |x|. NaN and inf come out as max_bits;
    the caller replaces them.
    """
    m, bias = dt.mantissa_bits, dt.bias
    shift = 52 - m                       # > 0: only f64 keeps all 52 bits
    # Normal results: integer round-to-nearest-even on the float64 pattern.
    # mag < 2^63 and the addend < 2^52, so nothing wraps.
    q = mag + np.uint64((1 << (shift - 1)) - 1)
    q += (mag >> np.uint64(shift)) & np.uint64(1)
    q >>= np.uint64(shift)
    # Re-bias the exponent field. Results that are subnormal in the target
    # wrap around here; they are replaced below, before saturation.
    q -= np.uint64((1023 - bias) << m)
    small = mag < np.uint64((1023 + 1 - bias) << 52)     # |x| < smallest normal
    if small.any():
        step_times_2_52 = math.ldexp(1.0, 53 - bias - m)
        magic = np.abs(x[small]) + step_times_2_52       # rounds |x| to a multiple of the step
        q[small] = magic.view(np.uint64) - np.float64(step_times_2_52).view(np.uint64)
    np.minimum(q, np.uint64(dt.max_bits), out=q)
    return q
