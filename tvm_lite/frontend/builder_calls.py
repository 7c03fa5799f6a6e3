"""The built-in functions of TL: one named builder function per instruction.

Each function takes the KernelBuilder, the call node and the evaluated
arguments, checks them, emits VM instructions and returns the result value.
docs/language.md documents each one.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from ..ir import vm
from ..ir.dtypes import DataType
from ..ir.layout import RegisterLayout
from ..ir.shared_layout import SharedLayout
from . import ast
from .builder_layouts import LAYOUT_FUNCTIONS, layout_call
from .builder_values import BLOCK, describe, is_const, is_scalar

_REQUIRED = object()


class Args:
    """A call's evaluated arguments with their nodes, for checks with locations."""

    def __init__(self, b, call: ast.Call, params: tuple[str, ...]):
        self.b, self.call, self.name = b, call, call.func.id
        if len(call.args) > len(params):
            raise b.error(call, f"{self.name}() takes at most {len(params)} arguments "
                                f"({', '.join(params)}), got {len(call.args)}")
        self.values: dict[str, tuple[Any, Any]] = {}
        for p, node in zip(params, call.args):
            self.values[p] = (b.expr(node), node)
        for kw in call.kwargs:
            if kw.name not in params:
                raise b.error(kw, f"{self.name}() has no parameter '{kw.name}' "
                                  f"(parameters: {', '.join(params)})")
            if kw.name in self.values:
                raise b.error(kw, f"{self.name}() got '{kw.name}' twice")
            self.values[kw.name] = (b.expr(kw.value), kw.value)

    def get(self, name: str, default: Any = _REQUIRED) -> Any:
        if name in self.values:
            return self.values[name][0]
        if default is _REQUIRED:
            raise self.b.error(self.call, f"{self.name}() needs the argument '{name}'")
        return default

    def has(self, name: str) -> bool:
        return name in self.values

    def node(self, name: str) -> Any:
        return self.values[name][1] if name in self.values else self.call

    def error(self, name: str, message: str):
        return self.b.error(self.node(name), message)

    def tile(self, name: str) -> vm.RegisterTensor:
        v = self.get(name)
        if not isinstance(v, vm.RegisterTensor):
            raise self.error(name, f"{self.name}(): '{name}' must be a tile, got {describe(v)}")
        return v

    def of(self, name: str, cls: type, what: str) -> Any:
        v = self.get(name)
        if not isinstance(v, cls):
            raise self.error(name, f"{self.name}(): '{name}' must be {what}, got {describe(v)}")
        return v

    def dtype(self, name: str) -> DataType:
        return self.of(name, DataType, "a dtype")

    def const_int(self, name: str, default: Any = _REQUIRED) -> int:
        return self.b.const_int(self.get(name, default), self.node(name), f"{self.name}(): '{name}'")

    def shape(self, name: str) -> tuple[int, ...]:
        return self.b.shape_list(self.get(name), self.node(name), f"{self.name}(): '{name}'")

    def int_list(self, name: str) -> tuple[int, ...]:
        items = self.get(name)
        items = items if isinstance(items, tuple) else (items,)
        return tuple(self.b.const_int(v, self.node(name), f"{self.name}(): '{name}'") for v in items)

    def offsets(self, name: str, ndim: int) -> tuple[vm.Expr, ...]:
        items = self.get(name)
        items = items if isinstance(items, tuple) else (items,)
        if len(items) != ndim:
            raise self.error(name, f"{self.name}(): {len(items)} offsets for a rank-{ndim} tensor")
        return tuple(self.b.int_scalar(v, self.node(name), "an offset") for v in items)


BUILTINS: dict[str, Callable] = {}


def builtin(*params: str):
    """Register a builtin taking the named parameters (positional or keyword)."""
    def register(fn: Callable) -> Callable:
        name = fn.__name__.removeprefix("tl_")
        if name in BUILTINS:
            raise RuntimeError(f"builtin {name} registered twice")
        BUILTINS[name] = (fn, params)
        return fn
    return register


def call_builtin(b, call: ast.Call) -> Any:
    name = call.func.id
    if b.lookup(name) is not None:
        raise b.error(call.func, f"'{name}' is a value, not a function")
    if name == "range":
        raise b.error(call, "range(...) is only allowed as the iterable of a for loop")
    if name in LAYOUT_FUNCTIONS:
        return layout_call(b, None, name, call)
    entry = BUILTINS.get(name)
    if entry is None:
        raise b.error(call.func, f"unknown function '{name}'")
    fn, params = entry
    return fn(b, Args(b, call, params))


def broadcast_shapes(b, shapes: list[tuple[int, ...]], node: Any) -> tuple[int, ...]:
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(ndim):
        dims = {s[len(s) - ndim + i] for s in shapes if len(s) - ndim + i >= 0} - {1}
        if len(dims) > 1:
            raise b.error(node, "shapes " + " and ".join(str(list(s)) for s in shapes) + " do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


_FLOAT_ONLY = {vm.ElementOp.EXP, vm.ElementOp.LOG, vm.ElementOp.SQRT, vm.ElementOp.RSQRT}
_INT_ONLY = {vm.ElementOp.BIT_AND, vm.ElementOp.BIT_OR, vm.ElementOp.BIT_XOR, vm.ElementOp.SHL,
             vm.ElementOp.SHR, vm.ElementOp.INVERT}
_BOOL_RESULT = {vm.ElementOp.LT, vm.ElementOp.LE, vm.ElementOp.GT, vm.ElementOp.GE, vm.ElementOp.EQ,
                vm.ElementOp.NE, vm.ElementOp.AND, vm.ElementOp.OR, vm.ElementOp.NOT}


def tile_elementwise(b, op: vm.ElementOp, operands: tuple, node: Any) -> vm.RegisterTensor:
    """Emit an element-wise op over tiles and scalars (at least one tile)."""
    tiles = [x for x in operands if isinstance(x, vm.RegisterTensor)]
    for x in operands:
        if not (isinstance(x, vm.RegisterTensor) or is_scalar(x)):
            raise b.error(node, f"'{op.value}' does not apply to {describe(x)}")
    dtypes = {t.dtype for t in tiles}
    if len(dtypes) > 1:
        names = " and ".join(sorted(d.name for d in dtypes))
        raise b.error(node, f"'{op.value}' mixes {names} tiles; convert one with cast(x, dtype)")
    dt = tiles[0].dtype
    if op in _FLOAT_ONLY and not dt.is_float:
        raise b.error(node, f"{op.value}() needs a float tile, got {dt.name}")
    if op in _INT_ONLY and dt.is_float:
        raise b.error(node, f"'{op.value}' needs integer tiles, got {dt.name}")
    if op is vm.ElementOp.DIV and not dt.is_float:
        raise b.error(node, "'/' is true division; use '//' for integer tiles")
    args = []
    for x in operands:
        if isinstance(x, vm.RegisterTensor):
            args.append(x)
        elif isinstance(x, float) and not dt.is_float:
            raise b.error(node, f"cannot combine the number {x} with a {dt.name} tile")
        elif is_const(x):
            args.append(vm.Const(float(x) if dt.is_float else int(x), dt))
        elif x.dtype.is_float and not dt.is_float:
            raise b.error(node, f"cannot combine a {x.dtype.name} scalar with a {dt.name} tile")
        else:
            args.append(x if x.dtype == dt else vm.ScalarCast(x, dt))
    shape = broadcast_shapes(b, [t.shape for t in tiles], node)
    out = b.new_tile(vm.BOOL if op in _BOOL_RESULT else dt, shape)
    b.emit(vm.Elementwise(out, op, tuple(args)))
    return out


# ------------------------------------------------------------- kernel set-up


@builtin("x", "y", "z")
def tl_grid(b, a: Args):
    if len(b.scopes) > 1 or b.bodies[-1] is not b.bodies[0]:
        raise b.error(a.call, "grid(...) must be at the top level of the kernel body")
    if b.grid is not None:
        raise b.error(a.call, "grid(...) is given twice")
    dims = [n for n in ("x", "y", "z") if a.has(n)]
    if not dims:
        raise b.error(a.call, "grid(...) needs at least one dimension")
    b.grid = tuple(b.int_scalar(a.get(n), a.node(n), "a grid dimension") for n in dims)


# ------------------------------------------------------------- global memory


@builtin("tensor", "offsets", "shape")
def tl_load(b, a: Args):
    g = a.of("tensor", vm.GlobalTensor, "a global tensor parameter")
    shape = a.shape("shape")
    if len(shape) != g.ndim:
        raise a.error("shape", f"load(): a rank-{len(shape)} tile from the rank-{g.ndim} tensor '{g.name}'")
    out = b.new_tile(g.dtype, shape)
    b.emit(vm.Load(out, g, a.offsets("offsets", g.ndim)))
    return out


def _store_like(b, a: Args, cls: type) -> None:
    g = a.of("tensor", vm.GlobalTensor, "a global tensor parameter")
    x = a.tile("value")
    if x.ndim != g.ndim:
        raise a.error("value", f"{a.name}(): a rank-{x.ndim} tile into the rank-{g.ndim} tensor '{g.name}'")
    x = b.implicit_cast(x, g.dtype, a.node("value"), f"{a.name}() into '{g.name}' ({g.dtype.name})")
    b.emit(cls(g, x, a.offsets("offsets", g.ndim)))


@builtin("tensor", "value", "offsets")
def tl_store(b, a: Args):
    _store_like(b, a, vm.Store)


@builtin("tensor", "value", "offsets")
def tl_atomic_add(b, a: Args):
    _store_like(b, a, vm.AtomicAdd)


# ------------------------------------------------------------- shared memory


@builtin("dtype", "shape", "layout")
def tl_shared(b, a: Args):
    shape = a.shape("shape")
    layout = None
    if a.has("layout"):
        layout = a.of("layout", SharedLayout, "a shared layout such as row_major(64, 64).swizzle(3, 3, 3)")
        if layout.shape != shape:
            raise a.error("layout", f"shared(): the layout covers {list(layout.shape)}, the tensor is {list(shape)}")
    s = vm.SharedTensor(b.fresh(), a.dtype("dtype"), shape, layout)
    b.emit(vm.AllocShared(s))
    return s


def _shared_offsets(b, a: Args, s: vm.SharedTensor) -> tuple[vm.Expr, ...]:
    if not a.has("offsets"):
        return tuple(vm.const(0) for _ in s.shape)
    return a.offsets("offsets", s.ndim)


@builtin("src", "offsets", "shape")
def tl_load_shared(b, a: Args):
    s = a.of("src", vm.SharedTensor, "a shared tensor")
    shape = a.shape("shape") if a.has("shape") else s.shape
    if len(shape) != s.ndim or any(x > y for x, y in zip(shape, s.shape)):
        raise a.error("shape", f"load_shared(): shape {list(shape)} does not fit in {list(s.shape)}")
    out = b.new_tile(s.dtype, shape)
    b.emit(vm.LoadShared(out, s, _shared_offsets(b, a, s)))
    return out


@builtin("dst", "value", "offsets")
def tl_store_shared(b, a: Args):
    s = a.of("dst", vm.SharedTensor, "a shared tensor")
    x = a.tile("value")
    if x.ndim != s.ndim or any(p > q for p, q in zip(x.shape, s.shape)):
        raise a.error("value", f"store_shared(): a {list(x.shape)} tile does not fit in {list(s.shape)}")
    x = b.implicit_cast(x, s.dtype, a.node("value"), "store_shared()")
    b.emit(vm.StoreShared(s, x, _shared_offsets(b, a, s)))


@builtin("dst", "src", "offsets")
def tl_copy_async(b, a: Args):
    s = a.of("dst", vm.SharedTensor, "a shared tensor")
    g = a.of("src", vm.GlobalTensor, "a global tensor parameter")
    if s.dtype != g.dtype or s.ndim != g.ndim:
        raise a.error("src", f"copy_async(): {g.dtype.name} rank-{g.ndim} '{g.name}' into a "
                             f"{s.dtype.name} rank-{s.ndim} shared tensor")
    b.emit(vm.CopyAsync(s, g, a.offsets("offsets", g.ndim)))
    b.emit(vm.CommitAsync())   # each copy_async is its own group


@builtin("n")
def tl_wait_async(b, a: Args):
    n = a.const_int("n", 0)
    if n < 0:
        raise a.error("n", "wait_async(): n must be >= 0")
    b.emit(vm.WaitAsync(n))


@builtin()
def tl_barrier(b, a: Args):
    b.emit(vm.Barrier())


# ------------------------------------------------------------- tile creation


def _fill(b, dt: DataType, shape: tuple[int, ...], value: Any, node: Any) -> vm.RegisterTensor:
    if isinstance(value, float) and not dt.is_float:
        raise b.error(node, f"cannot fill a {dt.name} tile with {value}")
    out = b.new_tile(dt, shape)
    b.emit(vm.Full(out, b.convert_scalar(value, dt, node)))
    return out


@builtin("dtype", "shape")
def tl_zeros(b, a: Args):
    return _fill(b, a.dtype("dtype"), a.shape("shape"), 0, a.call)


@builtin("dtype", "shape", "value")
def tl_full(b, a: Args):
    value = a.get("value")
    if not is_scalar(value):
        raise a.error("value", f"full(): the value must be a scalar, got {describe(value)}")
    return _fill(b, a.dtype("dtype"), a.shape("shape"), value, a.node("value"))


@builtin("start", "stop", "dtype")
def tl_arange(b, a: Args):
    start, stop = (0, a.const_int("start")) if not a.has("stop") else (a.const_int("start"), a.const_int("stop"))
    dt = a.dtype("dtype") if a.has("dtype") else vm.I32
    if stop <= start or dt.is_float:
        raise a.error("start", f"arange(): needs start < stop and an integer dtype, got [{start}, {stop}) {dt}")
    out = b.new_tile(dt, (stop - start,))
    b.emit(vm.Arange(out, vm.Const(start, dt)))
    return out


# ------------------------------------------------------------ types, layouts


@builtin("x", "dtype")
def tl_cast(b, a: Args):
    dt = a.dtype("dtype")
    x = a.get("x")
    if is_scalar(x):
        e = b.scalar_expr(x, a.node("x"))
        return e if e.dtype == dt else vm.ScalarCast(e, dt)
    x = a.tile("x")
    out = b.new_tile(dt, x.shape)
    b.emit(vm.Cast(out, x))
    return out


@builtin("x", "dtype", "layout")
def tl_view(b, a: Args):
    x = a.tile("x")
    dt = a.dtype("dtype") if a.has("dtype") else x.dtype
    bits = x.shape[-1] * x.dtype.nbits
    if bits % dt.nbits:
        raise a.error("dtype", f"view(): the last dimension holds {bits} bits, not a multiple of "
                               f"{dt.name}'s {dt.nbits}")
    shape = x.shape[:-1] + (bits // dt.nbits,)
    layout = None
    if a.has("layout"):
        layout = a.of("layout", RegisterLayout, "a register layout")
        if layout.shape != shape:
            raise a.error("layout", f"view(): the layout covers {list(layout.shape)}, the result is {list(shape)}")
    out = vm.RegisterTensor(b.fresh(), dt, shape, layout)
    b.emit(vm.View(out, x))
    return out


@builtin("x", "layout")
def tl_annotate(b, a: Args):
    x = a.tile("x")
    layout = a.of("layout", RegisterLayout, "a register layout such as spatial(8, 4).local(1, 2)")
    if layout.shape != x.shape:
        raise a.error("layout", f"annotate(): the layout covers {list(layout.shape)}, the tile is {list(x.shape)}")
    out = b.new_tile(x.dtype, x.shape)
    b.emit(vm.Annotate(out, x, layout))
    return out


# -------------------------------------------------------------------- compute


@builtin("a", "b", "acc")
def tl_dot(b, a: Args):
    x, y, acc = a.tile("a"), a.tile("b"), a.tile("acc")
    if x.ndim != 2 or y.ndim != 2 or acc.ndim != 2:
        raise b.error(a.call, "dot(): operands and accumulator must be 2-D tiles")
    if x.shape[1] != y.shape[0]:
        raise b.error(a.call, f"dot(): {list(x.shape)} @ {list(y.shape)}: inner dimensions differ")
    if acc.shape != (x.shape[0], y.shape[1]):
        raise a.error("acc", f"dot(): the accumulator must be {[x.shape[0], y.shape[1]]}, got {list(acc.shape)}")
    if x.dtype != y.dtype:
        raise b.error(a.call, f"dot(): operands are {x.dtype.name} and {y.dtype.name}; cast one")
    if x.dtype.is_float != acc.dtype.is_float:
        raise a.error("acc", f"dot(): {x.dtype.name} operands need a "
                             f"{'float' if x.dtype.is_float else 'integer'} accumulator, got {acc.dtype.name}")
    out = b.new_tile(acc.dtype, acc.shape)
    b.emit(vm.Dot(out, x, y, acc))
    return out


def _unary_builtin(element: vm.ElementOp, scalar: vm.UnaryOp):
    def build(b, a: Args):
        x = a.get("x")
        if isinstance(x, vm.RegisterTensor):
            return tile_elementwise(b, element, (x,), a.call)
        if is_const(x) and element is vm.ElementOp.ABS:
            return abs(x)
        e = b.scalar_expr(x, a.node("x"))
        if element in _FLOAT_ONLY and not e.dtype.is_float:
            e = vm.ScalarCast(e, vm.F32)
        return vm.Unary(scalar, e, e.dtype)
    build.__name__ = f"tl_{element.value}"
    return build


for _element, _scalar in ((vm.ElementOp.ABS, vm.UnaryOp.ABS), (vm.ElementOp.EXP, vm.UnaryOp.EXP),
                          (vm.ElementOp.LOG, vm.UnaryOp.LOG), (vm.ElementOp.SQRT, vm.UnaryOp.SQRT),
                          (vm.ElementOp.RSQRT, vm.UnaryOp.RSQRT)):
    builtin("x")(_unary_builtin(_element, _scalar))


@builtin("cond", "x", "y")
def tl_where(b, a: Args):
    cond, x, y = a.get("cond"), a.get("x"), a.get("y")
    if not any(isinstance(v, vm.RegisterTensor) for v in (x, y)):
        raise a.error("x", "where(): at least one of the values must be a tile")
    tiles = [v for v in (x, y) if isinstance(v, vm.RegisterTensor)]
    if isinstance(cond, vm.RegisterTensor):
        if cond.dtype.is_float:
            raise a.error("cond", "where(): the condition must be a comparison or integer tile")
    elif not is_scalar(cond):
        raise a.error("cond", f"where(): bad condition {describe(cond)}")
    shapes = [t.shape for t in tiles] + ([cond.shape] if isinstance(cond, vm.RegisterTensor) else [])
    dt = tiles[0].dtype
    if any(t.dtype != dt for t in tiles):
        raise b.error(a.call, "where(): the two values have different dtypes; cast one")
    args = [cond if isinstance(cond, vm.RegisterTensor) else b.convert_scalar(cond, vm.BOOL, a.node("cond"))]
    for v, name in ((x, "x"), (y, "y")):
        args.append(v if isinstance(v, vm.RegisterTensor) else b.convert_scalar(v, dt, a.node(name)))
    out = b.new_tile(dt, broadcast_shapes(b, shapes, a.call))
    b.emit(vm.Elementwise(out, vm.ElementOp.WHERE, tuple(args)))
    return out


def _reduce(b, a: Args, op: vm.ReduceOp):
    x = a.tile("x")
    dim = a.const_int("dim")
    if dim < 0:
        dim += x.ndim
    if not 0 <= dim < x.ndim:
        raise a.error("dim", f"{a.name}(): dim {a.get('dim')} is out of range for a rank-{x.ndim} tile")
    keep = a.get("keepdim", False)
    if not isinstance(keep, bool):
        raise a.error("keepdim", f"{a.name}(): keepdim must be True or False")
    keep = keep or x.ndim == 1   # tiles have rank >= 1: a 1-D reduction keeps [1]
    shape = list(x.shape)
    if keep:
        shape[dim] = 1
    else:
        del shape[dim]
    out = b.new_tile(x.dtype, tuple(shape))
    b.emit(vm.Reduce(out, x, op, dim, keep))
    return out


@builtin("x", "dim", "keepdim")
def tl_sum(b, a: Args):
    return _reduce(b, a, vm.ReduceOp.SUM)


def _min_max(op: str, reduce_op: vm.ReduceOp):
    def build(b, a: Args):
        if a.has("dim"):
            if a.has("y"):
                raise a.error("y", f"{op}(): give either two values or a tile and dim=")
            return _reduce(b, a, reduce_op)
        if not a.has("y"):
            raise b.error(a.call, f"{op}(): give two values, or a tile and dim= to reduce")
        return b.binary(op, a.get("x"), a.get("y"), a.call)
    build.__name__ = f"tl_{op}"
    return build


builtin("x", "y", "dim", "keepdim")(_min_max("min", vm.ReduceOp.MIN))
builtin("x", "y", "dim", "keepdim")(_min_max("max", vm.ReduceOp.MAX))


@builtin("a", "b")
def tl_cdiv(b, a: Args):
    x = a.get("a")
    y = a.get("b")
    if is_const(x) and is_const(y):
        if isinstance(x, float) or isinstance(y, float):
            raise b.error(a.call, "cdiv(): needs integers")
        if y == 0:
            raise a.error("b", "cdiv(): division by zero")
        return -(-x // y)
    ex, ey = b.int_scalar(x, a.node("a"), "cdiv()'s operand"), b.int_scalar(y, a.node("b"), "cdiv()'s operand")
    common = vm.I64 if vm.I64 in (ex.dtype, ey.dtype) else ex.dtype
    return vm.Binary(vm.BinaryOp.CDIV, b.convert_scalar(ex, common, a.call), b.convert_scalar(ey, common, a.call), common)


# ---------------------------------------------------------------- shape ops


@builtin("x", "shape")
def tl_reshape(b, a: Args):
    x = a.tile("x")
    dims = list(a.int_list("shape"))
    if dims.count(-1) > 1 or any(d == 0 or d < -1 for d in dims):
        raise a.error("shape", f"reshape(): bad shape {dims}")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        dims[dims.index(-1)] = x.size // known if known and x.size % known == 0 else 0
    if math.prod(dims) != x.size or 0 in dims:
        raise a.error("shape", f"reshape(): cannot reshape {list(x.shape)} into {list(a.int_list('shape'))}")
    out = b.new_tile(x.dtype, tuple(dims))
    b.emit(vm.Reshape(out, x))
    return out


@builtin("x", "perm")
def tl_transpose(b, a: Args):
    x = a.tile("x")
    perm = a.int_list("perm") if a.has("perm") else tuple(reversed(range(x.ndim)))
    if sorted(perm) != list(range(x.ndim)):
        raise a.error("perm", f"transpose(): {list(perm)} is not a permutation of {x.ndim} dims")
    out = b.new_tile(x.dtype, tuple(x.shape[p] for p in perm))
    b.emit(vm.Transpose(out, x, perm))
    return out


@builtin("x", "shape")
def tl_broadcast_to(b, a: Args):
    x = a.tile("x")
    shape = a.shape("shape")
    if broadcast_shapes(b, [x.shape, shape], a.call) != shape:
        raise a.error("shape", f"broadcast_to(): {list(x.shape)} does not broadcast to {list(shape)}")
    out = b.new_tile(x.dtype, shape)
    b.emit(vm.BroadcastTo(out, x))
    return out


@builtin("tiles", "dim")
def tl_concat(b, a: Args):
    parts = a.get("tiles")
    if not isinstance(parts, tuple) or len(parts) < 2 or not all(isinstance(p, vm.RegisterTensor) for p in parts):
        raise a.error("tiles", "concat(): expects a list of at least two tiles, e.g. concat([x, y], dim=0)")
    dim = a.const_int("dim", 0)
    first = parts[0]
    if not 0 <= dim < first.ndim:
        raise a.error("dim", f"concat(): dim {dim} is out of range")
    for p in parts[1:]:
        same = p.dtype == first.dtype and p.ndim == first.ndim and all(
            p.shape[i] == first.shape[i] for i in range(first.ndim) if i != dim)
        if not same:
            raise a.error("tiles", f"concat(): {describe(p)} does not match {describe(first)}")
    shape = list(first.shape)
    shape[dim] = sum(p.shape[dim] for p in parts)
    out = b.new_tile(first.dtype, tuple(shape))
    b.emit(vm.Concat(out, parts, dim))
    return out


@builtin("x", "starts", "shape")
def tl_slice(b, a: Args):
    x = a.tile("x")
    starts, shape = a.int_list("starts"), a.shape("shape")
    if len(starts) != x.ndim or len(shape) != x.ndim or any(
            s < 0 or s + n > d for s, n, d in zip(starts, shape, x.shape)):
        raise b.error(a.call, f"slice(): [{list(starts)} + {list(shape)}] is outside {list(x.shape)}")
    out = b.new_tile(x.dtype, shape)
    b.emit(vm.Slice(out, x, starts))
    return out


__all__ = ["BUILTINS", "call_builtin", "tile_elementwise", "BLOCK", "layout_call"]
