"""TL text from an AST: `format_ast(module)`.

The output parses back to an equal AST (spans aside), which the tests check.
Binary expressions are printed with parentheses only where precedence needs them.
"""
from __future__ import annotations

from . import ast

_PRECEDENCE = {"or": 1, "and": 2, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4,
               "|": 5, "^": 6, "&": 7, "<<": 8, ">>": 8, "+": 9, "-": 9,
               "*": 10, "/": 10, "//": 10, "%": 10}
_UNARY_PRECEDENCE = {"not": 3, "-": 11, "+": 11, "~": 11}
_ATOM = 100


def _expr(e) -> tuple[str, int]:
    if isinstance(e, ast.Name):
        return e.id, _ATOM
    if isinstance(e, ast.BoolLit):
        return ("True" if e.value else "False"), _ATOM
    if isinstance(e, ast.IntLit):
        return repr(e.value), _ATOM
    if isinstance(e, ast.FloatLit):
        # A literal too large for a float reads as infinity; print one that does too.
        return ("1e999" if e.value == float("inf") else repr(e.value)), _ATOM
    if isinstance(e, ast.ListExpr):
        return "[" + ", ".join(format_expr(i) for i in e.items) + "]", _ATOM
    if isinstance(e, ast.Attribute):
        # `0.x` would lex as the number `0.` then `x`, so an int gets parentheses.
        base = f"({format_expr(e.value)})" if isinstance(e.value, ast.IntLit) else _wrap(e.value, _ATOM)
        return f"{base}.{e.attr}", _ATOM
    if isinstance(e, ast.Subscript):
        return f"{_wrap(e.value, _ATOM)}[{', '.join(format_expr(i) for i in e.indices)}]", _ATOM
    if isinstance(e, ast.Call):
        args = [format_expr(a) for a in e.args] + [f"{k.name}={format_expr(k.value)}" for k in e.kwargs]
        return f"{_wrap(e.func, _ATOM)}({', '.join(args)})", _ATOM
    if isinstance(e, ast.UnaryOp):
        p = _UNARY_PRECEDENCE[e.op]
        sep = " " if e.op == "not" else ""
        return f"{e.op}{sep}{_wrap(e.operand, p)}", p
    if isinstance(e, ast.BinOp):
        p = _PRECEDENCE[e.op]
        # Comparisons do not chain in TL, so both sides need a tighter operator.
        right = p + 1 if p != 4 else 5
        left = p if p != 4 else 5
        return f"{_wrap(e.lhs, left)} {e.op} {_wrap(e.rhs, right)}", p
    raise TypeError(f"format_ast: unknown expression {type(e).__name__}")


def _wrap(e, min_precedence: int) -> str:
    text, p = _expr(e)
    return text if p >= min_precedence else f"({text})"


def format_expr(e) -> str:
    return _expr(e)[0]


def _body(stmts, depth: int, out: list[str]) -> None:
    pad = "    " * depth
    for s in stmts:
        if isinstance(s, ast.Assign):
            out.append(f"{pad}{s.target.id} = {format_expr(s.value)}")
        elif isinstance(s, ast.AugAssign):
            out.append(f"{pad}{s.target.id} {s.op}= {format_expr(s.value)}")
        elif isinstance(s, ast.ExprStmt):
            out.append(pad + format_expr(s.expr))
        elif isinstance(s, ast.For):
            out.append(f"{pad}for {s.var.id} in {format_expr(s.iterable)}:")
            _body(s.body, depth + 1, out)
        elif isinstance(s, ast.While):
            out.append(f"{pad}while {format_expr(s.cond)}:")
            _body(s.body, depth + 1, out)
        elif isinstance(s, ast.If):
            _if(s, depth, out, "if")
        elif isinstance(s, (ast.Break, ast.Continue, ast.Return, ast.Pass)):
            out.append(pad + type(s).__name__.lower())
        else:
            raise TypeError(f"format_ast: unknown statement {type(s).__name__}")


def _if(s: ast.If, depth: int, out: list[str], keyword: str) -> None:
    pad = "    " * depth
    out.append(f"{pad}{keyword} {format_expr(s.cond)}:")
    _body(s.body, depth + 1, out)
    if len(s.orelse) == 1 and isinstance(s.orelse[0], ast.If):
        _if(s.orelse[0], depth, out, "elif")
    elif s.orelse:
        out.append(f"{pad}else:")
        _body(s.orelse, depth + 1, out)


def _param(p) -> str:
    if isinstance(p, ast.TensorParam):
        return f"{p.name}: {p.dtype_name}[{', '.join(format_expr(s) for s in p.shape)}]"
    return f"{p.name}: {p.type_name}"


def format_kernel(k: ast.Kernel) -> str:
    out = [f"@{k.decorator}({', '.join(f'{a.name}={format_expr(a.value)}' for a in k.decorator_args)})"]
    consts = ""
    if k.const_params:
        consts = "[" + ", ".join(
            f"{c.name}: {c.type_name}" + (f" = {format_expr(c.default)}" if c.default is not None else "")
            for c in k.const_params) + "]"
    out.append(f"def {k.name}{consts}({', '.join(_param(p) for p in k.params)}):")
    _body(k.body, 1, out)
    return "\n".join(out)


def format_ast(module: ast.Module) -> str:
    return "\n\n".join(format_kernel(k) for k in module.kernels) + "\n"
