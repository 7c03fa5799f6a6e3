"""Readable text for VM IR: `format_program`, `format_kernel`, `format_expr`.

Tensors print as `%name` with their type on definition; scalar expressions
print in TL syntax so that the text reads like the kernel the user wrote.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any

from . import vm

_INDENT = "  "

# Python precedence, higher binds tighter; used to print minimal parentheses.
_PRECEDENCE = {
    vm.BinaryOp.OR: 1, vm.BinaryOp.AND: 2,
    vm.BinaryOp.LT: 4, vm.BinaryOp.LE: 4, vm.BinaryOp.GT: 4, vm.BinaryOp.GE: 4,
    vm.BinaryOp.EQ: 4, vm.BinaryOp.NE: 4,
    vm.BinaryOp.BIT_OR: 5, vm.BinaryOp.BIT_XOR: 6, vm.BinaryOp.BIT_AND: 7,
    vm.BinaryOp.SHL: 8, vm.BinaryOp.SHR: 8,
    vm.BinaryOp.ADD: 9, vm.BinaryOp.SUB: 9,
    vm.BinaryOp.MUL: 10, vm.BinaryOp.DIV: 10, vm.BinaryOp.FLOOR_DIV: 10, vm.BinaryOp.MOD: 10,
}
_ATOM = 100


def format_expr(e: vm.Expr) -> str:
    return _expr(e)[0]


def _expr(e: vm.Expr) -> tuple[str, int]:
    """Text of `e` and the precedence of its outermost operator."""
    if isinstance(e, vm.Const):
        if isinstance(e.value, bool):
            return ("True" if e.value else "False"), _ATOM
        return repr(e.value), _ATOM
    if isinstance(e, vm.Var):
        return e.name, _ATOM
    if isinstance(e, vm.BlockIdx):
        return "block." + "xyz"[e.axis], _ATOM
    if isinstance(e, vm.Binary):
        if e.op.is_function:
            return f"{e.op.value}({format_expr(e.lhs)}, {format_expr(e.rhs)})", _ATOM
        p = _PRECEDENCE[e.op]
        lhs, lp = _expr(e.lhs)
        rhs, rp = _expr(e.rhs)
        # Left-associative: the right operand needs parentheses at equal precedence.
        if lp < p:
            lhs = f"({lhs})"
        if rp <= p:
            rhs = f"({rhs})"
        return f"{lhs} {e.op.value} {rhs}", p
    if isinstance(e, vm.Unary):
        if e.op.is_function:
            return f"{e.op.value}({format_expr(e.operand)})", _ATOM
        text, p = _expr(e.operand)
        if p < _ATOM:
            text = f"({text})"
        sep = " " if e.op is vm.UnaryOp.NOT else ""
        return f"{e.op.value}{sep}{text}", 11
    if isinstance(e, vm.Select):
        return (f"select({format_expr(e.cond)}, {format_expr(e.true_value)}, "
                f"{format_expr(e.false_value)})"), _ATOM
    if isinstance(e, vm.ScalarCast):
        return f"{e.type.name}({format_expr(e.value)})", _ATOM
    raise TypeError(f"format_expr: unknown expression {type(e).__name__}")


def _tensor_type(t: Any) -> str:
    if isinstance(t, vm.GlobalTensor):
        return f"global {t.dtype.name}[{', '.join(format_expr(s) for s in t.shape)}]"
    shape = ", ".join(str(s) for s in t.shape)
    space = "shared" if isinstance(t, vm.SharedTensor) else "reg"
    text = f"{space} {t.dtype.name}[{shape}]"
    if t.layout is not None:
        text += f" @{_layout_name(t.layout)}"
    return text


def _layout_name(layout: Any) -> str:
    return repr(layout)


def _operand(x: Any) -> str:
    if isinstance(x, (vm.RegisterTensor, vm.SharedTensor, vm.GlobalTensor, vm.Pointer)):
        return "%" + x.name
    if isinstance(x, vm.Expr):
        return format_expr(x)
    if isinstance(x, tuple):
        return "[" + ", ".join(_operand(i) for i in x) + "]"
    if isinstance(x, enum.Enum):
        return str(x.value)
    return repr(x)


def format_instr(s: vm.Instr) -> str:
    """`%out: type = name(operands...)` for an instruction."""
    name = _snake(type(s).__name__)
    fields = [f.name for f in dataclasses.fields(s)]
    out = getattr(s, "out", None)
    args = []
    for f in fields:
        if f == "out" and out is not None:
            continue
        value = getattr(s, f)
        text = _operand(value)
        args.append(text if f in ("x", "a", "b", "value", "src", "dst", "args", "parts", "op")
                    else f"{f}={text}")
    call = f"{name}({', '.join(args)})"
    if isinstance(s, vm.AllocShared):
        return f"%{s.out.name}: {_tensor_type(s.out)} = shared()"
    if isinstance(s, vm.SetScalar):
        return f"{s.var.name}: {s.var.dtype.name} = {format_expr(s.value)}"
    if isinstance(s, vm.ConvertLayout):
        return f"%{s.dst.name}: {_tensor_type(s.dst)} = convert_layout(%{s.src.name})"
    if isinstance(s, vm.Assign):
        return f"%{s.out.name} <- %{s.x.name}"
    if out is not None:
        return f"%{out.name}: {_tensor_type(out)} = {call}"
    return call


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _body(stmts: tuple, depth: int, lines: list[str]) -> None:
    pad = _INDENT * depth
    if not stmts:
        lines.append(pad + "pass")
    for s in stmts:
        if isinstance(s, vm.For):
            unroll = f", unroll={s.unroll}" if s.unroll is not None else ""
            lines.append(f"{pad}for {s.var.name} in range({format_expr(s.start)}, "
                         f"{format_expr(s.stop)}, {format_expr(s.step)}{unroll}):")
            _body(s.body, depth + 1, lines)
        elif isinstance(s, vm.If):
            lines.append(f"{pad}if {format_expr(s.cond)}:")
            _body(s.then_body, depth + 1, lines)
            if s.else_body:
                lines.append(f"{pad}else:")
                _body(s.else_body, depth + 1, lines)
        elif isinstance(s, vm.While):
            lines.append(f"{pad}while {format_expr(s.cond)}:")
            _body(s.body, depth + 1, lines)
        elif isinstance(s, (vm.Break, vm.Continue, vm.Return)):
            lines.append(pad + type(s).__name__.lower())
        elif isinstance(s, vm.Instr):
            lines.append(pad + format_instr(s))
        else:
            raise TypeError(f"format_program: unknown statement {type(s).__name__}")


def _param(p: vm.Param) -> str:
    if isinstance(p, vm.Var):
        return f"{p.name}: {p.dtype.name}"
    if isinstance(p, vm.Pointer):
        return f"{p.name}: ptr"
    return f"%{p.name}: {_tensor_type(p)}"


def format_kernel(k: vm.Kernel) -> str:
    lines = []
    if k.constants:
        consts = ", ".join(f"{n}={getattr(v, 'name', v)}" for n, v in k.constants)
        lines.append(f"# constants: {consts}")
    grid = ", ".join(format_expr(g) for g in k.grid)
    lines.append(f"kernel {k.name}({', '.join(_param(p) for p in k.params)})")
    bound = f" min_blocks={k.min_blocks}" if k.min_blocks else ""
    lines.append(f"    warps={k.warps}{bound} grid=({grid}):")
    _body(k.body, 1, lines)
    return "\n".join(lines)


def format_program(p: vm.Program) -> str:
    return "\n\n".join(format_kernel(k) for k in p.kernels) + "\n"
