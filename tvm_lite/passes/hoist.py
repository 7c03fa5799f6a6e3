"""Loop-invariant hoisting of scalar index expressions (the simplifier's last step).

Assumes: a verified program, already simplified (so constants are folded and
an invariant expression is not hidden behind a foldable one).
Guarantees: every scalar expression evaluates to the same value as before.
Inside a `for` or `while` loop, each maximal integer (or boolean) expression
that has at least one operator, cannot fail, and reads no scalar the loop
writes is computed once, into a fresh scalar set just before the loop, and
the loop reads that scalar instead. Equal expressions share one scalar. An
inner loop's invariants land just before the inner loop, so they move out
as far as they are invariant: an expression invariant in the outer loop too
is hoisted by the outer loop first.

What counts as invariant in a loop: block indices, constants, and scalars
the loop does not assign anywhere in its body (a `for` also writes its own
variable, and nested loops write theirs). The hoisted code runs even when
the loop runs zero times or the use sits in an untaken branch, so an
expression that can fail at run time, an integer division or modulo by
anything but a nonzero constant, is never hoisted. Float expressions stay
where they are: the backends may keep them wider than their dtype until a
store, and a scalar would round them earlier.
"""
from __future__ import annotations

import dataclasses

from ..ir import vm
from ..ir.functor import IRRewriter, IRVisitor

_B = vm.BinaryOp
_DIVISIONS = (_B.DIV, _B.FLOOR_DIV, _B.MOD, _B.CDIV)


def _written_vars(stmts) -> set[int]:
    """ids of the scalars `stmts` assign, loop variables included, at any depth."""
    written: set[int] = set()

    class _Writes(IRVisitor):
        def visit_SetScalar(self, s: vm.SetScalar) -> None:
            written.add(id(s.var))

        def visit_For(self, s: vm.For) -> None:
            written.add(id(s.var))
            self.generic_visit(s)

    _Writes().visit(stmts)
    return written


def _cannot_fail(e: vm.Binary) -> bool:
    """Integer division by zero is a run-time error; every other operator is total."""
    if e.op not in _DIVISIONS or e.dtype.is_float or e.lhs.dtype.is_float:
        return True
    return isinstance(e.rhs, vm.Const) and e.rhs.value != 0


class _Invariance:
    """Whether an expression may move out of a loop that writes `written`."""

    def __init__(self, written: set[int]):
        self.written = written
        self._memo: dict[int, bool] = {}

    def __call__(self, e: vm.Expr) -> bool:
        key = id(e)
        if key not in self._memo:
            self._memo[key] = self._compute(e)
        return self._memo[key]

    def _compute(self, e: vm.Expr) -> bool:
        if isinstance(e, (vm.Const, vm.BlockIdx)):
            return True
        if isinstance(e, vm.Var):
            return id(e) not in self.written
        if isinstance(e, vm.Binary):
            return _cannot_fail(e) and self(e.lhs) and self(e.rhs)
        if isinstance(e, vm.Unary):
            return self(e.operand)
        if isinstance(e, vm.Select):
            return self(e.cond) and self(e.true_value) and self(e.false_value)
        if isinstance(e, vm.ScalarCast):
            return self(e.value)
        raise TypeError(f"hoist: unknown scalar expression {type(e).__name__}")


def _is_leaf(e: vm.Expr) -> bool:
    return isinstance(e, (vm.Const, vm.Var, vm.BlockIdx))


class _ReplaceInvariants(IRRewriter):
    """Replace each maximal hoistable expression by a scalar, recording the pairs."""

    def __init__(self, invariant: _Invariance, hoisted: dict, names):
        self.invariant = invariant
        self.hoisted = hoisted          # expression (by structure) -> its scalar
        self.names = names

    def _expr(self, e: vm.Expr) -> vm.Expr:
        if not _is_leaf(e) and not e.dtype.is_float and self.invariant(e):
            var = self.hoisted.get(e)
            if var is None:
                var = self.hoisted[e] = vm.Var(next(self.names), e.dtype)
            return var
        return self.generic_rewrite(e)

    rewrite_Binary = rewrite_Unary = rewrite_Select = rewrite_ScalarCast = _expr


class _Hoister(IRRewriter):
    def __init__(self):
        self._count = 0

    def _names(self):
        while True:
            # '$' cannot appear in a TL name, so a hoisted scalar never prints
            # like one of the user's (the printed program is a cache key).
            yield f"inv${self._count}"
            self._count += 1

    def _hoist(self, loop, fields: tuple[str, ...], written: set[int]):
        hoisted: dict = {}
        replace = _ReplaceInvariants(_Invariance(written), hoisted, self._names())
        changes = {f: replace.rewrite(getattr(loop, f)) for f in fields}
        loop = dataclasses.replace(loop, **changes) if hoisted else loop
        # Nested loops hoist what is invariant in them only, to just before themselves.
        body = self.rewrite(loop.body)
        if body is not loop.body:
            loop = dataclasses.replace(loop, body=body)
        if not hoisted:
            return loop
        return tuple(vm.SetScalar(var, e) for e, var in hoisted.items()) + (loop,)

    def rewrite_For(self, s: vm.For):
        return self._hoist(s, ("body",), _written_vars(s.body) | {id(s.var)})

    def rewrite_While(self, s: vm.While):
        return self._hoist(s, ("cond", "body"), _written_vars(s.body))


def hoist_loop_invariants(program: vm.Program) -> vm.Program:
    kernels = tuple(_Hoister().rewrite(k) for k in program.kernels)
    if all(a is b for a, b in zip(kernels, program.kernels)):
        return program
    return dataclasses.replace(program, kernels=kernels)


__all__ = ["hoist_loop_invariants"]
