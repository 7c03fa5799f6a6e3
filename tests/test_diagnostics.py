"""Diagnostics: every malformed kernel gets a worded error at the right place.

Each case is a whole source, the error class, the 1-based line and column of
the caret, and words the message must contain. All cases also check the
rendering (`file:line:col`, the source line, a caret under the column) and
that no lark terminal name or internal file name leaks into the text.
"""
import re

import pytest

import tvm_lite as tl
from tvm_lite.frontend.parser import parse

K = "@kernel(warps=4)\ndef k(n: i32, x: f32[n], y: f32[n]):\n"

SYNTAX = [
    # missing ':' after a block header, said in words
    (K + "    for i in range(3)\n        pass\n", 3, 22, "expected ':' after the for header"),
    (K + "    for i in range(3)  # loop\n        pass\n", 3, 22, "expected ':' after the for header"),
    (K + "    while n > 0\n        pass\n", 3, 16, "expected ':' after the while condition"),
    (K + "    if n > 0\n        pass\n", 3, 13, "expected ':' after the if condition"),
    (K + "    if n:\n        pass\n    else\n        pass\n", 5, 9, "expected ':' after 'else'"),
    ("@kernel(warps=4)\ndef k(n: i32)\n    pass\n", 2, 14, "expected ':' after the kernel signature"),
    # brackets
    (K + "    t = load(x, [0], [4]\n    store(y, t, [0])\n", 3, 13, "'(' is never closed"),
    (K + "    t = load(x, [0], [4]]\n", 3, 25, "']' does not match the '('"),
    (K + "    t = load(x, [0], [4]))\n", 3, 26, "unmatched ')'"),
    ("@kernel(warps=4\ndef k(n: i32):\n    pass\n", 1, 8, "'(' is never closed"),
    (K + "    x2 = (1 +\n", 3, 10, "'(' is never closed"),
    # indentation
    (K + "    x2 = 1\n        z = 2\n", 4, 9, "unexpected indent"),
    (K + "    for i in range(3):\n        pass\n      pass\n", 5, 7, "unindent does not match"),
    (K + "    if n > 0:  # comment\n    pass\n", 4, 5, "expected an indented block after the ':' on line 3"),
    ("@kernel(warps=4)\ndef k(n: i32):\n", 2, 15, "expected an indented block"),
    ("@kernel(warps=4)\n  def k(n: i32):\n    pass\n", 2, 3, "unexpected indent"),
    # a signature over several lines: the body's indentation is compared with the 'def' line
    ("@kernel(warps=4)\ndef k(\n        n: i32):\npass\n", 4, 1, "indented block after the ':' on line 3"),
    ("@kernel(warps=4)\ndef k(\n        n: i32):\n    pass,(1)\n", 4, 9, "unexpected ','"),
    # expressions
    (K + "    x2 = \n", 3, 9, "expected an expression"),
    (K + "    x2 = 1 +* 2\n", 3, 13, "expected an expression"),
    (K + "    x2 = f(,)\n", 3, 12, "expected an expression or ')'"),
    (K + "    x2 = 3 < 4 < 5\n", 3, 16, "comparisons do not chain"),
    (K + "    x2 = 1 2\n", 3, 12, "expected an operator or the end of the line"),
    (K + "    x2 = a.\n", 3, 12, "expected a name"),
    (K + "    x2 = 0x_\n", 3, 10, "malformed number"),
    # keywords are never names; Python-only words are named
    (K + "    in = 3\n", 3, 5, "'in' is a keyword"),
    (K + "    x2 = for\n", 3, 10, "'for' is a keyword"),
    (K + "    import os\n", 3, 5, "'import' is not part of TL"),
    (K + "    x2 = lambda: 1\n", 3, 10, "'lambda' is not part of TL"),
    (K + "    def f():\n        pass\n", 3, 5, "cannot contain a 'def'"),
    (K + "    return 5\n", 3, 12, "'return' takes no value"),
    (K + "    x2[0] = 1\n", 3, 11, "only a plain name can be assigned"),
    (K + "    = 3\n", 3, 5, "expected a statement"),
    # characters
    (K + "    x2 = 'a'\n", 3, 10, "TL has no strings"),
    (K + "    x2 = 1; z = 2\n", 3, 11, "without ';'"),
    (K + "    x2 = {1: 2}\n", 3, 10, "no sets or dicts"),
    (K + "    x2 = é\n", 3, 10, "ASCII"),
    # top level
    ("x = 1\n", 1, 1, "top-level code must be a kernel"),
    ("def k(n: i32):\n    pass\n", 1, 1, "top-level code must be a kernel"),
    ("@kernel(warps=4)\n", 1, 17, "expected 'def'"),
    ("@kernel(warps=4)\ndef k(n: i32): pass\n", 2, 16, "a block starts on a new line"),
    (K + "    for i in range(3): pass\n", 3, 24, "a block starts on a new line"),
    ("@kernel(warps=4) def k(n: i32):\n    pass\n", 1, 18, "unexpected 'def'"),
    ("@kernel(warps=4)\ndef k(n i32):\n    pass\n", 2, 9, "expected ':'"),
    ("@kernel(warps=4)\ndef k(n: i32,, m: i32):\n    pass\n", 2, 14, "expected ')' or a name"),
    ("@kernel(warps=4)\ndef k[B: int = ](n: i32):\n    pass\n", 2, 16, "expected an expression"),
    (K + "    t = f(a=1, 2)\n", 3, 16, "positional argument cannot follow a keyword"),
]

TYPE = [
    (K + "    t = annotate(load(x, [0], [64]), spatial(8, 4) * local(2))\n", 3, 38, "the layout covers [8, 8]"),
    (K + "    q = shared(f32, [64, 64], layout=row_major(64, 32))\n", 3, 38, "the layout covers [64, 32]"),
    (K + "    q = shared(f32, [64, 64], layout=row_major(64, 64).swizzle(3, 3, 1))\n", 3, 38, "shift >= bits"),
    (K + "    q = shared(f32, [64, 64], layout=spatial(64, 64))\n", 3, 38, "must be a shared layout"),
    (K + "    q = shared(f32, [8], layout=row_major(8).local(2))\n", 3, 33, "method swizzle"),
    (K + "    q = shared(f32, [8], layout=row_major(8).swizzle(1, 2))\n", 3, 33, "three integers"),
    (K + "    t = annotate(load(x, [0], [64]), spatial(8).swizzle(3, 3, 3))\n", 3, 38, "not 'swizzle'"),
    (K + "    t = annotate(load(x, [0], [64]), spatial(0))\n", 3, 38, "sizes must be positive"),
    (K + "    t = row_major(8) * 2\n", 3, 9, "'*' does not apply to a shared layout"),
    (K + "    t = load(x, [0], [4])\n    t = t + zeros(f16, [4])\n", 4, 9, "mixes f16 and f32"),
    (K + "    x2 = None\n", 3, 10, "undefined name 'None'"),
    ("@kernel(warps=4)\ndef k[B: int](n: i32):\n    pass\n", 2, 7, "has no default"),
    ("@kernel(warps=4)\ndef k[B: float = 1](n: i32):\n    pass\n", 2, 7, "use int, dtype or bool"),
    ("@kernel(warps=4)\ndef k(n: i33x):\n    pass\n", 2, 7, "unknown type 'i33x'"),
    ("@kernel(warps=40)\ndef k(n: i32):\n    pass\n", 1, 15, "between 1 and 32"),
    ("@kernel(threads=4)\ndef k(n: i32):\n    pass\n", 1, 9, "only 'warps='"),
    ("@jit(warps=4)\ndef k(n: i32):\n    pass\n", 1, 1, "unknown decorator '@jit'"),
    ("@kernel(warps=4)\ndef k(n: i32):\n    pass\n@kernel(warps=4)\ndef k(n: i32):\n    pass\n", 4, 1,
     "defined twice"),
]

CASES = [pytest.param(src, tl.TLSyntaxError, line, col, words, id=f"syntax-{i}")
         for i, (src, line, col, words) in enumerate(SYNTAX)]
CASES += [pytest.param(src, tl.TLTypeError, line, col, words, id=f"type-{i}")
          for i, (src, line, col, words) in enumerate(TYPE)]

LEAKS = re.compile(r"__ANON|RPAR|LPAR|LSQB|RSQB|_NEWLINE|_INDENT|_DEDENT|\$END|Token\(|Tree\(|\.py\b|lark|"
                   r"Traceback")


@pytest.mark.parametrize("source, cls, line, column, words", CASES)
def test_diagnostic(source, cls, line, column, words):
    with pytest.raises(cls) as info:
        tl.compile(source, target="interp")
    err = info.value
    assert type(err) is cls
    assert (err.location.line, err.location.column) == (line, column), str(err)
    assert words in err.message, err.message
    head, shown, caret = str(err).splitlines()[:3]
    assert head == f"<string>:{line}:{column}"
    assert shown.strip() == source.split("\n")[line - 1].strip()
    assert caret.strip() == "^" and caret.index("^") - 4 == column - 1
    assert not LEAKS.search(str(err)), str(err)


def test_the_tables_are_large():
    assert len(SYNTAX) >= 25 and len(TYPE) >= 10


def test_parse_raises_only_syntax_errors_with_the_file_name():
    with pytest.raises(tl.TLSyntaxError) as info:
        parse(K + "    x2 = $\n", "kern.tl")
    assert str(info.value).startswith("kern.tl:3:10\n")


def test_a_tab_shows_as_one_column():
    # lark counts a tab as one column; the shown line replaces it by a space so
    # that the caret stays under the right character.
    src = K + "\tx2 = $\n"
    with pytest.raises(tl.TLSyntaxError) as info:
        tl.compile(src, target="interp")
    _, shown, caret = str(info.value).splitlines()[:3]
    assert shown[4 + info.value.location.column - 1] == "$"
    assert caret.index("^") == 4 + info.value.location.column - 1


@pytest.mark.parametrize("source", [
    K + "    t = load(x, [0], [4])\n# flush left\n        # deep comment\n    store(y, t, [0])\n",
    K + "    t = load(x,  # the source\n             [0],  # offsets\n             [4])\n    store(y, t, [0])\n",
    (K + "    t = load(x, [0], [4])\n    store(y, t, [0])\n").replace("\n", "\r\n"),
    K + "    t = load(x, [0], [4])\n    store(y, t, [0])  # no newline at the end",
    K + "    t = load(x, [0], \\\n        [4])\n    store(y, t, [0])\n",
    "# a header comment\n\n" + K + "\tpass\n\n\n",
    K + "    format = 3\n    iffy = format + 1\n    notx = iffy\n    t = full(f32, [4], notx)\n    store(y, t, [0])\n",
], ids=["comments-at-any-indent", "comments-in-brackets", "crlf", "no-final-newline", "backslash",
        "tabs-and-blank-lines", "keyword-prefixed-names"])
def test_layout_of_valid_sources(source):
    tl.compile(source, target="interp")
