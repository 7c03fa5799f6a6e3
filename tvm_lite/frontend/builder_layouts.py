"""Layout expressions in TL source: register layouts and shared layouts.

Register layouts (for `annotate` and `view(..., layout=)`) are written in the
layout algebra of ir/layout.py: `local(...)`, `spatial(...)`, `column_local(...)`,
`column_spatial(...)`, products with `*`, and the fluent product
`spatial(8, 4).local(1, 2)`.

Shared layouts (for `shared(dtype, shape, layout=)`) are `row_major(...)` or
`column_major(...)`, optionally followed by `.swizzle(bits, base, shift)`.

Every layout the algebra refuses becomes a TLTypeError at the call.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import TLLayoutError
from ..ir import layout as register_layouts
from ..ir import shared_layout as shared_layouts
from ..ir.layout import RegisterLayout
from ..ir.shared_layout import SharedLayout
from . import ast

REGISTER_LAYOUTS: dict[str, Callable] = {
    "local": register_layouts.local, "spatial": register_layouts.spatial,
    "column_local": register_layouts.column_local, "column_spatial": register_layouts.column_spatial,
}
SHARED_LAYOUTS: dict[str, Callable] = {
    "row_major": shared_layouts.shared_row_major, "column_major": shared_layouts.shared_column_major,
}
LAYOUT_FUNCTIONS = {**REGISTER_LAYOUTS, **SHARED_LAYOUTS}


def _sizes(b, call: ast.Call, name: str) -> list[int]:
    if call.kwargs:
        raise b.error(call.kwargs[0], f"{name}() takes sizes only, not '{call.kwargs[0].name}='")
    dims = [b.const_int(b.expr(x), x, f"{name}() sizes") for x in call.args]
    if not dims or any(d < 1 for d in dims):
        raise b.error(call, f"{name}(): sizes must be positive integers")
    return dims


def _register_call(b, base: RegisterLayout | None, name: str, call: ast.Call) -> RegisterLayout:
    if name not in REGISTER_LAYOUTS:
        raise b.error(call.func, f"a register layout has methods {', '.join(REGISTER_LAYOUTS)}, not '{name}'")
    atom = REGISTER_LAYOUTS[name](*_sizes(b, call, name))
    return atom if base is None else base * atom


def _shared_call(b, base: SharedLayout | None, name: str, call: ast.Call) -> SharedLayout:
    if base is None:
        return SHARED_LAYOUTS[name](*_sizes(b, call, name))
    if name != "swizzle":
        raise b.error(call.func, f"a shared layout has the method swizzle(bits, base, shift), not '{name}'")
    if call.kwargs or len(call.args) != 3:
        raise b.error(call, "swizzle() takes three integers: bits, base and shift")
    bits, low, shift = (b.const_int(b.expr(x), x, "swizzle()'s arguments") for x in call.args)
    return base.swizzle(bits, low, shift)


def layout_call(b, base: Any, name: str, call: ast.Call) -> RegisterLayout | SharedLayout:
    """`spatial(8, 4)` / `row_major(64, 64)` (base None) or a method on a layout."""
    try:
        if isinstance(base, SharedLayout) or (base is None and name in SHARED_LAYOUTS):
            return _shared_call(b, base, name, call)
        return _register_call(b, base, name, call)
    except TLLayoutError as e:
        raise b.error(call, e.message) from None


def layout_product(b, lhs: RegisterLayout, rhs: RegisterLayout, node: Any) -> RegisterLayout:
    """`lhs * rhs` for register layouts."""
    try:
        return lhs * rhs
    except TLLayoutError as e:
        raise b.error(node, e.message) from None


def describe_layout(v: Any) -> str:
    kind = "shared" if isinstance(v, SharedLayout) else "register"
    return f"a {kind} layout over {list(v.shape)}"
