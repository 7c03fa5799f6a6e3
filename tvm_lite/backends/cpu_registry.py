"""Lowerings registered by (statement type, target) (STYLE item 12).

A lowering is a named function `lower_x(codegen, stmt)` that emits the code of
one VM statement. Registering a second lowering for the same (type, target)
is refused, so two modules can never silently fight over one instruction,
and a statement with no lowering raises "no lowering for <Type> on <target>"
instead of being skipped.

The key is general (any target name); the CPU backend is the first user.
"""
from __future__ import annotations

from typing import Callable

from ..errors import TLCompileError, TLTargetError

_LOWERINGS: dict[tuple[type, str], Callable] = {}


def register_lowering(stmt_type: type, target: str) -> Callable[[Callable], Callable]:
    """Decorator: `fn(codegen, stmt)` lowers `stmt_type` statements for `target`."""

    def register(fn: Callable) -> Callable:
        key = (stmt_type, target)
        if key in _LOWERINGS:
            old = _LOWERINGS[key]
            raise TLCompileError(f"duplicate lowering for {stmt_type.__name__} on {target}: "
                                 f"{old.__module__}.{old.__name__} and {fn.__module__}.{fn.__name__}")
        _LOWERINGS[key] = fn
        return fn
    return register


def lowering_for(stmt_type: type, target: str) -> Callable:
    try:
        return _LOWERINGS[(stmt_type, target)]
    except KeyError:
        raise TLTargetError(f"no lowering for {stmt_type.__name__} on {target}") from None


def registered(target: str) -> frozenset[type]:
    """The statement types that have a lowering for `target`."""
    return frozenset(t for t, tgt in _LOWERINGS if tgt == target)
