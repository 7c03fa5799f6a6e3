"""Generic traversal of VM IR: a visitor and a copy-on-write rewriter.

Both walk dataclass fields, so a new node type needs no boilerplate here. The
rewriter returns the *same* object when nothing below it changed (Tilus's
IRRewriter does the same), which keeps rewrites cheap and lets a pass tell
whether it did anything with `is`.

Node-specific behaviour hooks in through `visit_<ClassName>` /
`rewrite_<ClassName>` methods. Tensors and Vars are leaves: override
`rewrite_tensor` / `rewrite_var` to substitute them everywhere at once.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any

from . import vm
from .dtypes import DataType
from .layout import RegisterLayout
from .shared_layout import SharedLayout

# Values that are atoms of the IR: never descended into.
_ATOMS = (int, float, bool, str, type(None), DataType, enum.Enum)
_TENSORS = (vm.GlobalTensor, vm.SharedTensor, vm.RegisterTensor, vm.Pointer)


def _is_ir_node(x: Any) -> bool:
    return dataclasses.is_dataclass(x) and type(x).__module__ == vm.__name__


def _is_attached_value(x: Any) -> bool:
    """Layouts and other values attached to IR nodes: never descended into."""
    return isinstance(x, (RegisterLayout, SharedLayout))


class IRVisitor:
    """Pre-order walk. Override `visit_<ClassName>(node)`; call
    `self.generic_visit(node)` inside it to continue into children."""

    def visit(self, node: Any) -> None:
        if isinstance(node, tuple):
            for item in node:
                self.visit(item)
            return
        if isinstance(node, _ATOMS):
            return
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is not None:
            method(node)
        elif isinstance(node, _TENSORS) or isinstance(node, vm.Var):
            return
        elif _is_ir_node(node):
            self.generic_visit(node)
        elif _is_attached_value(node):
            return
        else:
            raise TypeError(f"IRVisitor: unknown node type {type(node).__name__}")

    def generic_visit(self, node: Any) -> None:
        for f in dataclasses.fields(node):
            self.visit(getattr(node, f.name))


class IRRewriter:
    """Copy-on-write rewrite. Override `rewrite_<ClassName>(node)` to replace
    a node (return the node itself to keep it), `rewrite_tensor` and
    `rewrite_var` to substitute leaves. A statement rewrite may return a tuple
    of statements, which is spliced into the enclosing body."""

    def rewrite(self, node: Any) -> Any:
        if isinstance(node, tuple):
            return self._rewrite_tuple(node)
        if isinstance(node, _ATOMS):
            return node
        method = getattr(self, "rewrite_" + type(node).__name__, None)
        if method is not None:
            return method(node)
        if isinstance(node, _TENSORS):
            return self.rewrite_tensor(node)
        if isinstance(node, vm.Var):
            return self.rewrite_var(node)
        if _is_ir_node(node):
            return self.generic_rewrite(node)
        if _is_attached_value(node):
            return node
        raise TypeError(f"IRRewriter: unknown node type {type(node).__name__}")

    def rewrite_tensor(self, tensor: Any) -> Any:
        return tensor

    def rewrite_var(self, var: vm.Var) -> vm.Var:
        return var

    def generic_rewrite(self, node: Any) -> Any:
        changes = {}
        for f in dataclasses.fields(node):
            old = getattr(node, f.name)
            new = self.rewrite(old)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(node, **changes) if changes else node

    def _rewrite_tuple(self, items: tuple) -> tuple:
        out = []
        changed = False
        for item in items:
            new = self.rewrite(item)
            if new is not item:
                changed = True
            # A statement may expand into several (splice); nested tuples of
            # expressions (shapes, offsets) are never produced by a rewrite.
            if isinstance(new, tuple) and not isinstance(item, tuple):
                out.extend(new)
            else:
                out.append(new)
        return tuple(out) if changed else items


def collect(node: Any, cls: type) -> list:
    """Every node of class `cls` reachable from `node`, in pre-order."""
    found: list = []

    class _Collector(IRVisitor):
        def visit(self, n: Any) -> None:
            if isinstance(n, cls):
                found.append(n)
            super().visit(n)

    _Collector().visit(node)
    return found
