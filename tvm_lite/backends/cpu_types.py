"""How CPU code stores and computes each data type, and the conversions.

A tile element is *stored* in f32/f64 for those types and as its raw bit
pattern (i8..i64) for every other type, integers included; it is *computed*
in double or i64. Narrow floats (f16, bf16, f8, any fNeEmM) are encoded and
decoded with integer operations on the double's bits, the same algorithm as
`ir.dtypes.encode`: round to nearest even, saturating. That needs no `half`
support from the target and no runtime library calls (LLVM lowers f64 -> f16
truncation to a libcall that the JIT cannot resolve).
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..errors import TLTargetError
from ..ir.dtypes import DataType

I1, I8, I16, I32, I64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
F16, F32, F64 = ir.HalfType(), ir.FloatType(), ir.DoubleType()
_NATIVE_FLOATS = {"f32": F32, "f64": F64}


def row_major_strides(shape) -> list[int]:
    """Element strides of a row-major array of `shape`."""
    out, s = [], 1
    for n in reversed(shape):
        out.append(s)
        s *= n
    return out[::-1]


def int_storage(nbits: int) -> ir.IntType:
    for width in (8, 16, 32, 64):
        if nbits <= width:
            return ir.IntType(width)
    raise TLTargetError(f"no CPU storage for {nbits}-bit integers")


def storage_type(dt: DataType) -> ir.Type:
    """The type of one element of a tile of dtype dt."""
    if dt.name in _NATIVE_FLOATS:
        return _NATIVE_FLOATS[dt.name]
    if dt.is_float and dt.exponent_bits > 11:
        raise TLTargetError(f"no lowering for {dt.name} on cpu (exponent wider than a double's)")
    return int_storage(dt.nbits)


def compute_type(dt: DataType) -> ir.Type:
    return F64 if dt.is_float else I64


class Convert:
    """Conversions between storage and compute values, emitted with a builder."""

    def __init__(self, builder: ir.IRBuilder, intrinsic, f16c: bool = False):
        self.b = builder
        self.intrinsic = intrinsic   # name, types -> function
        # With F16C, f16 <-> f32 are single instructions (vcvtph2ps/vcvtps2ph);
        # without it LLVM would call a runtime library the JIT cannot resolve.
        self.f16c = f16c

    # storage <-> compute
    def widen(self, value: ir.Value, dt: DataType) -> ir.Value:
        b = self.b
        if dt.is_integer:
            if value.type.width == 64:
                return value
            return b.sext(value, I64) if dt.is_signed else b.zext(value, I64)
        if dt.name == "f64":
            return value
        if dt.name == "f32":
            return b.fpext(value, F64)
        if dt.name == "f16" and self.f16c:
            return b.fpext(b.fpext(b.bitcast(value, F16), F32), F64)
        return self.decode(b.zext(value, I64) if value.type.width < 64 else value, dt)

    def narrow(self, value: ir.Value, dt: DataType) -> ir.Value:
        """Round (floats) or wrap (integers) a compute value into dt's storage."""
        b = self.b
        if dt.is_integer:
            value = self.wrap(value, dt)
            st = storage_type(dt)
            return value if st.width == 64 else b.trunc(value, st)
        if dt.name == "f64":
            return value
        if dt.name == "f32":
            return b.fptrunc(self.saturate(value, dt), F32)
        if dt.name == "f16" and self.f16c:
            # Rounding to odd in f32 first makes the final f32 -> f16 rounding
            # exact: f32 has more than 11 + 2 significand bits.
            half = b.fptrunc(self.round_to_odd_f32(self.saturate(value, dt)), F16)
            return b.bitcast(half, I16)
        bits = self.encode(value, dt)
        st = storage_type(dt)
        return bits if st.width == 64 else b.trunc(bits, st)

    def round_to_odd_f32(self, value: ir.Value) -> ir.Value:
        """double -> float rounded to odd: truncate, then set the last bit if inexact."""
        b = self.b
        f = b.fptrunc(value, F32)
        back = b.fpext(f, F64)
        inexact = b.fcmp_ordered("!=", back, value)
        fabs = self.intrinsic("llvm.fabs", F64)
        away = b.fcmp_ordered(">", b.call(fabs, [back]), b.call(fabs, [value]))
        bits = b.bitcast(f, I32)
        bits = b.select(b.and_(inexact, away), b.sub(bits, ir.Constant(I32, 1)), bits)
        bits = b.select(inexact, b.or_(bits, ir.Constant(I32, 1)), bits)
        return b.bitcast(bits, F32)

    def wrap(self, value: ir.Value, dt: DataType) -> ir.Value:
        """i64 -> i64 holding the value wrapped to dt's width."""
        if dt.nbits >= 64:
            return value
        shift = ir.Constant(I64, 64 - dt.nbits)
        up = self.b.shl(value, shift)
        return self.b.ashr(up, shift) if dt.is_signed else self.b.lshr(up, shift)

    def saturate(self, value: ir.Value, dt: DataType) -> ir.Value:
        """Finite values beyond ±max become ±max; inf and NaN pass."""
        b = self.b
        mag = b.call(self.intrinsic("llvm.fabs", F64), [value])
        big = b.fcmp_ordered(">", mag, ir.Constant(F64, dt.max))
        finite = b.fcmp_ordered("!=", mag, ir.Constant(F64, float("inf")))
        limit = b.call(self.intrinsic("llvm.copysign", F64), [ir.Constant(F64, dt.max), value])
        return b.select(b.and_(big, finite), limit, value)

    def decode(self, bits: ir.Value, dt: DataType) -> ir.Value:
        """i64 bit pattern of a float type -> its double value (exact)."""
        b = self.b
        e, m = dt.exponent_bits, dt.mantissa_bits
        c = lambda v: ir.Constant(I64, v)  # noqa: E731
        exp = b.and_(b.lshr(bits, c(m)), c((1 << e) - 1))
        man = b.and_(bits, c((1 << m) - 1))
        negative = b.icmp_unsigned("!=", b.and_(bits, c(1 << (e + m))), c(0))
        # Normal: place exponent and mantissa into a double's fields.
        normal_bits = b.or_(b.shl(b.add(exp, c(1023 - dt.bias)), c(52)), b.shl(man, c(52 - m)))
        normal = b.bitcast(normal_bits, F64)
        subnormal = b.fmul(b.uitofp(man, F64), ir.Constant(F64, 2.0 ** (1 - dt.bias - m)))
        value = b.select(b.icmp_unsigned("==", exp, c(0)), subnormal, normal)
        mag_bits = b.and_(bits, c((1 << (e + m)) - 1))
        if dt.flavour == "ieee":
            top = b.icmp_unsigned("==", exp, c((1 << e) - 1))
            special = b.select(b.icmp_unsigned("==", man, c(0)), ir.Constant(F64, float("inf")),
                               ir.Constant(F64, float("nan")))
            value = b.select(top, special, value)
        elif dt.flavour == "fn":
            value = b.select(b.icmp_unsigned("==", mag_bits, c((1 << (e + m)) - 1)),
                             ir.Constant(F64, float("nan")), value)
        return b.select(negative, b.fneg(value), value)

    def encode(self, value: ir.Value, dt: DataType) -> ir.Value:
        """double -> i64 bit pattern of dt: nearest even, saturating (see ir.dtypes)."""
        b = self.b
        e, m = dt.exponent_bits, dt.mantissa_bits
        c = lambda v: ir.Constant(I64, v)  # noqa: E731
        raw = b.bitcast(value, I64)
        sign = b.lshr(raw, c(63))
        mag = b.and_(raw, c((1 << 63) - 1))
        exp64 = b.lshr(mag, c(52))
        is_normal = b.icmp_unsigned("!=", exp64, c(0))
        man64 = b.or_(b.and_(mag, c((1 << 52) - 1)), b.select(is_normal, c(1 << 52), c(0)))
        unbiased = b.select(is_normal, b.sub(exp64, c(1023)), c(-1022))
        target = b.add(unbiased, c(dt.bias))
        target_normal = b.icmp_signed(">", target, c(0))
        target = b.select(target_normal, target, c(0))
        shift = b.add(c(52 - m), b.select(target_normal, c(0), b.sub(c(1 - dt.bias), unbiased)))
        shift = b.select(b.icmp_signed(">", shift, c(63)), c(63), shift)
        shift = b.select(b.icmp_signed("<", shift, c(0)), c(0), shift)
        q = b.lshr(man64, shift)
        rem = b.sub(man64, b.shl(q, shift))
        has_shift = b.icmp_signed(">", shift, c(0))
        half = b.select(has_shift, b.shl(c(1), b.sub(shift, c(1))), c(0))
        pattern = b.select(target_normal, b.sub(b.add(b.shl(target, c(m)), q), c(1 << m)), q)
        odd = b.icmp_unsigned("!=", b.and_(pattern, c(1)), c(0))
        up = b.or_(b.icmp_unsigned(">", rem, half),
                   b.and_(b.icmp_unsigned("==", rem, half), b.and_(has_shift, odd)))
        pattern = b.add(pattern, b.zext(up, I64))
        pattern = b.select(b.icmp_unsigned("==", mag, c(0)), c(0), pattern)
        pattern = b.select(b.icmp_unsigned(">", pattern, c(dt.max_bits)), c(dt.max_bits), pattern)
        is_inf = b.icmp_unsigned("==", mag, c(0x7FF << 52))
        inf_bits = ((1 << e) - 1) << m if dt.has_inf else dt.max_bits
        pattern = b.select(is_inf, c(inf_bits), pattern)
        pattern = b.or_(pattern, b.shl(sign, c(dt.nbits - 1)))
        is_nan = b.fcmp_unordered("uno", value, value)
        nan_bits = (((1 << (e + m)) - 1) if dt.flavour == "fn" else
                    (((1 << e) - 1) << m) | (1 << (m - 1) if m else 1)) if dt.has_nan else 0
        return b.select(is_nan, c(nan_bits), pattern)

    def float_to_int(self, value: ir.Value, dt: DataType) -> ir.Value:
        """double -> i64 rounded toward zero, saturated to dt's range, NaN -> 0."""
        b = self.b
        as_int = b.call(self.intrinsic("llvm.fptosi.sat", I64, F64), [value])
        lo, hi = ir.Constant(I64, dt.min), ir.Constant(I64, min(dt.max, 2 ** 63 - 1))
        as_int = b.select(b.icmp_signed("<", as_int, lo), lo, as_int)
        return b.select(b.icmp_signed(">", as_int, hi), hi, as_int)
