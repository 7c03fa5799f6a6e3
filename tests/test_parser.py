"""The TL parser on its own: AST shape, spans, precedence, printing, the grammar's
loading, and syntax errors (position, caret, wording) -- no builder involved."""
import dataclasses
import glob
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import EXAMPLES, QMATMUL, mutate_source
from tvm_lite.errors import TLSyntaxError
from tvm_lite.frontend import ast
from tvm_lite.frontend import parser as parser_mod
from tvm_lite.frontend.ast_printer import format_ast
from tvm_lite.frontend.parser import parse

EXAMPLE_FILES = sorted(glob.glob(os.path.join(EXAMPLES, "*.tl")))


# Everything the grammar accepts, in one source with two kernels.
EVERYTHING = """\
# a comment before the first kernel

@kernel(warps=4, stages=2 + 1)
def everything[A: int = 0x10, D: dtype = f6e3m2, F: bool = True, N: int](
        n: i32, p: ptr, x: D[n, A * 2], y: u3[n],):
    for i in range(0, n, 2, unroll=4):   # trailing comment
        if i < 3 and not i == 2 or i >= 7:
            z = -i % 2 << 1 | ~3 ^ 4 & 5

        elif i != 0:
            continue
        else:
            break
    while True:
        pass
    w = 1.5e3
    w += 2
    w //= 2
    w <<= 1
    f(x)[1, 2].z
    v = [1, [2, 3], []]
    u = g(1, k=False, j=.5)
    return

@kernel()
def second():
    pass
"""


def strip_spans(node):
    """The node with every span zeroed (Span is excluded from equality anyway,
    but this lets a test compare reprs or check that spans are not all zero)."""
    if isinstance(node, tuple):
        return tuple(strip_spans(n) for n in node)
    if dataclasses.is_dataclass(node) and not isinstance(node, ast.Span):
        return dataclasses.replace(node, **{f.name: (ast.Span() if f.name == "span" else strip_spans(
            getattr(node, f.name))) for f in dataclasses.fields(node)})
    return node


def walk(node):
    yield node
    if isinstance(node, tuple):
        for n in node:
            yield from walk(n)
    elif dataclasses.is_dataclass(node) and not isinstance(node, ast.Span):
        for f in dataclasses.fields(node):
            if f.name != "span":
                yield from walk(getattr(node, f.name))


# ------------------------------------------------------------------ accepting


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=os.path.basename)
def test_every_example_parses(path):
    with open(path) as f:
        module = parse(f.read(), path)
    assert len(module.kernels) == 1
    assert module.kernels[0].name == os.path.basename(path)[:-3]


def test_examples_cover_the_four_kernels():
    assert {os.path.basename(p) for p in EXAMPLE_FILES} >= {
        "vector_add.tl", "softmax.tl", "matmul.tl", "qmatmul.tl"}
    with open(os.path.join(EXAMPLES, "qmatmul.tl")) as f:
        assert f.read() == QMATMUL


def test_qmatmul_ast():
    (k,) = parse(QMATMUL).kernels
    assert k.name == "qmatmul" and k.decorator == "kernel"
    assert k.decorator_args == (ast.Keyword("warps", ast.IntLit(4)),)
    assert [(c.name, c.type_name, c.default) for c in k.const_params] == [
        ("WT", "dtype", ast.Name("u4")), ("BM", "int", ast.IntLit(16)), ("BN", "int", ast.IntLit(128)),
        ("BK", "int", ast.IntLit(64)), ("G", "int", ast.IntLit(128))]
    assert k.params[:3] == tuple(ast.ScalarParam(n, "i32") for n in "mnk")
    assert k.params[4] == ast.TensorParam("b", "WT", (ast.Name("k"), ast.Name("n")))
    assert k.params[5].shape[0] == ast.Call(ast.Name("cdiv"), (ast.Name("k"), ast.Name("G")), ())
    grid, acc, loop, store = k.body
    assert isinstance(grid, ast.ExprStmt) and grid.expr.func == ast.Name("grid")
    assert acc == ast.Assign(ast.Name("acc"), ast.Call(
        ast.Name("zeros"), (ast.Name("f32"), ast.ListExpr((ast.Name("BM"), ast.Name("BN")))), ()))
    assert isinstance(loop, ast.For) and loop.var == ast.Name("kt") and len(loop.body) == 4
    # `kt * BK // G` is (kt * BK) // G, and `block.x` an attribute.
    offsets = loop.body[2].value.args[1].items
    assert offsets[0] == ast.BinOp("//", ast.BinOp("*", ast.Name("kt"), ast.Name("BK")), ast.Name("G"))
    assert offsets[1].lhs == ast.Attribute(ast.Name("block"), "y")
    assert isinstance(store, ast.ExprStmt)


def test_spans_are_one_based_and_cover_the_node():
    module = parse(QMATMUL)
    (k,) = module.kernels
    lines = QMATMUL.splitlines()
    acc = k.body[1]
    assert (acc.span.line, acc.span.column) == (6, 5)
    # A node's span covers exactly its text.
    call = acc.value
    assert lines[5][call.span.column - 1:call.span.end_column - 1] == "zeros(f32, [BM, BN])"
    ta = k.body[2].body[0].value.args[1].items[0]          # block.x * BM
    assert lines[ta.span.line - 1][ta.span.column - 1:ta.span.end_column - 1] == "block.x * BM"
    for node in walk(module):
        if dataclasses.is_dataclass(node) and not isinstance(node, (ast.Span, ast.Module)):
            assert node.span.line >= 1 and node.span.column >= 1, node


def test_everything_the_grammar_accepts():
    module = parse(EVERYTHING)
    first, second = module.kernels
    assert second.name == "second" and second.decorator_args == () and second.params == ()
    assert first.decorator_args[1] == ast.Keyword("stages", ast.BinOp("+", ast.IntLit(2), ast.IntLit(1)))
    assert first.const_params[0].default == ast.IntLit(16)
    assert first.const_params[3] == ast.ConstParam("N", "int", None)
    assert first.params[1] == ast.ScalarParam("p", "ptr")
    assert first.params[2].dtype_name == "D"
    loop = first.body[0]
    assert loop.iterable.kwargs == (ast.Keyword("unroll", ast.IntLit(4)),)
    branch = loop.body[0]
    assert isinstance(branch, ast.If)
    (elif_,) = branch.orelse
    assert isinstance(elif_, ast.If) and elif_.body == (ast.Continue(),) and elif_.orelse == (ast.Break(),)
    assert first.body[1] == ast.While(ast.BoolLit(True), (ast.Pass(),))
    assert first.body[2].value == ast.FloatLit(1500.0)
    assert [(s.op, s.value) for s in first.body[3:6]] == [
        ("+", ast.IntLit(2)), ("//", ast.IntLit(2)), ("<<", ast.IntLit(1))]
    assert first.body[6].expr == ast.Attribute(ast.Subscript(
        ast.Call(ast.Name("f"), (ast.Name("x"),), ()), (ast.IntLit(1), ast.IntLit(2))), "z")
    assert first.body[7].value.items[2] == ast.ListExpr(())
    assert first.body[8].value.kwargs == (ast.Keyword("k", ast.BoolLit(False)), ast.Keyword("j", ast.FloatLit(0.5)))
    assert first.body[9] == ast.Return()


def _paren(e) -> str:
    """Fully parenthesised text of an expression, to check how it grouped."""
    if isinstance(e, ast.BinOp):
        return f"({_paren(e.lhs)} {e.op} {_paren(e.rhs)})"
    if isinstance(e, ast.UnaryOp):
        return f"({e.op}{' ' if e.op == 'not' else ''}{_paren(e.operand)})"
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.IntLit):
        return str(e.value)
    if isinstance(e, ast.Attribute):
        return f"{_paren(e.value)}.{e.attr}"
    if isinstance(e, ast.Call):
        return f"{_paren(e.func)}({', '.join(_paren(a) for a in e.args)})"
    if isinstance(e, ast.Subscript):
        return f"{_paren(e.value)}[{', '.join(_paren(a) for a in e.indices)}]"
    raise AssertionError(e)


PRECEDENCE = [
    ("a + b * c", "(a + (b * c))"),
    ("a - b - c", "((a - b) - c)"),
    ("a // b * c", "((a // b) * c)"),
    ("a % b / c", "((a % b) / c)"),
    ("-a * b", "((-a) * b)"),
    ("-a.x[1]", "(-a.x[1])"),
    ("~a + b", "((~a) + b)"),
    ("- - a", "(-(-a))"),
    ("a << b + c", "(a << (b + c))"),
    ("a & b << c", "(a & (b << c))"),
    ("a | b ^ c & d", "(a | (b ^ (c & d)))"),
    ("a < b | c", "(a < (b | c))"),
    ("not a == b", "(not (a == b))"),
    ("not a and b", "((not a) and b)"),
    ("a or b and c", "(a or (b and c))"),
    ("a and b or c and d", "((a and b) or (c and d))"),
    ("(a + b) * c", "((a + b) * c)"),
    ("f(a)(b)[c].d", "f(a)(b)[c].d"),
    ("a >= b", "(a >= b)"),
    ("a != b", "(a != b)"),
    ("a >> 2 >> 1", "((a >> 2) >> 1)"),
]


@pytest.mark.parametrize("text, grouped", PRECEDENCE)
def test_python_precedence(text, grouped):
    module = parse(f"@kernel()\ndef k():\n    r = {text}\n")
    assert _paren(module.kernels[0].body[0].value) == grouped


@pytest.mark.parametrize("text, value", [("0", 0), ("42", 42), ("0x1F", 31), ("0xff_ff", 65535),
                                         ("1_000", 1000), ("1.5", 1.5), ("2e3", 2000.0), (".25", 0.25),
                                         ("3.", 3.0), ("True", True), ("False", False)])
def test_literals(text, value):
    e = parse(f"@kernel()\ndef k():\n    r = {text}\n").kernels[0].body[0].value
    assert e.value == value and type(e.value) is type(value)


# ------------------------------------------------------------------- printing


@pytest.mark.parametrize("source", [pytest.param(open(p).read(), id=os.path.basename(p)) for p in EXAMPLE_FILES]
                         + [pytest.param(EVERYTHING, id="everything")]
                         + [pytest.param(f"@kernel()\ndef k():\n    r = {t}\n", id=t) for t, _ in PRECEDENCE])
def test_print_and_reparse_round_trip(source):
    module = parse(source)
    text = format_ast(module)
    again = parse(text)
    assert again == module                              # equality ignores spans
    assert strip_spans(again) == strip_spans(module)
    assert repr(strip_spans(again)) == repr(strip_spans(module))
    assert format_ast(again) == text                    # printing is a fixed point


# ------------------------------------------------------------ grammar loading


def test_grammar_is_loaded_once_lalr_strict_and_cached():
    p = parser_mod.get_parser()
    assert parser_mod.get_parser() is p
    assert p.options.parser == "lalr" and p.options.propagate_positions
    assert p.options.maybe_placeholders is False
    if parser_mod._strict_available():
        assert p.options.strict
    cache_dir = os.environ["TL_CACHE_DIR"]              # set by conftest
    assert any(name.endswith(".lark.cache") for name in os.listdir(cache_dir))


@pytest.mark.parametrize("junk", [b"", b"not a cache", None])
def test_a_broken_disk_cache_falls_back(tmp_path, monkeypatch, junk):
    monkeypatch.setattr(parser_mod, "_parser", None)
    if junk is None:
        monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "file"))
        (tmp_path / "file").write_text("a file where the cache folder should be")
    else:
        monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path))
        text = parser_mod._GRAMMAR.read_text()
        path = parser_mod._cache_path(text, parser_mod._strict_available())
        good = parser_mod.get_parser()                  # writes a real cache file
        with open(path, "rb") as f:
            head = f.read().split(b"\n", 1)[0]
        with open(path, "wb") as f:                     # right digest, corrupt tables
            f.write(head + b"\n" + junk)
        monkeypatch.setattr(parser_mod, "_parser", None)
    p = parser_mod.get_parser()
    assert junk is None or p is not good
    assert parse(QMATMUL).kernels[0].name == "qmatmul"


def test_every_grammar_rule_has_a_transformer_method():
    """A misspelled method would let a lark Tree through; the default raises."""
    for rule in parser_mod.get_parser().rules:
        name = str(rule.alias or rule.origin.name)
        if name.startswith("_") or (rule.options.expand1 and rule.alias is None):
            continue                                    # inlined by lark
        assert name in vars(parser_mod._ToAST), name
    from lark import Tree
    with pytest.raises(Exception, match="no AST rule"):
        parser_mod._ToAST().transform(Tree("misspelled_rule", []))


# ---------------------------------------------------------------- diagnostics

H = "@kernel(warps=4)\ndef k(n: i32, x: f32[n]):\n"

# (source, line, column, words the message must contain)
SYNTAX_ERRORS = [
    (H + "    x = 1 +\n", 3, 12, "expected an expression"),
    (H + "    y =\n", 3, 8, "expected an expression"),
    (H + "    y += \n", 3, 9, "expected an expression"),
    (H + "    y = not\n", 3, 12, "expected an expression"),
    (H + "    y = f(a=)\n", 3, 13, "expected an expression"),
    (H + "    y = x[]\n", 3, 11, "expected an expression"),
    (H + "    y = n ** 2\n", 3, 12, "expected an expression"),
    (H + "    y = (1 + 2\n    z = 3\n", 3, 9, "'(' is never closed"),
    (H + "    y = [1, 2\n", 3, 9, "'[' is never closed"),
    (H + "    y = (1 +\n)\n", 3, 9, "'(' is never closed"),
    (H + "    y = 1\n        z = 2\n", 4, 9, "unexpected indent"),
    (H + "    y = 1\n  z = 2\n", 4, 3, "unindent"),
    (H + "    y = $\n", 3, 9, "unexpected character '$'"),
    (H + "    y = 'a'\n", 3, 9, "no strings"),
    (H + "    y = 1; z = 2\n", 3, 10, "unexpected character ';'"),
    (H + "    y = {1}\n", 3, 9, "unexpected character '{'"),
    (H + "    if n > 0\n        pass\n", 3, 13, "expected ':'"),
    (H + "    for i in range(3)\n        pass\n", 3, 22, "expected ':'"),
    (H + "    while n\n        pass\n", 3, 12, "expected ':'"),
    (H + "    if n:\n        pass\n    else\n        pass\n", 5, 9, "expected ':'"),
    (H + "    for i in range(3):\n    pass\n", 4, 5, "indented block"),
    (H + "    if n:\n", 3, 10, "indented block"),
    ("@kernel(warps=4)\ndef k(n: i32):\n", 2, 15, "indented block"),
    (H + "    y = 1 2\n", 3, 11, "expected an operator"),
    (H + "    y = f(a=1, 2)\n", 3, 16, "positional argument"),
    (H + "    y = 1 < 2 < 3\n", 3, 15, "do not chain"),
    (H + "    x[0] = 1\n", 3, 10, "unexpected '='"),
    (H + "    return 5\n", 3, 12, "'return' takes no value"),
    (H + "    for in range(3):\n        pass\n", 3, 9, "'in'"),
    (H + "    import os\n", 3, 5, "'import' is not part of TL"),
    (H + "    def g():\n        pass\n", 3, 5, "'def'"),
    (H + "    y = block.\n", 3, 15, "expected a name"),
    ("def k(n: i32):\n    pass\n", 1, 1, "@kernel"),
    ("@kernel(warps=4)\ndef k(n: i32):\n    pass\nx = 1\n", 4, 1, "top-level"),
    ("@kernel(warps=4)\ndef k(n: i32)\n    pass\n", 2, 14, "expected ':'"),
    ("@kernel(warps=4)\ndef k(n i32):\n    pass\n", 2, 9, "expected ':'"),
    ("@kernel(warps=4)\ndef k[](n: i32):\n    pass\n", 2, 7, "expected a name"),
    ("@kernel(warps 4)\ndef k(n: i32):\n    pass\n", 1, 15, "expected '='"),
]

_LEAKS = re.compile(r"__ANON|\b(R|L)(PAR|SQB)\b|_NEWLINE|_INDENT|_DEDENT|\$END|\bCOMMA\b|\bCOLON\b|\bEQUAL\b"
                    r"|\bNAME\b|Token\(|Tree\(|\.py\b|lark|Traceback")


def _check_rendering(err: TLSyntaxError, source: str, filename: str):
    loc = err.location
    text = str(err)
    head, source_line, caret = text.splitlines()[:3]
    assert head == f"{filename}:{loc.line}:{loc.column}"
    assert source_line.strip() == source.split("\n")[loc.line - 1].replace("\t", " ").strip()
    assert caret.strip() == "^" and caret.index("^") - 4 == loc.column - 1
    assert not _LEAKS.search(text), text


@pytest.mark.parametrize("source, line, column, words", SYNTAX_ERRORS)
def test_syntax_errors_say_where_and_what(source, line, column, words):
    with pytest.raises(TLSyntaxError) as info:
        parse(source, "bad.tl")
    err = info.value
    assert (err.location.line, err.location.column) == (line, column), str(err)
    assert words in err.message, str(err)
    assert err.location.file == "bad.tl"
    _check_rendering(err, source, "bad.tl")


def test_syntax_error_table_is_large_enough():
    assert len(SYNTAX_ERRORS) >= 25


def test_odd_inputs():
    assert parse("") == ast.Module(())
    assert parse("# nothing\n\n") == ast.Module(())
    assert parse(QMATMUL.rstrip("\n")) == parse(QMATMUL)                 # no final newline
    assert parse(QMATMUL.replace("\n", "\r\n")) == parse(QMATMUL)        # Windows line ends
    assert parse("\ufeff" + QMATMUL) == parse(QMATMUL)                   # byte-order mark
    with pytest.raises(TLSyntaxError):
        parse(b"@kernel()")                                              # not a str
    with pytest.raises(TLSyntaxError, match="nested too deeply"):
        parse("@kernel()\ndef k():\n    r = " + "-" * 5000 + "1\n")



_FUZZ_TOKENS = ["(", ")", "[", "]", ":", ",", "=", "+=", "+", "*", "**", "//", "\n", "    ", "  ", "\t",
                "\\\n", "for", "in", "if", "elif", "else", "while", "return", "pass", "load", "x", "1",
                "2.5", "0x", "1e", "@", "def", "kernel", "block", ".", "#", "not", "and", "or", "True",
                "-", "~", "<", "==", "$", "'", ";", "{", "é", "import"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXAMPLE_FILES), st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "swap"]), st.integers(0, 10_000),
              st.sampled_from(_FUZZ_TOKENS)), min_size=1, max_size=5))
def test_fuzzed_examples_parse_or_raise_tl_syntax_errors(path, edits):
    source = mutate_source(path, edits)
    try:
        module = parse(source, "fuzz.tl")
    except TLSyntaxError as err:                # anything else fails the test
        assert err.location is not None
        normalised = source.replace("\r\n", "\n")
        if not normalised.endswith("\n"):
            normalised += "\n"
        _check_rendering(err, normalised, "fuzz.tl")
    else:
        assert parse(format_ast(module)) == module
