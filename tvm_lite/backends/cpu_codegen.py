"""VM kernel -> LLVM IR for the CPU: one thread per block, tiles as arrays.

Assumes: a verified VM kernel.
Guarantees: a function `i32 @<symbol>(ptr args, i64 begin, i64 end)` that runs
blocks [begin, end) of the grid (block.x fastest) with the interpreter's
semantics, and returns 0, or a status code (runtime.cpu_launch.STATUS_*) for integer
division by zero, an out-of-range shared access or a zero range step. `args`
holds one 8-byte slot per parameter: integers, float64 bits or addresses.

This module holds the kernel skeleton (parameters, the block loop, scalar
expressions, control flow) and the helpers every lowering uses: loop nests,
tile storage, reading and writing elements. Instructions are lowered by the
functions registered for (type, "cpu") in cpu_memory, cpu_compute,
cpu_shapes and cpu_dot; a statement with no registered lowering raises
"no lowering for X on cpu".

Every instruction becomes a loop nest over its elements, innermost over the
last (contiguous) dimension with a constant trip count; nothing is unrolled
here, so compile time does not grow with tile size, and LLVM's loop
vectorizer turns the inner loops into SIMD. A run of consecutive casts and
element-wise instructions with one output shape becomes a single loop nest
(cpu_compute.lower_fused): intermediate tiles used only inside the run are
never stored, and a dot right after the run gets its operands decoded there.
An f32 run is lowered with explicit LLVM vectors instead (cpu_vector), as
are global loads and stores of interior windows (cpu_memory); the vector
width is the contiguity query's run capped at the host's SIMD width.
A load of a packed tile that is cast to f32 and multiplied by a dot goes to
cpu_qdot, which decodes it in AVX-512 registers inside the FMA loop.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import Callable

import llvmlite.ir as ir

from ..errors import TLTargetError
from ..ir import vm
from ..runtime.args import canonical_scalar
from ..runtime.cpu_launch import STATUS_ZERO_STEP
from .cpu_math import Math, is_true
from .cpu_registry import lowering_for, register_lowering
from .cpu_types import F32, F64, I1, I8, I32, I64, Convert, compute_type, is_float_type, is_u64, \
    row_major_strides, storage_type
from .llvm import host

PTR = ir.PointerType(I8)
TARGET = "cpu"


class GlobalArg:
    """A global tensor argument: base address, evaluated shape and strides."""

    def __init__(self, cg: "KernelCodegen", tensor: vm.GlobalTensor, base: ir.Value):
        b = cg.b
        self.tensor = tensor
        self.base = base
        self.shape = [cg.scalar(s) for s in tensor.shape] or [ir.Constant(I64, 1)]
        strides = [ir.Constant(I64, 1)]
        for dim in reversed(self.shape[1:]):
            strides.insert(0, b.mul(strides[0], dim))
        self.strides = strides
        self.numel = b.mul(strides[0], self.shape[0])
        bits = b.mul(self.numel, ir.Constant(I64, tensor.dtype.nbits))
        self.nbytes = b.lshr(b.add(bits, ir.Constant(I64, 7)), ir.Constant(I64, 3))


class KernelCodegen:
    def __init__(self, kernel: vm.Kernel, module: ir.Module, symbol: str):
        self.kernel = kernel
        self.module = module
        fnty = ir.FunctionType(I32, [PTR, I64, I64])
        self.fn = ir.Function(module, fnty, name=symbol)
        self.fn.args[0].add_attribute("noalias")
        self.entry = self.fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.conv = Convert(self.b, self.intrinsic, f16c=host().has("f16c"))
        self.math = Math(self.b, self.intrinsic, self.flag_error)
        self.scalars: dict = {}      # Var -> alloca of i64 / double
        self.tiles: dict = {}        # id(tensor) -> alloca array
        self.globals: dict = {}      # GlobalTensor -> GlobalArg
        self.loops: list[tuple[ir.Block, ir.Block]] = []        # (continue, break) targets
        self.for_stack: list[tuple[vm.Var, ir.Value]] = []     # enclosing for loops: (var, step)
        self.uses = _count_uses(kernel.body)                   # id(tile) -> statements using it
        self.decoded: dict = {}      # (id(tile), type) -> a dot operand array filled by a fused loop

    # ------------------------------------------------------------ utilities
    def intrinsic(self, name: str, *types: ir.Type) -> ir.Function:
        """`llvm.<name>` overloaded on `types`; the first is the result type."""
        full = name + "".join("." + _type_suffix(t) for t in types)
        if full in self.module.globals:
            return self.module.globals[full]
        ret = types[0]
        argtypes = {"llvm.copysign": [ret, ret], "llvm.minimum": [ret, ret], "llvm.maximum": [ret, ret],
                    "llvm.ctlz": [ret, I1]}.get(name, [types[-1]])
        return ir.Function(self.module, ir.FunctionType(ret, argtypes), name=full)

    def _declare(self, name: str, args: list) -> ir.Function:
        if name in self.module.globals:
            return self.module.globals[name]
        return ir.Function(self.module, ir.FunctionType(ir.VoidType(), args), name=name)

    def prefetch_intrinsic(self) -> ir.Function:
        i32 = ir.IntType(32)
        return self._declare("llvm.prefetch.p0", [PTR, i32, i32, i32])

    def memset_zero(self, ptr: ir.Value, nbytes) -> None:
        fn = self._declare("llvm.memset.p0.i64", [PTR, I8, I64, I1])
        self.b.call(fn, [self.b.bitcast(ptr, PTR), ir.Constant(I8, 0), self.i64(nbytes), ir.Constant(I1, 0)])

    def memcpy(self, dst: ir.Value, src: ir.Value, nbytes) -> None:
        fn = self._declare("llvm.memcpy.p0.p0.i64", [PTR, PTR, I64, I1])
        self.b.call(fn, [self.b.bitcast(dst, PTR), self.b.bitcast(src, PTR), self.i64(nbytes),
                         ir.Constant(I1, 0)])

    @staticmethod
    def i64(v) -> ir.Value:
        return v if isinstance(v, ir.Value) else ir.Constant(I64, v)

    def alloca(self, ty: ir.Type, count: int = 1, name: str = "") -> ir.Value:
        """Allocas go to the entry block so LLVM promotes and vectorizes them."""
        with self.b.goto_block(self.entry):
            if self.entry.instructions:
                self.b.position_before(self.entry.instructions[0])
            slot = self.b.alloca(ty, size=count if count > 1 else None, name=name)
            if count > 1:
                slot.align = 64
            return slot

    def flag_error(self, cond: ir.Value, code: int) -> None:
        old = self.b.load(self.status)
        self.b.store(self.b.select(cond, ir.Constant(I32, code), old), self.status)

    def loop(self, start, stop, body: Callable[[ir.Value], None], name: str = "i") -> None:
        """for i in [start, stop): body(i), with i an i64."""
        b = self.b
        start, stop = self.i64(start), self.i64(stop)
        pre = b.block
        head = self.fn.append_basic_block(f"{name}.head")
        loop = self.fn.append_basic_block(f"{name}.body")
        done = self.fn.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name=name)
        i.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", i, stop), loop, done)
        b.position_at_end(loop)
        body(i)
        i.add_incoming(b.add(i, ir.Constant(I64, 1)), b.block)
        b.branch(head)
        b.position_at_end(done)

    def strided_loop(self, start: int, stop: int, step: int, body: Callable[[ir.Value], None],
                     name: str = "s") -> None:
        """for i in range(start, stop, step) with compile-time bounds."""
        count = (stop - start) // step
        self.loop(0, count, lambda t: body(self.b.add(self.b.mul(t, self.i64(step)), self.i64(start))), name)

    def nest(self, dims, body: Callable[[ir.Value, list], None]) -> None:
        """Loops over every index of `dims` (row-major, last innermost);
        body(flat, index) with the row-major flat index."""
        dims = list(dims)

        def level(d, flat, index):
            if d == len(dims):
                body(flat, index)
                return
            self.loop(0, dims[d], lambda i: level(d + 1, self.b.add(self.b.mul(flat, self.i64(dims[d])), i),
                                                  index + [i]), "e")
        level(0, ir.Constant(I64, 0), [])

    def elements(self, shape, body: Callable[[ir.Value, list], None]) -> None:
        self.nest(shape or (1,), body)

    def rows(self, shape, body: Callable[[ir.Value, list, int], None]) -> None:
        """Loops over all but the last dim: body(row_flat, outer_index, row_length)."""
        shape = tuple(shape) or (1,)
        n = shape[-1]
        self.nest(shape[:-1], lambda flat, index: body(self.b.mul(flat, self.i64(n)), index, n))

    # ---------------------------------------------------------------- tiles
    def tile(self, t) -> ir.Value:
        """The storage array of a register or shared tensor."""
        if id(t) not in self.tiles:
            self.tiles[id(t)] = self.alloca(storage_type(t.dtype), max(2, math.prod(t.shape)), name=t.name)
        return self.tiles[id(t)]

    def element_ptr(self, t, flat: ir.Value) -> ir.Value:
        return self.b.gep(self.tile(t), [flat])

    def read(self, t, flat: ir.Value, ty: ir.Type | None = None) -> ir.Value:
        """Element `flat` of a tile as a compute value (of type ty, exact)."""
        raw = self.b.load(self.element_ptr(t, flat))
        return self.conv.to_compute(raw, t.dtype, ty or compute_type(t.dtype))

    def write(self, t, flat: ir.Value, value: ir.Value) -> None:
        self.b.store(self.conv.to_storage(value, t.dtype), self.element_ptr(t, flat))

    def broadcast_flat(self, operand_shape, out_shape, index: list) -> ir.Value:
        """Flat index into a broadcast operand for the output multi-index."""
        offset = len(out_shape) - len(operand_shape)
        flat = ir.Constant(I64, 0)
        for d, (n, st) in enumerate(zip(operand_shape, row_major_strides(operand_shape))):
            if n != 1:
                flat = self.b.add(flat, self.b.mul(index[d + offset], ir.Constant(I64, st)))
        return flat

    # ---------------------------------------------------------------- entry
    def build(self) -> ir.Function:
        b = self.b
        args, begin, end = self.fn.args
        slots = b.bitcast(args, ir.PointerType(I64))
        self.status = self.alloca(I32, name="status")
        b.store(ir.Constant(I32, 0), self.status)
        raws = {}
        for i, p in enumerate(self.kernel.params):
            raw = b.load(b.gep(slots, [ir.Constant(I64, i)]))
            if isinstance(p, vm.Var):
                slot = self.alloca(compute_type(p.dtype), name=p.name)
                b.store(b.bitcast(raw, F64) if p.dtype.is_float else raw, slot)
                self.scalars[p] = slot
            elif isinstance(p, vm.GlobalTensor):
                raws[p] = raw     # shapes below, once all scalars are known
            else:
                slot = self.alloca(I64, name=p.name)
                b.store(raw, slot)
                self.scalars[p] = slot
        for g, raw in raws.items():
            self.globals[g] = GlobalArg(self, g, b.inttoptr(raw, PTR))
        grid = [self.scalar(g) for g in self.kernel.grid]
        grid += [ir.Constant(I64, 1)] * (3 - len(grid))
        self.block = [None, None, None]

        def run_block(linear):
            self.block[0] = b.urem(linear, grid[0])
            rest = b.udiv(linear, grid[0])
            self.block[1] = b.urem(rest, grid[1])
            self.block[2] = b.udiv(rest, grid[1])
            self.block_done = self.fn.append_basic_block("block.done")
            self.body(self.kernel.body)
            if not b.block.is_terminated:
                b.branch(self.block_done)
            b.position_at_end(self.block_done)
        self.loop(begin, end, run_block, "blk")
        b.ret(b.load(self.status))
        return self.fn

    def body(self, stmts) -> None:
        i = 0
        while i < len(stmts):
            if self.b.block.is_terminated:
                return   # code after break/continue/return is unreachable
            fused = cpu_qdot.match(self, stmts, i)
            if fused is not None:       # load -> cast [-> x op c] -> dot of a packed tile
                cpu_qdot.lower(self, *fused)
                i += len(fused[0])
                continue
            group = self._fusible_run(stmts, i)
            after = stmts[i + len(group)] if i + len(group) < len(stmts) else None
            # A dot right after the group takes its operands decoded by the group's loop.
            dot_operands = {(t, after) for t in (after.a, after.b) if any(s.out is t for s in group)} \
                if isinstance(after, vm.Dot) and group else set()
            width = cpu_vector.chain_width(group, dot_operands)
            if len(group) > 1 or dot_operands or width > 1:
                extra = {id(t): sum(1 for u in (after.a, after.b) if u is t) for t, _ in dot_operands}
                keep = {id(s.out) for s in group
                        if self.uses[id(s.out)] > _uses_within(group, s.out) + extra.get(id(s.out), 0)}
                if width > 1:    # f32 chains: explicit vectors of the contiguous run's width
                    cpu_vector.lower_chain(self, group, keep, width)
                else:
                    cpu_compute.lower_fused(self, group, keep, dot_operands)
                i += len(group)
                continue
            lowering_for(type(stmts[i]), TARGET)(self, stmts[i])
            i += 1

    @staticmethod
    def _fusible_run(stmts, i: int) -> list:
        """The casts and element-wise instructions from i on that share i's output shape."""
        group = []
        while i < len(stmts) and cpu_compute.fusible(stmts[i]) and \
                (not group or stmts[i].out.shape == group[0].out.shape):
            group.append(stmts[i])
            i += 1
        return group

    # ------------------------------------------------------------- scalars
    def scalar(self, e: vm.Expr) -> ir.Value:
        """A block-uniform expression: i64 for integers, double for floats,
        in its dtype's canonical form (runtime.args.eval_expr's rules)."""
        b = self.b
        if isinstance(e, vm.Const):
            value = canonical_scalar(int(e.value) if isinstance(e.value, bool) else e.value, e.dtype)
            if e.dtype.is_float:
                return ir.Constant(F64, float(value))
            return ir.Constant(I64, _signed64(int(value)))
        if isinstance(e, vm.Var):
            return b.load(self.scalars[e])
        if isinstance(e, vm.BlockIdx):
            return self.block[e.axis]
        if isinstance(e, vm.Binary):
            a, c = self.scalar(e.lhs), self.scalar(e.rhs)
            if is_float_type(a.type) or is_float_type(c.type):
                a, c = self.to_double(a, e.lhs.dtype), self.to_double(c, e.rhs.dtype)
            unsigned = is_u64(e.lhs.dtype) or is_u64(e.rhs.dtype)
            return self.canonical(self.math.binary(e.op.name, a, c, unsigned), None, e.dtype)
        if isinstance(e, vm.Unary):
            a = self.scalar(e.operand)
            if e.op in (vm.UnaryOp.NEG, vm.UnaryOp.ABS, vm.UnaryOp.INVERT, vm.UnaryOp.NOT) or a.type == F64:
                value = self.math.unary(e.op.name, a)
            else:
                value = self.math.unary(e.op.name, self.to_double(a, e.operand.dtype))
            return self.canonical(value, None, e.dtype)
        if isinstance(e, vm.Select):
            t = self.canonical(self.scalar(e.true_value), e.true_value.dtype, e.dtype)
            f = self.canonical(self.scalar(e.false_value), e.false_value.dtype, e.dtype)
            return b.select(is_true(b, self.scalar(e.cond)), t, f)
        if isinstance(e, vm.ScalarCast):
            return self.canonical(self.scalar(e.value), e.value.dtype, e.type)
        raise TLTargetError(f"no lowering for scalar {type(e).__name__} on cpu")

    def to_double(self, v: ir.Value, dt) -> ir.Value:
        if v.type == F64:
            return v
        return self.b.uitofp(v, F64) if is_u64(dt) else self.b.sitofp(v, F64)

    def canonical(self, v: ir.Value, src, dt) -> ir.Value:
        """A computed scalar in dt's canonical form (i64 or double). `src` is
        the dtype v came from, for the single-rounding int -> float rule."""
        if dt.is_float and v.type == I64:
            if src is not None and src.is_integer:
                v = self.conv.int_to_float(v, src, dt)
            else:
                v = self.b.sitofp(v, F64)
        return self.conv.round_scalar(v, dt)

    def scalar_var(self, var: vm.Var) -> ir.Value:
        if var not in self.scalars:
            self.scalars[var] = self.alloca(compute_type(var.dtype), name=var.name)
        return self.scalars[var]


def _tiles_used(s) -> list:
    """The register/shared tensors a statement reads (Assign also needs its target)."""
    out = []
    for f in dataclasses.fields(s):
        if f.name == "out" and not isinstance(s, vm.Assign):
            continue
        value = getattr(s, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, (vm.RegisterTensor, vm.SharedTensor)):
                out.append(item)
    return out


def _count_uses(body) -> collections.Counter:
    uses: collections.Counter = collections.Counter()
    for s in body:
        if isinstance(s, vm.For) or isinstance(s, vm.While):
            uses.update(_count_uses(s.body))
        elif isinstance(s, vm.If):
            uses.update(_count_uses(s.then_body))
            uses.update(_count_uses(s.else_body))
        elif isinstance(s, vm.Instr):
            uses.update(id(t) for t in _tiles_used(s))
    return uses


def _uses_within(group: list, t) -> int:
    return sum(1 for s in group for u in _tiles_used(s) if u is t)


def _signed64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def _type_suffix(t: ir.Type) -> str:
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{_type_suffix(t.element)}"
    if t == F64:
        return "f64"
    if t == F32:
        return "f32"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    raise TLTargetError(f"no intrinsic suffix for {t}")


# ------------------------------------------------------- control flow lowerings


@register_lowering(vm.SetScalar, TARGET)
def lower_set_scalar(cg: KernelCodegen, s: vm.SetScalar) -> None:
    value = cg.canonical(cg.scalar(s.value), s.value.dtype, s.var.dtype)
    cg.b.store(value, cg.scalar_var(s.var))


@register_lowering(vm.For, TARGET)
def lower_for(cg: KernelCodegen, s: vm.For) -> None:
    b = cg.b
    var = cg.alloca(I64, name=s.var.name)
    cg.scalars[s.var] = var
    start, stop, step = cg.scalar(s.start), cg.scalar(s.stop), cg.scalar(s.step)
    b.store(start, var)
    head = cg.fn.append_basic_block("for.head")
    loop = cg.fn.append_basic_block("for.body")
    latch = cg.fn.append_basic_block("for.latch")
    done = cg.fn.append_basic_block("for.done")
    # A zero step is an error, as in the interpreter; the loop does not run.
    zero_step = b.icmp_signed("==", step, ir.Constant(I64, 0))
    cg.flag_error(zero_step, STATUS_ZERO_STEP)
    b.branch(head)
    b.position_at_end(head)
    i = b.load(var)
    up = b.icmp_signed(">", step, ir.Constant(I64, 0))
    going = b.select(up, b.icmp_signed("<", i, stop), b.icmp_signed(">", i, stop))
    going = b.and_(going, b.not_(zero_step))
    b.cbranch(going, loop, done)
    b.position_at_end(loop)
    cg.loops.append((latch, done))
    cg.for_stack.append((s.var, step))
    cg.body(s.body)
    cg.for_stack.pop()
    cg.loops.pop()
    if not b.block.is_terminated:
        b.branch(latch)
    b.position_at_end(latch)
    b.store(b.add(b.load(var), step), var)
    b.branch(head)
    b.position_at_end(done)


@register_lowering(vm.While, TARGET)
def lower_while(cg: KernelCodegen, s: vm.While) -> None:
    b = cg.b
    head = cg.fn.append_basic_block("while.head")
    loop = cg.fn.append_basic_block("while.body")
    done = cg.fn.append_basic_block("while.done")
    b.branch(head)
    b.position_at_end(head)
    b.cbranch(is_true(b, cg.scalar(s.cond)), loop, done)
    b.position_at_end(loop)
    cg.loops.append((head, done))
    cg.body(s.body)
    cg.loops.pop()
    if not b.block.is_terminated:
        b.branch(head)
    b.position_at_end(done)


@register_lowering(vm.If, TARGET)
def lower_if(cg: KernelCodegen, s: vm.If) -> None:
    b = cg.b
    then_block = cg.fn.append_basic_block("if.then")
    else_block = cg.fn.append_basic_block("if.else")
    done = cg.fn.append_basic_block("if.done")
    b.cbranch(is_true(b, cg.scalar(s.cond)), then_block, else_block)
    for block, stmts in ((then_block, s.then_body), (else_block, s.else_body)):
        b.position_at_end(block)
        cg.body(stmts)
        if not b.block.is_terminated:
            b.branch(done)
    b.position_at_end(done)


@register_lowering(vm.Break, TARGET)
def lower_break(cg: KernelCodegen, s: vm.Break) -> None:
    cg.b.branch(cg.loops[-1][1])


@register_lowering(vm.Continue, TARGET)
def lower_continue(cg: KernelCodegen, s: vm.Continue) -> None:
    cg.b.branch(cg.loops[-1][0])


@register_lowering(vm.Return, TARGET)
def lower_return(cg: KernelCodegen, s: vm.Return) -> None:
    cg.b.branch(cg.block_done)


@register_lowering(vm.Barrier, TARGET)
def lower_barrier(cg: KernelCodegen, s: vm.Barrier) -> None:
    """One thread per block: nothing to wait for."""


@register_lowering(vm.CommitAsync, TARGET)
def lower_commit_async(cg: KernelCodegen, s: vm.CommitAsync) -> None:
    """copy_async is synchronous on the CPU: nothing is in flight."""


@register_lowering(vm.WaitAsync, TARGET)
def lower_wait_async(cg: KernelCodegen, s: vm.WaitAsync) -> None:
    """copy_async is synchronous on the CPU: nothing to wait for."""


# The instruction lowerings register themselves on import.
from . import cpu_compute, cpu_dot, cpu_memory, cpu_qdot, cpu_shapes, cpu_vector  # noqa: E402,F401

__all__ = ["KernelCodegen", "GlobalArg", "TARGET"]
