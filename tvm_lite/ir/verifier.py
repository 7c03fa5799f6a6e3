"""The VM IR verifier: structural and type rules every pass must preserve.

`verify_program` raises `TLCompileError` naming the kernel, the statement and
the broken rule. It runs after every pass that rewrites VM IR when
`TL_VERIFY=1` (and always in tests); the builder's output must pass it.

Rules:
* a register tensor is defined (as some instruction's `out`) before it is
  used, and defined once; `Assign` targets an already-defined tensor;
* a scalar `Var` is a parameter, an enclosing loop variable or set earlier;
* operand ranks, shapes and dtypes agree with the instruction's definition
  (see docs/language.md);
* `break`/`continue` appear only inside loops;
* a tensor that carries a layout is covered by it exactly (same shape);
  `ConvertLayout` keeps dtype and shape.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import TLCompileError
from . import vm
from .printer import format_instr


def verify_program(program: vm.Program) -> None:
    for kernel in program.kernels:
        _KernelVerifier(kernel).run()


def _broadcastable(src: tuple[int, ...], dst: tuple[int, ...]) -> bool:
    if len(src) > len(dst):
        return False
    for s, d in zip(reversed(src), reversed(dst)):
        if s != d and s != 1:
            return False
    return True


class _KernelVerifier:
    def __init__(self, kernel: vm.Kernel):
        self.kernel = kernel
        self.defined: set[int] = set()     # ids of register/shared tensors
        self.vars: set[int] = {id(p) for p in kernel.params if isinstance(p, vm.Var)}
        self.globals: set[int] = {id(p) for p in kernel.params if isinstance(p, vm.GlobalTensor)}
        self.loop_depth = 0
        self.where = ""

    def fail(self, message: str) -> None:
        raise TLCompileError(f"VM verifier: kernel '{self.kernel.name}': {self.where}: {message}")

    def run(self) -> None:
        if self.kernel.warps < 1:
            self.fail("warps must be positive")
        self.where = "grid"
        for g in self.kernel.grid:
            self.expr(g)
        self.body(self.kernel.body)

    # ---- statements
    def body(self, stmts: tuple) -> None:
        for s in stmts:
            self.stmt(s)

    def stmt(self, s: Any) -> None:
        if isinstance(s, vm.For):
            self.where = f"for {s.var.name}"
            for e in (s.start, s.stop, s.step):
                self.expr(e)
            self.vars.add(id(s.var))
            self.loop_depth += 1
            self.body(s.body)
            self.loop_depth -= 1
        elif isinstance(s, vm.While):
            self.where = "while"
            self.expr(s.cond)
            self.loop_depth += 1
            self.body(s.body)
            self.loop_depth -= 1
        elif isinstance(s, vm.If):
            self.where = "if"
            self.expr(s.cond)
            self.body(s.then_body)
            self.body(s.else_body)
        elif isinstance(s, (vm.Break, vm.Continue)):
            self.where = type(s).__name__.lower()
            if self.loop_depth == 0:
                self.fail("outside a loop")
        elif isinstance(s, vm.Return):
            pass
        elif isinstance(s, vm.Instr):
            self.where = format_instr(s)
            self.instr(s)
        else:
            self.where = repr(s)
            self.fail(f"unknown statement type {type(s).__name__}")

    def instr(self, s: vm.Instr) -> None:
        check = getattr(self, "check_" + type(s).__name__, None)
        if check is None:
            self.fail(f"no verifier rule for {type(s).__name__}")
        check(s)
        out = getattr(s, "out", None)
        layout = getattr(out, "layout", None)
        if layout is not None and tuple(layout.shape) != tuple(out.shape):
            self.fail(f"%{out.name}: its layout covers {list(layout.shape)}, the tensor is {list(out.shape)}")
        if out is not None and not isinstance(s, vm.Assign):
            if id(out) in self.defined:
                self.fail(f"%{out.name} is defined twice")
            self.defined.add(id(out))

    # ---- operand helpers
    def use(self, t: Any) -> None:
        if isinstance(t, (vm.RegisterTensor, vm.SharedTensor)):
            if id(t) not in self.defined:
                self.fail(f"%{t.name} is used before it is defined")
        elif isinstance(t, vm.GlobalTensor):
            if id(t) not in self.globals:
                self.fail(f"%{t.name} is not a parameter of this kernel")
        elif isinstance(t, vm.Expr):
            self.expr(t)
        else:
            self.fail(f"bad operand {t!r}")

    def expr(self, e: vm.Expr) -> None:
        if isinstance(e, vm.Var):
            if id(e) not in self.vars:
                self.fail(f"scalar '{e.name}' is used before it is defined")
        elif isinstance(e, (vm.Const, vm.BlockIdx)):
            if isinstance(e, vm.BlockIdx) and e.axis not in (0, 1, 2):
                self.fail(f"block index axis {e.axis}")
        elif isinstance(e, vm.Binary):
            self.expr(e.lhs)
            self.expr(e.rhs)
        elif isinstance(e, vm.Unary):
            self.expr(e.operand)
        elif isinstance(e, vm.Select):
            self.expr(e.cond)
            self.expr(e.true_value)
            self.expr(e.false_value)
        elif isinstance(e, vm.ScalarCast):
            self.expr(e.value)
        else:
            self.fail(f"unknown expression {type(e).__name__}")

    def offsets(self, offsets: tuple, ndim: int) -> None:
        if len(offsets) != ndim:
            self.fail(f"{len(offsets)} offsets for a rank-{ndim} tensor")
        for o in offsets:
            self.expr(o)
            if o.dtype.is_float:
                self.fail("offsets must be integers")

    def same(self, what: str, a: Any, b: Any) -> None:
        if a != b:
            self.fail(f"{what} mismatch: {a} vs {b}")

    # ---- one rule per instruction
    def transfer(self, memory, tile, offsets: tuple) -> None:
        """A copy between `memory` (indexed by offsets) and a same-rank, same-dtype tile."""
        self.use(memory)
        self.offsets(offsets, memory.ndim)
        self.same("rank", tile.ndim, memory.ndim)
        self.same("dtype", tile.dtype, memory.dtype)

    def check_Load(self, s: vm.Load) -> None:
        self.transfer(s.src, s.out, s.offsets)

    def check_Store(self, s: vm.Store) -> None:
        self.use(s.value)
        self.transfer(s.dst, s.value, s.offsets)

    check_AtomicAdd = check_Store

    def check_AllocShared(self, s: vm.AllocShared) -> None:
        if any(d < 1 for d in s.out.shape):
            self.fail("shared tensor with an empty dimension")

    def check_LoadShared(self, s: vm.LoadShared) -> None:
        self.transfer(s.src, s.out, s.offsets)

    def check_StoreShared(self, s: vm.StoreShared) -> None:
        self.use(s.value)
        self.transfer(s.dst, s.value, s.offsets)

    def check_CopyAsync(self, s: vm.CopyAsync) -> None:
        self.use(s.dst)
        self.transfer(s.src, s.dst, s.offsets)

    def check_CommitAsync(self, s: vm.CommitAsync) -> None:
        pass

    def check_WaitAsync(self, s: vm.WaitAsync) -> None:
        if s.n < 0:
            self.fail("wait_async count must be >= 0")

    def check_Barrier(self, s: vm.Barrier) -> None:
        pass

    def check_Full(self, s: vm.Full) -> None:
        self.expr(s.value)

    def check_Arange(self, s: vm.Arange) -> None:
        self.expr(s.start)
        if s.out.ndim != 1 or s.out.dtype.is_float:
            self.fail("arange produces a 1-D integer tile")

    def check_Cast(self, s: vm.Cast) -> None:
        self.use(s.x)
        self.same("shape", s.out.shape, s.x.shape)

    def check_View(self, s: vm.View) -> None:
        self.use(s.x)
        if s.out.size * s.out.dtype.nbits != s.x.size * s.x.dtype.nbits:
            self.fail("view must keep the total number of bits")

    def check_Annotate(self, s: vm.Annotate) -> None:
        self.use(s.x)
        self.same("shape", s.out.shape, s.x.shape)
        self.same("dtype", s.out.dtype, s.x.dtype)

    def check_Dot(self, s: vm.Dot) -> None:
        for t in (s.a, s.b, s.acc):
            self.use(t)
        if s.a.ndim != 2 or s.b.ndim != 2 or s.acc.ndim != 2:
            self.fail("dot takes rank-2 tiles")
        (m, k), (k2, n) = s.a.shape, s.b.shape
        self.same("contraction size", k, k2)
        self.same("accumulator shape", s.acc.shape, (m, n))
        self.same("output shape", s.out.shape, s.acc.shape)
        self.same("output dtype", s.out.dtype, s.acc.dtype)
        self.same("operand dtype", s.a.dtype, s.b.dtype)

    def check_Elementwise(self, s: vm.Elementwise) -> None:
        if len(s.args) != s.op.arity:
            self.fail(f"{s.op.value} takes {s.op.arity} operands, got {len(s.args)}")
        for a in s.args:
            self.use(a)
            if isinstance(a, vm.RegisterTensor) and not _broadcastable(a.shape, s.out.shape):
                self.fail(f"%{a.name} of shape {a.shape} does not broadcast to {s.out.shape}")

    def check_Reduce(self, s: vm.Reduce) -> None:
        self.use(s.x)
        if not 0 <= s.dim < s.x.ndim:
            self.fail(f"reduce dim {s.dim} out of range")
        shape = list(s.x.shape)
        if s.keepdim:
            shape[s.dim] = 1
        else:
            del shape[s.dim]
        self.same("output shape", s.out.shape, tuple(shape))

    def check_Reshape(self, s: vm.Reshape) -> None:
        self.use(s.x)
        self.same("element count", math.prod(s.out.shape), math.prod(s.x.shape))
        self.same("dtype", s.out.dtype, s.x.dtype)

    def check_Transpose(self, s: vm.Transpose) -> None:
        self.use(s.x)
        if sorted(s.perm) != list(range(s.x.ndim)):
            self.fail(f"{s.perm} is not a permutation of the dims")
        self.same("output shape", s.out.shape, tuple(s.x.shape[p] for p in s.perm))

    def check_BroadcastTo(self, s: vm.BroadcastTo) -> None:
        self.use(s.x)
        if not _broadcastable(s.x.shape, s.out.shape):
            self.fail(f"{s.x.shape} does not broadcast to {s.out.shape}")

    def check_Concat(self, s: vm.Concat) -> None:
        for p in s.parts:
            self.use(p)
            self.same("dtype", p.dtype, s.out.dtype)
            self.same("rank", p.ndim, s.out.ndim)
        total = sum(p.shape[s.dim] for p in s.parts)
        self.same("concatenated size", total, s.out.shape[s.dim])

    def check_Slice(self, s: vm.Slice) -> None:
        self.use(s.x)
        self.same("rank", len(s.starts), s.x.ndim)
        for st, size, full in zip(s.starts, s.out.shape, s.x.shape):
            if st < 0 or st + size > full:
                self.fail(f"slice [{st}:{st + size}] out of range {full}")

    def check_Assign(self, s: vm.Assign) -> None:
        self.use(s.x)
        self.use(s.out)
        self.same("shape", s.out.shape, s.x.shape)
        self.same("dtype", s.out.dtype, s.x.dtype)

    def check_ConvertLayout(self, s: vm.ConvertLayout) -> None:
        self.use(s.src)
        self.same("shape", s.dst.shape, s.src.shape)
        self.same("dtype", s.dst.dtype, s.src.dtype)

    def check_SetScalar(self, s: vm.SetScalar) -> None:
        self.expr(s.value)
        self.vars.add(id(s.var))
