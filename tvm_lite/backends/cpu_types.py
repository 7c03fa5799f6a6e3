"""How CPU code stores and computes each data type, and the conversions.

Storage (one element of a tile or of a byte-sized global tensor):
* f32 and f64 as themselves;
* every other float as its raw bit pattern, zero-extended into i8/i16/i32;
* integers as their value, sign- or zero-extended into i8/i16/i32/i64.

Compute values are i64 (integers), or float / double. A float dtype can be
read as float when every value of it is exactly a float (`fits_f32`: f16,
bf16, every f8 and narrower custom format), which doubles the SIMD width;
double is used otherwise. Which compute type an instruction may use without
changing its result is the instruction's decision (cpu_compute); this module
only converts exactly or rounds once.

Narrow floats are decoded by placing exponent and mantissa into the compute
float's fields, and encoded with integer operations on its bits (the
algorithm of `ir.dtypes.encode`: round to nearest even, saturate, canonical
NaN). Both are branch-free, so loops over them vectorize. With F16C, f16 uses
the hardware conversions instead. No conversion calls a runtime library:
LLVM lowers some float conversions to libcalls the JIT cannot resolve.
"""
from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir

from ..errors import TLTargetError
from ..ir.dtypes import DataType

I1, I8, I16, I32, I64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
F16, F32, F64 = ir.HalfType(), ir.FloatType(), ir.DoubleType()
_NATIVE_FLOATS = {"f32": F32, "f64": F64}


@dataclass(frozen=True)
class FloatFormat:
    """A native float used for computing: its type, same-width integer and fields."""
    ty: ir.Type
    ity: ir.IntType
    width: int
    mant: int
    bias: int


FMT32 = FloatFormat(F32, I32, 32, 23, 127)
FMT64 = FloatFormat(F64, I64, 64, 52, 1023)


def fmt_of(ty: ir.Type) -> FloatFormat:
    if ty == F32:
        return FMT32
    if ty == F64:
        return FMT64
    raise TLTargetError(f"no float format for {ty}")


def is_float_type(ty: ir.Type) -> bool:
    return ty == F32 or ty == F64


def fits_f32(dt: DataType) -> bool:
    """Every value of dt is exactly a float, and decodes into one by placing fields."""
    if not dt.is_float or dt.mantissa_bits > 23:
        return False
    return dt.exponent_bits < 8 or (dt.exponent_bits == 8 and dt.has_inf)


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
    raise TLTargetError(f"no CPU storage for {nbits}-bit values")


def storage_type(dt: DataType) -> ir.Type:
    """The type of one element of a tile of dtype dt."""
    if dt.name in _NATIVE_FLOATS:
        return _NATIVE_FLOATS[dt.name]
    if dt.is_float and dt.exponent_bits > 11:
        raise TLTargetError(f"no lowering for {dt.name} on cpu (exponent wider than a double's)")
    return int_storage(dt.nbits)


def storage_bytes(dt: DataType) -> int:
    st = storage_type(dt)
    return 4 if st == F32 else 8 if st == F64 else st.width // 8


def is_u64(dt: DataType) -> bool:
    return dt.kind == "uint" and dt.nbits == 64


def compute_type(dt: DataType) -> ir.Type:
    """The widest compute type: double for floats, i64 for integers."""
    return F64 if dt.is_float else I64


class Convert:
    """Conversions between storage and compute values, emitted with a builder."""

    def __init__(self, builder: ir.IRBuilder, intrinsic, f16c: bool = False):
        self.b = builder
        self.intrinsic = intrinsic   # (name, *types) -> function
        # With F16C, f16 <-> float are single instructions (vcvtph2ps/vcvtps2ph).
        self.f16c = f16c

    # ------------------------------------------------------ storage -> compute
    def to_compute(self, raw: ir.Value, dt: DataType, ty: ir.Type) -> ir.Value:
        """A stored element as a compute value of type ty (exact)."""
        b = self.b
        if dt.is_integer:
            v = raw if raw.type.width == 64 else (b.sext(raw, I64) if dt.is_signed else b.zext(raw, I64))
            if ty == I64:
                return v
            return b.uitofp(v, ty) if is_u64(dt) else b.sitofp(v, ty)
        if ty == I64:
            raise TLTargetError(f"internal: {dt.name} read as an integer")
        if dt.name in ("f32", "f64"):
            if raw.type == ty:
                return raw
            if ty == F64:
                return b.fpext(raw, ty)
            _bad_narrowing(dt)
        if ty == F32 and not fits_f32(dt):
            _bad_narrowing(dt)
        if dt.name == "f16" and self.f16c:
            return b.fpext(b.bitcast(raw, F16), ty)
        fmt = fmt_of(ty)
        return self.decode(b.zext(raw, fmt.ity) if raw.type.width < fmt.width else raw, dt, fmt)

    # ------------------------------------------------------ compute -> storage
    def to_storage(self, v: ir.Value, dt: DataType) -> ir.Value:
        """Round (floats), convert or wrap (integers) a compute value into dt's storage."""
        b = self.b
        st = storage_type(dt)
        if dt.is_integer:
            if is_float_type(v.type):
                v = self.float_to_int(v, dt)
            v = self.wrap(v, dt)
            return v if st.width == 64 else b.trunc(v, st)
        if v.type == I64:
            v = b.sitofp(v, F64)
        if dt.name == "f64":
            return v if v.type == F64 else b.fpext(v, F64)
        if dt.name == "f32":
            return v if v.type == F32 else b.fptrunc(self.saturate(v, dt), F32)
        if dt.name == "f16" and self.f16c:
            if v.type == F64:
                # Rounding to odd in float first makes the final float -> f16
                # rounding exact: float has more than 11 + 2 significand bits.
                v = self.round_to_odd_f32(v)
            return b.bitcast(b.fptrunc(self.saturate(v, dt), F16), I16)
        bits = self.encode(v, dt)
        if bits.type.width == st.width:
            return bits
        return b.trunc(bits, st) if bits.type.width > st.width else b.zext(bits, st)

    def round_scalar(self, v: ir.Value, dt: DataType) -> ir.Value:
        """A compute value (i64 or float) in dt's canonical form: i64 or double."""
        if dt.is_integer:
            return self.wrap(self.float_to_int(v, dt) if is_float_type(v.type) else v, dt)
        if v.type == I64:
            v = self.b.sitofp(v, F64)
        if dt.name == "f64":
            return v if v.type == F64 else self.b.fpext(v, F64)
        return self.to_compute(self.to_storage(v, dt), dt, F64)

    # ------------------------------------------------------------ integers
    def wrap(self, value: ir.Value, dt: DataType) -> ir.Value:
        """i64 -> i64 holding the value wrapped to dt's width."""
        if dt.nbits >= 64:
            return value
        shift = ir.Constant(I64, 64 - dt.nbits)
        up = self.b.shl(value, shift)
        return self.b.ashr(up, shift) if dt.is_signed else self.b.lshr(up, shift)

    def float_to_int(self, value: ir.Value, dt: DataType) -> ir.Value:
        """float -> i64 rounded toward zero, saturated to dt's range, NaN -> 0."""
        b = self.b
        if is_u64(dt):
            return b.call(self.intrinsic("llvm.fptoui.sat", I64, value.type), [value])
        as_int = b.call(self.intrinsic("llvm.fptosi.sat", I64, value.type), [value])
        if dt.nbits >= 64:
            return as_int
        lo, hi = ir.Constant(I64, dt.min), ir.Constant(I64, dt.max)
        as_int = b.select(b.icmp_signed("<", as_int, lo), lo, as_int)
        return b.select(b.icmp_signed(">", as_int, hi), hi, as_int)

    def int_to_float(self, v: ir.Value, src: DataType, dst: DataType) -> ir.Value:
        """An i64 value of integer type src as a compute float that rounds to
        `dst` with a single rounding (the cast rule: no double rounding above 2^53)."""
        b = self.b
        unsigned = is_u64(src)
        convert = b.uitofp if unsigned else b.sitofp
        if src.nbits <= 24:
            return convert(v, F32)          # exact
        if src.nbits <= 53 or dst.mantissa_bits >= 52:
            return convert(v, F64)          # exact, or the one rounding to f64
        if dst.name == "f32":
            return convert(v, F32)          # LLVM rounds once, to nearest even
        return self._round_wide_int(v, dst.mantissa_bits + 1, unsigned)

    def _round_wide_int(self, v: ir.Value, precision: int, unsigned: bool) -> ir.Value:
        """|v| >= 2^53 rounded (nearest even) to `precision` bits with integer
        operations; the double result is exact."""
        b = self.b
        c = lambda x: ir.Constant(I64, x)  # noqa: E731
        neg = ir.Constant(I1, 0) if unsigned else b.icmp_signed("<", v, c(0))
        mag = b.select(neg, b.neg(v), v)                      # INT64_MIN stays 2^63 (unsigned)
        length = b.sub(c(64), b.call(self.intrinsic("llvm.ctlz", I64), [mag, ir.Constant(I1, 0)]))
        big = b.icmp_unsigned(">=", mag, c(1 << 53))
        shift = b.select(big, b.sub(length, c(precision)), c(0))
        q = b.lshr(mag, shift)
        rem = b.sub(mag, b.shl(q, shift))
        has_shift = b.icmp_unsigned(">", shift, c(0))
        half = b.select(has_shift, b.shl(c(1), b.select(has_shift, b.sub(shift, c(1)), c(0))), c(0))
        odd = b.icmp_unsigned("!=", b.and_(q, c(1)), c(0))
        up = b.or_(b.icmp_unsigned(">", rem, half), b.and_(b.icmp_unsigned("==", rem, half),
                                                           b.and_(has_shift, odd)))
        q = b.add(q, b.zext(up, I64))
        scale = b.bitcast(b.shl(b.add(shift, c(1023)), c(52)), F64)   # 2^shift
        value = b.fmul(b.uitofp(q, F64), scale)
        return b.select(neg, b.fneg(value), value)

    # ---------------------------------------------------------------- floats
    def saturate(self, value: ir.Value, dt: DataType) -> ir.Value:
        """Finite values beyond ±max become ±max; inf and NaN pass."""
        b = self.b
        ty = value.type
        mag = b.call(self.intrinsic("llvm.fabs", ty), [value])
        big = b.fcmp_ordered(">", mag, ir.Constant(ty, dt.max))
        finite = b.fcmp_ordered("!=", mag, ir.Constant(ty, float("inf")))
        limit = b.call(self.intrinsic("llvm.copysign", ty), [ir.Constant(ty, dt.max), value])
        return b.select(b.and_(big, finite), limit, value)

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

    def decode(self, bits: ir.Value, dt: DataType, fmt: FloatFormat) -> ir.Value:
        """A bit pattern of float type dt (in fmt's integer type) -> its exact value."""
        b = self.b
        e, m = dt.exponent_bits, dt.mantissa_bits
        c = lambda v: ir.Constant(fmt.ity, v)  # noqa: E731
        exp = b.and_(b.lshr(bits, c(m)), c((1 << e) - 1))
        man = b.and_(bits, c((1 << m) - 1))
        negative = b.icmp_unsigned("!=", b.and_(bits, c(1 << (e + m))), c(0))
        # Normal: place exponent and mantissa into the compute float's fields.
        normal_bits = b.or_(b.shl(b.add(exp, c(fmt.bias - dt.bias)), c(fmt.mant)),
                            b.shl(man, c(fmt.mant - m)))
        normal = b.bitcast(normal_bits, fmt.ty)
        subnormal = b.fmul(b.uitofp(man, fmt.ty), ir.Constant(fmt.ty, 2.0 ** (1 - dt.bias - m)))
        value = b.select(b.icmp_unsigned("==", exp, c(0)), subnormal, normal)
        if dt.flavour == "ieee":
            top = b.icmp_unsigned("==", exp, c((1 << e) - 1))
            special = b.select(b.icmp_unsigned("==", man, c(0)), ir.Constant(fmt.ty, float("inf")),
                               ir.Constant(fmt.ty, float("nan")))
            value = b.select(top, special, value)
        elif dt.flavour == "fn":
            mag_bits = b.and_(bits, c((1 << (e + m)) - 1))
            value = b.select(b.icmp_unsigned("==", mag_bits, c((1 << (e + m)) - 1)),
                             ir.Constant(fmt.ty, float("nan")), value)
        return b.select(negative, b.fneg(value), value)

    def encode(self, value: ir.Value, dt: DataType) -> ir.Value:
        """A float (or double) -> dt's bit pattern in the same-width integer:
        nearest even, saturating, canonical NaN (see ir.dtypes.encode)."""
        b = self.b
        fmt = fmt_of(value.type)
        m = dt.mantissa_bits
        W, M = fmt.width, fmt.mant
        c = lambda v: ir.Constant(fmt.ity, v)  # noqa: E731
        raw = b.bitcast(value, fmt.ity)
        sign = b.lshr(raw, c(W - 1))
        mag = b.and_(raw, c((1 << (W - 1)) - 1))
        exp_s = b.lshr(mag, c(M))
        is_normal = b.icmp_unsigned("!=", exp_s, c(0))
        man = b.or_(b.and_(mag, c((1 << M) - 1)), b.select(is_normal, c(1 << M), c(0)))
        unbiased = b.select(is_normal, b.sub(exp_s, c(fmt.bias)), c(1 - fmt.bias))
        target = b.add(unbiased, c(dt.bias))
        target_normal = b.icmp_signed(">", target, c(0))
        target = b.select(target_normal, target, c(0))
        shift = b.add(c(M - m), b.select(target_normal, c(0), b.sub(c(1 - dt.bias), unbiased)))
        shift = b.select(b.icmp_signed(">", shift, c(W - 1)), c(W - 1), shift)
        shift = b.select(b.icmp_signed("<", shift, c(0)), c(0), shift)
        q = b.lshr(man, shift)
        rem = b.sub(man, b.shl(q, shift))
        has_shift = b.icmp_signed(">", shift, c(0))
        half = b.select(has_shift, b.shl(c(1), b.select(has_shift, b.sub(shift, c(1)), c(0))), c(0))
        pattern = b.select(target_normal, b.sub(b.add(b.shl(target, c(m)), q), c(1 << m)), q)
        odd = b.icmp_unsigned("!=", b.and_(pattern, c(1)), c(0))
        up = b.or_(b.icmp_unsigned(">", rem, half),
                   b.and_(b.icmp_unsigned("==", rem, half), b.and_(has_shift, odd)))
        pattern = b.add(pattern, b.zext(up, fmt.ity))
        pattern = b.select(b.icmp_unsigned("==", mag, c(0)), c(0), pattern)
        pattern = b.select(b.icmp_unsigned(">", pattern, c(dt.max_bits)), c(dt.max_bits), pattern)
        is_inf = b.icmp_unsigned("==", mag, c(((1 << (W - 1 - M)) - 1) << M))
        pattern = b.select(is_inf, c(dt.inf_bits if dt.has_inf else dt.max_bits), pattern)
        pattern = b.or_(pattern, b.shl(sign, c(dt.nbits - 1)))
        is_nan = b.fcmp_unordered("uno", value, value)
        return b.select(is_nan, c(dt.nan_bits if dt.has_nan else 0), pattern)


def _bad_narrowing(dt: DataType):
    raise TLTargetError(f"internal: {dt.name} cannot be read as float exactly")
