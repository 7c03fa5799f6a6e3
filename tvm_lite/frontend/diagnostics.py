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

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ..errors import SourceLocation, TLSyntaxError


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


def _missing_block(source: str, line: int) -> int | None:
    """If `line` should have opened an indented block, the line of its ':'."""
    lines = source_lines(source)
    if not 1 < line <= len(lines):
        return None
    prev = line - 2
    while prev >= 0 and not _code(lines[prev]).strip():
        prev -= 1
    if prev < 0 or not _code(lines[prev]).rstrip().endswith(":"):
        return None
    return prev + 1 if _indent(lines[line - 1]) <= _indent(lines[prev]) else None


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


def _unexpected_token(err: UnexpectedToken, source: str, filename: str, parser: Lark) -> TLSyntaxError:
    tok = err.token
    accepts = set(getattr(err, "accepts", None) or err.expected)
    expected = expected_words(accepts, parser)
    line, column = _position(tok, source)

    def error(message: str, at: tuple[int, int] = (line, column)) -> TLSyntaxError:
        return TLSyntaxError(message, location(source, filename, *at))

    # A bracket left open: the next line's first token is where the parse fails.
    unclosed = open_brackets(source, (line, column)) if tok.type not in ("$END", "_DEDENT") else []
    if unclosed and tok.type not in ("_NEWLINE", "_INDENT"):
        ch, bl, bc = unclosed[-1]
        lines = source_lines(source)
        first_on_line = _code(lines[line - 1])[:column - 1].strip() == "" if line <= len(lines) else False
        if bl < line and first_on_line and _indent(lines[line - 1]) <= _indent(lines[bl - 1]):
            return error(f"'{ch}' is never closed", (bl, bc))
    if tok.type in ("$END", "_DEDENT"):
        unclosed = open_brackets(source)
        if unclosed:
            ch, bl, bc = unclosed[0]
            return error(f"'{ch}' is never closed", (bl, bc))

    closing = {")": "(", "]": "[", "}": "{"}
    if str(tok) in closing and tok.type != "NAME":
        inner = open_brackets(source, (line, column))
        if not inner:
            return error(f"unmatched '{tok}'")
        if inner[-1][0] != closing[str(tok)]:
            ch, bl, _ = inner[-1]
            where = "" if bl == line else f" on line {bl}"
            return error(f"'{tok}' does not match the '{ch}'{where}")
    if str(tok).isalpha() and tok.type not in ("NAME", "DEF") and "NAME" in accepts and str(tok) not in ("True", "False"):
        return error(f"'{tok}' is a keyword and cannot be used as a name")

    block_opener = _missing_block(source, line)
    if block_opener is not None and tok.type != "_INDENT":
        return error(f"expected an indented block after the ':' on line {block_opener}")
    if tok.type == "_INDENT":
        return error("unexpected indent")
    if accepts <= {"AT", "$END", "_NEWLINE"} and column == 1:
        return error(f"unexpected {_describe_token(tok)}; top-level code must be a kernel: "
                     f"'@kernel(...)' then 'def'")

    if tok.type == "DEF" and column > 1 and _code(source_lines(source)[line - 1])[:column - 1].strip() == "":
        return error("a kernel cannot contain a 'def'; kernels are declared at the top level, "
                     "each after @kernel(...)")
    word, word_col = _word_before(source, line, column)
    if word in _PYTHON_ONLY:
        return error(f"'{word}' is not part of TL", (line, word_col))
    if str(tok) in _PYTHON_ONLY and tok.type == "NAME" and "NAME" not in accepts:
        return error(f"'{tok}' is not part of TL")

    head = _first_word(_statement_start(source, line))
    if "COLON" in accepts and head in _HEADERS and not open_brackets(source, (line, column)):
        found = "" if tok.type == "_NEWLINE" else f", found {_describe_token(tok)}"
        return error(f"expected ':' after {_HEADERS[head]}{found}")
    if head == "return" and tok.type != "_NEWLINE" and "_NEWLINE" in accepts:
        return error("'return' takes no value: a kernel writes its results with store(...)")
    if str(tok) in _COMPARISONS and tok.type != "NAME" and "NAME" not in accepts and accepts & _AFTER_OPERAND:
        return error("comparisons do not chain in TL; write (a < b) and (b < c)")
    if tok.type == "EQUAL" and "_NEWLINE" in accepts:
        return error("unexpected '='; only a plain name can be assigned (x = ...): "
                     "use store(...) to write memory")
    if tok.type == "_NEWLINE":
        return error(f"unexpected end of line; expected {expected}" if expected else "unexpected end of line")
    msg = f"unexpected {_describe_token(tok)}"
    return error(f"{msg}; expected {expected}" if expected else msg)


def convert(err: UnexpectedInput, source: str, filename: str, parser: Lark) -> TLSyntaxError:
    """The TLSyntaxError for one of lark's parse errors."""
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
