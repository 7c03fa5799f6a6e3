"""Simplify block-uniform scalar expressions (index arithmetic above all).

Assumes: a verified program.
Guarantees: every scalar expression evaluates to the same value as before,
for every value of its variables (a law the tests check with hypothesis):
* constant sub-expressions are folded (with the dtype's wrapping);
* integer identities: x + 0, x - 0, x * 1, x // 1 become x; x * 0 and x % 1
  become 0;
* integer // and % by a power of two become >> and & (exact for Python's
  floor semantics in two's complement);
* constants are gathered: (x + c1) + c2 becomes x + (c1 + c2), and likewise
  for *, as integer arithmetic wraps identically either way;
* `select` with a constant condition and casts of constants are folded.
Float expressions are only constant-folded: x * 0 is not 0 for NaN or inf.
Loop-invariant expressions are then hoisted out of loops by passes/hoist.py.
"""
from __future__ import annotations

import dataclasses

from ..errors import TLError
from ..ir import vm
from ..ir.functor import IRRewriter
from ..runtime.args import eval_expr

_B = vm.BinaryOp


def _const(e) -> bool:
    return isinstance(e, vm.Const)


def _is(e, value) -> bool:
    return isinstance(e, vm.Const) and not isinstance(e.value, bool) and e.value == value


def _power_of_two(e) -> int | None:
    if isinstance(e, vm.Const) and isinstance(e.value, int) and not isinstance(e.value, bool):
        v = e.value
        if v > 0 and v & (v - 1) == 0:
            return v.bit_length() - 1
    return None


def _fold(e: vm.Expr) -> vm.Expr:
    try:
        value = eval_expr(e, {})
    except (TLError, KeyError, ArithmeticError, ValueError):
        return e   # e.g. a division by zero: left for run time to report
    if isinstance(value, bool) or e.dtype.is_integer:
        value = int(value)
    return vm.Const(value, e.dtype)


class _Simplifier(IRRewriter):
    def rewrite_Binary(self, e: vm.Binary) -> vm.Expr:
        e = self.generic_rewrite(e)
        if _const(e.lhs) and _const(e.rhs):
            return _fold(e)
        if e.dtype.is_float or e.lhs.dtype.is_float:
            return e
        op, a, b = e.op, e.lhs, e.rhs
        if op in (_B.ADD, _B.MUL) and _const(a) and not _const(b):
            a, b = b, a   # constants to the right
            e = vm.Binary(op, a, b, e.type)
        if op in (_B.ADD, _B.SUB, _B.BIT_OR, _B.BIT_XOR, _B.SHL, _B.SHR) and _is(b, 0):
            return a
        if op in (_B.MUL, _B.FLOOR_DIV) and _is(b, 1):
            return a
        if (op is _B.MUL and _is(b, 0)) or (op is _B.MOD and _is(b, 1)):
            return vm.Const(0, e.type)
        shift = _power_of_two(b)
        if shift is not None and op is _B.FLOOR_DIV:
            return vm.Binary(_B.SHR, a, vm.Const(shift, b.type), e.type)
        if shift is not None and op is _B.MOD:
            return vm.Binary(_B.BIT_AND, a, vm.Const((1 << shift) - 1, b.type), e.type)
        if op in (_B.ADD, _B.MUL) and _const(b) and isinstance(a, vm.Binary) and a.op is op \
                and _const(a.rhs) and a.type == e.type:
            return self.rewrite_Binary(vm.Binary(op, a.lhs, _fold(vm.Binary(op, a.rhs, b, e.type)), e.type))
        return e

    def rewrite_Unary(self, e: vm.Unary) -> vm.Expr:
        e = self.generic_rewrite(e)
        return _fold(e) if _const(e.operand) else e

    def rewrite_ScalarCast(self, e: vm.ScalarCast) -> vm.Expr:
        e = self.generic_rewrite(e)
        if _const(e.value):
            return _fold(e)
        return e.value if e.value.dtype == e.type else e

    def rewrite_Select(self, e: vm.Select) -> vm.Expr:
        e = self.generic_rewrite(e)
        if _const(e.cond):
            return e.true_value if e.cond.value else e.false_value
        return e


def simplify_expr(e: vm.Expr) -> vm.Expr:
    return _Simplifier().rewrite(e)


def simplify(program: vm.Program) -> vm.Program:
    kernels = tuple(_Simplifier().rewrite(k) for k in program.kernels)
    if all(a is b for a, b in zip(kernels, program.kernels)):
        return program
    return dataclasses.replace(program, kernels=kernels)
