"""Value rules of the GPU lowering: how one VM element lives in a register,
and the thread-IR sequences that convert, round and compute on it with the
reference interpreter's semantics (backends/interp_values.py).

Compute form (`cf_type`): every element of a tile, and every scalar, is one
register of a hardware type that holds its *value*:
* floats with E <= 8 and M <= 23 (f32, f16, bf16, f8, fNeEmM): f32; f64 and
  the custom formats with E > 8: f64. The value is always exactly
  representable in the VM dtype: every instruction computes in the compute
  form and rounds once (`round_to`) to the dtype, RNE + saturation, as the
  interpreter does. Double rounding (an f32 result rounded again to f16 or
  smaller) is innocuous for + - * / sqrt because f32 has >= 2p+2 bits.
* integers of N <= 32 bits: s32 (iN, sign-extended) or u32 (uN, zero-
  extended); N > 32: s64 / u64. After every instruction the value is
  wrapped to N bits (`wrap`). u1 (predicates) is u32 0/1.

`Emitter` is the small statement builder every lowering module uses.
"""
from __future__ import annotations

import math
import struct

from ..errors import TLCompileError, TLTargetError
from ..ir import thread as T
from ..ir import vm
from ..ir.dtypes import DataType

E = vm.ElementOp


class Emitter:
    """Appends thread-IR statements to the innermost open block; makes fresh registers."""

    def __init__(self):
        self.blocks: list[list] = [[]]
        self.count = 0

    # ---- registers and statements
    def reg(self, t, hint: str = "r") -> T.Reg:
        self.count += 1
        return T.Reg(f"{hint}{self.count}", t)

    def emit(self, stmt) -> None:
        self.blocks[-1].append(stmt)

    def open(self) -> None:
        self.blocks.append([])

    def close(self) -> tuple:
        return tuple(self.blocks.pop())

    # ---- one-statement helpers returning the destination
    def mov(self, src, t, hint="m") -> T.Reg:
        d = self.reg(t, hint)
        if isinstance(src, T.Imm):
            src = T.Imm(src.value, t)
        elif not isinstance(src, T.Reg):
            src = T.Imm(src, t)
        self.emit(T.Mov(d, src))
        return d

    def bin(self, op, a, b, t=None, hint="b") -> T.Reg:
        t = t or a.type
        d = self.reg(t, hint)
        self.emit(T.Binary(op, d, _op(a, t), _op(b, t)))
        return d

    def un(self, op, a, t=None, hint="u") -> T.Reg:
        t = t or a.type
        d = self.reg(t, hint)
        self.emit(T.Unary(op, d, _op(a, t)))
        return d

    def fma(self, a, b, c, t=None) -> T.Reg:
        t = t or a.type
        d = self.reg(t, "f")
        self.emit(T.Fma(d, _op(a, t), _op(b, t), _op(c, t)))
        return d

    def setp(self, cmp, a, b, t=None) -> T.Reg:
        t = t or a.type
        d = self.reg(T.pred, "p")
        self.emit(T.Setp(cmp, d, _op(a, t), _op(b, t)))
        return d

    def selp(self, a, b, p, t=None) -> T.Reg:
        t = t or (a.type if isinstance(a, T.Reg) else b.type)
        d = self.reg(t, "s")
        self.emit(T.Selp(d, _op(a, t), _op(b, t), p))
        return d

    def cvt(self, src, t, rounding=None, saturate=False) -> T.Reg:
        d = self.reg(t, "c")
        self.emit(T.Cvt(d, src, rounding, saturate))
        return d

    def pand(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return self.bin(T.BinOp.AND, a, b, T.pred, "p")

    def bits_of(self, x: T.Reg) -> T.Reg:
        """The bit pattern of a float register as u32/u64 (no data change)."""
        return self.mov(x, T.u64 if x.type.nbits == 64 else T.u32, "bits")

    def float_of(self, bits: T.Reg, t) -> T.Reg:
        return self.mov(bits, t, "fl")


def _op(x, t):
    """A Python number becomes an immediate of type t; registers pass through."""
    if isinstance(x, (T.Reg, T.Imm)):
        return x
    return T.Imm(x, t)


# ------------------------------------------------------------ compute form


def cf_type(dt: DataType):
    """The register type of one element of dt (module docstring)."""
    if dt.is_float:
        return T.f32 if dt.exponent_bits <= 8 and dt.mantissa_bits <= 23 else T.f64
    wide = dt.nbits > 32
    if dt.is_signed:
        return T.s64 if wide else T.s32
    return T.u64 if wide else T.u32


def bits_type(dt: DataType):
    """The unsigned register type that holds dt's bit pattern."""
    return T.u64 if dt.nbits > 32 else T.u32


def imm(value, dt: DataType) -> T.Imm:
    """A canonical VM constant as an immediate of dt's compute form."""
    t = cf_type(dt)
    if dt.is_float:
        return T.Imm(float(value), t)
    v = int(value)
    if t in (T.u32, T.u64):
        v &= (1 << t.nbits) - 1
    return T.Imm(v, t)


def _float_bits(value: float, t) -> int:
    if t.nbits == 64:
        return struct.unpack("<Q", struct.pack("<d", value))[0]
    return struct.unpack("<I", struct.pack("<f", value))[0]


# ---------------------------------------------------------- integer wrapping


def wrap(em: Emitter, x: T.Reg, dt: DataType) -> T.Reg:
    """x (any integer register of dt's compute form width) wrapped to dt's N bits."""
    t = cf_type(dt)
    if x.type != t:
        x = em.cvt(x, t) if x.type.nbits != t.nbits else em.mov(x, t)
    if dt.nbits == t.nbits:
        return x
    if dt.is_signed:
        d = em.reg(t, "w")
        em.emit(T.Bfe(d, x, T.Imm(0, T.u32), T.Imm(dt.nbits, T.u32)))
        return d
    return em.bin(T.BinOp.AND, x, T.Imm(dt.mask, t), t, "w")


# ------------------------------------------------------------ float rounding


def round_to(em: Emitter, x: T.Reg, dt: DataType) -> T.Reg:
    """x (f32 or f64) rounded to dt (RNE, saturating finite overflow, inf kept
    where dt has it, NaN -> dt's NaN or +0), returned in dt's compute form."""
    ct = cf_type(dt)
    if dt.name in ("f32", "f64"):
        return x if x.type == ct else em.cvt(x, ct, T.Rounding.RN)
    if dt.name in ("f16",) and x.type == T.f32:
        return _round_native_f16(em, x, dt)
    r = _round_generic(em, x, dt)
    if r.type != ct:
        r = em.cvt(r, ct, T.Rounding.RN)   # exact: r is a dt value, which ct holds
    return r


def _round_native_f16(em: Emitter, x: T.Reg, dt: DataType) -> T.Reg:
    """cvt.rn.f16.f32 after clamping finite values to +-max (cvt would give inf)."""
    ax = em.un(T.UnOp.ABS, x)
    finite = em.setp(T.Cmp.NE, ax, T.Imm(math.inf, T.f32))
    lo = em.bin(T.BinOp.MAX, x, T.Imm(-dt.max, T.f32))
    clamped = em.bin(T.BinOp.MIN, lo, T.Imm(dt.max, T.f32))
    y = em.selp(clamped, x, finite)
    h = em.cvt(y, T.f16, T.Rounding.RN)
    return em.cvt(h, T.f32)


def _round_generic(em: Emitter, x: T.Reg, dt: DataType) -> T.Reg:
    """Bit-exact rounding of an f32/f64 value to any float format that fits
    its compute width (see module docstring); result in x's type."""
    ft = x.type
    if dt.exponent_bits > 8 and ft == T.f32:
        x = em.cvt(x, T.f64)
        ft = T.f64
    it = T.u64 if ft.nbits == 64 else T.u32
    P = 52 if ft.nbits == 64 else 23
    M = dt.mantissa_bits
    emin = 1 - dt.bias
    a = em.un(T.UnOp.ABS, x)
    # Normal range: round the mantissa to M bits on the integer pattern; a
    # carry into the exponent is the right result.
    if M < P:
        s = P - M
        b = em.bits_of(a)
        odd = em.bin(T.BinOp.AND, em.bin(T.BinOp.SHR, b, T.Imm(s, T.u32), it), T.Imm(1, it), it)
        b = em.bin(T.BinOp.ADD, b, T.Imm((1 << (s - 1)) - 1, it), it)
        b = em.bin(T.BinOp.ADD, b, odd, it)
        b = em.bin(T.BinOp.AND, b, T.Imm(((1 << ft.nbits) - 1) & ~((1 << s) - 1), it), it)
        r_norm = em.float_of(b, ft)
        # Subnormal range: (a + C) - C rounds to the quantum 2^(emin - M).
        C = 2.0 ** (emin - M + P)
        t1 = em.bin(T.BinOp.ADD, a, T.Imm(C, ft), ft)
        r_sub = em.bin(T.BinOp.SUB, t1, T.Imm(C, ft), ft)
        small = em.setp(T.Cmp.LT, a, T.Imm(2.0 ** emin, ft))
        r = em.selp(r_sub, r_norm, small)
    else:
        r = a
    maxv = float(dt.max)
    over = em.setp(T.Cmp.GT, r, T.Imm(maxv, ft))
    r = em.selp(T.Imm(maxv, ft), r, over, ft)
    is_inf = em.setp(T.Cmp.EQ, a, T.Imm(math.inf, ft))
    r = em.selp(T.Imm(math.inf if dt.has_inf else maxv, ft), r, is_inf, ft)
    # Sign back (keeps -0.0).
    sign = em.bin(T.BinOp.AND, em.bits_of(x), T.Imm(1 << (ft.nbits - 1), it), it)
    r = em.float_of(em.bin(T.BinOp.OR, em.bits_of(r), sign, it), ft)
    nan = em.setp(T.Cmp.NE, x, x)
    return em.selp(T.Imm(math.nan if dt.has_nan else 0.0, ft), r, nan, ft)


# ------------------------------------------------------- bits <-> compute form


def decode_bits(em: Emitter, bits: T.Reg, dt: DataType) -> T.Reg:
    """A u32/u64 register holding dt's pattern in its low N bits (higher bits
    zero) -> dt's compute form."""
    ct = cf_type(dt)
    bt = bits_type(dt)
    if bits.type != bt:
        bits = em.cvt(bits, bt) if bits.type.nbits != bt.nbits else em.mov(bits, bt)
    if dt.is_integer:
        if dt.is_signed and dt.nbits < ct.nbits:
            d = em.reg(ct, "v")
            em.emit(T.Bfe(d, em.mov(bits, ct), T.Imm(0, T.u32), T.Imm(dt.nbits, T.u32)))
            return d
        return em.mov(bits, ct, "v")
    if dt.name in ("f32", "f64"):
        return em.mov(bits, ct, "v")
    if dt.name == "f16":
        h = em.mov(em.cvt(bits, T.u16), T.f16)
        return em.cvt(h, T.f32)
    if dt.name == "bf16":
        return em.mov(em.bin(T.BinOp.SHL, bits, T.Imm(16, T.u32), T.u32), T.f32, "v")
    return _decode_placed(em, bits, dt)


def _decode_placed(em: Emitter, bits: T.Reg, dt: DataType) -> T.Reg:
    """fNeEmM: put exponent and mantissa where the compute float keeps them
    (the sign at its top bit), then one exact multiply by 2^(bias_cf - bias)."""
    ft = cf_type(dt)
    W = ft.nbits
    it = T.u64 if W == 64 else T.u32
    P, bias_cf = (52, 1023) if W == 64 else (23, 127)
    N, M = dt.nbits, dt.mantissa_bits
    if bits.type != it:
        bits = em.cvt(bits, it)
    mag = em.bin(T.BinOp.AND, bits, T.Imm((1 << (N - 1)) - 1, it), it)
    sign = em.bin(T.BinOp.AND, bits, T.Imm(1 << (N - 1), it), it)
    placed = em.bin(T.BinOp.OR, em.bin(T.BinOp.SHL, mag, T.Imm(P - M, T.u32), it),
                    em.bin(T.BinOp.SHL, sign, T.Imm(W - N, T.u32), it), it)
    v = em.bin(T.BinOp.MUL, em.float_of(placed, ft), T.Imm(2.0 ** (bias_cf - dt.bias), ft), ft)
    if dt.flavour == "ieee":
        exp_all = ((1 << dt.exponent_bits) - 1) << M
        special = em.setp(T.Cmp.GE, mag, T.Imm(exp_all, it), it)
        is_nan = em.setp(T.Cmp.GT, mag, T.Imm(exp_all, it), it)
        inf_bits = em.bin(T.BinOp.OR, em.bin(T.BinOp.SHL, sign, T.Imm(W - N, T.u32), it),
                          T.Imm(_float_bits(math.inf, ft), it), it)
        v = em.selp(em.float_of(inf_bits, ft), v, special)
        v = em.selp(T.Imm(math.nan, ft), v, is_nan, ft)
    elif dt.flavour == "fn":
        is_nan = em.setp(T.Cmp.EQ, mag, T.Imm((1 << (N - 1)) - 1, it), it)
        v = em.selp(T.Imm(math.nan, ft), v, is_nan, ft)
    return v


def encode_bits(em: Emitter, x: T.Reg, dt: DataType) -> T.Reg:
    """A compute-form value of dt -> its bit pattern (u32 or u64, high bits zero)."""
    bt = bits_type(dt)
    if dt.is_integer:
        if x.type.nbits != bt.nbits:
            x = em.cvt(x, bt)
        b = em.mov(x, bt) if x.type != bt else x
        if dt.nbits < bt.nbits:
            b = em.bin(T.BinOp.AND, b, T.Imm(dt.mask, bt), bt)
        return b
    if dt.name in ("f32", "f64"):
        return em.bits_of(x)
    if dt.name == "f16":
        h = em.cvt(x, T.f16, T.Rounding.RN)      # exact: x is an f16 value
        return em.cvt(em.mov(h, T.u16), T.u32)
    if dt.name == "bf16":
        return em.bin(T.BinOp.SHR, em.bits_of(x), T.Imm(16, T.u32), T.u32)
    return _encode_placed(em, x, dt)


def _encode_placed(em: Emitter, x: T.Reg, dt: DataType) -> T.Reg:
    """The inverse of _decode_placed for a value exactly representable in dt."""
    ft = x.type
    W = ft.nbits
    it = T.u64 if W == 64 else T.u32
    P, bias_cf = (52, 1023) if W == 64 else (23, 127)
    N, M = dt.nbits, dt.mantissa_bits
    a = em.un(T.UnOp.ABS, x)
    scaled = em.bin(T.BinOp.MUL, a, T.Imm(2.0 ** (dt.bias - bias_cf), ft), ft)
    mag = em.bin(T.BinOp.SHR, em.bits_of(scaled), T.Imm(P - M, T.u32), it)
    if dt.flavour == "ieee":
        is_inf = em.setp(T.Cmp.EQ, a, T.Imm(math.inf, ft))
        mag = em.selp(T.Imm(dt.inf_bits, it), mag, is_inf, it)
    sign = em.bin(T.BinOp.SHR, em.bits_of(x), T.Imm(W - N, T.u32), it)
    sign = em.bin(T.BinOp.AND, sign, T.Imm(1 << (N - 1), it), it)
    b = em.bin(T.BinOp.OR, mag, sign, it)
    if dt.has_nan:
        nan = em.setp(T.Cmp.NE, x, x)
        b = em.selp(T.Imm(dt.nan_bits, it), b, nan, it)
    bt = bits_type(dt)
    return b if b.type == bt else em.cvt(b, bt)


# ---------------------------------------------------------------- conversion


def convert(em: Emitter, x: T.Reg, src: DataType, dst: DataType) -> T.Reg:
    """The `cast` rule: x in src's compute form -> dst's compute form."""
    ct = cf_type(dst)
    if dst.is_float:
        if src.is_float:
            return round_to(em, x, dst)
        # integer -> float: cvt.rn to f32/f64 rounds once, correctly. Narrower
        # formats go through a type that holds the integer exactly (f32 up to
        # 24 bits, f64 up to 53), then round (and saturate) once.
        if dst.name in ("f32", "f64"):
            return em.cvt(x, ct, T.Rounding.RN)
        if src.nbits <= 53:
            wide = em.cvt(x, T.f32 if src.nbits <= 24 else T.f64, T.Rounding.RN)
            return round_to(em, wide, dst)
        # 64-bit integers: one rounding to f32 first (documented double rounding below f32).
        return round_to(em, em.cvt(x, T.f32, T.Rounding.RN), dst)
    if src.is_float:
        # float -> int: truncate; cvt.rzi saturates to the 32/64-bit range and maps NaN to 0.
        wide_t = ct
        v = em.cvt(x, wide_t, T.Rounding.RZI)
        if dst.nbits < ct.nbits:
            v = em.bin(T.BinOp.MIN, v, T.Imm(dst.max, ct), ct)
            v = em.bin(T.BinOp.MAX, v, T.Imm(dst.min, ct), ct)
        return v
    # int -> int: wrap to dst's bits.
    if x.type.nbits != ct.nbits:
        x = em.cvt(x, ct)
    elif x.type != ct:
        x = em.mov(x, ct)
    return wrap(em, x, dst)


def to_pred(em: Emitter, x: T.Reg) -> T.Reg:
    """x != 0 (NaN counts as true)."""
    zero = 0.0 if x.type.is_float else 0
    return em.setp(T.Cmp.NE, x, T.Imm(zero, x.type))


def from_pred(em: Emitter, p: T.Reg) -> T.Reg:
    return em.selp(T.Imm(1, T.u32), T.Imm(0, T.u32), p, T.u32)


# --------------------------------------------------------- element-wise ops

_ARITH_FLOAT = {E.ADD: T.BinOp.ADD, E.SUB: T.BinOp.SUB, E.MUL: T.BinOp.MUL, E.DIV: T.BinOp.DIV,
                E.MIN: T.BinOp.MIN, E.MAX: T.BinOp.MAX}
_ARITH_INT = {E.ADD: T.BinOp.ADD, E.SUB: T.BinOp.SUB, E.MUL: T.BinOp.MUL, E.BIT_AND: T.BinOp.AND,
              E.BIT_OR: T.BinOp.OR, E.BIT_XOR: T.BinOp.XOR, E.MIN: T.BinOp.MIN, E.MAX: T.BinOp.MAX}
_CMP = {E.LT: T.Cmp.LT, E.LE: T.Cmp.LE, E.GT: T.Cmp.GT, E.GE: T.Cmp.GE, E.EQ: T.Cmp.EQ, E.NE: T.Cmp.NE}
COMPARISONS = frozenset(_CMP)
LOGICAL = frozenset({E.AND, E.OR, E.NOT})


def operation_dtype(op: vm.ElementOp, out: DataType, operand_dtypes) -> DataType:
    """The dtype an element-wise op computes in (the interpreter's promotion)."""
    if op in COMPARISONS:
        floats = [d for d in operand_dtypes if d.is_float]
        return _widest(floats) if floats else _widest(operand_dtypes)
    if op in LOGICAL:
        return vm.BOOL
    return out


def _widest(dts):
    return max(dts, key=lambda d: (d.nbits, d.is_float))


def element_op(em: Emitter, op: vm.ElementOp, args: list, dt: DataType, out: DataType) -> T.Reg:
    """op on registers already in dt's compute form (dt from operation_dtype;
    WHERE's condition may be any compute form); result in out's compute form."""
    if op in COMPARISONS:
        return from_pred(em, em.setp(_CMP[op], args[0], args[1]))
    if op is E.AND or op is E.OR:
        p = em.bin(T.BinOp.AND if op is E.AND else T.BinOp.OR, to_pred(em, args[0]), to_pred(em, args[1]),
                   T.pred)
        return from_pred(em, p)
    if op is E.NOT:
        return from_pred(em, em.un(T.UnOp.NOT, to_pred(em, args[0]), T.pred))
    if op is E.WHERE:
        return em.selp(args[1], args[2], to_pred(em, args[0]))
    if dt.is_float:
        return round_to(em, _float_op(em, op, args), dt)
    return wrap(em, _int_op(em, op, args, dt), dt)


def _float_op(em: Emitter, op, args) -> T.Reg:
    a = args[0]
    ft = a.type
    if op in _ARITH_FLOAT:
        return em.bin(_ARITH_FLOAT[op], a, args[1])
    if op is E.NEG:
        return em.un(T.UnOp.NEG, a)
    if op is E.ABS:
        return em.un(T.UnOp.ABS, a)
    if op is E.SQRT:
        return em.un(T.UnOp.SQRT, a)
    if op is E.RSQRT:
        # 1/sqrt in f64, rounded once afterwards, like the interpreter.
        w = a if ft == T.f64 else em.cvt(a, T.f64)
        r = em.bin(T.BinOp.DIV, T.Imm(1.0, T.f64), em.un(T.UnOp.SQRT, w), T.f64)
        return r if ft == T.f64 else em.cvt(r, T.f32, T.Rounding.RN)
    if op is E.EXP:
        w = a if ft == T.f32 else em.cvt(a, T.f32, T.Rounding.RN)
        r = em.un(T.UnOp.EX2, em.bin(T.BinOp.MUL, w, T.Imm(1.4426950408889634, T.f32)))
        return r if ft == T.f32 else em.cvt(r, ft)
    if op is E.LOG:
        w = a if ft == T.f32 else em.cvt(a, T.f32, T.Rounding.RN)
        r = em.bin(T.BinOp.MUL, em.un(T.UnOp.LG2, w), T.Imm(0.6931471805599453, T.f32))
        return r if ft == T.f32 else em.cvt(r, ft)
    if op in (E.FLOOR_DIV, E.MOD):
        # In f64, like the interpreter: floor(a / b), and Python's % from fmod.
        a64 = a if ft == T.f64 else em.cvt(a, T.f64)
        b64 = args[1] if ft == T.f64 else em.cvt(args[1], T.f64)
        q = em.bin(T.BinOp.DIV, a64, b64, T.f64)
        if op is E.FLOOR_DIV:
            r = em.cvt(q, T.f64, T.Rounding.RMI)
        else:
            r = _float_mod(em, a64, b64, q)
        return r if ft == T.f64 else em.cvt(r, T.f32, T.Rounding.RN)
    raise TLCompileError(f"lowering: element-wise '{op.value}' on floats")


def _float_mod(em: Emitter, a, b, q) -> T.Reg:
    """numpy's mod: fmod(a, b), moved to the divisor's sign."""
    tq = em.cvt(q, T.f64, T.Rounding.RZI)
    r = em.fma(em.un(T.UnOp.NEG, tq), b, a)
    # trunc(a/b) may have rounded up to the next integer: r then has the wrong sign.
    ab = em.un(T.UnOp.ABS, b)
    sa = em.setp(T.Cmp.LT, a, T.Imm(0.0, T.f64))
    sr = em.setp(T.Cmp.LT, r, T.Imm(0.0, T.f64))
    nz = em.setp(T.Cmp.NE, r, T.Imm(0.0, T.f64))
    wrong = em.pand(nz, em.bin(T.BinOp.XOR, sa, sr, T.pred))
    fix = em.selp(em.un(T.UnOp.NEG, ab), ab, sa)
    r = em.selp(em.bin(T.BinOp.ADD, r, fix), r, wrong)
    sr = em.setp(T.Cmp.LT, r, T.Imm(0.0, T.f64))
    sb = em.setp(T.Cmp.LT, b, T.Imm(0.0, T.f64))
    nz = em.setp(T.Cmp.NE, r, T.Imm(0.0, T.f64))
    move = em.pand(nz, em.bin(T.BinOp.XOR, sr, sb, T.pred))
    return em.selp(em.bin(T.BinOp.ADD, r, b), r, move)


def _int_op(em: Emitter, op, args, dt: DataType) -> T.Reg:
    a = args[0]
    t = a.type
    if op in _ARITH_INT:
        return em.bin(_ARITH_INT[op], a, args[1], t)
    if op is E.NEG:
        return em.bin(T.BinOp.SUB, T.Imm(0, t), a, t)
    if op is E.INVERT:
        return em.un(T.UnOp.NOT, a, t)
    if op is E.ABS:
        return em.un(T.UnOp.ABS, a, t) if dt.is_signed else a
    if op in (E.FLOOR_DIV, E.DIV, E.MOD):
        b = args[1]
        q = em.bin(T.BinOp.DIV, a, b, t)
        r = em.bin(T.BinOp.REM, a, b, t)
        if dt.is_signed:
            nz = em.setp(T.Cmp.NE, r, T.Imm(0, t))
            rneg = em.setp(T.Cmp.LT, r, T.Imm(0, t))
            bneg = em.setp(T.Cmp.LT, b, T.Imm(0, t))
            fix = em.pand(nz, em.bin(T.BinOp.XOR, rneg, bneg, T.pred))
            q = em.selp(em.bin(T.BinOp.SUB, q, T.Imm(1, t), t), q, fix)
            r = em.selp(em.bin(T.BinOp.ADD, r, b, t), r, fix)
        return r if op is E.MOD else q
    if op in (E.SHL, E.SHR):
        amount = _shift_amount(em, args[1], t, op)
        return em.bin(T.BinOp.SHL if op is E.SHL else T.BinOp.SHR, a, amount, t)
    raise TLCompileError(f"lowering: element-wise '{op.value}' on integers")


def _shift_amount(em: Emitter, b: T.Reg, t, op) -> T.Reg:
    """The shift amount as u32: out-of-range amounts (negative or >= 64) act
    as the interpreter's (<<: 0; >>: by 63, which PTX's clamping matches
    except for u64 >>, clamped to 63 here)."""
    ub = em.mov(b, T.u64 if b.type.nbits == 64 else T.u32) if b.type not in (T.u32, T.u64) else b
    if ub.type == T.u64:
        ub = em.bin(T.BinOp.MIN, ub, T.Imm(64, T.u64), T.u64)
        ub = em.cvt(ub, T.u32)
    if op is E.SHR and t == T.u64:
        ub = em.bin(T.BinOp.MIN, ub, T.Imm(63, T.u32), T.u32)
    return ub


def check_supported(dt: DataType) -> None:
    if dt.is_integer and 57 < dt.nbits < 64 and not dt.is_byte_aligned:
        raise TLTargetError(f"cuda: {dt.name} tensors (over 57 bits, not byte-aligned) are not supported")
