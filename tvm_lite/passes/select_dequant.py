"""Instruction selection for casts of packed low-bit fields to f16x2 / bf16x2.

    dequant_packed(namer, words, src, dst, count, first_bit=0, offset=0) -> (stmts, regs)
    dequant_generic(namer, words, src, dst, count, first_bit=0) -> (stmts, regs)
    supports(src, dst) -> bool
    folds_offset(src, dst, offset) -> bool   (x - offset folded into the conversion)

`words` are b32 registers holding a little-endian bit stream (DESIGN.md
section 4): word 0 is stream bits 0..31, word 1 bits 32..63, and so on.
Field i of type `src` (b bits) occupies stream bits
[first_bit + i*b, first_bit + (i+1)*b). The result is ceil(count/2) registers
of type f16x2 (dst f16) or bf16x2 (dst bf16); register j holds field 2j in its
low half and field 2j+1 in its high half. When count is odd, the high half of
the last register repeats the last field. Bits past the last word read as 0.
`namer(hint, hwtype) -> thread.Reg` makes fresh registers (wrap the
kernel's register allocator in a lambda).

Values (the oracle is `tvm_lite.ir.dtypes.decode` followed by a
round-to-nearest-even conversion to the destination, as cvt.rn does):
* every 1..8-bit integer is exact in f16 and in bf16 (|v| <= 255 needs 8
  significant bits; bf16 has 8);
* every float fNeEmM with N <= 8 is exact in bf16 (E <= 7, M <= 6). In f16
  the formats with E >= 5 exceed the range: values >= 65520 become +-inf
  and, for E >= 6, values below the f16 subnormal range round to nearest
  even (to a subnormal or to +-0), exactly as cvt.rn.f16.f32 would.
* f8e5m2 keeps inf and NaN; f8e4m3 (e4m3fn) S.1111.111 becomes NaN. NaN
  payloads are not specified (any NaN, sign as in the pattern).
* -0.0 keeps its sign.

`dequant_packed` uses bit tricks (`supports` is true for every 1..8-bit
integer and float type to f16/bf16); for any other type it returns
`dequant_generic`'s code, so callers need no special case.

How the fast path works, per output register (a "pair" of fields):
1. Gather: one `prmt` moves the two bytes around field 2j into the low half
   and the two bytes around field 2j+1 into the high half, choosing the byte
   offsets so that each field lands at an in-half bit offset the conversion
   accepts. Its sources are the words themselves or funnel-shifted windows
   of them (`shf`, for fields that straddle words or need a sub-byte shift),
   made once and shared by all pairs.
2. Convert both halves at once:
   * integers: one `lop3` keeps the field, sets the magic exponent (0x6400,
     1024 in f16; 0x4300, 128 in bf16) and flips the sign bit of signed
     fields (q ^ 2^(b-1) = v + 2^(b-1)); one packed `fma` by 2^-offset plus
     -(magic*2^-offset + 2^(b-1)) gives v exactly, each half with its own
     constants. u8/i8 to f16 use `prmt` with the 0x64 byte directly. u8/i8
     to bf16 (8 bits do not fit bf16's 7-bit mantissa) split bit 7 off
     into a second operand that selects an exponent (see `_int8_to_bf16`).
   * floats: the gather puts the exponent and mantissa bits where the
     destination keeps them; one `lop3` masks them, one packed `fma` by
     2^(bias_dst - bias_src) rescales the exponent and turns source
     subnormals (which land as destination subnormals) into the right
     values, and a `shl` + `lop3` put the sign bit at bit 15 of each half.
     Special patterns get a carry trick before the multiply: adding one at
     the field's lowest bit carries out of it only when all its bits are
     ones (e4m3fn NaN; for f8e5m2 to bf16, the all-ones exponent) and the
     carry, spread by a `mad`, sets the destination exponent to all ones.
     f8e5m2 to f16 is a single `prmt` (f8e5m2 is the top byte of f16);
     E = 5 formats to f16 keep the sign in place and clear the mantissa of
     all-ones exponents (those values round to inf); E >= 6 formats to f16
     go to bf16x2 first, widen each half to f32 (two bit operations) and
     round once with cvt.rn.f16x2.f32.
No per-element cvt from an integer type is emitted on the fast path.
`instruction_mix` summarizes the emitted statements for reports and tests.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import TLCompileError
from ..ir import thread as T
from ..ir.dtypes import DataType, dtype

__all__ = ["dequant_packed", "dequant_generic", "supports", "instruction_mix"]


# ----------------------------------------------------------- small helpers


def _lut(f: Callable[[int, int, int], int]) -> int:
    """The lop3 immediate of f(a, b, c) (bitwise), from the standard operand bytes."""
    return f(0xF0, 0xCC, 0xAA) & 0xFF


LUT_AND = _lut(lambda a, b, c: a & b)                   # c unused
LUT_OR_AND = _lut(lambda a, b, c: a | (b & c))           # a | (b & c)
LUT_AND_OR = _lut(lambda a, b, c: (a & b) | c)           # (a & b) | c
LUT_NOTAND_OR = _lut(lambda a, b, c: (~a & b) | c)       # (~a & b) | c
LUT_SEL_XOR = _lut(lambda a, b, c: (b & (a ^ c)) | (~b & c))   # b ? a ^ c : c
LUT_CLEAR = _lut(lambda a, b, c: a & ~(b & c))           # a with the bits b & c cleared


def _pair(lo: int, hi: int) -> int:
    return (lo & 0xFFFF) | (hi & 0xFFFF) << 16


@dataclass(frozen=True)
class _Half:
    """A 16-bit float format: f16 or bf16."""
    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    packed: T.HWType

    def bits(self, value: float) -> int:
        """The exact bit pattern of `value` (raises if it is not exact)."""
        if value == 0:
            return 0x8000 if math.copysign(1.0, value) < 0 else 0
        m, e = math.frexp(abs(value))          # value = m * 2^e, 0.5 <= m < 1
        exp = e - 1 + self.bias
        frac = m * 2 - 1
        scaled = frac * (1 << self.mantissa_bits)
        if not (1 <= exp < (1 << self.exponent_bits) - 1) or scaled != int(scaled):
            raise TLCompileError(f"internal: {value!r} is not an exact normal {self.name}")
        sign = 0x8000 if value < 0 else 0
        return sign | exp << self.mantissa_bits | int(scaled)

    def pair(self, lo: float, hi: float) -> T.Imm:
        return T.Imm(_pair(self.bits(lo), self.bits(hi)), self.packed)


F16 = _Half("f16", 5, 10, 15, T.f16x2)
BF16 = _Half("bf16", 8, 7, 127, T.bf16x2)
_HALVES = {"f16": F16, "bf16": BF16}
NEG_ZERO_PAIR = 0x80008000


def _new_reg(namer, hint: str, type_: T.HWType) -> T.Reg:
    """A fresh register: `namer` is a callable (hint, hwtype) -> thread.Reg."""
    return namer(hint, type_)


def supports(src, dst) -> bool:
    """True when `dequant_packed` has a bit-trick path for src -> dst:
    every integer or float type of 1..8 bits to f16 or bf16."""
    src, dst = dtype(src), dtype(dst)
    return dst.name in _HALVES and 1 <= src.nbits <= 8


def instruction_mix(stmts: Sequence[T.Stmt]) -> Counter:
    """Statement class names -> counts (with `Cvt` split into `Cvt(int->...)`
    and `Cvt(float->...)`), for reports and tests."""
    mix: Counter = Counter()
    for s in stmts:
        name = type(s).__name__
        if isinstance(s, T.Cvt):
            name = "Cvt(float->)" if s.src.type.is_float else "Cvt(int->)"
        mix[name] += 1
    return mix


def _check_args(words, src: DataType, dst: DataType, count, first_bit) -> None:
    if dst.name not in _HALVES:
        raise TLCompileError(f"dequant to {dst.name}: only f16 and bf16 destinations")
    if not isinstance(count, int) or count < 1:
        raise TLCompileError(f"dequant of {count!r} elements")
    if not isinstance(first_bit, int) or first_bit < 0:
        raise TLCompileError(f"dequant from bit {first_bit!r}")
    if first_bit + count * src.nbits > 32 * len(words):
        raise TLCompileError(f"{count} {src.name} fields from bit {first_bit} need "
                             f"{first_bit + count * src.nbits} bits; {len(words)} words hold {32 * len(words)}")


# ----------------------------------------------------------- emitter


def _imm(value: int) -> T.Imm:
    return T.Imm(value & 0xFFFFFFFF, T.b32)


@dataclass(frozen=True)
class _Plan:
    """Where one prmt finds the two fields: byte_* index the 8-byte
    concatenation of sources a (bytes 0..3) and b (4..7)."""
    base_a: int
    base_b: int | None          # None: one source
    byte_lo: int
    byte_hi: int
    offset_lo: int
    offset_hi: int


class _Emitter:
    """Statements of one call, and the stream windows they share."""

    def __init__(self, namer, words: Sequence[T.Reg], src: DataType, first_bit: int, offset: int = 0):
        self.namer, self.words, self.src, self.first_bit = namer, list(words), src, first_bit
        self.offset = offset        # subtracted from every value by the final fma (folds_offset)
        self.stmts: list[T.Stmt] = []
        self.windows: dict[int, T.Operand] = {}
        self.flipped: dict[int, T.Reg] = {}

    # -- registers and statements

    def reg(self, hint: str, type_: T.HWType = T.b32) -> T.Reg:
        return _new_reg(self.namer, hint, type_)

    def binary(self, op: T.BinOp, a: T.Operand, b: T.Operand, type_: T.HWType = T.b32, hint="dq") -> T.Reg:
        dst = self.reg(hint, type_)
        self.stmts.append(T.Binary(op, dst, a, b))
        return dst

    def lop3(self, a: T.Operand, b: T.Operand, c: T.Operand, lut: int,
             type_: T.HWType = T.b32, hint="dq") -> T.Reg:
        dst = self.reg(hint, type_)
        self.stmts.append(T.Lop3(dst, a, b, c, lut))
        return dst

    def fma(self, a: T.Operand, b: T.Operand, c: T.Operand, type_: T.HWType, hint="dq") -> T.Reg:
        dst = self.reg(hint, type_)
        self.stmts.append(T.Fma(dst, a, b, c))
        return dst

    def prmt(self, a: T.Operand, b: T.Operand, selector: int, type_: T.HWType = T.b32, hint="dq_p") -> T.Reg:
        if isinstance(a, T.Imm):          # keep an immediate out of the first operand
            a, b, selector = b, a, _swap_sources(selector)
        dst = self.reg(hint, type_)
        self.stmts.append(T.Prmt(dst, a, b, _imm(selector)))
        return dst

    # -- sources

    def word(self, i: int) -> T.Operand | None:
        """Word i, or None past either end of the stream (reads as zero)."""
        return self.words[i] if 0 <= i < len(self.words) else None

    def window_cost(self, base: int) -> int:
        """Statements needed to have the window at `base` (0 if free or made)."""
        i = base // 32
        free = base % 32 == 0 or base in self.windows or (self.word(i) is None and self.word(i + 1) is None)
        return 0 if free else 1

    def window(self, base: int) -> T.Operand:
        """A register holding stream bits [base, base + 32) (zeros outside the stream)."""
        if base in self.windows:
            return self.windows[base]
        i, s = divmod(base, 32)
        lo, hi = self.word(i), self.word(i + 1)
        if s == 0:
            win = lo if lo is not None else _imm(0)
        elif lo is None and hi is None:
            win = _imm(0)
        elif lo is None:           # the stream starts inside this window
            win = self.binary(T.BinOp.SHL, hi, T.Imm(32 - s, T.u32), hint="dq_win")
        elif hi is None:           # the stream ends inside this window
            win = self.binary(T.BinOp.SHR, lo, T.Imm(s, T.u32), hint="dq_win")
        else:                      # funnel shift: bits [s, s + 32) of hi:lo
            win = self.reg("dq_win")
            self.stmts.append(T.Shf(win, lo, hi, T.Imm(s, T.u32), False, False))
        self.windows[base] = win
        return win

    def flipped_window(self, base: int) -> T.Reg:
        """The window at `base` with the top bit of every byte flipped (i8 -> u8 + 128)."""
        if base not in self.flipped:
            self.flipped[base] = self.binary(T.BinOp.XOR, self.window(base), _imm(0x80808080), hint="dq_flip")
        return self.flipped[base]

    # -- gathering two fields into the two halves

    def plan(self, p_lo: int, p_hi: int, allowed_lo: Sequence[int], allowed_hi: Sequence[int],
             one_source: bool = False) -> _Plan | None:
        """The cheapest way (fewest new windows, then fewest sources) to have the
        b-bit field at stream bit p_lo in byte byte_lo (and the next one) of a
        prmt's sources at bit offset offset_lo in allowed_lo, and likewise the
        one at p_hi; None when there is none (`one_source`: only one-source plans)."""
        b = self.src.nbits
        best, best_key = None, None

        def consider(key, plan):
            nonlocal best, best_key
            if best_key is None or key < best_key:
                best, best_key = plan, key

        def fits(k: int, o: int, nbytes: int) -> bool:
            # The field must lie in the two bytes a half takes and in the sources.
            return 0 <= k and 0 <= o and o + b <= 16 and 8 * k + o + b <= 8 * nbytes

        def spots(p: int, allowed: Sequence[int], nbytes: int):
            for o in allowed:
                for k in range(nbytes):
                    if fits(k, o, nbytes):
                        yield p - o - 8 * k, k, o

        # One source: both fields within one window.
        for base, k_lo, o_lo in spots(p_lo, allowed_lo, 4):
            for o_hi in allowed_hi:
                d = p_hi - o_hi - base
                if d % 8 == 0 and fits(d // 8, o_hi, 4):
                    consider((self.window_cost(base), 1), _Plan(base, None, k_lo, d // 8, o_lo, o_hi))
        if one_source:
            return best
        # Two consecutive windows: bytes 0..7 of a 64-bit stretch of the stream.
        for base, k_lo, o_lo in spots(p_lo, allowed_lo, 8):
            for o_hi in allowed_hi:
                d = p_hi - o_hi - base
                if d % 8 == 0 and fits(d // 8, o_hi, 8):
                    cost = self.window_cost(base) + self.window_cost(base + 32)
                    consider((cost, 2), _Plan(base, base + 32, k_lo, d // 8, o_lo, o_hi))
        # Two unrelated windows, one per half.
        lo = min(((self.window_cost(s[0]), s) for s in spots(p_lo, allowed_lo, 4)), default=None,
                 key=lambda t: t[0])
        hi = min(((self.window_cost(s[0]), s) for s in spots(p_hi, allowed_hi, 4)), default=None,
                 key=lambda t: t[0])
        if lo is not None and hi is not None:
            (c_lo, (base_lo, k_lo, o_lo)), (c_hi, (base_hi, k_hi, o_hi)) = lo, hi
            consider((c_lo + c_hi, 2), _Plan(base_lo, base_hi, k_lo, 4 + k_hi, o_lo, o_hi))
        return best

    def plan_cost(self, plan: _Plan | None) -> tuple[int, int]:
        if plan is None:
            return (1 << 30, 0)
        cost = self.window_cost(plan.base_a)
        if plan.base_b is not None and plan.base_b != plan.base_a:
            cost += self.window_cost(plan.base_b)
        return (cost, 1 if plan.base_b is None else 2)

    def gather(self, p_lo: int, p_hi: int, allowed_lo: Sequence[int],
               allowed_hi: Sequence[int]) -> tuple[T.Reg, int, int]:
        """One prmt with the field at stream bit p_lo in the low half (at an
        offset in allowed_lo) and the one at p_hi in the high half. The other
        bits of the result are unspecified. Returns (register, offset_lo, offset_hi)."""
        plan = self.plan(p_lo, p_hi, allowed_lo, allowed_hi)
        if plan is None:
            raise TLCompileError(f"internal: no gather for {self.src.name} fields at bits {p_lo}, {p_hi}")
        return self.gather_plan(plan), plan.offset_lo, plan.offset_hi

    def gather_plan(self, plan: _Plan) -> T.Reg:
        a = self.window(plan.base_a)
        b = self.window(plan.base_b) if plan.base_b is not None else a
        # Each half takes the field's byte and the next one; past the last
        # source byte, the field's byte again (the field then fits in one byte).
        k_lo, k_hi = plan.byte_lo, plan.byte_hi
        selector = k_lo | min(k_lo + 1, 7) << 4 | k_hi << 8 | min(k_hi + 1, 7) << 12
        return self.prmt(a, b, selector)


def _swap_sources(selector: int) -> int:
    """The prmt selector that reads the same bytes with the two sources swapped."""
    out = 0
    for n in range(4):
        nib = selector >> 4 * n & 0xF
        out |= ((nib & 0x8) | ((nib & 0x7) ^ 0x4)) << 4 * n
    return out


# ----------------------------------------------------------- fast recipes
# Each takes the emitter, the destination and the stream bit positions of the
# two fields, and returns the packed result register.


def _int_magic(em: _Emitter, h: _Half, p_lo: int, p_hi: int) -> T.Reg:
    """Integers of b bits with b <= h.mantissa_bits: the field sits in the
    mantissa of the magic number 2^man (ulp 1) at offset o, so the half reads
    2^man + q'*2^o, with q' = q ^ 2^(b-1) = v + 2^(b-1) for signed fields."""
    src = em.src
    b, man = src.nbits, h.mantissa_bits
    allowed = range(man - b + 1)
    plan = em.plan(p_lo, p_hi, allowed, allowed)
    # Both fields at offset 0 make the conversion one packed add of an
    # immediate: no multiplier, which ptxas would otherwise keep in a register
    # or rematerialize for every pair. Worth one more shifted window (shared
    # by the word's other pairs: u4 needs one per word).
    aligned = em.plan(p_lo, p_hi, [0], [0])
    if aligned is not None and em.plan_cost(aligned)[0] <= em.plan_cost(plan)[0] + 1:
        plan = aligned
    if plan is None:
        raise TLCompileError(f"internal: no gather for {src.name} fields at bits {p_lo}, {p_hi}")
    P, o_lo, o_hi = em.gather_plan(plan), plan.offset_lo, plan.offset_hi
    field = (1 << b) - 1
    signed = src.kind == "int"
    sign = _pair(1 << (b - 1 + o_lo), 1 << (b - 1 + o_hi)) if signed else 0
    magic = h.bits(2.0 ** man)
    H = em.lop3(P, _imm(_pair(field << o_lo, field << o_hi)), _imm(_pair(magic, magic) | sign), LUT_SEL_XOR)
    offset = (2 ** (b - 1) if signed else 0) + em.offset
    bias = h.pair(-(2.0 ** (man - o_lo) + offset), -(2.0 ** (man - o_hi) + offset))
    if o_lo == o_hi == 0:
        return em.binary(T.BinOp.ADD, H, bias, h.packed, hint="dq_out")
    scale = h.pair(2.0 ** -o_lo, 2.0 ** -o_hi)
    return em.fma(H, scale, bias, h.packed, hint="dq_out")


def _int8_to_f16(em: _Emitter, h: _Half, p_lo: int, p_hi: int) -> T.Reg:
    """Byte-aligned 8-bit integers to f16: prmt puts each byte under the magic
    byte 0x64 (1024 + q), then one packed subtraction (by fma). Signed bytes
    are read from a window with each byte's top bit flipped (q ^ 0x80 = v + 128)."""
    plan = em.plan(p_lo, p_hi, [0], [0], one_source=True)
    if plan is None:                       # the two bytes straddle words
        return _int_magic(em, h, p_lo, p_hi)
    signed = em.src.kind == "int"
    source = em.flipped_window(plan.base_a) if signed else em.window(plan.base_a)
    H = em.prmt(source, _imm(0x64646464), plan.byte_lo | 4 << 4 | plan.byte_hi << 8 | 4 << 12)
    bias = -(1024.0 + (128 if signed else 0) + em.offset)
    return em.fma(H, h.pair(1.0, 1.0), h.pair(bias, bias), h.packed, hint="dq_out")


def _int8_to_bf16(em: _Emitter, h: _Half, p_lo: int, p_hi: int) -> T.Reg:
    """8-bit integers to bf16, whose 7 mantissa bits cannot hold the field
    under a magic number: H1 = 0x4300 | low7 = 128 + low7, and bit 7 of the
    field selects an exponent in a second operand P2.
    i8: P2 = 0.5 or 1.0 (bit 7 is the exponent's lowest bit), v = H1 - 256*P2.
    u8: P2 = 128 or 256, q = H1 + (P2 - 256). Every step is exact."""
    P, _, _ = em.gather(p_lo, p_hi, [0], [0])
    H1 = em.lop3(P, _imm(0x007F007F), _imm(0x43004300), LUT_AND_OR)
    one = h.pair(1.0, 1.0)
    if em.src.kind == "int":
        P2 = em.lop3(P, _imm(0x00800080), _imm(0x3F003F00), LUT_AND_OR)
        return em.fma(P2, h.pair(-256.0, -256.0), H1, h.packed, hint="dq_out")
    P2 = em.lop3(P, _imm(0x00800080), _imm(0x43004300), LUT_AND_OR)
    D = em.fma(P2, one, h.pair(-256.0, -256.0), h.packed)
    return em.fma(D, one, H1, h.packed, hint="dq_out")


def _float_direct(em: _Emitter, h: _Half, p_lo: int, p_hi: int) -> T.Reg:
    """Floats whose every value is a finite-or-special value of h after
    rescaling the exponent (E < h's, or the same bias): exponent and
    mantissa bits go where h keeps them (mantissa top-aligned), one packed
    multiply by 2^(bias_h - bias_src) rebiases (source subnormals land as h
    subnormals and scale exactly), and the sign is ORed in at bit 15.

    The gather puts the field either with its mantissa in place (then a shl
    brings the sign to bit 15) or with its sign at bit 15 (then a shr brings
    the mantissa in place), whichever needs fewer new windows."""
    src = em.src
    E, M = src.exponent_bits, src.mantissa_bits
    o = h.mantissa_bits - M
    magnitude = ((1 << (E + M)) - 1) << o
    lift = h.exponent_bits - E             # how far the sign bit must move up
    if lift == 0:                          # sign already at bit 15 (only E = 5 into f16)
        # Same exponent field and bias: the embedding is bit for bit; an
        # all-ones exponent is inf/NaN in h, right for "ieee" and, with no
        # mantissa, +-inf for "finite" (values >= 65536 round to inf).
        if h.bias != src.bias or src.flavour == "fn" or (src.flavour == "finite" and M):
            raise TLCompileError(f"internal: {src.name} to {h.name} is not a direct case")
        P, _, _ = em.gather(p_lo, p_hi, [o], [o])
        full = _imm(_pair(magnitude | 0x8000, magnitude | 0x8000))
        return em.lop3(P, full, _imm(0), LUT_AND, h.packed, hint="dq_out")
    mantissa_placed = em.plan(p_lo, p_hi, [o], [o])
    sign_placed = em.plan(p_lo, p_hi, [o + lift], [o + lift])
    if em.plan_cost(sign_placed) < em.plan_cost(mantissa_placed):
        P = em.gather_plan(sign_placed)
        Tm = em.binary(T.BinOp.SHR, P, T.Imm(lift, T.u32))
        S = P
    else:
        P = em.gather_plan(mantissa_placed)
        Tm, S = P, None
    Tm = em.binary(T.BinOp.AND, Tm, _imm(_pair(magnitude, magnitude)))
    if src.has_nan:
        Tm = _special_to_all_ones(em, h, Tm, o)
    scale = 2.0 ** (h.bias - src.bias)
    R = em.fma(Tm, h.pair(scale, scale), T.Imm(NEG_ZERO_PAIR, h.packed), h.packed)
    if S is None:
        S = em.binary(T.BinOp.SHL, P, T.Imm(lift, T.u32))
    return em.lop3(R, S, _imm(0x80008000), LUT_OR_AND, h.packed, hint="dq_out")


def _special_to_all_ones(em: _Emitter, h: _Half, Tm: T.Reg, o: int) -> T.Reg:
    """Set h's exponent to all ones in the halves that hold an inf/NaN pattern,
    so that the rescaling multiply keeps them inf/NaN.

    Tm holds exponent and mantissa at [o, f), f = o + E + M, zeros elsewhere.
    Adding 1 at the lowest bit that must be one (the exponent's for "ieee",
    where any mantissa is special; the mantissa's for "fn", where only all
    ones is) carries into bit f exactly for the special patterns; that carry
    times 2^(15 - f) - 1, added to Tm, fills h's exponent bits [f, 15)."""
    src = em.src
    f = o + src.exponent_bits + src.mantissa_bits
    lowest = h.mantissa_bits if src.flavour == "ieee" else o
    carry = em.binary(T.BinOp.ADD, Tm, _imm(_pair(1 << lowest, 1 << lowest)), T.u32)
    if f == 14:                            # one bit to fill: OR the carry in
        return em.lop3(Tm, carry, _imm(_pair(1 << f, 1 << f)), LUT_OR_AND)
    flag = em.binary(T.BinOp.AND, carry, _imm(_pair(1 << f, 1 << f)))
    dst = em.reg("dq")
    em.stmts.append(T.Fma(dst, flag, T.Imm((1 << (15 - f)) - 1, T.u32), Tm))     # mad.lo: no carries
    return dst


def _e5_to_f16(em: _Emitter, h: _Half, p_lo: int, p_hi: int) -> T.Reg:
    """E = 5 "finite" formats (f6e5m0, f7e5m1) into f16: same bias, so the
    field is placed as is, sign included. The all-ones exponent is a finite
    value >= 65536 there, which rounds to inf: clear its mantissa."""
    M = em.src.mantissa_bits
    if em.src.flavour == "ieee":          # f8e5m2: the top byte of f16
        plan = em.plan(p_lo, p_hi, [0], [0], one_source=True) if em.src.nbits == 8 else None
        if plan is not None:
            return em.prmt(em.window(plan.base_a), _imm(0),
                           4 | plan.byte_lo << 4 | 4 << 8 | plan.byte_hi << 12, h.packed, hint="dq_out")
    if M == 0 or em.src.flavour == "ieee":
        return _float_direct(em, h, p_lo, p_hi)
    if M != 1:
        raise TLCompileError(f"internal: no E = 5 recipe for {em.src.name}")
    o = h.mantissa_bits - M
    P, _, _ = em.gather(p_lo, p_hi, [o], [o])
    full = ((1 << em.src.nbits) - 1) << o
    Tm = em.binary(T.BinOp.AND, P, _imm(_pair(full, full)))
    exponent = _imm(_pair(0x7C00, 0x7C00))
    K = em.binary(T.BinOp.AND, P, exponent)
    carry = em.binary(T.BinOp.ADD, K, _imm(0x04000400), T.u32)        # bit 15: exponent all ones
    spread = em.binary(T.BinOp.SHR, carry, T.Imm(15 - o, T.u32))       # ... moved to the mantissa bit
    return em.lop3(Tm, spread, _imm(_pair(1 << o, 1 << o)), LUT_CLEAR, h.packed, hint="dq_out")


def _wide_to_f16(em: _Emitter, h: _Half, p_lo: int, p_hi: int) -> T.Reg:
    """E >= 6 formats into f16 (range wider than f16's): exact bf16x2 first,
    each half widened to f32 by moving its bits up, then one cvt.rn.f16x2.f32."""
    R = _float_direct(em, BF16, p_lo, p_hi)
    lo = em.prmt(R, _imm(0), 0x1044, T.f32)        # bytes 0,1 of R into the top of an f32
    hi = em.prmt(R, _imm(0), 0x3244, T.f32)
    dst = em.reg("dq_out", h.packed)
    em.stmts.append(T.CvtPack(dst, hi, lo))
    return dst


def _recipe(src: DataType, h: _Half):
    if src.is_integer:
        if src.nbits <= h.mantissa_bits:
            return _int_magic
        return _int8_to_f16 if h is F16 else _int8_to_bf16
    if h is BF16 or src.exponent_bits <= 4:
        return _float_direct
    return _e5_to_f16 if src.exponent_bits == 5 else _wide_to_f16


# ----------------------------------------------------------- public entry points


def folds_offset(src, dst, offset) -> bool:
    """Whether `dequant_packed(..., offset=offset)` can subtract `offset` from
    every value inside the conversion's final fma (its bias constant), exactly:
    integer sources whose recipe ends in one packed fma (not u8/i8 to bf16),
    an integer offset, and every result and bias an exact integer of dst."""
    src, dst = dtype(src), dtype(dst)
    if not src.is_integer or not supports(src, dst) or offset != int(offset):
        return False
    h = _HALVES[dst.name]
    if _recipe(src, h) not in (_int_magic, _int8_to_f16):
        return False
    exact = 2 ** (h.mantissa_bits + 1)          # every integer up to this is exact in h
    signed_bias = 2 ** (src.nbits - 1) if src.kind == "int" else 0
    worst_bias = 2 ** h.mantissa_bits + signed_bias + abs(offset)
    return max(abs(src.min - offset), abs(src.max - offset), worst_bias) <= exact


def dequant_packed(namer, words: Sequence[T.Reg], src, dst, count: int,
                   first_bit: int = 0, offset: int = 0) -> tuple[list[T.Stmt], list[T.Reg]]:
    """Convert `count` packed `src` fields to f16x2/bf16x2 registers (module doc),
    minus `offset` when that is nonzero (only where `folds_offset` holds).

    Bit tricks when `supports(src, dst)`; otherwise `dequant_generic`.
    Raises TLCompileError when the words are too few or dst is not f16/bf16."""
    src, dst = dtype(src), dtype(dst)
    _check_args(words, src, dst, count, first_bit)
    if offset and not folds_offset(src, dst, offset):
        raise TLCompileError(f"internal: dequant of {src.name} to {dst.name} cannot fold offset {offset}")
    if not supports(src, dst):
        return dequant_generic(namer, words, src, dst, count, first_bit)
    h = _HALVES[dst.name]
    recipe = _recipe(src, h)
    if recipe is _int8_to_f16 and first_bit % 8:
        recipe = _int_magic
    em = _Emitter(namer, words, src, first_bit, int(offset))
    outs = []
    for j in range(0, count, 2):
        p_lo = first_bit + j * src.nbits
        p_hi = p_lo + src.nbits if j + 1 < count else p_lo
        outs.append(recipe(em, h, p_lo, p_hi))
    return em.stmts, outs


# ----------------------------------------------------------- generic path


def _generic_supported(src: DataType, dst: DataType) -> str | None:
    """Why `dequant_generic` cannot convert src to dst, or None when it can."""
    if dst.name not in _HALVES:
        return f"dequant to {dst.name}: only f16 and bf16 destinations"
    if src.is_integer:
        if src.nbits > 32:
            return f"dequant of {src.name}: integers of at most 32 bits"
        if src.nbits > 24 and dst.name == "bf16":
            # int -> f32 would round before the bf16 rounding (double rounding).
            return f"dequant of {src.name} to bf16: integers of at most 24 bits"
        return None
    if src.nbits > 16 or src.exponent_bits > 8:
        return f"dequant of {src.name}: floats of at most 16 bits with at most 8 exponent bits"
    return None


def dequant_generic(namer, words: Sequence[T.Reg], src, dst, count: int,
                    first_bit: int = 0) -> tuple[list[T.Stmt], list[T.Reg]]:
    """Same contract as `dequant_packed`, one element at a time: extract the
    field (bfe, after a funnel shift when it straddles words), convert it
    exactly to f32 (cvt.rn.f32 from the integer; for floats, the bits placed
    into f32 and rescaled by one f32 multiply, with setp/selp for inf/NaN),
    then round each pair once with cvt.rn.{f16,bf16}x2.f32.

    Covers integers of up to 32 bits (24 to bf16) and floats of up to 16 bits
    with at most 8 exponent bits, to f16 and bf16; raises TLCompileError otherwise."""
    src, dst = dtype(src), dtype(dst)
    why = _generic_supported(src, dst)
    if why is not None:
        raise TLCompileError(why)
    _check_args(words, src, dst, count, first_bit)
    h = _HALVES[dst.name]
    em = _Emitter(namer, words, src, first_bit)
    values = [_generic_element(em, first_bit + i * src.nbits) for i in range(count)]
    outs = []
    for j in range(0, count, 2):
        lo = values[j]
        hi = values[j + 1] if j + 1 < count else lo
        dst_reg = em.reg("dq_out", h.packed)
        em.stmts.append(T.CvtPack(dst_reg, hi, lo))
        outs.append(dst_reg)
    return em.stmts, outs


def _generic_element(em: _Emitter, p: int) -> T.Reg:
    """The exact f32 value of the field at stream bit p."""
    src = em.src
    b = src.nbits
    i, s = divmod(p, 32)
    if s + b <= 32:
        source, pos = em.word(i), s
    else:                                   # straddles two words
        source, pos = em.window(p), 0
    signed_int = src.kind == "int"
    x = em.reg("dq_field", T.s32 if signed_int else T.u32)
    em.stmts.append(T.Bfe(x, source, T.Imm(pos, T.u32), T.Imm(b, T.u32)))
    if src.is_integer:
        v = em.reg("dq_f", T.f32)
        em.stmts.append(T.Cvt(v, x, T.Rounding.RN))
        return v
    return _generic_float(em, x)


def _generic_float(em: _Emitter, x: T.Reg) -> T.Reg:
    """Pattern x (u32, the field in its low bits) -> its exact f32 value."""
    src = em.src
    E, M, N = src.exponent_bits, src.mantissa_bits, src.nbits
    magnitude_mask = ((1 << (E + M)) - 1) << (23 - M)
    placed = em.binary(T.BinOp.SHL, x, T.Imm(23 - M, T.u32))
    mag = em.binary(T.BinOp.AND, placed, _imm(magnitude_mask))
    exp_mask = ((1 << E) - 1) << M
    specials = []                          # (predicate, f32 bits to OR in) per special class
    if E == 8:
        # The exponent field is f32's, bias 127: no rescaling. All ones is
        # inf/NaN in f32; right for "ieee", and "finite" values there are
        # >= 2^128, which round to inf in f16/bf16 alike: clear the mantissa.
        if src.flavour != "ieee":
            all_ones = _generic_test(em, x, exp_mask, exp_mask)
            cleared = em.binary(T.BinOp.AND, mag, _imm(0x7F800000))
            sel = em.reg("dq")
            em.stmts.append(T.Selp(sel, cleared, mag, all_ones))
            mag = sel
        value = mag
    else:
        if src.flavour == "ieee":
            specials.append(_generic_test(em, x, exp_mask, exp_mask))
        elif src.flavour == "fn":
            all_mag = (1 << (E + M)) - 1
            specials.append(_generic_test(em, x, all_mag, all_mag))
        scale = 2.0 ** (127 - src.bias)
        value = em.fma(mag, T.Imm(scale, T.f32), T.Imm(-0.0, T.f32), T.f32, hint="dq_f")
        for pred in specials:             # inf/NaN: exponent all ones, mantissa kept
            sel = em.reg("dq")
            em.stmts.append(T.Selp(sel, _imm(0x7F800000), _imm(0), pred))
            value = em.binary(T.BinOp.OR, value, sel, hint="dq_f")
    sign = em.binary(T.BinOp.SHL, x, T.Imm(32 - N, T.u32))
    out = em.reg("dq_f", T.f32)
    em.stmts.append(T.Lop3(out, value, sign, _imm(0x80000000), LUT_OR_AND))
    return out


def _generic_test(em: _Emitter, x: T.Reg, mask: int, want: int) -> T.Reg:
    """A predicate: (x & mask) == want."""
    masked = em.binary(T.BinOp.AND, x, T.Imm(mask, T.u32), T.u32)
    pred = em.reg("dq_p", T.pred)
    em.stmts.append(T.Setp(T.Cmp.EQ, pred, masked, T.Imm(want, T.u32)))
    return pred
