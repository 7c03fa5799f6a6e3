"""VM kernel -> LLVM IR for the CPU: one thread per block, tiles as arrays.

Assumes: a verified VM kernel.
Guarantees: a function `i32 @<symbol>(ptr args, i64 begin, i64 end)` that runs
blocks [begin, end) of the grid (block.x fastest) with the interpreter's
semantics, and returns 0, or a status code (cpu_math.STATUS_*) for integer
division by zero or an out-of-range shared access. `args` holds one 8-byte
slot per parameter: integers, float64 bits or addresses.

Every instruction becomes a loop nest over its elements; nothing is unrolled
here, so compile time does not grow with tile size. Loops run over contiguous
arrays with constant trip counts, which LLVM's vectorizer turns into SIMD;
only sums and dot products carry reassociation flags. An instruction with no
CPU lowering raises "no lowering for X on cpu".
"""
from __future__ import annotations

import math
from typing import Callable

import llvmlite.ir as ir

from ..errors import TLTargetError
from ..ir import vm
from .cpu_compute import ComputeEmitters
from .cpu_memory import load_element, store_element
from .cpu_math import STATUS_SHARED_RANGE, STATUS_ZERO_STEP, Math, is_true
from .llvm import host
from .cpu_types import F32, F64, I8, I32, I64, Convert, compute_type, row_major_strides, storage_type

PTR = ir.PointerType(I8)


class _Global:
    """A global tensor argument: base address, shape and element count."""

    def __init__(self, tensor: vm.GlobalTensor, base: ir.Value, shape: list[ir.Value], numel: ir.Value):
        self.tensor, self.base, self.shape, self.numel = tensor, base, shape, numel


class KernelCodegen(ComputeEmitters):
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
        self.globals: dict = {}      # GlobalTensor -> _Global
        self.loops: list[tuple[ir.Block, ir.Block]] = []

    # ------------------------------------------------------------ utilities
    def intrinsic(self, name: str, *types: ir.Type) -> ir.Function:
        suffix = "".join("." + _type_suffix(t) for t in types)
        full = name + suffix
        if full in self.module.globals:
            return self.module.globals[full]
        ret = types[0]
        nargs = {"llvm.copysign": 2, "llvm.minimum": 2, "llvm.maximum": 2}.get(name, 1)
        argtypes = [types[-1]] * nargs
        return ir.Function(self.module, ir.FunctionType(ret, argtypes), name=full)

    def alloca(self, ty: ir.Type, count: int = 1, name: str = "") -> ir.Value:
        """Allocas go to the entry block so LLVM promotes and vectorizes them."""
        with self.b.goto_block(self.entry):
            if self.entry.instructions:
                self.b.position_before(self.entry.instructions[0])
            return self.b.alloca(ty, size=count if count > 1 else None, name=name)

    def flag_error(self, cond: ir.Value, code: int) -> None:
        old = self.b.load(self.status)
        new = self.b.select(cond, ir.Constant(I32, code), old)
        self.b.store(new, self.status)

    def counted_loop(self, n, body: Callable[[ir.Value], None], name: str = "i") -> None:
        n = n if isinstance(n, ir.Value) else ir.Constant(I64, n)
        b = self.b
        pre = b.block
        head = self.fn.append_basic_block(f"{name}.head")
        loop = self.fn.append_basic_block(f"{name}.body")
        done = self.fn.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name=name)
        i.add_incoming(ir.Constant(I64, 0), pre)
        b.cbranch(b.icmp_signed("<", i, n), loop, done)
        b.position_at_end(loop)
        body(i)
        nxt = b.add(i, ir.Constant(I64, 1))
        i.add_incoming(nxt, b.block)
        b.branch(head)
        b.position_at_end(done)

    def elements(self, shape, body: Callable[[ir.Value, list[ir.Value]], None]) -> None:
        """Loop over a tile's flat index, with its multi-index."""
        strides = row_major_strides(shape)

        def step(flat):
            index = [self.b.urem(self.b.udiv(flat, ir.Constant(I64, st)), ir.Constant(I64, n))
                     for st, n in zip(strides, shape)]
            body(flat, index)
        self.counted_loop(math.prod(shape), step, "e")

    def element_ptr(self, tensor, flat: ir.Value) -> ir.Value:
        return self.b.gep(self.tiles[id(tensor)], [flat])

    def tile(self, t) -> ir.Value:
        if id(t) not in self.tiles:
            st = storage_type(t.dtype)
            self.tiles[id(t)] = self.alloca(st, max(1, math.prod(t.shape)), name=t.name)
        return self.tiles[id(t)]

    def read(self, t, flat: ir.Value) -> ir.Value:
        """Element `flat` of a tile, as a compute value."""
        return self.conv.widen(self.b.load(self.element_ptr(t, flat)), t.dtype)

    def write(self, t, flat: ir.Value, value: ir.Value) -> None:
        self.b.store(self.conv.narrow(value, t.dtype), self.element_ptr(t, flat))

    def broadcast_flat(self, operand_shape, out_shape, index: list[ir.Value]) -> ir.Value:
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
        for i, p in enumerate(self.kernel.params):
            raw = b.load(b.gep(slots, [ir.Constant(I64, i)]))
            if isinstance(p, vm.Var):
                slot = self.alloca(compute_type(p.dtype), name=p.name)
                b.store(b.bitcast(raw, F64) if p.dtype.is_float else raw, slot)
                self.scalars[p] = slot
            elif isinstance(p, vm.GlobalTensor):
                self.globals[p] = raw   # shapes below, once all scalars are known
            else:
                self.scalars[p] = raw
        for g, raw in list(self.globals.items()):
            shape = [self.scalar(s) for s in g.shape]
            numel = ir.Constant(I64, 1)
            for s in shape:
                numel = b.mul(numel, s)
            self.globals[g] = _Global(g, b.inttoptr(raw, PTR), shape, numel)
        grid = [self.scalar(g) for g in self.kernel.grid] + [ir.Constant(I64, 1)] * (3 - len(self.kernel.grid))
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
        count = b.sub(end, begin)
        self.counted_loop(count, lambda i: run_block(b.add(begin, i)), "blk")
        b.ret(b.load(self.status))
        return self.fn

    # ------------------------------------------------------------- scalars
    def scalar(self, e: vm.Expr) -> ir.Value:
        b = self.b
        if isinstance(e, vm.Const):
            return ir.Constant(F64, float(e.value)) if e.dtype.is_float else ir.Constant(I64, int(e.value))
        if isinstance(e, vm.Var):
            return b.load(self.scalars[e])
        if isinstance(e, vm.BlockIdx):
            return self.block[e.axis]
        if isinstance(e, vm.Binary):
            value = self.math.binary(e.op.name, self.scalar(e.lhs), self.scalar(e.rhs))
        elif isinstance(e, vm.Unary):
            value = self.math.unary(e.op.name, self.scalar(e.operand))
        elif isinstance(e, vm.Select):
            return b.select(is_true(b, self.scalar(e.cond)), self.scalar(e.true_value),
                            self.scalar(e.false_value))
        elif isinstance(e, vm.ScalarCast):
            value = self.scalar(e.value)
            if e.type.is_float:
                return value if value.type == F64 else b.sitofp(value, F64)
            if value.type == F64:
                value = b.call(self.intrinsic("llvm.fptosi.sat", I64, F64), [value])
        else:
            raise TLTargetError(f"no lowering for scalar {type(e).__name__} on cpu")
        if e.dtype.is_integer and value.type == I64:
            return self.conv.wrap(value, e.dtype)
        return value

    # ----------------------------------------------------------- statements
    def body(self, stmts) -> None:
        for s in stmts:
            if self.b.block.is_terminated:
                return   # code after break/continue/return is unreachable
            method = getattr(self, "emit_" + type(s).__name__, None)
            if method is None:
                raise TLTargetError(f"no lowering for {type(s).__name__} on cpu")
            method(s)

    def emit_SetScalar(self, s: vm.SetScalar) -> None:
        if s.var not in self.scalars:
            self.scalars[s.var] = self.alloca(compute_type(s.var.dtype), name=s.var.name)
        self.b.store(self.scalar(s.value), self.scalars[s.var])

    def emit_For(self, s: vm.For) -> None:
        b = self.b
        var = self.alloca(I64, name=s.var.name)
        self.scalars[s.var] = var
        start, stop, step = self.scalar(s.start), self.scalar(s.stop), self.scalar(s.step)
        b.store(start, var)
        head = self.fn.append_basic_block("for.head")
        loop = self.fn.append_basic_block("for.body")
        latch = self.fn.append_basic_block("for.latch")
        done = self.fn.append_basic_block("for.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.load(var)
        up = b.icmp_signed(">", step, ir.Constant(I64, 0))
        going = b.select(up, b.icmp_signed("<", i, stop), b.icmp_signed(">", i, stop))
        # A zero step is an error, as in the interpreter; the loop does not run.
        zero_step = b.icmp_signed("==", step, ir.Constant(I64, 0))
        self.flag_error(zero_step, STATUS_ZERO_STEP)
        going = b.and_(going, b.not_(zero_step))
        b.cbranch(going, loop, done)
        b.position_at_end(loop)
        self.loops.append((latch, done))
        self.body(s.body)
        self.loops.pop()
        if not b.block.is_terminated:
            b.branch(latch)
        b.position_at_end(latch)
        b.store(b.add(b.load(var), step), var)
        b.branch(head)
        b.position_at_end(done)

    def emit_While(self, s: vm.While) -> None:
        b = self.b
        head = self.fn.append_basic_block("while.head")
        loop = self.fn.append_basic_block("while.body")
        done = self.fn.append_basic_block("while.done")
        b.branch(head)
        b.position_at_end(head)
        b.cbranch(is_true(b, self.scalar(s.cond)), loop, done)
        b.position_at_end(loop)
        self.loops.append((head, done))
        self.body(s.body)
        self.loops.pop()
        if not b.block.is_terminated:
            b.branch(head)
        b.position_at_end(done)

    def emit_If(self, s: vm.If) -> None:
        b = self.b
        then_block = self.fn.append_basic_block("if.then")
        else_block = self.fn.append_basic_block("if.else")
        done = self.fn.append_basic_block("if.done")
        b.cbranch(is_true(b, self.scalar(s.cond)), then_block, else_block)
        for block, stmts in ((then_block, s.then_body), (else_block, s.else_body)):
            b.position_at_end(block)
            self.body(stmts)
            if not b.block.is_terminated:
                b.branch(done)
        b.position_at_end(done)

    def emit_Break(self, s) -> None:
        self.b.branch(self.loops[-1][1])

    def emit_Continue(self, s) -> None:
        self.b.branch(self.loops[-1][0])

    def emit_Return(self, s) -> None:
        self.b.branch(self.block_done)

    # --------------------------------------------------- memory and tiles
    def global_index(self, g: _Global, offsets, index):
        """(in-range i1, flat element index) of tile element `index` at `offsets`."""
        b = self.b
        ok = ir.Constant(ir.IntType(1), 1)
        flat = ir.Constant(I64, 0)
        for off, i, dim in zip(offsets, index, g.shape):
            c = b.add(off, i)
            ok = b.and_(ok, b.and_(b.icmp_signed(">=", c, ir.Constant(I64, 0)), b.icmp_signed("<", c, dim)))
            flat = b.add(b.mul(flat, dim), c)
        return ok, flat

    def load_global(self, g: _Global, flat: ir.Value) -> ir.Value:
        """One element of a global tensor as a compute value (flat in range)."""
        return load_element(self, g, flat)

    def store_global(self, g: _Global, flat: ir.Value, value: ir.Value, add: bool = False) -> None:
        store_element(self, g, flat, value, add)

    def masked(self, cond: ir.Value, then: Callable[[], ir.Value | None], zero: ir.Value | None = None):
        """Run `then` only where cond holds; returns its value, or `zero` elsewhere."""
        b = self.b
        pre = b.block
        yes = self.fn.append_basic_block("in")
        done = self.fn.append_basic_block("in.done")
        b.cbranch(cond, yes, done)
        b.position_at_end(yes)
        value = then()
        yes_end = b.block
        b.branch(done)
        b.position_at_end(done)
        if zero is None:
            return None
        phi = b.phi(value.type)
        phi.add_incoming(value, yes_end)
        phi.add_incoming(zero, pre)
        return phi

    def emit_Load(self, s: vm.Load) -> None:
        g = self.globals[s.src]
        offsets = [self.scalar(o) for o in s.offsets]
        self.tile(s.out)
        zero = ir.Constant(compute_type(s.out.dtype), 0)

        def each(flat, index):
            ok, gflat = self.global_index(g, offsets, index)
            self.write(s.out, flat, self.masked(ok, lambda: self.load_global(g, gflat), zero))
        self.elements(s.out.shape, each)

    def _store(self, s, add: bool) -> None:
        g = self.globals[s.dst]
        offsets = [self.scalar(o) for o in s.offsets]

        def each(flat, index):
            ok, gflat = self.global_index(g, offsets, index)
            self.masked(ok, lambda: self.store_global(g, gflat, self.read(s.value, flat), add))
        self.elements(s.value.shape, each)

    def emit_Store(self, s: vm.Store) -> None:
        self._store(s, add=False)

    def emit_AtomicAdd(self, s: vm.AtomicAdd) -> None:
        self._store(s, add=True)

    def emit_AllocShared(self, s: vm.AllocShared) -> None:
        # Zero-filled, as in the interpreter, so that a kernel reading shared
        # memory it never wrote is at least deterministic (the GPU is not).
        buf = self.tile(s.out)
        nbytes = max(1, math.prod(s.out.shape)) * _storage_bytes(s.out.dtype)
        self.b.call(self.intrinsic_memset(), [self.b.bitcast(buf, PTR), ir.Constant(I8, 0),
                                              ir.Constant(I64, nbytes), ir.Constant(ir.IntType(1), 0)])

    def _shared_copy(self, shared, tile, offsets, to_shared: bool) -> None:
        b = self.b
        offs = [self.scalar(o) for o in offsets]
        ok = ir.Constant(ir.IntType(1), 1)
        for o, n, full in zip(offs, tile.shape, shared.shape):
            ok = b.and_(ok, b.and_(b.icmp_signed(">=", o, ir.Constant(I64, 0)),
                                   b.icmp_signed("<=", b.add(o, ir.Constant(I64, n)), ir.Constant(I64, full))))
        self.flag_error(b.not_(ok), STATUS_SHARED_RANGE)
        strides = row_major_strides(shared.shape)

        def each(flat, index):
            sflat = ir.Constant(I64, 0)
            for o, i, st in zip(offs, index, strides):
                sflat = b.add(sflat, b.mul(b.add(o, i), ir.Constant(I64, st)))
            if to_shared:
                self.copy_element(tile, flat, shared, sflat)
            else:
                self.copy_element(shared, sflat, tile, flat)
        self.masked(ok, lambda: self.elements(tile.shape, each))

    def emit_LoadShared(self, s: vm.LoadShared) -> None:
        self.tile(s.out)
        self._shared_copy(s.src, s.out, s.offsets, to_shared=False)

    def emit_StoreShared(self, s: vm.StoreShared) -> None:
        self._shared_copy(s.dst, s.value, s.offsets, to_shared=True)

    def emit_CopyAsync(self, s: vm.CopyAsync) -> None:
        self.emit_Load(vm.Load(s.dst, s.src, s.offsets))   # a synchronous masked copy on the CPU

    def emit_CommitAsync(self, s) -> None:
        pass

    def emit_WaitAsync(self, s) -> None:
        pass

    def emit_Barrier(self, s) -> None:
        pass   # one thread per block: nothing to wait for


def _storage_bytes(dt) -> int:
    st = storage_type(dt)
    return 4 if st == F32 else 8 if st == F64 else st.width // 8


def _type_suffix(t: ir.Type) -> str:
    if t == F64:
        return "f64"
    if t == F32:
        return "f32"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    raise TLTargetError(f"no intrinsic suffix for {t}")

