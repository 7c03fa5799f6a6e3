"""The TL abstract syntax tree: small frozen dataclasses with source spans.

The parser builds these; the builder (builder.py) turns them into VM IR.
Every node carries `span`, the source range it came from, for diagnostics.
Equality ignores spans (`compare=False`), so two parses of equivalent text
compare equal.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union


@dataclass(frozen=True)
class Span:
    """1-based line and column of the first character; end is exclusive."""
    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0


def _span() -> Span:
    return field(default=Span(), compare=False, repr=False)


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Name:
    id: str
    span: Span = _span()


@dataclass(frozen=True)
class IntLit:
    value: int
    span: Span = _span()


@dataclass(frozen=True)
class FloatLit:
    value: float
    span: Span = _span()


@dataclass(frozen=True)
class BoolLit:
    value: bool
    span: Span = _span()


@dataclass(frozen=True)
class BinOp:
    """`lhs op rhs`; op is the operator's text: "+", "//", "<<", "and", "==" ..."""
    op: str
    lhs: "Expr"
    rhs: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class UnaryOp:
    """op is "-", "+", "~" or "not"."""
    op: str
    operand: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Keyword:
    name: str
    value: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    """`func(args..., name=value...)`; func is any expression (usually a Name)."""
    func: "Expr"
    args: tuple["Expr", ...]
    kwargs: tuple[Keyword, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Attribute:
    """`value.attr`, e.g. `block.x`."""
    value: "Expr"
    attr: str
    span: Span = _span()


@dataclass(frozen=True)
class Subscript:
    value: "Expr"
    indices: tuple["Expr", ...]
    span: Span = _span()


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span = _span()


Expr = Union[Name, IntLit, FloatLit, BoolLit, BinOp, UnaryOp, Call, Attribute, Subscript, ListExpr]


# ----------------------------------------------------------------- statements


@dataclass(frozen=True)
class Assign:
    target: Name
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class AugAssign:
    """`target op= value`; op is the binary operator without '=' ("+", "//" ...)."""
    target: Name
    op: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class ExprStmt:
    expr: Expr
    span: Span = _span()


@dataclass(frozen=True)
class For:
    """`for var in iterable:`; the builder requires iterable to be range(...)."""
    var: Name
    iterable: Expr
    body: tuple["Stmt", ...]
    span: Span = _span()


@dataclass(frozen=True)
class If:
    """`elif` is an If nested alone in orelse."""
    cond: Expr
    body: tuple["Stmt", ...]
    orelse: tuple["Stmt", ...]
    span: Span = _span()


@dataclass(frozen=True)
class While:
    cond: Expr
    body: tuple["Stmt", ...]
    span: Span = _span()


@dataclass(frozen=True)
class Break:
    span: Span = _span()


@dataclass(frozen=True)
class Continue:
    span: Span = _span()


@dataclass(frozen=True)
class Return:
    span: Span = _span()


@dataclass(frozen=True)
class Pass:
    span: Span = _span()


Stmt = Union[Assign, AugAssign, ExprStmt, For, If, While, Break, Continue, Return, Pass]


# -------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class ConstParam:
    """A compile-time parameter `NAME: int|dtype|bool [= default]`."""
    name: str
    type_name: str
    default: Optional[Expr]
    span: Span = _span()


@dataclass(frozen=True)
class ScalarParam:
    """A runtime scalar (`m: i32`) or raw pointer (`p: ptr`)."""
    name: str
    type_name: str
    span: Span = _span()


@dataclass(frozen=True)
class TensorParam:
    """A global tensor `NAME: DTYPE[shape...]`; DTYPE may be a dtype constant."""
    name: str
    dtype_name: str
    shape: tuple[Expr, ...]
    span: Span = _span()


Param = Union[ScalarParam, TensorParam]


@dataclass(frozen=True)
class Kernel:
    name: str
    decorator: str
    decorator_args: tuple[Keyword, ...]
    const_params: tuple[ConstParam, ...]
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Module:
    kernels: tuple[Kernel, ...]
    span: Span = _span()
