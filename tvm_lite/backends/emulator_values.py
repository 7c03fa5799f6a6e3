"""Numeric semantics of PTX instructions for the thread-IR emulator, on numpy
vectors (one lane per thread).

Registers are stored as raw bits: an unsigned numpy array of the register's
width (uint8..uint64), or bool for predicates. An instruction reads its
operands as *typed* arrays (`typed_dtype`): uN/bN as uintN, sN as intN, f16
as float16, bf16 as ml_dtypes.bfloat16, f32/f64 natively, and the packed
f16x2/bf16x2 as uint32 bits (their ops split the halves; the low half is
element 0).

Rounding follows PTX exactly:
* f32 add/sub/mul/div/sqrt are numpy's correctly rounded float32 ops; f16 and
  bf16 ones are computed in float32 and rounded once more, which is exact
  because float32 has at least 2p+2 bits for p = 11 and p = 8 (double
  rounding is innocuous for + - * / sqrt);
* fma is computed in float64 with round-to-odd (TwoSum error term), then
  rounded once to the target: correct for every target with <= 51 bits;
* float64 -> bf16 goes through round-to-odd float32 (ml_dtypes' own cast
  from float64 double-rounds);
* directed roundings (rz/rm/rp) step the round-to-nearest result by one ulp
  on the bit pattern where it went the wrong way.
"""
from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

from ..ir import thread as T

RAW = {1: np.bool_, 8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}
_UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}
_SINT = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}
BF16 = np.dtype(ml_dtypes.bfloat16)
_FLOAT = {"f16": np.dtype(np.float16), "bf16": BF16, "f32": np.dtype(np.float32),
          "f64": np.dtype(np.float64)}


@functools.lru_cache(maxsize=None)
def raw_dtype(t: T.HWType):
    """Storage dtype of a register of type t."""
    return np.dtype(RAW[t.nbits])


@functools.lru_cache(maxsize=None)
def typed_dtype(t: T.HWType) -> np.dtype:
    """The numpy dtype an instruction of type t computes in."""
    if t.is_pred:
        return np.dtype(np.bool_)
    if t.is_packed:
        return np.dtype(np.uint32)
    if t.is_float:
        return _FLOAT[t.name]
    return np.dtype((_SINT if t.is_signed else _UINT)[t.nbits])


def uint_dtype(nbits: int) -> np.dtype:
    return np.dtype(_UINT[nbits])


def sint_dtype(nbits: int) -> np.dtype:
    return np.dtype(_SINT[nbits])


# ------------------------------------------------------------- immediates

def float_bits(value: float, t: T.HWType) -> int:
    """The bit pattern of `value` rounded (RN) to float type t (f16/bf16/f32/f64)."""
    x = to_float(np.array([float(value)]), t)
    return int(x.view(uint_dtype(t.nbits))[0])


def imm_bits(value, t: T.HWType) -> int:
    """The raw bits an immediate `value` has as an operand of instruction type t
    (the PTX printer's convention): f32/f64 take the number; f16/bf16 take an
    int as bits and a float as a number; packed types take bits; integer types
    take the value wrapped to the width; pred takes truthiness."""
    if t.is_pred:
        return int(bool(value))
    if t.is_packed:
        return int(value) & 0xFFFFFFFF
    if t.name in ("f32", "f64"):
        return float_bits(float(value), t)
    if t.is_float:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value) & 0xFFFF
        return float_bits(float(value), t)
    return int(value) & ((1 << t.nbits) - 1)


def bits_to_typed(bits: int, t: T.HWType):
    """A numpy scalar of typed_dtype(t) with the given raw bits."""
    if t.is_pred:
        return np.bool_(bits)
    return np.array([bits], dtype=raw_dtype(t)).view(typed_dtype(t))[0]


# ---------------------------------------------------------- float rounding

def _step(bits: np.ndarray, up: np.ndarray, nbits: int) -> np.ndarray:
    """The neighbouring float pattern: toward +inf where `up`, toward -inf elsewhere."""
    ut = uint_dtype(nbits)
    sign = ut.type(1 << (nbits - 1))
    one = ut.type(1)
    neg = (bits & sign) != 0
    mag = bits & ut.type((1 << (nbits - 1)) - 1)
    # Moving away from zero increments the magnitude; toward zero decrements it
    # (crossing zero from +-0 goes to the smallest subnormal of the other sign).
    away = up != neg
    at_zero = mag == 0
    inc = bits + one
    dec = np.where(at_zero, np.where(neg, one, sign | one), bits - one)
    return np.where(away & ~at_zero, inc, np.where(away & at_zero, np.where(up, one, sign | one), dec))


def _round_to_odd_f32(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding to odd (inexact results get an odd last bit)."""
    with np.errstate(over="ignore", invalid="ignore"):
        y = x.astype(np.float32)
        inexact = (y.astype(np.float64) != x) & np.isfinite(y) & np.isfinite(x)
    bits = y.view(np.uint32)
    even = (bits & np.uint32(1)) == 0
    fix = inexact & even
    if fix.any():
        up = y.astype(np.float64) < x
        bits = np.where(fix, _step(bits, up, 32), bits)
    return bits.view(np.float32)


def to_float(x: np.ndarray, t: T.HWType, rounding: T.Rounding | None = None) -> np.ndarray:
    """float64 (or any real) array -> typed array of float type t, rounded by
    `rounding` (RN when None). Overflow gives inf (RN) as IEEE does."""
    x = np.asarray(x, dtype=np.float64)
    dt = _FLOAT[t.element.name]
    with np.errstate(over="ignore", invalid="ignore"):
        if dt == BF16:
            y = _round_to_odd_f32(x).astype(BF16)
        else:
            y = x.astype(dt)
    if rounding in (None, T.Rounding.RN):
        return y
    with np.errstate(invalid="ignore"):
        yb = y.astype(np.float64)
        if rounding is T.Rounding.RZ:
            wrong = np.abs(yb) > np.abs(x)
            up = x < 0              # step toward zero
        elif rounding is T.Rounding.RM:
            wrong = yb > x
            up = np.zeros(x.shape, bool)
        elif rounding is T.Rounding.RP:
            wrong = yb < x
            up = np.ones(x.shape, bool)
        else:
            raise ValueError(rounding)
        wrong &= ~np.isnan(x)
    if not wrong.any():
        return y
    nb = dt.itemsize * 8
    bits = y.view(uint_dtype(nb))
    return np.where(wrong, _step(bits, up, nb), bits).view(dt)


def round_integral(x: np.ndarray, rounding: T.Rounding | None) -> np.ndarray:
    """Round float64 values to integral float64 values (rni/rzi/rmi/rpi)."""
    r = rounding or T.Rounding.RZI
    if r in (T.Rounding.RNI, T.Rounding.RN):
        return np.rint(x)
    if r in (T.Rounding.RZI, T.Rounding.RZ):
        return np.trunc(x)
    if r in (T.Rounding.RMI, T.Rounding.RM):
        return np.floor(x)
    return np.ceil(x)


def fma_float(a: np.ndarray, b: np.ndarray, c: np.ndarray, t: T.HWType) -> np.ndarray:
    """fma.rn of float64 arrays (values exact in type t): one rounding to t."""
    with np.errstate(all="ignore"):
        p = a * b                       # exact: 2 * 24 bits < 53
        s = p + c
        bb = s - p
        err = (p - (s - bb)) + (c - bb)  # TwoSum: s + err == p + c exactly
        bits = s.view(np.int64)
        fix = (err != 0) & np.isfinite(s) & ((bits & 1) == 0)
        if fix.any():
            s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return to_float(s, t)


# -------------------------------------------------------------- float ops

def halves(bits: np.ndarray, t: T.HWType) -> np.ndarray:
    """uint32 packed bits -> (n, 2) typed array of the element type (column 0 = low half)."""
    return np.ascontiguousarray(bits, dtype=np.uint32).view(_FLOAT[t.element.name]).reshape(-1, 2)


def pack_halves(h: np.ndarray) -> np.ndarray:
    """(n, 2) 16-bit floats -> uint32 bits."""
    return np.ascontiguousarray(h).view(np.uint32).reshape(-1)


def to_f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


_FLOAT_BINARY = {
    T.BinOp.ADD: np.add, T.BinOp.SUB: np.subtract, T.BinOp.MUL: np.multiply,
    T.BinOp.DIV: np.divide, T.BinOp.MIN: np.minimum, T.BinOp.MAX: np.maximum,
}


def float_binary(op: T.BinOp, a, b, t: T.HWType):
    """add/sub/mul/div/min/max on float type t (f16/bf16/f32/f64, packed too)."""
    fn = _FLOAT_BINARY.get(op)
    if fn is None:
        raise KeyError(op)
    if t.is_packed:
        r = float_binary(op, halves(a, t), halves(b, t), t.element)
        return pack_halves(r)
    with np.errstate(all="ignore"):
        if t.name in ("f32", "f64"):
            return fn(np.asarray(a, typed_dtype(t)), np.asarray(b, typed_dtype(t)))
        # f16/bf16: exact enough in float32 (see module docstring), rounded once to t.
        r = fn(np.asarray(a).astype(np.float32), np.asarray(b).astype(np.float32))
        return to_float(r, t)


def float_fma(a, b, c, t: T.HWType):
    if t.is_packed:
        ha, hb, hc = halves(a, t), halves(b, t), halves(c, t)
        return pack_halves(fma_float(to_f64(ha), to_f64(hb), to_f64(hc), t.element))
    return fma_float(to_f64(a), to_f64(b), to_f64(c), t)


def float_unary(op: T.UnOp, a, t: T.HWType):
    if t.is_packed:
        return pack_halves(float_unary(op, halves(a, t), t.element))
    dt = typed_dtype(t)
    a = np.asarray(a, dt)
    if op is T.UnOp.NEG:                 # sign-bit flip, exact for every value incl. NaN
        nb = dt.itemsize * 8
        return (a.view(uint_dtype(nb)) ^ uint_dtype(nb).type(1 << (nb - 1))).view(dt)
    if op is T.UnOp.ABS:
        nb = dt.itemsize * 8
        return (a.view(uint_dtype(nb)) & uint_dtype(nb).type((1 << (nb - 1)) - 1)).view(dt)
    x = to_f64(a)
    with np.errstate(all="ignore"):
        if op is T.UnOp.SQRT:
            if t.name == "f32":
                return np.sqrt(a)         # correctly rounded
            r = np.sqrt(x)
        elif op is T.UnOp.RCP:
            if t.name == "f32":
                return np.float32(1.0) / a
            r = 1.0 / x
        elif op is T.UnOp.EX2:
            r = np.exp2(x)
        elif op is T.UnOp.LG2:
            r = np.log2(x)
        elif op is T.UnOp.SIN:
            r = np.sin(x)
        elif op is T.UnOp.COS:
            r = np.cos(x)
        elif op is T.UnOp.TANH:
            r = np.tanh(x)
        else:
            raise KeyError(op)
    return to_float(r, t)


def float_compare(cmp: T.Cmp, a, b):
    with np.errstate(invalid="ignore"):
        a, b = to_f64(a), to_f64(b)
        if cmp is T.Cmp.EQ:
            return a == b
        if cmp is T.Cmp.NE:
            return a != b                # unordered: NaN != x is true
        if cmp is T.Cmp.LT:
            return a < b
        if cmp is T.Cmp.LE:
            return a <= b
        if cmp is T.Cmp.GT:
            return a > b
        return a >= b


# ------------------------------------------------------------ integer ops

def _as_int_object(x):
    return np.asarray(x).astype(object)


def int_binary_fn(op: T.BinOp, t: T.HWType, src_t: T.HWType | None = None):
    """A function (a, b) -> result for an integer op with PTX semantics; a/b are
    typed arrays of type t (of src_t for MUL_WIDE; b is an int64 amount for shifts).
    Callers run under np.errstate(all="ignore")."""
    dt = typed_dtype(t)
    nb = t.nbits
    simple = {T.BinOp.ADD: np.add, T.BinOp.SUB: np.subtract, T.BinOp.MUL: np.multiply,
              T.BinOp.MIN: np.minimum, T.BinOp.MAX: np.maximum, T.BinOp.AND: np.bitwise_and,
              T.BinOp.OR: np.bitwise_or, T.BinOp.XOR: np.bitwise_xor}
    if op in simple:
        fn = simple[op]
        return lambda a, b: fn(a, b, dtype=dt)
    if op is T.BinOp.MUL_WIDE:
        wide = typed_dtype(T.hw_type(("s" if src_t.is_signed else "u") + str(2 * src_t.nbits)))
        return lambda a, b: np.multiply(a.astype(wide), b.astype(wide), dtype=wide).astype(dt, copy=False)
    if op is T.BinOp.MUL_HI:
        if nb <= 32:
            wide = np.dtype(np.int64 if t.is_signed else np.uint64)
            shift = wide.type(nb)
            return lambda a, b: ((a.astype(wide) * b.astype(wide)) >> shift).astype(dt)

        def mul_hi64(a, b):
            p = a.astype(object) * b.astype(object)
            return np.array([(int(v) >> 64) & ((1 << 64) - 1) for v in p], dtype=np.uint64).view(dt)
        return mul_hi64
    if op in (T.BinOp.DIV, T.BinOp.REM):
        minint = np.iinfo(dt).min
        ones = dt.type(-1) if t.is_signed else np.iinfo(dt).max

        def divrem(a, b):
            zero = b == 0
            safe_b = np.where(zero, dt.type(1), b)
            if t.is_signed:
                # truncating division; MININT / -1 wraps to MININT
                overflow = (a == minint) & (safe_b == -1)
                safe_b = np.where(overflow, dt.type(1), safe_b)
                rem = np.fmod(a, safe_b)
                q = ((a - rem) // safe_b).astype(dt)
                rem = np.where(overflow, dt.type(0), rem)
            else:
                q = a // safe_b
                rem = a % safe_b
            if op is T.BinOp.DIV:
                # x / 0 is unspecified in PTX; the hardware answers all ones.
                return np.where(zero, ones, q).astype(dt)
            return np.where(zero, a, rem).astype(dt)
        return divrem
    if op in (T.BinOp.SHL, T.BinOp.SHR):
        # b: the shift amount as an unsigned value; >= width shifts everything out.
        zero = dt.type(0)

        def shift(a, b):
            big = b >= nb
            sh = np.minimum(b, nb - 1).astype(dt)
            if op is T.BinOp.SHL:
                return np.where(big, zero, np.left_shift(a, sh)).astype(dt)
            r = np.right_shift(a, sh)
            if t.is_signed:
                return r.astype(dt)           # amount clamped to nb-1: sign fill
            return np.where(big, zero, r).astype(dt)
        return shift
    raise KeyError(op)


def int_binary(op: T.BinOp, a, b, t: T.HWType, src_t: T.HWType | None = None):
    with np.errstate(all="ignore"):
        return int_binary_fn(op, t, src_t)(np.asarray(a), np.asarray(b))


def int_compare(cmp: T.Cmp, a, b):
    return {T.Cmp.EQ: np.equal, T.Cmp.NE: np.not_equal, T.Cmp.LT: np.less, T.Cmp.LE: np.less_equal,
            T.Cmp.GT: np.greater, T.Cmp.GE: np.greater_equal}[cmp](a, b)


def int_unary(op: T.UnOp, a, t: T.HWType):
    dt = typed_dtype(t)
    a = np.asarray(a, dt)
    with np.errstate(all="ignore"):
        if op is T.UnOp.NEG:
            return np.negative(a).astype(dt)
        if op is T.UnOp.NOT:
            return np.invert(a)
        if op is T.UnOp.ABS:
            return np.abs(a).astype(dt)
    raise KeyError(op)


def popc(bits: np.ndarray) -> np.ndarray:
    return np.bitwise_count(bits).astype(np.uint32)


def clz(bits: np.ndarray, nbits: int) -> np.ndarray:
    """Leading zeros of the low `nbits` bits."""
    y = np.asarray(bits).astype(np.uint64)
    length = np.zeros(y.shape, np.uint32)
    for s in (32, 16, 8, 4, 2, 1):
        m = (y >> np.uint64(s)) != 0
        length += np.where(m, np.uint32(s), np.uint32(0))
        y = np.where(m, y >> np.uint64(s), y)
    length += (y != 0).astype(np.uint32)
    return (np.uint32(nbits) - length).astype(np.uint32)


# ---------------------------------------------------------------- bit ops

def lop3(a, b, c, lut: int) -> np.ndarray:
    """Bitwise F(a, b, c) for the 8-bit truth table `lut` (bit index = a<<2 | b<<1 | c)."""
    a, b, c = (np.asarray(x, np.uint32) for x in (a, b, c))
    out = np.zeros(np.broadcast(a, b, c).shape, np.uint32)
    na, nb_, nc = ~a, ~b, ~c
    for i in range(8):
        if lut >> i & 1:
            term = (a if i & 4 else na) & (b if i & 2 else nb_) & (c if i & 1 else nc)
            out |= term
    return out


def prmt(a, b, sel) -> np.ndarray:
    """prmt.b32 default mode: byte k of d = source byte sel[4k+2:4k] of {b, a},
    sign-replicated when bit 4k+3 is set."""
    a = np.asarray(a, np.uint32).astype(np.uint64)
    b = np.asarray(b, np.uint32).astype(np.uint64)
    sel = np.asarray(sel, np.uint32).astype(np.uint64)
    src = (b << np.uint64(32)) | a
    out = np.zeros(np.broadcast(a, b, sel).shape, np.uint64)
    for k in range(4):
        ctl = (sel >> np.uint64(4 * k)) & np.uint64(0xF)
        byte = (src >> ((ctl & np.uint64(7)) * np.uint64(8))) & np.uint64(0xFF)
        sign = np.where((byte & np.uint64(0x80)) != 0, np.uint64(0xFF), np.uint64(0))
        byte = np.where((ctl & np.uint64(8)) != 0, sign, byte)
        out |= byte << np.uint64(8 * k)
    return out.astype(np.uint32)


def prmt_imm_fn(selector: int):
    """prmt with an immediate selector as a byte gather: a function (a, b) -> d on
    uint32-viewable arrays, equal to prmt(a, b, selector)."""
    picks = [(selector >> (4 * k)) & 0xF for k in range(4)]
    index = np.array([p & 7 for p in picks])
    signed = [k for k, p in enumerate(picks) if p & 8]

    def gather(a, b):
        a = np.asarray(a).astype("<u4", copy=False)
        b = np.asarray(b).astype("<u4", copy=False)
        src = np.concatenate([a.view(np.uint8).reshape(-1, 4), b.view(np.uint8).reshape(-1, 4)], axis=1)
        out = src[:, index]
        for k in signed:
            out[:, k] = np.where(out[:, k] >= 0x80, np.uint8(0xFF), np.uint8(0))
        return np.ascontiguousarray(out).view("<u4").reshape(a.shape).astype(np.uint32, copy=False)
    return gather


def cvt_fn(st: T.HWType, dt: T.HWType, rounding: T.Rounding | None, saturate: bool):
    """A function src -> cvt(src, st, dt, rounding, saturate), specialized for the
    conversions the lowering emits most (plain casts: int -> int, and round-to-nearest
    between f16/f32/f64 or from a narrow int), with the generic cvt for the rest."""
    plain_float = ("f16", "f32", "f64")
    if not saturate and not st.is_pred and not dt.is_pred and not st.is_packed and not dt.is_packed:
        out = typed_dtype(dt)
        if st.is_int and dt.is_int:
            return lambda src: src.astype(out)
        nearest = rounding in (None, T.Rounding.RN)
        if nearest and dt.name in plain_float and (st.name in plain_float or (st.is_int and st.nbits < 64)):
            # The exact float64 value, rounded once to dt: cvt's own steps.
            return lambda src: src.astype(np.float64).astype(out)
    return lambda src: cvt(src, st, dt, rounding, saturate)


def shf(lo, hi, shift, left: bool, clamp: bool) -> np.ndarray:
    lo = np.asarray(lo, np.uint32).astype(np.uint64)
    hi = np.asarray(hi, np.uint32).astype(np.uint64)
    c = np.asarray(shift).astype(np.uint64)
    n = np.minimum(c, np.uint64(32)) if clamp else (c & np.uint64(31))
    v = (hi << np.uint64(32)) | lo
    if left:
        # (v << n) >> 32 without losing the top bits: v >> (32 - n)
        r = v >> (np.uint64(32) - n)
    else:
        r = v >> n
    return (r & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def bfe(a, pos, length, t: T.HWType) -> np.ndarray:
    nb = t.nbits
    msb = nb - 1
    ut = uint_dtype(nb)
    x = np.asarray(a).view(ut) if np.asarray(a).dtype.itemsize * 8 == nb else np.asarray(a).astype(ut)
    p = np.asarray(pos).astype(np.int64) & 0xFF
    ln = np.asarray(length).astype(np.int64) & 0xFF
    x, p, ln = np.broadcast_arrays(x, p, ln)
    x = x.astype(np.uint64)
    # field bits: a[pos .. min(pos+len, nb) - 1]
    start = np.minimum(p, nb)
    stop = np.minimum(p + ln, nb)
    width = np.maximum(stop - start, 0)
    shifted = np.where(start >= 64, np.uint64(0), x >> np.minimum(start, 63).astype(np.uint64))
    mask = np.where(width >= 64, np.uint64(0xFFFFFFFFFFFFFFFF),
                    (np.uint64(1) << np.minimum(width, 63).astype(np.uint64)) - np.uint64(1))
    field = shifted & mask
    if t.is_signed:
        sidx = np.minimum(p + ln - 1, msb)
        sbit = np.where(ln == 0, np.uint64(0), (x >> np.maximum(sidx, 0).astype(np.uint64)) & np.uint64(1))
        # bits i >= width are the sign bit
        fill = np.where(width >= 64, np.uint64(0),
                        ~mask & np.uint64((1 << nb) - 1 if nb < 64 else 0xFFFFFFFFFFFFFFFF))
        field = np.where(sbit == 1, field | fill, field)
    return field.astype(ut).view(typed_dtype(t))


# ------------------------------------------------------------ conversions

def int_value_f64_exact(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer array -> (float64 values rounded to odd, so that a later RN to a
    <= 51-bit format is correct; exact for |a| < 2^53)."""
    x = a.astype(np.float64)
    if a.dtype.itemsize < 8:
        return x
    big = np.abs(x) >= 2.0 ** 53
    if not big.any():
        return x
    out = x.copy()
    for i in np.nonzero(big)[0]:
        v = int(a[i])
        f = float(v)              # RN to 53 bits
        if int(f) != v:           # inexact: make the last bit odd toward the true value
            bits = np.array([f]).view(np.int64)[0]
            if bits & 1 == 0:
                f = float(np.nextafter(f, np.inf if v > int(f) else -np.inf))
        out[i] = f
    return out


def cvt(src, st: T.HWType, dt: T.HWType, rounding: T.Rounding | None, saturate: bool) -> np.ndarray:
    """cvt with PTX semantics: typed array of st -> typed array of dt."""
    if dt.is_pred:
        if st.is_float:
            return to_f64(src) != 0
        return np.asarray(src) != 0
    if st.is_pred:
        src = np.asarray(src).astype(np.int64)
        st = T.s64
    src = np.asarray(src)
    if dt.is_float:
        if st.is_float:
            x = to_f64(src)
            if rounding in (T.Rounding.RNI, T.Rounding.RZI, T.Rounding.RMI, T.Rounding.RPI):
                with np.errstate(all="ignore"):
                    x = round_integral(x, rounding)
                r = None
            else:
                r = rounding
            y = to_float(x, dt, r)
        else:
            x = int_value_f64_exact(src)
            r = rounding if rounding in (T.Rounding.RZ, T.Rounding.RM, T.Rounding.RP) else None
            y = to_float(x, dt, r)
        if saturate:
            with np.errstate(invalid="ignore"):
                yf = to_f64(y)
                yf = np.where(np.isnan(yf), 0.0, np.clip(yf, 0.0, 1.0))
            y = to_float(yf, dt)
        return y
    # integer destination
    ddt = typed_dtype(dt)
    info = np.iinfo(ddt)
    if st.is_float:
        x = to_f64(src)
        with np.errstate(all="ignore"):
            r = round_integral(x, rounding)
            nan = np.isnan(r)
            hi = r >= float(info.max)           # float(max) rounds up for 64-bit: >= is right
            lo = r <= float(info.min)
            mid = np.where(hi | lo | nan, 0.0, r)
            out = mid.astype(ddt)
        out = np.where(hi, info.max, np.where(lo, info.min, out)).astype(ddt)
        if nan.any():
            nan_value = 0
            if st.name == "f64" or dt.nbits == 64:
                nan_value = 1 << (dt.nbits - 1)
            out = np.where(nan, np.array([nan_value], dtype=uint_dtype(dt.nbits)).view(ddt)[0], out)
        return out.astype(ddt)
    # int -> int
    if saturate:
        s_info = np.iinfo(src.dtype)
        lo = max(info.min, s_info.min)
        hi = min(info.max, s_info.max)
        clipped = np.clip(src, src.dtype.type(lo), src.dtype.type(hi))
        return clipped.astype(ddt)
    # truncate or extend by the source's signedness
    return src.astype(ddt)
