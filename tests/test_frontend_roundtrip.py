"""format_ast is the inverse of parse (spans aside), on generated programs.

The programs are syntactically valid TL with random expressions and nested
statements; they need not type-check, since only the parser and the printer
are under test. Operator precedence and associativity are what this checks
most: the printer adds only the parentheses that precedence needs.
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_lite.frontend import ast
from tvm_lite.frontend.ast_printer import format_ast
from tvm_lite.frontend.parser import parse

# Hypothesis warns when it builds the repr of a large generated module; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

BINARY = ["or", "and", "<", "<=", ">", ">=", "==", "!=", "|", "^", "&", "<<", ">>",
          "+", "-", "*", "/", "//", "%"]
COMPARISONS = {"<", "<=", ">", ">=", "==", "!="}
NAMES = st.sampled_from(["a", "b", "n", "acc", "BM", "f16", "block", "x_1", "formula", "iffy"])

atoms = st.one_of(
    NAMES.map(ast.Name),
    st.integers(0, 2**70).map(ast.IntLit),
    st.floats(min_value=0, allow_nan=False).map(ast.FloatLit),   # inf prints as 1e999
    st.booleans().map(ast.BoolLit),
)


def _binary(children):
    def make(op, lhs, rhs):
        # Comparisons do not chain in TL: a comparison's operand is never a bare comparison.
        if op in COMPARISONS:
            if isinstance(lhs, ast.BinOp) and lhs.op in COMPARISONS:
                lhs = ast.Call(ast.Name("f"), (lhs,), ())
            if isinstance(rhs, ast.BinOp) and rhs.op in COMPARISONS:
                rhs = ast.Call(ast.Name("f"), (rhs,), ())
        return ast.BinOp(op, lhs, rhs)
    return st.builds(make, st.sampled_from(BINARY), children, children)


def _extend(children):
    keywords = st.lists(st.builds(ast.Keyword, st.sampled_from(["dim", "unroll", "layout"]), children),
                        max_size=2, unique_by=lambda k: k.name).map(tuple)
    return st.one_of(
        _binary(children),
        st.builds(ast.UnaryOp, st.sampled_from(["-", "+", "~", "not"]), children),
        st.builds(ast.Call, NAMES.map(ast.Name), st.lists(children, max_size=3).map(tuple), keywords),
        st.builds(ast.Attribute, children, st.sampled_from(["x", "y", "local"])),
        st.builds(ast.Subscript, children, st.lists(children, min_size=1, max_size=2).map(tuple)),
        st.lists(children, max_size=3).map(lambda items: ast.ListExpr(tuple(items))),
    )


exprs = st.recursive(atoms, _extend, max_leaves=8)
targets = st.sampled_from(["t", "acc", "x2"]).map(ast.Name)


def _statements(depth: int):
    simple = st.one_of(
        st.builds(ast.Assign, targets, exprs),
        st.builds(ast.AugAssign, targets, st.sampled_from(["+", "-", "*", "//", "<<", "|"]), exprs),
        st.builds(ast.ExprStmt, st.builds(ast.Call, NAMES.map(ast.Name), st.lists(exprs, max_size=2).map(tuple),
                                          st.just(()))),
        st.sampled_from([ast.Pass(), ast.Break(), ast.Continue(), ast.Return()]),
    )
    if depth == 0:
        return simple
    body = st.lists(_statements(depth - 1), min_size=1, max_size=3).map(tuple)
    return st.one_of(
        simple,
        st.builds(ast.For, targets, exprs, body),
        st.builds(ast.While, exprs, body),
        st.builds(ast.If, exprs, body, st.one_of(st.just(()), body)),
    )


const_params = st.lists(st.builds(ast.ConstParam, st.sampled_from(["BM", "BN", "WT", "G"]),
                                  st.sampled_from(["int", "dtype", "bool"]), st.one_of(st.none(), atoms)),
                        max_size=3, unique_by=lambda c: c.name).map(tuple)
params = st.lists(st.one_of(
    st.builds(ast.ScalarParam, st.sampled_from(["m", "n", "k", "p"]), st.sampled_from(["i32", "f32", "ptr"])),
    st.builds(ast.TensorParam, st.sampled_from(["a", "b", "c"]), st.sampled_from(["f16", "u3", "WT"]),
              st.lists(exprs, min_size=1, max_size=2).map(tuple)),
), max_size=4, unique_by=lambda p: p.name).map(tuple)
kernels = st.builds(
    ast.Kernel, st.sampled_from(["k", "qmatmul", "softmax"]), st.just("kernel"),
    st.lists(st.builds(ast.Keyword, st.just("warps"), st.integers(1, 32).map(ast.IntLit)),
             max_size=1).map(tuple),
    const_params, params, st.lists(_statements(2), min_size=1, max_size=4).map(tuple))
modules = st.lists(kernels, min_size=1, max_size=2).map(lambda ks: ast.Module(tuple(ks)))


@settings(max_examples=120, deadline=None)
@given(modules)
def test_parse_of_format_is_the_identity(module):
    text = format_ast(module)
    assert parse(text) == module, text


@settings(max_examples=60, deadline=None)
@given(modules)
def test_format_is_a_fixed_point(module):
    text = format_ast(module)
    assert format_ast(parse(text)) == text
