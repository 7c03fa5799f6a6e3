"""AST -> VM IR: name resolution, constant specialization, type and shape checks.

Assumes: a syntactically valid `ast.Module` (from parser.parse).
Guarantees: a `vm.Program` that passes `verify_program`, or a TLTypeError
that points at the offending source with line:col and a caret.

Values while building are one of:
* Python int / float / bool - compile-time constants (folded eagerly);
* DataType                  - a dtype name or dtype constant;
* vm.Expr                   - a block-uniform runtime scalar;
* vm.RegisterTensor, vm.SharedTensor, vm.GlobalTensor, vm.Pointer;
* tuple                     - a list literal.

Assignment rules (Python-like, with tiles as values):
* a name bound in an enclosing block (outside the loop or branch) is updated
  in place: tiles through `Assign`, scalars through `SetScalar`; the type may
  not change, except by a lossless implicit conversion;
* a name first bound inside a block is local to that block;
* a scalar name assigned once to a compile-time value stays a compile-time
  constant (so it can size tiles); otherwise it is a runtime scalar variable.
"""
from __future__ import annotations

import numbers
import operator
from typing import Any

import numpy as np

from ..errors import TLTypeError
from ..ir import vm
from ..ir.dtypes import DataType, dtype
from ..ir.layout import RegisterLayout
from ..ir.shared_layout import SharedLayout
from ..ir.verifier import verify_program
from . import ast
from .builder_values import BLOCK, describe, is_const, is_lossless, is_scalar
from .diagnostics import location

_CONST_TYPES = {"int": int, "bool": bool, "dtype": DataType}
# Resident threads per SM on sm_80 through sm_90 (sm_86/89 hold 1536: there
# the assembler lowers a min_blocks it cannot meet, with a warning).
_MAX_THREADS_PER_SM = 2048

_ELEMENT_OPS = {
    "+": vm.ElementOp.ADD, "-": vm.ElementOp.SUB, "*": vm.ElementOp.MUL, "/": vm.ElementOp.DIV,
    "//": vm.ElementOp.FLOOR_DIV, "%": vm.ElementOp.MOD, "&": vm.ElementOp.BIT_AND,
    "|": vm.ElementOp.BIT_OR, "^": vm.ElementOp.BIT_XOR, "<<": vm.ElementOp.SHL,
    ">>": vm.ElementOp.SHR, "<": vm.ElementOp.LT, "<=": vm.ElementOp.LE, ">": vm.ElementOp.GT,
    ">=": vm.ElementOp.GE, "==": vm.ElementOp.EQ, "!=": vm.ElementOp.NE,
    "and": vm.ElementOp.AND, "or": vm.ElementOp.OR, "min": vm.ElementOp.MIN, "max": vm.ElementOp.MAX,
}
_SCALAR_OPS = {op.value: op for op in vm.BinaryOp}
_INT_ONLY = {"&", "|", "^", "<<", ">>"}
_COMPARE = {"<", "<=", ">", ">=", "==", "!="}
_LOGIC = {"and", "or"}


def _py_floordiv(a, b):
    return a // b


_PY_OPS = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": _py_floordiv, "%": operator.mod, "&": operator.and_, "|": operator.or_,
    "^": operator.xor, "<<": operator.lshift, ">>": operator.rshift, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "min": min, "max": max,
}


def _count_assignments(stmts: tuple, counts: dict[str, int], in_loop: bool = False) -> None:
    """How often each name is assigned; an assignment in a loop counts twice."""
    for s in stmts:
        if isinstance(s, (ast.Assign, ast.AugAssign)):
            n = 2 if in_loop or isinstance(s, ast.AugAssign) else 1
            counts[s.target.id] = counts.get(s.target.id, 0) + n
        elif isinstance(s, ast.For):
            _count_assignments(s.body, counts, True)
        elif isinstance(s, ast.While):
            _count_assignments(s.body, counts, True)
        elif isinstance(s, ast.If):
            _count_assignments(s.body, counts, in_loop)
            _count_assignments(s.orelse, counts, in_loop)


class KernelBuilder:
    def __init__(self, kernel: ast.Kernel, constants: dict, source: str, filename: str):
        self.ast = kernel
        self.constants = constants
        self.source = source
        self.filename = filename
        self.scopes: list[dict[str, Any]] = [{}]
        self.readonly: set[str] = set()
        self.bodies: list[list] = [[]]
        self.loop_depth = 0
        self.grid: tuple[vm.Expr, ...] | None = None
        self.names: set[str] = set()
        self.assign_counts: dict[str, int] = {}
        self.name_hint: str | None = None

    # ---------------------------------------------------------------- helpers
    def error(self, node: Any, message: str) -> TLTypeError:
        span = getattr(node, "span", None) or ast.Span(1, 1)
        return TLTypeError(message, location(self.source, self.filename, span.line, span.column))

    def emit(self, stmt: Any) -> None:
        self.bodies[-1].append(stmt)

    def fresh(self, hint: str | None = None) -> str:
        base = hint or self.name_hint or "t"
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def new_tile(self, dt: DataType, shape: tuple[int, ...], hint: str | None = None) -> vm.RegisterTensor:
        return vm.RegisterTensor(self.fresh(hint), dt, tuple(int(s) for s in shape))

    def lookup(self, name: str) -> tuple[Any, int] | None:
        for depth in range(len(self.scopes) - 1, -1, -1):
            if name in self.scopes[depth]:
                return self.scopes[depth][name], depth
        return None

    def bind(self, name: str, value: Any, node: Any, readonly: bool = False) -> None:
        if name in self.scopes[-1] and readonly:
            raise self.error(node, f"'{name}' is defined twice")
        self.scopes[-1][name] = value
        if readonly:
            self.readonly.add(name)

    def const_int(self, value: Any, node: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(node, f"{what} must be a compile-time integer, got {describe(value)}")
        return value

    def scalar_expr(self, value: Any, node: Any, what: str = "this operand") -> vm.Expr:
        if is_const(value):
            return vm.const(value)
        if isinstance(value, vm.Expr):
            return value
        raise self.error(node, f"{what} must be a scalar, got {describe(value)}")

    def int_scalar(self, value: Any, node: Any, what: str) -> vm.Expr:
        e = self.scalar_expr(value, node, what)
        if e.dtype.is_float:
            raise self.error(node, f"{what} must be an integer, got {e.dtype.name}")
        return e

    def shape_list(self, value: Any, node: Any, what: str = "shape") -> tuple[int, ...]:
        items = value if isinstance(value, tuple) else (value,)
        dims = tuple(self.const_int(v, node, f"each {what} entry") for v in items)
        if any(d <= 0 for d in dims):
            raise self.error(node, f"{what} entries must be positive, got {list(dims)}")
        return dims

    # ------------------------------------------------------------- the kernel
    def build(self) -> vm.Kernel:
        k = self.ast
        if k.decorator != "kernel":
            raise self.error(k, f"unknown decorator '@{k.decorator}'; kernels are declared with @kernel(warps=N)")
        # After the constants: `@kernel(warps=W, min_blocks=MINB)` may name them.
        used = self._bind_constants()
        warps, min_blocks = self._launch_bounds(k.decorator_args)
        params = self._bind_params()
        _count_assignments(k.body, self.assign_counts)
        self.block(k.body)
        grid = self.grid if self.grid is not None else (vm.const(1),)
        return vm.Kernel(k.name, params, warps, grid, tuple(self.bodies[0]), used, min_blocks)

    def _launch_bounds(self, keywords) -> tuple[int, int]:
        """(warps, min_blocks) from the decorator's keywords: `warps` (1-32,
        default 4) sets the block size; `min_blocks` (0 = no bound, else
        1-32) asks the assembler to fit that many blocks per SM, capping the
        registers per thread (PTX `.minnctapersm`)."""
        values = {"warps": 4, "min_blocks": 0}
        bounds = {"warps": (1, 32), "min_blocks": (0, 32)}
        seen = set()
        for kw in keywords:
            if kw.name not in values:
                raise self.error(kw, f"@kernel takes only 'warps=' and 'min_blocks=', not '{kw.name}='")
            if kw.name in seen:
                raise self.error(kw, f"@kernel: '{kw.name}=' is given twice")
            seen.add(kw.name)
            v = self.const_int(self.expr(kw.value), kw.value, kw.name)
            lo, hi = bounds[kw.name]
            if not lo <= v <= hi:
                raise self.error(kw.value, f"{kw.name} must be between {lo} and {hi}, got {v}")
            values[kw.name] = v
        warps, min_blocks = values["warps"], values["min_blocks"]
        if min_blocks * warps * 32 > _MAX_THREADS_PER_SM:
            node = next(kw for kw in keywords if kw.name == "min_blocks").value
            raise self.error(node, f"min_blocks={min_blocks} blocks of {warps * 32} threads exceed the "
                                   f"{_MAX_THREADS_PER_SM} threads an SM holds")
        return warps, min_blocks

    def _bind_constants(self) -> tuple[tuple[str, Any], ...]:
        used = []
        for c in self.ast.const_params:
            if c.type_name not in _CONST_TYPES:
                raise self.error(c, f"compile-time parameter '{c.name}' has type '{c.type_name}'; "
                                    f"use int, dtype or bool")
            if c.name in self.constants:
                value = self._coerce_constant(c, self.constants[c.name])
            elif c.default is not None:
                value = self._coerce_constant(c, self.expr(c.default), c.default)
            else:
                raise self.error(c, f"compile-time parameter '{c.name}' has no default; pass it "
                                    f"to tl.compile, e.g. {c.name}=...")
            self.bind(c.name, value, c, readonly=True)
            used.append((c.name, value))
        return tuple(used)

    def _coerce_constant(self, c: ast.ConstParam, value: Any, node: Any = None) -> Any:
        node = node or c
        if c.type_name == "dtype":
            if isinstance(value, str):
                try:
                    return dtype(value)
                except Exception as e:  # TLDTypeError: re-raise with a location
                    raise self.error(node, str(e)) from None
            if isinstance(value, DataType):
                return value
        elif c.type_name == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
        elif isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            return int(value)   # also numpy integers
        kind = {"int": "an int", "bool": "a bool", "dtype": "a dtype"}[c.type_name]
        raise self.error(node, f"compile-time parameter '{c.name}' is {kind}, got {describe(value)}")

    def _resolve_dtype(self, name: str, node: Any) -> DataType:
        found = self.lookup(name)
        if found is not None:
            if isinstance(found[0], DataType):
                return found[0]
            raise self.error(node, f"'{name}' is not a dtype")
        try:
            return dtype(name)
        except Exception:
            raise self.error(node, f"unknown type '{name}'; expected a dtype such as f16, i32, u4 "
                                   f"or f6e3m2, or 'ptr'") from None

    def _bind_params(self) -> tuple[vm.Param, ...]:
        params: list[Any] = []
        for p in self.ast.params:   # scalars first: tensor shapes may name any of them
            if isinstance(p, ast.ScalarParam):
                if p.type_name == "ptr":
                    value: Any = vm.Pointer(p.name)
                else:
                    value = vm.Var(p.name, self._resolve_dtype(p.type_name, p))
                self.bind(p.name, value, p, readonly=True)
                self.names.add(p.name)
        for p in self.ast.params:
            if isinstance(p, ast.TensorParam):
                dt = self._resolve_dtype(p.dtype_name, p)
                shape = tuple(self.int_scalar(self.expr(s), s, "a tensor dimension") for s in p.shape)
                g = vm.GlobalTensor(p.name, dt, shape)
                self.bind(p.name, g, p, readonly=True)
                self.names.add(p.name)
            params.append(self.lookup(p.name)[0])
        return tuple(params)

    # ------------------------------------------------------------- statements
    def block(self, stmts: tuple) -> None:
        for s in stmts:
            method = getattr(self, "stmt_" + type(s).__name__, None)
            if method is None:
                raise self.error(s, f"unsupported statement {type(s).__name__}")
            method(s)

    def nested(self, stmts: tuple, loop: bool = False) -> tuple:
        self.scopes.append({})
        self.bodies.append([])
        self.loop_depth += loop
        try:
            self.block(stmts)
        finally:
            self.loop_depth -= loop
            self.scopes.pop()
            body = self.bodies.pop()
        return tuple(body)

    def stmt_Pass(self, s: ast.Pass) -> None:
        pass

    def stmt_Return(self, s: ast.Return) -> None:
        self.emit(vm.Return())

    def stmt_Break(self, s: ast.Break) -> None:
        if not self.loop_depth:
            raise self.error(s, "'break' outside a loop")
        self.emit(vm.Break())

    def stmt_Continue(self, s: ast.Continue) -> None:
        if not self.loop_depth:
            raise self.error(s, "'continue' outside a loop")
        self.emit(vm.Continue())

    def stmt_ExprStmt(self, s: ast.ExprStmt) -> None:
        if not isinstance(s.expr, ast.Call):
            raise self.error(s, "this expression does nothing; only calls can stand alone")
        self.expr(s.expr)

    def stmt_Assign(self, s: ast.Assign) -> None:
        self.name_hint = s.target.id
        try:
            value = self.expr(s.value)
        finally:
            self.name_hint = None
        self.assign(s.target, value)

    def stmt_AugAssign(self, s: ast.AugAssign) -> None:
        self.name_hint = s.target.id
        try:
            value = self.binary(s.op, self.expr(s.target), self.expr(s.value), s)
        finally:
            self.name_hint = None
        self.assign(s.target, value)

    def assign(self, target: ast.Name, value: Any) -> None:
        name = target.id
        if name in self.readonly or name == "block":
            raise self.error(target, f"cannot assign to '{name}': it is a parameter or constant")
        if isinstance(value, (vm.GlobalTensor, vm.Pointer, DataType)) or value is BLOCK:
            raise self.error(target, f"cannot bind '{name}' to {describe(value)}")
        found = self.lookup(name)
        if found is not None:
            current, depth = found
            if isinstance(current, vm.Var):
                self.emit(vm.SetScalar(current, self.convert_scalar(value, current.dtype, target)))
                return
            if depth < len(self.scopes) - 1 and isinstance(current, vm.RegisterTensor):
                self.emit(vm.Assign(current, self.convert_tile(value, current, target)))
                return
            if depth < len(self.scopes) - 1 and is_const(current):
                raise self.error(target, f"'{name}' is a compile-time constant here; it cannot "
                                         f"change inside a loop or branch")
        if is_const(value) and self.assign_counts.get(name, 0) <= 1:
            self.bind(name, value, target)
        elif is_scalar(value):
            e = self.scalar_expr(value, target)
            var = vm.Var(self.fresh(name), e.dtype)
            self.emit(vm.SetScalar(var, e))
            self.bind(name, var, target)
        else:
            self.bind(name, value, target)

    def convert_scalar(self, value: Any, dt: DataType, node: Any) -> vm.Expr:
        e = self.scalar_expr(value, node)
        if e.dtype == dt:
            return e
        if isinstance(e, vm.Const) and (dt.is_float or not isinstance(e.value, float)):
            return vm.Const(float(e.value) if dt.is_float else int(e.value), dt)
        if is_lossless(e.dtype, dt) or (e.dtype.is_integer and dt.is_integer):
            return vm.ScalarCast(e, dt)
        raise self.error(node, f"cannot assign a {e.dtype.name} value to a {dt.name} variable "
                               f"without cast(...)")

    def convert_tile(self, value: Any, like: vm.RegisterTensor, node: Any) -> vm.RegisterTensor:
        if not isinstance(value, vm.RegisterTensor):
            raise self.error(node, f"'{like.name}' holds a tile; cannot assign {describe(value)} to it")
        if value.shape != like.shape:
            raise self.error(node, f"shape changes from {list(like.shape)} to {list(value.shape)}; "
                                   f"a tile keeps its shape across loops and branches")
        return self.implicit_cast(value, like.dtype, node, f"assigning to '{like.name}'")

    def implicit_cast(self, x: vm.RegisterTensor, dt: DataType, node: Any, what: str) -> vm.RegisterTensor:
        if x.dtype == dt:
            return x
        if not is_lossless(x.dtype, dt):
            raise self.error(node, f"{what}: converting {x.dtype.name} to {dt.name} loses "
                                   f"information; write cast(x, {dt.name})")
        out = self.new_tile(dt, x.shape)
        self.emit(vm.Cast(out, x))
        return out

    def stmt_For(self, s: ast.For) -> None:
        it = s.iterable
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"):
            raise self.error(it, "a for loop iterates over range(...)")
        args = [self.int_scalar(self.expr(a), a, "a range bound") for a in it.args]
        if not 1 <= len(args) <= 3:
            raise self.error(it, f"range takes 1 to 3 arguments, got {len(args)}")
        unroll = None
        for kw in it.kwargs:
            if kw.name != "unroll":
                raise self.error(kw, f"range takes only 'unroll=', not '{kw.name}='")
            unroll = self.const_int(self.expr(kw.value), kw.value, "unroll")
            if unroll < 1:
                raise self.error(kw.value, "unroll must be at least 1")
        start, stop, step = (vm.const(0), args[0], vm.const(1)) if len(args) == 1 else \
            (args[0], args[1], args[2] if len(args) == 3 else vm.const(1))
        if isinstance(step, vm.Const) and step.value == 0:
            raise self.error(it, "range step must not be zero")
        var = vm.Var(self.fresh(s.var.id), vm.I32)
        self.scopes.append({s.var.id: var})
        self.bodies.append([])
        self.loop_depth += 1
        try:
            self.block(s.body)
        finally:
            self.loop_depth -= 1
            self.scopes.pop()
            body = tuple(self.bodies.pop())
        self.emit(vm.For(var, start, stop, step, body, unroll))

    def condition(self, node: Any) -> Any:
        value = self.expr(node)
        if not is_scalar(value):
            raise self.error(node, f"a condition must be a scalar, got {describe(value)}")
        return value

    def stmt_If(self, s: ast.If) -> None:
        cond = self.condition(s.cond)
        if is_const(cond):
            # Decided at compile time (Triton's constexpr `if`): only the taken
            # branch is built, in the enclosing scope, so `x = f(x)` there
            # rebinds x instead of assigning into it (an Assign would make x
            # a twice-written tile, which hides how its producer left it from
            # the GPU lowering). The other branch is not compiled at all.
            self.block(s.body if cond else s.orelse)
            return
        self.emit(vm.If(cond, self.nested(s.body), self.nested(s.orelse)))

    def stmt_While(self, s: ast.While) -> None:
        cond = self.scalar_expr(self.condition(s.cond), s.cond)
        self.emit(vm.While(cond, self.nested(s.body, loop=True)))

    # ------------------------------------------------------------ expressions
    def expr(self, node: Any) -> Any:
        method = getattr(self, "expr_" + type(node).__name__, None)
        if method is None:
            raise self.error(node, f"unsupported expression {type(node).__name__}")
        return method(node)

    def expr_IntLit(self, e: ast.IntLit) -> int:
        return e.value

    def expr_FloatLit(self, e: ast.FloatLit) -> float:
        return e.value

    def expr_BoolLit(self, e: ast.BoolLit) -> bool:
        return e.value

    def expr_ListExpr(self, e: ast.ListExpr) -> tuple:
        return tuple(self.expr(i) for i in e.items)

    def expr_Name(self, e: ast.Name) -> Any:
        found = self.lookup(e.id)
        if found is not None:
            return found[0]
        if e.id == "block":
            return BLOCK
        try:
            return dtype(e.id)
        except Exception:
            pass
        from .builder_calls import BUILTINS
        if e.id in BUILTINS or e.id == "range":
            raise self.error(e, f"'{e.id}' is a function; call it")
        raise self.error(e, f"undefined name '{e.id}'")

    def expr_Attribute(self, e: ast.Attribute) -> Any:
        base = self.expr(e.value)
        if base is BLOCK:
            if e.attr not in ("x", "y", "z"):
                raise self.error(e, f"block has x, y and z, not '{e.attr}'")
            return vm.BlockIdx("xyz".index(e.attr))
        if isinstance(base, DataType) and e.attr in ("max", "min", "nbits"):
            return getattr(base, e.attr)
        raise self.error(e, f"{describe(base)} has no attribute '{e.attr}'")

    def expr_Subscript(self, e: ast.Subscript) -> Any:
        raise self.error(e, "indexing is not part of TL; use load/store for memory and slice(...) for tiles")

    def expr_Call(self, e: ast.Call) -> Any:
        from .builder_calls import call_builtin
        from .builder_layouts import layout_call
        if isinstance(e.func, ast.Attribute):
            base = self.expr(e.func.value)
            if isinstance(base, (RegisterLayout, SharedLayout)):
                return layout_call(self, base, e.func.attr, e)
            raise self.error(e.func, f"{describe(base)} has no methods")
        if not isinstance(e.func, ast.Name):
            raise self.error(e.func, "only built-in functions can be called")
        return call_builtin(self, e)

    def expr_UnaryOp(self, e: ast.UnaryOp) -> Any:
        return self.unary(e.op, self.expr(e.operand), e)

    def expr_BinOp(self, e: ast.BinOp) -> Any:
        return self.binary(e.op, self.expr(e.lhs), self.expr(e.rhs), e)

    def unary(self, op: str, x: Any, node: Any) -> Any:
        if op == "+":
            return x
        if is_const(x):
            if op == "~" and not isinstance(x, int):
                raise self.error(node, "'~' needs an integer")
            return {"-": operator.neg, "~": operator.invert, "not": operator.not_}[op](x)
        if isinstance(x, vm.Expr):
            if op == "~" and x.dtype.is_float:
                raise self.error(node, "'~' needs an integer")
            if op == "not":
                return vm.Unary(vm.UnaryOp.NOT, x, vm.BOOL)
            return vm.Unary(vm.UnaryOp.NEG if op == "-" else vm.UnaryOp.INVERT, x, x.dtype)
        if isinstance(x, vm.RegisterTensor):
            if op == "~" and x.dtype.is_float:
                raise self.error(node, "'~' needs an integer tile")
            element = {"-": vm.ElementOp.NEG, "~": vm.ElementOp.INVERT, "not": vm.ElementOp.NOT}[op]
            out = self.new_tile(vm.BOOL if op == "not" else x.dtype, x.shape)
            self.emit(vm.Elementwise(out, element, (x,)))
            return out
        raise self.error(node, f"'{op}' does not apply to {describe(x)}")

    def binary(self, op: str, a: Any, b: Any, node: Any) -> Any:
        if isinstance(a, RegisterLayout) and isinstance(b, RegisterLayout) and op == "*":
            from .builder_layouts import layout_product
            return layout_product(self, a, b, node)
        if isinstance(a, vm.RegisterTensor) or isinstance(b, vm.RegisterTensor):
            from .builder_calls import tile_elementwise
            return tile_elementwise(self, _ELEMENT_OPS[op], (a, b), node)
        if not (is_scalar(a) and is_scalar(b)):
            bad = a if not is_scalar(a) else b
            raise self.error(node, f"'{op}' does not apply to {describe(bad)}")
        if is_const(a) and is_const(b):
            return self.fold(op, a, b, node)
        return self.scalar_binary(op, a, b, node)

    def fold(self, op: str, a: Any, b: Any, node: Any) -> Any:
        if op in _LOGIC:
            return (a and b) if op == "and" else (a or b)
        if op in _INT_ONLY and (isinstance(a, float) or isinstance(b, float)):
            raise self.error(node, f"'{op}' needs integers")
        try:
            return _PY_OPS[op](a, b)
        except ZeroDivisionError:
            raise self.error(node, "division by zero") from None
        except (ValueError, OverflowError) as e:
            raise self.error(node, f"cannot evaluate '{op}' here: {e}") from None

    def scalar_binary(self, op: str, a: Any, b: Any, node: Any) -> vm.Expr:
        ta = a.dtype if isinstance(a, vm.Expr) else None
        tb = b.dtype if isinstance(b, vm.Expr) else None
        if op in _LOGIC:
            ea, eb = self.scalar_expr(a, node), self.scalar_expr(b, node)
            return vm.Binary(_SCALAR_OPS[op], ea, eb, vm.BOOL)
        floats = [t for t in (ta, tb) if t is not None and t.is_float]
        if floats or isinstance(a, float) or isinstance(b, float):
            common = floats[0] if floats else vm.F32
        else:
            ints = [t for t in (ta, tb) if t is not None]
            common = vm.I64 if vm.I64 in ints else ints[0]
        if op in _INT_ONLY and common.is_float:
            raise self.error(node, f"'{op}' needs integer operands, got {common.name}")
        if op == "/" and not common.is_float:
            raise self.error(node, "'/' is true division; use '//' for integers")
        ea = self.convert_scalar(a, common, node)
        eb = self.convert_scalar(b, common, node)
        result = vm.BOOL if op in _COMPARE else common
        return vm.Binary(_SCALAR_OPS[op], ea, eb, result)


def build_program(module: ast.Module, constants: dict, source: str, filename: str) -> vm.Program:
    """Build and verify the VM program for every kernel of `module`."""
    names = set()
    wanted = {c.name for k in module.kernels for c in k.const_params}
    unknown = sorted(set(constants) - wanted)
    if unknown:
        raise TLTypeError(f"unknown compile-time constant(s) {', '.join(unknown)}; the kernels take "
                          f"{', '.join(sorted(wanted)) or 'none'}")
    kernels = []
    for k in module.kernels:
        if k.name in names:
            raise TLTypeError(f"kernel '{k.name}' is defined twice",
                              location(source, filename, k.span.line, k.span.column))
        names.add(k.name)
        own = {c.name: constants[c.name] for c in k.const_params if c.name in constants}
        kernels.append(KernelBuilder(k, own, source, filename).build())
    program = vm.Program(tuple(kernels), filename)
    verify_program(program)
    return program
