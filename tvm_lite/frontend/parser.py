"""TL source -> AST, with every syntax error turned into a TLSyntaxError.

The grammar (grammar.lark) is loaded once, LALR with lark's Indenter. Lark's
exceptions are converted at one boundary, `parse`, into messages that say in
words what was expected, with `file:line:col`, the line and a caret.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import threading
from pathlib import Path

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput,
                             UnexpectedToken, VisitError)
from lark.indenter import DedentError, Indenter

from ..errors import SourceLocation, TLError, TLSyntaxError
from . import ast

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
    return dict(parser="lalr", postlex=_TLIndenter(), propagate_positions=True,
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
            except (OSError, EOFError, ValueError, pickle.UnpicklingError):
                # An unreadable or stale cache file must not break compilation.
                _parser = Lark(text, **_options(strict))
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
        raise TLError(f"internal: no AST rule for grammar rule '{data}'")

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
        return ast.IntLit(_int(str(children[0])), _span(meta))

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


def location(source: str, filename: str, line: int, column: int) -> SourceLocation:
    lines = source.splitlines()
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return SourceLocation(filename, max(line, 1), max(column, 1), text)


# ------------------------------------------------------------------ diagnostics

_WORDS = {
    "NAME": "a name", "INT": "a number", "FLOAT": "a number", "_NEWLINE": "the end of the line",
    "_INDENT": "an indented block", "_DEDENT": "the end of the block", "$END": "the end of the input",
}


def _describe_terminal(name: str, parser: Lark) -> str:
    if name in _WORDS:
        return _WORDS[name]
    try:
        pattern = parser.get_terminal(name).pattern
    except (KeyError, AttributeError):
        return name.lower()
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return name.lower()


_EXPR_STARTS = {"NAME", "INT", "FLOAT", "LPAR", "LSQB", "MINUS", "TILDE", "PLUS", "NOT", "TRUE", "FALSE"}


def _expected_words(expected: set[str], parser: Lark) -> str:
    expected = set(expected)
    words = []
    if "NAME" not in expected and "_NEWLINE" in expected and len(expected) > 6:
        # After a complete operand: anything that may follow it would do.
        return "an operator or the end of the line"
    if "NAME" in expected and len(expected & _EXPR_STARTS) >= 3:
        words.append("an expression")
        expected -= _EXPR_STARTS
    described = sorted({_describe_terminal(e, parser) for e in expected})
    # Long lists of operators help nobody; name the first few.
    if len(described) > 6:
        described = described[:5] + ["..."]
    words.extend(described)
    if not words:
        return ""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of input"
    if tok.type == "_NEWLINE":
        return "end of line"
    if tok.type == "_INDENT":
        return "indent"
    if tok.type == "_DEDENT":
        return "dedent"
    return f"'{tok}'"


def _dedent_location(source: str, filename: str) -> SourceLocation:
    """First line whose indentation matches no enclosing block."""
    stack = [0]
    depth = 0
    for number, raw in enumerate(source.splitlines(), 1):
        stripped = raw.strip()
        if depth == 0 and stripped and not stripped.startswith("#"):
            indent = len(raw.expandtabs(8)) - len(raw.expandtabs(8).lstrip())
            if indent > stack[-1]:
                stack.append(indent)
            else:
                while indent < stack[-1]:
                    stack.pop()
                if indent != stack[-1]:
                    return location(source, filename, number, indent + 1)
        code = raw.split("#", 1)[0]
        depth = max(0, depth + sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}"))
    return location(source, filename, 1, 1)


def _unclosed_bracket(source: str) -> tuple[str, int, int] | None:
    """The first bracket that is never closed, as (char, line, column)."""
    stack: list[tuple[str, int, int]] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for number, raw in enumerate(source.splitlines(), 1):
        for col, ch in enumerate(raw.split("#", 1)[0], 1):
            if ch in "([{":
                stack.append((ch, number, col))
            elif ch in pairs and stack and stack[-1][0] == pairs[ch]:
                stack.pop()
    return stack[0] if stack else None


def _missing_block(source: str, line: int) -> int | None:
    """If `line` should have opened an indented block, the line of its ':'."""
    lines = source.splitlines()
    if not 1 < line <= len(lines):
        return None
    prev = line - 2
    while prev >= 0 and not lines[prev].split("#", 1)[0].strip():
        prev -= 1
    if prev < 0 or not lines[prev].split("#", 1)[0].rstrip().endswith(":"):
        return None

    def indent(text: str) -> int:
        return len(text.expandtabs(8)) - len(text.expandtabs(8).lstrip())
    return prev + 1 if indent(lines[line - 1]) <= indent(lines[prev]) else None


def _convert(err: UnexpectedInput, source: str, filename: str, parser: Lark) -> TLSyntaxError:
    line, column = getattr(err, "line", 1), getattr(err, "column", 1)
    tok = getattr(err, "token", None)
    if isinstance(err, UnexpectedEOF) or (tok is not None and tok.type in ("$END", "_DEDENT")):
        unclosed = _unclosed_bracket(source)
        if unclosed is not None:
            ch, bl, bc = unclosed
            return TLSyntaxError(f"'{ch}' is never closed", location(source, filename, bl, bc))
    if isinstance(err, UnexpectedCharacters):
        char = source.splitlines()[line - 1][column - 1] if line >= 1 else "?"
        return TLSyntaxError(f"unexpected character {char!r}", location(source, filename, line, column))
    if isinstance(err, UnexpectedEOF):
        lines = source.splitlines() or [""]
        return TLSyntaxError("unexpected end of input: a bracket or block is not closed",
                             location(source, filename, len(lines), len(lines[-1]) + 1))
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    expected = _expected_words(err.expected, parser)
    if tok.type == "$END" or line in (None, -1):
        lines = source.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
    elif tok.type == "_NEWLINE":
        # A newline token starts at the end of the line it closes.
        line, column = tok.line, tok.column
    if tok.type in ("_INDENT", "_DEDENT") and getattr(tok, "end_line", None):
        # Indenter tokens are made from the newline before the line they open.
        line, column = tok.end_line, tok.end_column
    block_opener = _missing_block(source, line)
    if block_opener is not None:
        msg = f"expected an indented block after the ':' on line {block_opener}"
    elif set(err.expected) <= {"AT", "$END", "_NEWLINE"} and column == 1:
        msg = f"unexpected {_describe_token(tok)}; top-level code must be a kernel: '@kernel(...)' then 'def'"
    elif tok.type == "_INDENT":
        msg = "unexpected indent"
    elif tok.type == "_NEWLINE" and ("'('" in expected and "':'" not in expected):
        msg = f"unexpected end of line; expected {expected}" if expected else "unexpected end of line"
    else:
        msg = f"unexpected {_describe_token(tok)}"
        if expected:
            msg += f"; expected {expected}"
    return TLSyntaxError(msg, location(source, filename, line, column))


def parse(source: str, filename: str = "<string>") -> ast.Module:
    """Parse TL source. Raises TLSyntaxError (and nothing else) on bad input."""
    if not isinstance(source, str):
        raise TLSyntaxError(f"TL source must be a string, got {type(source).__name__}")
    text = source.replace("\r\n", "\n")
    if not text.endswith("\n"):
        text += "\n"
    parser = get_parser()
    _current.source, _current.filename = text, filename
    try:
        tree = parser.parse(text)
        return _ToAST().transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, TLError):
            raise e.orig_exc from None
        raise TLSyntaxError(f"could not read the program ({e.orig_exc})",
                            location(text, filename, 1, 1)) from None
    except DedentError:
        raise TLSyntaxError("unindent does not match any outer indentation level",
                            _dedent_location(text, filename)) from None
    except UnexpectedInput as e:
        raise _convert(e, text, filename, parser) from None
    except RecursionError:
        raise TLSyntaxError("the program is nested too deeply", location(text, filename, 1, 1)) from None
