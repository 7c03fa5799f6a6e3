"""Syntax errors in words: lark's exceptions -> TLSyntaxError.

`convert` is called at one boundary (parser.parse). It never shows a lark
terminal name (RPAR, __ANON_3, _NEWLINE): every terminal is described by its
text ("')'") or by a word from `_WORDS` ("a name", "the end of the line"), and
common mistakes get a message of their own ("expected ':' after the for
header", "'(' is never closed", "unexpected indent").

Lines are counted the way lark counts them: only '\\n' ends a line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ..errors import SourceLocation, TLSyntaxError

if TYPE_CHECKING:   # lark is imported when a parse fails, not by every user of `location`
    from lark import Lark, Token
    from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken


def source_lines(source: str) -> list[str]:
    return source.split("\n")


def location(source: str, filename: str, line: int, column: int) -> SourceLocation:
    """A SourceLocation with the source line filled in (1-based line and column)."""
    lines = source_lines(source)
    line = line if isinstance(line, int) and line > 0 else 1
    column = column if isinstance(column, int) and column > 0 else 1
    text = lines[line - 1] if line <= len(lines) else ""
    return SourceLocation(filename, line, column, text.replace("\t", " "))


# ----------------------------------------------------------- expected tokens

_WORDS = {
    "NAME": "a name", "INT": "a number", "FLOAT": "a number", "_NEWLINE": "the end of the line",
    "_INDENT": "an indented block", "_DEDENT": "the end of the block", "$END": "the end of the input",
}
_EXPR_STARTS = {"NAME", "INT", "FLOAT", "LPAR", "LSQB", "MINUS", "TILDE", "PLUS", "NOT", "TRUE", "FALSE"}
_HEADERS = {"for": "the for header", "if": "the if condition", "elif": "the elif condition",
            "else": "'else'", "while": "the while condition", "def": "the kernel signature"}
_STATEMENT_STARTS = {"FOR", "IF", "WHILE", "PASS", "BREAK"}
_AFTER_OPERAND = {"OR", "AND", "_NEWLINE", "RPAR", "RSQB", "COMMA", "COLON"}
# Python words that are not TL (lexed as names, so a parse fails right after them).
_PYTHON_ONLY = {"import", "from", "class", "with", "try", "except", "finally", "lambda", "yield",
                "global", "nonlocal", "del", "assert", "raise", "async", "await", "is", "None"}
_COMPARISONS = {"<", "<=", ">", ">=", "==", "!="}


def describe_terminal(name: str, parser: Lark) -> str:
    if name in _WORDS:
        return _WORDS[name]
    try:
        pattern = parser.get_terminal(name).pattern
    except (KeyError, AttributeError):
        return "a token"
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return "a token"   # never a raw terminal name


def expected_words(expected: set[str], parser: Lark) -> str:
    """`{"RPAR", "COMMA"}` -> "',' or ')'"; many operators -> "an operator"."""
    expected = set(expected)
    words = []
    if "NAME" not in expected and "_NEWLINE" in expected and len(expected) > 6:
        # After a complete operand: anything that may follow it would do.
        return "an operator or the end of the line"
    if "NAME" in expected and expected >= _STATEMENT_STARTS:
        return "a statement"
    if "NAME" in expected and len(expected & _EXPR_STARTS) >= 3:
        words.append("an expression")
        expected -= _EXPR_STARTS
    described = sorted({describe_terminal(e, parser) for e in expected})
    if len(described) > 6:          # long lists of operators help nobody
        described = described[:5] + ["..."]
    words.extend(described)
    if not words:
        return ""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _describe_token(tok: Token) -> str:
    special = {"$END": "end of input", "_NEWLINE": "end of line", "_INDENT": "indent", "_DEDENT": "dedent"}
    if tok.type in special:
        return special[tok.type]
    return f"'{tok}'"


# ------------------------------------------------------------ source scanning


def _code(line: str) -> str:
    """The line without its comment (TL has no strings, so '#' always starts one)."""
    return line.split("#", 1)[0]


def _indent(text: str) -> int:
    expanded = text.expandtabs(8)
    return len(expanded) - len(expanded.lstrip())


def open_brackets(source: str, upto: tuple[int, int] | None = None) -> list[tuple[str, int, int]]:
    """Brackets still open (char, line, column) before position `upto` (or the end)."""
    stack: list[tuple[str, int, int]] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for number, raw in enumerate(source_lines(source), 1):
        for col, ch in enumerate(_code(raw), 1):
            if upto is not None and (number, col) >= upto:
                return stack
            if ch in "([{":
                stack.append((ch, number, col))
            elif ch in pairs and stack and stack[-1][0] == pairs[ch]:
                stack.pop()
    return stack


def _statement_start(source: str, line: int) -> str:
    """The first line of the statement that `line` belongs to (brackets join lines)."""
    lines = source_lines(source)
    start, depth = 1, 0
    for number, raw in enumerate(lines[:line], 1):
        if depth == 0:
            start = number
        code = _code(raw)
        depth = max(0, depth + sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}"))
    return lines[start - 1] if 0 < start <= len(lines) else ""


def _first_word(text: str) -> str:
    m = re.match(r"\s*(@|[A-Za-z_]\w*)", text)
    return m.group(1) if m else ""


def dedent_location(source: str, filename: str) -> SourceLocation:
    """First line whose indentation matches no enclosing block."""
    stack = [0]
    depth = 0
    for number, raw in enumerate(source_lines(source), 1):
        stripped = raw.strip()
        if depth == 0 and stripped and not stripped.startswith("#"):
            indent = _indent(raw)
            if indent > stack[-1]:
                stack.append(indent)
            else:
                while indent < stack[-1]:
                    stack.pop()
                if indent != stack[-1]:
                    return location(source, filename, number, len(raw) - len(raw.lstrip()) + 1)
        code = _code(raw)
        depth = max(0, depth + sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}"))
    return location(source, filename, 1, 1)


def _missing_block(source: str, line: int, column: int) -> int | None:
    """If the token at (line, column) starts a line that should have been an
    indented block, the line of the ':' that asked for it."""
    lines = source_lines(source)
    if not 1 < line <= len(lines) or _code(lines[line - 1])[:column - 1].strip():
        return None
    prev = line - 2
    while prev >= 0 and not _code(lines[prev]).strip():
        prev -= 1
    if prev < 0 or not _code(lines[prev]).rstrip().endswith(":"):
        return None
    # A header may span lines (a long kernel signature): compare with its first line.
    header = _statement_start(source, prev + 1)
    return prev + 1 if _indent(lines[line - 1]) <= _indent(header) else None


def _end_of_code(source: str, line: int) -> int:
    """The column just after the last code character of `line` (comments excluded)."""
    lines = source_lines(source)
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return len(_code(text).rstrip()) + 1


def _word_before(source: str, line: int, column: int) -> tuple[str, int]:
    """The name that ends just before (line, column), and its column."""
    lines = source_lines(source)
    text = lines[line - 1][:column - 1] if 0 < line <= len(lines) else ""
    m = re.search(r"([A-Za-z_]\w*)\s*$", text)
    return (m.group(1), m.start(1) + 1) if m else ("", 0)


# ------------------------------------------------------------------ converting


def _unexpected_character(err: UnexpectedCharacters, source: str, filename: str) -> TLSyntaxError:
    line, column = err.line, err.column
    lines = source_lines(source)
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    char = text[column - 1] if 0 < column <= len(text) else "?"
    hints = {"'": "; TL has no strings", '"': "; TL has no strings",
             ";": "; TL puts one statement on each line, without ';'",
             "{": "; TL has no sets or dicts: lists are written [a, b]",
             "}": "; TL has no sets or dicts: lists are written [a, b]",
             "\\": "; a '\\' may only end a line"}
    hint = hints.get(char, "")
    if not hint and not char.isascii():
        hint = "; names use ASCII letters, digits and '_'"
    return TLSyntaxError(f"unexpected character {char!r}{hint}", location(source, filename, line, column))


def _position(tok: Token, source: str) -> tuple[int, int]:
    """Where to put the caret for an unexpected token."""
    if tok.type == "$END" or tok.line in (None, -1):
        lines = source_lines(source.rstrip("\n")) or [""]
        return len(lines), len(lines[-1]) + 1
    if tok.type == "_NEWLINE":
        # Just after the line's last code character, not at its comment.
        return tok.line, _end_of_code(source, tok.line)
    if tok.type in ("_INDENT", "_DEDENT") and getattr(tok, "end_line", None):
        # Indenter tokens are made from the newline before the line they open.
        return tok.end_line, tok.end_column
    return tok.line, tok.column


@dataclass
class _Context:
    """An unexpected token, where it is, and what the parser would have taken."""
    tok: Token
    accepts: set[str]
    expected: str          # `accepts` in words
    line: int
    column: int
    source: str

    @property
    def text(self) -> str:
        return str(self.tok)

    @property
    def first_on_line(self) -> bool:
        lines = source_lines(self.source)
        return self.line <= len(lines) and not _code(lines[self.line - 1])[:self.column - 1].strip()


Diagnosis = Optional[tuple[str, Optional[tuple[int, int]]]]   # message, caret (None: at the token)


def _unclosed_bracket(c: _Context) -> Diagnosis:
    """A bracket left open: the parse fails at the next line's first token, or at the end."""
    if c.tok.type in ("$END", "_DEDENT"):
        unclosed = open_brackets(c.source)
        return (f"'{unclosed[0][0]}' is never closed", unclosed[0][1:]) if unclosed else None
    if c.tok.type in ("_NEWLINE", "_INDENT") or not c.first_on_line:
        return None
    unclosed = open_brackets(c.source, (c.line, c.column))
    if not unclosed:
        return None
    ch, line, column = unclosed[-1]
    lines = source_lines(c.source)
    if line < c.line and _indent(lines[c.line - 1]) <= _indent(lines[line - 1]):
        return f"'{ch}' is never closed", (line, column)
    return None


def _mismatched_bracket(c: _Context) -> Diagnosis:
    closing = {")": "(", "]": "[", "}": "{"}
    if c.text not in closing or c.tok.type == "NAME":
        return None
    inner = open_brackets(c.source, (c.line, c.column))
    if not inner:
        return f"unmatched '{c.text}'", None
    ch, line, _ = inner[-1]
    if ch == closing[c.text]:
        return None
    where = "" if line == c.line else f" on line {line}"
    return f"'{c.text}' does not match the '{ch}'{where}", None


def _keyword_as_name(c: _Context) -> Diagnosis:
    if (c.text.isalpha() and c.tok.type not in ("NAME", "DEF") and "NAME" in c.accepts
            and c.text not in ("True", "False")):
        return f"'{c.text}' is a keyword and cannot be used as a name", None
    return None


def _missing_indented_block(c: _Context) -> Diagnosis:
    if c.tok.type == "_INDENT":
        return None
    opener = _missing_block(c.source, c.line, c.column)
    return (f"expected an indented block after the ':' on line {opener}", None) if opener else None


def _unexpected_indent(c: _Context) -> Diagnosis:
    return ("unexpected indent", None) if c.tok.type == "_INDENT" else None


def _top_level_code(c: _Context) -> Diagnosis:
    if c.accepts <= {"AT", "$END", "_NEWLINE"} and c.column == 1:
        return (f"unexpected {_describe_token(c.tok)}; top-level code must be a kernel: "
                f"'@kernel(...)' then 'def'"), None
    return None


def _nested_def(c: _Context) -> Diagnosis:
    if c.tok.type == "DEF" and c.column > 1 and c.first_on_line:
        return ("a kernel cannot contain a 'def'; kernels are declared at the top level, "
                "each after @kernel(...)"), None
    return None


def _python_word(c: _Context) -> Diagnosis:
    """`import os`, `lambda: 1`: a Python word lexed as a name, then a parse failure."""
    word, column = _word_before(c.source, c.line, c.column)
    if word in _PYTHON_ONLY:
        return f"'{word}' is not part of TL", (c.line, column)
    if c.text in _PYTHON_ONLY and c.tok.type == "NAME" and "NAME" not in c.accepts:
        return f"'{c.text}' is not part of TL", None
    return None


def _missing_colon(c: _Context) -> Diagnosis:
    head = _first_word(_statement_start(c.source, c.line))
    if "COLON" in c.accepts and head in _HEADERS and not open_brackets(c.source, (c.line, c.column)):
        found = "" if c.tok.type == "_NEWLINE" else f", found {_describe_token(c.tok)}"
        return f"expected ':' after {_HEADERS[head]}{found}", None
    return None


def _return_value(c: _Context) -> Diagnosis:
    head = _first_word(_statement_start(c.source, c.line))
    if head == "return" and c.tok.type != "_NEWLINE" and "_NEWLINE" in c.accepts:
        return "'return' takes no value: a kernel writes its results with store(...)", None
    return None


def _chained_comparison(c: _Context) -> Diagnosis:
    if (c.text in _COMPARISONS and c.tok.type != "NAME" and "NAME" not in c.accepts
            and c.accepts & _AFTER_OPERAND):
        return "comparisons do not chain in TL; write (a < b) and (b < c)", None
    return None


def _assignment_target(c: _Context) -> Diagnosis:
    if c.tok.type == "EQUAL" and "_NEWLINE" in c.accepts:
        return ("unexpected '='; only a plain name can be assigned (x = ...): "
                "use store(...) to write memory"), None
    return None


def _block_on_the_same_line(c: _Context) -> Diagnosis:
    """`for i in range(n): pass`: TL blocks always start on the next line."""
    lines = source_lines(c.source)
    before = _code(lines[c.line - 1])[:c.column - 1].rstrip() if c.line <= len(lines) else ""
    if c.accepts == {"_NEWLINE"} and before.endswith(":"):
        return "a block starts on a new line after the ':', indented", None
    return None


def _generic(c: _Context) -> Diagnosis:
    if c.tok.type == "_NEWLINE":
        return (f"unexpected end of line; expected {c.expected}" if c.expected else "unexpected end of line"), None
    message = f"unexpected {_describe_token(c.tok)}"
    return (f"{message}; expected {c.expected}" if c.expected else message), None


# Tried in order; the first that recognizes the mistake words the error.
_CHECKS = (_unclosed_bracket, _mismatched_bracket, _keyword_as_name, _missing_indented_block,
           _unexpected_indent, _top_level_code, _nested_def, _python_word, _missing_colon,
           _return_value, _chained_comparison, _assignment_target, _block_on_the_same_line, _generic)


def _unexpected_token(err: UnexpectedToken, source: str, filename: str, parser: Lark) -> TLSyntaxError:
    # `accepts` is what the parser state really takes; `expected` also lists
    # terminals the lexer always allows (the newline, for the Indenter).
    accepts = set(getattr(err, "accepts", None) or err.expected)
    line, column = _position(err.token, source)
    context = _Context(err.token, accepts, expected_words(accepts, parser), line, column, source)
    for check in _CHECKS:
        found = check(context)
        if found is not None:
            message, at = found
            return TLSyntaxError(message, location(source, filename, *(at or (line, column))))
    raise AssertionError("unreachable: _generic always answers")


def convert(err: UnexpectedInput, source: str, filename: str, parser: Lark) -> TLSyntaxError:
    """The TLSyntaxError for one of lark's parse errors."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken

    if isinstance(err, UnexpectedCharacters):
        return _unexpected_character(err, source, filename)
    if isinstance(err, UnexpectedToken):
        return _unexpected_token(err, source, filename, parser)
    # UnexpectedEOF (not raised by LALR today) and anything new lark may add.
    unclosed = open_brackets(source)
    if unclosed:
        ch, bl, bc = unclosed[0]
        return TLSyntaxError(f"'{ch}' is never closed", location(source, filename, bl, bc))
    lines = source_lines(source.rstrip("\n")) or [""]
    return TLSyntaxError("unexpected end of input: a block is not finished",
                         location(source, filename, len(lines), len(lines[-1]) + 1))
