"""Dead-code elimination for VM programs.

Assumes: a verified program.
Guarantees: every instruction that only computes a tile nobody needs is gone;
memory writes, barriers, async copies and control flow stay. A tile is needed
when a chain of def-use edges leads from it to a side effect or a branch
condition. The def-use graph is a plain adjacency table walked backwards
from the side effects: importing networkx for this one reachability query
would cost a new process ~100 ms on every compile, cache hits included.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict

from ..ir import vm
from ..ir.functor import IRRewriter, IRVisitor

# Instructions with effects beyond their `out` tile are always kept.
_EFFECTS = (vm.Store, vm.AtomicAdd, vm.StoreShared, vm.CopyAsync, vm.CommitAsync, vm.WaitAsync,
            vm.Barrier, vm.SetScalar, vm.AllocShared)
_ROOT = "effects"


def _operands(instr: vm.Instr):
    for f in dataclasses.fields(instr):
        if f.name == "out":
            continue
        value = getattr(instr, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, (vm.RegisterTensor, vm.SharedTensor)):
                yield item


class _DefUse(IRVisitor):
    """For each tile (by id) or the effects root, the tiles it is computed from."""

    def __init__(self):
        self.sources: defaultdict[object, set] = defaultdict(set)

    def visit(self, node) -> None:
        if isinstance(node, vm.Instr):
            out = getattr(node, "out", None)
            sink = _ROOT if isinstance(node, _EFFECTS) or out is None else id(out)
            self.sources[sink].update(id(x) for x in _operands(node))
            if isinstance(node, vm.AllocShared):
                self.sources[_ROOT].add(id(node.out))
            return
        super().visit(node)

    def needed(self) -> set:
        """Every tile from which a def-use chain leads to the effects root."""
        live: set = set()
        work = [_ROOT]
        while work:
            for x in self.sources.get(work.pop(), ()):
                if x not in live:
                    live.add(x)
                    work.append(x)
        return live


class _Remove(IRRewriter):
    def __init__(self, live: set):
        self.live = live

    def rewrite(self, node):
        if isinstance(node, vm.Instr) and not isinstance(node, _EFFECTS):
            out = getattr(node, "out", None)
            if out is not None and id(out) not in self.live:
                return ()
        return super().rewrite(node)


def eliminate_dead_code(program: vm.Program) -> vm.Program:
    kernels = []
    for kernel in program.kernels:
        uses = _DefUse()
        uses.visit(kernel.body)
        live = uses.needed()
        kernels.append(_Remove(live).rewrite(kernel))
    changed = any(a is not b for a, b in zip(kernels, program.kernels))
    return dataclasses.replace(program, kernels=tuple(kernels)) if changed else program
