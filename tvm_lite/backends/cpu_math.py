"""Scalar arithmetic on CPU compute values (i64 and double) with TL's rules.

Used for both block-uniform scalar expressions and tile elements, so the two
agree with each other and with the interpreter: floor division and modulo,
shifts that saturate instead of being undefined, NaN-propagating min/max,
and a status flag instead of a crash on integer division by zero.
"""
from __future__ import annotations

import llvmlite.ir as ir

from .cpu_types import F64, I1, I64

STATUS_OK, STATUS_DIV_ZERO, STATUS_SHARED_RANGE, STATUS_ZERO_STEP = 0, 1, 2, 3
_FAST = ("reassoc", "contract")
_CMP = {"LT": "<", "LE": "<=", "GT": ">", "GE": ">=", "EQ": "==", "NE": "!="}


class Math:
    def __init__(self, builder: ir.IRBuilder, intrinsic, flag_error):
        self.b = builder
        self.intrinsic = intrinsic
        self.flag_error = flag_error   # (i1 condition, status code) -> None

    def _bool(self, v: ir.Value) -> ir.Value:
        if v.type == F64:
            return self.b.fcmp_unordered("!=", v, ir.Constant(F64, 0.0))
        return self.b.icmp_signed("!=", v, ir.Constant(I64, 0))

    def _from_bool(self, c: ir.Value, is_float: bool = False) -> ir.Value:
        return self.b.zext(c, I64)

    def _safe_divisor(self, d: ir.Value) -> ir.Value:
        zero = self.b.icmp_signed("==", d, ir.Constant(I64, 0))
        self.flag_error(zero, STATUS_DIV_ZERO)
        return self.b.select(zero, ir.Constant(I64, 1), d)

    def floor_div(self, a, c):
        b = self.b
        if a.type == F64:
            return b.call(self.intrinsic("llvm.floor", F64), [b.fdiv(a, c)])
        c = self._safe_divisor(c)
        q, r = b.sdiv(a, c), b.srem(a, c)
        fix = b.and_(b.icmp_signed("!=", r, ir.Constant(I64, 0)),
                     b.icmp_signed("!=", b.icmp_signed("<", r, ir.Constant(I64, 0)),
                                   b.icmp_signed("<", c, ir.Constant(I64, 0))))
        return b.sub(q, b.zext(fix, I64))

    def mod(self, a, c):
        b = self.b
        if a.type == F64:
            return b.fsub(a, b.fmul(self.floor_div(a, c), c))
        return b.sub(a, b.mul(self.floor_div(a, c), self._safe_divisor(c)))

    def cdiv(self, a, c):
        return self.b.neg(self.floor_div(self.b.neg(a), c))

    def shift(self, a, c, left: bool):
        b = self.b
        big = b.icmp_unsigned(">=", c, ir.Constant(I64, 64))
        amount = b.select(big, ir.Constant(I64, 63), c)
        if left:
            return b.select(big, ir.Constant(I64, 0), b.shl(a, amount))
        return b.ashr(a, amount)   # outside [0, 64) shifts by 63, as runtime.args.shift_right

    def minmax(self, a, c, is_min: bool):
        b = self.b
        if a.type == F64:
            return b.call(self.intrinsic("llvm.minimum" if is_min else "llvm.maximum", F64), [a, c])
        return b.select(b.icmp_signed("<" if is_min else ">", a, c), a, c)

    def binary(self, name: str, a: ir.Value, c: ir.Value) -> ir.Value:
        """`name` is the op's enum name (ADD, FLOOR_DIV, LT, MIN ...)."""
        b = self.b
        fl = a.type == F64
        if name in _CMP:
            op = _CMP[name]
            cond = b.fcmp_ordered(op, a, c) if fl and op != "!=" else \
                b.fcmp_unordered(op, a, c) if fl else b.icmp_signed(op, a, c)
            return self._from_bool(cond)
        simple = {
            "ADD": (b.fadd, b.add), "SUB": (b.fsub, b.sub), "MUL": (b.fmul, b.mul),
            "BIT_AND": (None, b.and_), "BIT_OR": (None, b.or_), "BIT_XOR": (None, b.xor),
        }
        if name in simple:
            return simple[name][0 if fl else 1](a, c)
        if name == "DIV":
            return b.fdiv(a, c) if fl else self.floor_div(a, c)
        if name == "FLOOR_DIV":
            return self.floor_div(a, c)
        if name == "MOD":
            return self.mod(a, c)
        if name == "CDIV":
            return self.cdiv(a, c)
        if name in ("SHL", "SHR"):
            return self.shift(a, c, name == "SHL")
        if name in ("MIN", "MAX"):
            return self.minmax(a, c, name == "MIN")
        if name in ("AND", "OR"):
            x, y = self._bool(a), self._bool(c)
            return self._from_bool(b.and_(x, y) if name == "AND" else b.or_(x, y))
        raise NotImplementedError(name)

    def unary(self, name: str, a: ir.Value) -> ir.Value:
        b = self.b
        fl = a.type == F64
        if name == "NEG":
            return b.fneg(a) if fl else b.neg(a)
        if name == "INVERT":
            return b.xor(a, ir.Constant(I64, -1))
        if name == "NOT":
            return self._from_bool(b.not_(self._bool(a)))
        if name == "ABS":
            if fl:
                return b.call(self.intrinsic("llvm.fabs", F64), [a])
            return b.select(b.icmp_signed("<", a, ir.Constant(I64, 0)), b.neg(a), a)
        if not fl:
            a = b.sitofp(a, F64)
        if name == "RSQRT":
            return b.fdiv(ir.Constant(F64, 1.0), b.call(self.intrinsic("llvm.sqrt", F64), [a]))
        return b.call(self.intrinsic("llvm." + name.lower(), F64), [a])

    def where(self, cond: ir.Value, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.select(self._bool(cond), x, y)

    def accumulate(self, acc: ir.Value, value: ir.Value) -> ir.Value:
        """acc + value where reassociation is allowed (sums and dot)."""
        if isinstance(acc.type, (ir.FloatType, ir.DoubleType)):
            return self.b.fadd(acc, value, flags=_FAST)
        return self.b.add(acc, value)

    def product(self, a: ir.Value, c: ir.Value) -> ir.Value:
        if isinstance(a.type, (ir.FloatType, ir.DoubleType)):
            return self.b.fmul(a, c, flags=_FAST)
        return self.b.mul(a, c)


def is_true(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    if v.type == I1:
        return v
    if v.type == F64:
        return builder.fcmp_unordered("!=", v, ir.Constant(F64, 0.0))
    return builder.icmp_signed("!=", v, ir.Constant(v.type, 0))
