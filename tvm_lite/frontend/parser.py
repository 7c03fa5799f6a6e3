"""TL source -> AST, with every syntax error turned into a TLSyntaxError.

The grammar (grammar.lark) is loaded once, LALR with lark's Indenter. Lark's
exceptions are converted at one boundary, `parse`, into messages that say in
words what was expected, with `file:line:col`, the line and a caret.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from pathlib import Path

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError
from lark.indenter import DedentError, Indenter

from ..errors import SourceLocation, TLCompileError, TLError, TLSyntaxError
from . import ast
from .diagnostics import convert, dedent_location, location

_GRAMMAR = Path(__file__).with_name("grammar.lark")


class _TLIndenter(Indenter):
    NL_type = "_NEWLINE"
    OPEN_PAREN_types = ["LPAR", "LSQB", "LBRACE"]
    CLOSE_PAREN_types = ["RPAR", "RSQB", "RBRACE"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8


_parser_lock = threading.Lock()
_parser: Lark | None = None


def _strict_available() -> bool:
    """lark's strict mode (regex-collision and conflict checks) needs interegular."""
    return importlib.util.find_spec("interegular") is not None


def _cache_path(grammar: str, strict: bool) -> str | bool:
    """A per-user cache file named by the grammar's digest, or False if none can be made.

    The digest in the name keeps different grammars (or lark versions) from
    overwriting one another's tables; lark also checks a digest inside the file.
    """
    root = os.environ.get("TL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tvm_lite")
    key = hashlib.sha256(f"{grammar}\0{lark.__version__}\0{strict}".encode()).hexdigest()[:16]
    try:
        os.makedirs(root, exist_ok=True)
    except OSError:
        return False
    if not os.access(root, os.W_OK | os.X_OK):
        return False
    return os.path.join(root, f"tl_grammar_{key}.lark.cache")


def _options(strict: bool) -> dict:
    # The basic lexer (not lark's default contextual one) lexes a keyword as a
    # keyword everywhere, so `in = 3` or `x = for` is a syntax error, never a name.
    return dict(parser="lalr", lexer="basic", postlex=_TLIndenter(), propagate_positions=True,
                maybe_placeholders=False, strict=strict)


def get_parser() -> Lark:
    """The process-wide LALR parser, built on first use (its tables cached on disk).

    `strict=True` makes lark refuse terminal collisions and grammar conflicts
    instead of resolving them silently; it needs the optional `interegular`
    package, so without it the grammar is loaded non-strict (same tables).
    """
    global _parser
    with _parser_lock:
        if _parser is None:
            text = _GRAMMAR.read_text()
            strict = _strict_available()
            try:
                _parser = Lark(text, cache=_cache_path(text, strict), **_options(strict))
            except Exception:
                # An unreadable, truncated or stale cache file (unpickling can fail
                # with almost any exception) must not break compilation. A real
                # grammar error raises again here, without the cache.
                _parser = Lark(text, cache=False, **_options(strict))
        return _parser


# ------------------------------------------------------------------- AST build


def _span(meta) -> ast.Span:
    if getattr(meta, "empty", True):
        return ast.Span()
    return ast.Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _int(text: str) -> int:
    return int(text.replace("_", ""), 0) if text[:2].lower() in ("0x", "0b") else int(text.replace("_", ""))


@v_args(meta=True)
class _ToAST(Transformer):
    """Parse tree -> ast nodes. An unknown rule raises (see __default__)."""

    def __default__(self, data, children, meta):
        raise TLCompileError(f"no AST rule for the grammar rule '{data}'; this is a compiler bug")

    def start(self, meta, children):
        return ast.Module(tuple(children), _span(meta))

    def kernel(self, meta, children):
        decorator, name, *rest = children
        consts = rest[0] if rest and isinstance(rest[0], tuple) and rest[0] and \
            isinstance(rest[0][0], ast.ConstParam) else ()
        if consts:
            rest = rest[1:]
        body = rest[-1]
        params = rest[0] if len(rest) == 2 else ()
        dname, dargs = decorator
        return ast.Kernel(str(name), dname, dargs, consts, params, body, _span(meta))

    def decorator(self, meta, children):
        name = str(children[0])
        return name, (children[1] if len(children) > 1 else ())

    def keywords(self, meta, children):
        return tuple(children)

    def keyword(self, meta, children):
        return ast.Keyword(str(children[0]), children[1], _span(meta))

    def const_params(self, meta, children):
        return tuple(children)

    def const_param(self, meta, children):
        default = children[2] if len(children) > 2 else None
        return ast.ConstParam(str(children[0]), str(children[1]), default, _span(meta))

    def params(self, meta, children):
        return tuple(children)

    def scalar_param(self, meta, children):
        return ast.ScalarParam(str(children[0]), str(children[1]), _span(meta))

    def tensor_param(self, meta, children):
        return ast.TensorParam(str(children[0]), str(children[1]), children[2], _span(meta))

    def suite(self, meta, children):
        return tuple(c for c in children if c is not None)

    # statements
    def assign(self, meta, children):
        return ast.Assign(ast.Name(str(children[0]), _token_span(children[0])), children[1], _span(meta))

    def aug_assign(self, meta, children):
        target, op, value = children
        return ast.AugAssign(ast.Name(str(target), _token_span(target)), op[:-1], value, _span(meta))

    def aug_op(self, meta, children):
        return str(children[0])

    def expr_stmt(self, meta, children):
        return ast.ExprStmt(children[0], _span(meta))

    def break_stmt(self, meta, children):
        return ast.Break(_span(meta))

    def continue_stmt(self, meta, children):
        return ast.Continue(_span(meta))

    def return_stmt(self, meta, children):
        return ast.Return(_span(meta))

    def pass_stmt(self, meta, children):
        return ast.Pass(_span(meta))

    def for_stmt(self, meta, children):
        var, iterable, body = children
        return ast.For(ast.Name(str(var), _token_span(var)), iterable, body, _span(meta))

    def if_stmt(self, meta, children):
        cond, body, *clauses = children
        orelse: tuple = ()
        # Fold `elif` clauses from the last one backwards into nested Ifs.
        for clause in reversed(clauses):
            if clause[0] == "else":
                orelse = clause[1]
            else:
                _, c, b, m = clause
                orelse = (ast.If(c, b, orelse, m),)
        return ast.If(cond, body, orelse, _span(meta))

    def elif_clause(self, meta, children):
        return ("elif", children[0], children[1], _span(meta))

    def else_clause(self, meta, children):
        return ("else", children[0])

    def while_stmt(self, meta, children):
        return ast.While(children[0], children[1], _span(meta))

    # expressions
    def expr_list(self, meta, children):
        return tuple(children)

    def or_op(self, meta, children):
        return ast.BinOp("or", children[0], children[1], _span(meta))

    def and_op(self, meta, children):
        return ast.BinOp("and", children[0], children[1], _span(meta))

    def not_op(self, meta, children):
        return ast.UnaryOp("not", children[0], _span(meta))

    def binary(self, meta, children):
        lhs, op, rhs = children
        return ast.BinOp(op, lhs, rhs, _span(meta))

    def unary(self, meta, children):
        return ast.UnaryOp(children[0], children[1], _span(meta))

    def _operator(self, meta, children):
        return str(children[0])

    comp_op = bor_op = bxor_op = band_op = shift_op = add_op = mul_op = unary_op = _operator

    def call(self, meta, children):
        func = children[0]
        items = children[1] if len(children) > 1 else ()
        args = tuple(i for i in items if not isinstance(i, ast.Keyword))
        kwargs = tuple(i for i in items if isinstance(i, ast.Keyword))
        seen_kw = False
        for item in items:
            if isinstance(item, ast.Keyword):
                seen_kw = True
            elif seen_kw:
                raise TLSyntaxError("a positional argument cannot follow a keyword argument",
                                    _loc_from_span(item.span))
        return ast.Call(func, args, kwargs, _span(meta))

    def call_args(self, meta, children):
        return tuple(children)

    def subscript(self, meta, children):
        return ast.Subscript(children[0], children[1], _span(meta))

    def attribute(self, meta, children):
        return ast.Attribute(children[0], str(children[1]), _span(meta))

    def name(self, meta, children):
        return ast.Name(str(children[0]), _span(meta))

    def int_lit(self, meta, children):
        try:
            return ast.IntLit(_int(str(children[0])), _span(meta))
        except ValueError:
            raise TLSyntaxError(f"malformed number '{children[0]}'", _loc_from_span(_span(meta))) from None

    def float_lit(self, meta, children):
        return ast.FloatLit(float(str(children[0]).replace("_", "")), _span(meta))

    def true_lit(self, meta, children):
        return ast.BoolLit(True, _span(meta))

    def false_lit(self, meta, children):
        return ast.BoolLit(False, _span(meta))

    def list_expr(self, meta, children):
        return ast.ListExpr(children[0] if children else (), _span(meta))


def _token_span(tok: Token) -> ast.Span:
    return ast.Span(tok.line, tok.column, tok.end_line, tok.end_column)


# Filled in by `parse` so that errors raised inside the transformer can render
# their source line; a thread-local keeps concurrent compiles apart.
_current = threading.local()


def _loc_from_span(span: ast.Span) -> SourceLocation:
    return location(getattr(_current, "source", ""), getattr(_current, "filename", "<string>"),
                    span.line, span.column)


def parse(source: str, filename: str = "<string>") -> ast.Module:
    """Parse TL source. Raises TLSyntaxError (and nothing else) on bad input."""
    if not isinstance(source, str):
        raise TLSyntaxError(f"TL source must be a string, got {type(source).__name__}")
    text = source.replace("\r\n", "\n")
    if text.startswith("\ufeff"):      # a UTF-8 byte-order mark, as some editors write
        text = text[1:]
    if not text.endswith("\n"):
        text += "\n"
    parser = get_parser()
    _current.source, _current.filename = text, filename
    try:
        return _parse(parser, text, filename)
    except TLSyntaxError as e:
        raise _on_code(e, text, filename) from None


def _on_code(err: TLSyntaxError, text: str, filename: str) -> TLSyntaxError:
    """Move a caret that landed on a blank line (or past the end of the input,
    e.g. a missing block at the end of the file) to just after the last code
    on the line before it, so that every message shows a source line."""
    loc = err.location
    if loc is None or loc.source_line.strip():
        return err
    lines = text.split("\n")
    line = min(loc.line, len(lines))
    while line > 1 and not lines[line - 1].split("#", 1)[0].strip():
        line -= 1
    code = lines[line - 1].split("#", 1)[0].rstrip()
    if not code.strip():
        return err
    return TLSyntaxError(err.message, location(text, filename, line, len(code) + 1))


def _parse(parser: Lark, text: str, filename: str) -> ast.Module:
    """The one boundary where lark's exceptions become TLSyntaxError."""
    try:
        tree = parser.parse(text)
        return _ToAST().transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, TLError):
            raise e.orig_exc from None
        raise TLCompileError(f"internal error while building the AST ({type(e.orig_exc).__name__}: "
                             f"{e.orig_exc}); this is a compiler bug") from e.orig_exc
    except DedentError:
        raise TLSyntaxError("unindent does not match any outer indentation level",
                            dedent_location(text, filename)) from None
    except UnexpectedInput as e:
        raise convert(e, text, filename, parser) from None
    except RecursionError:
        raise TLSyntaxError("the program is nested too deeply", location(text, filename, 1, 1)) from None
