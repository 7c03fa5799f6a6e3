"""Lowering: a VM kernel with register layouts -> a thread-IR kernel (CUDA).

    lower_to_threads(kernel: vm.Kernel, plan, target) -> thread.ThreadKernel

Assumes: the kernel passed the VM verifier; register tensors carry a
RegisterLayout over warps*32 threads (`infer_gpu_layouts`), or None, in which
case `lower_layouts.default_layout` is used; `plan` gives shared-memory byte
offsets (`plan_shared_memory`) or is None (then tensors are placed one after
the other). Guarantees: the thread kernel computes what the reference
interpreter computes (value rules in `lower_values`), with every global
access predicated by its bounds check.

How a tile lives in registers: one register per local slot of its layout,
in the element's compute form (`lower_values.cf_type`). Each thread computes
the index of each slot as thread part (from %tid, computed once at entry) +
a compile-time constant.

Data movement between layouts (reshape, transpose, broadcast, concat,
slice, annotate/assign with a different layout, element-wise operands whose
layouts differ, reductions across threads, the FMA dot) is a register
relabeling when every thread already holds what it needs in a fixed slot
(checked at compile time, `lower_layouts.relabel`); otherwise it goes
through a shared-memory scratch area placed after the planned tensors:
barrier, the owners write (one replica each), barrier, the readers read.

Kernel parameters: one thread param per VM param, same name and order:
global tensors and pointers as u64 addresses, scalars in their compute form
(f16/bf16/f8 scalars as f32 values). `meta["params"]` lists them.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import TLCompileError, TLTargetError
from ..ir import layout as L
from ..ir import thread as T
from ..ir import vm
from ..ir.dtypes import DataType
from ..ir.shared_layout import SharedLayout, shared_row_major
from . import lower_values as V
# The instruction parts import this module's helpers lazily, so importing them here
# makes no cycle at import time.
from .lower_cast import assign_records, lower_cast, lower_elementwise_half2
from .lower_dot import lower_convert_for_mma, lower_dot
from .lower_memory import (lower_commit_async, lower_copy_async, lower_load, lower_load_shared, lower_store,
                           lower_store_shared, lower_wait_async)
from .lower_reduce import lower_reduce
from .lower_layouts import default_layout, relabel, replica_terms, row_major_flat, slot_offsets, thread_terms

U32 = T.u32
B = vm.BinaryOp
E = vm.ElementOp


class Affine:
    """flat = const + sum(coef[d] * index[d]): where an element of a tile goes in
    a common position space (a scratch buffer or another tile's row-major order)."""

    def __init__(self, coefs, const=0):
        self.coefs = tuple(int(c) for c in coefs)
        self.const = int(const)

    def __call__(self, index):
        f = self.const
        for x, c in zip(index, self.coefs):
            f = f + np.asarray(x, np.int64) * c
        return f

    @staticmethod
    def row_major(shape, start=None):
        _, strides = row_major_flat(tuple(shape))
        const = sum(s * c for s, c in zip(start, strides)) if start else 0
        return Affine(strides, const)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class Lowerer:
    def __init__(self, kernel: vm.Kernel, plan, target):
        self.kernel = kernel
        self.target = target
        self.threads = kernel.num_threads
        self.em = V.Emitter()
        self.prologue: list = []
        self.tiles: dict = {}        # RegisterTensor -> list[Reg] (one per slot)
        self.layouts: dict = {}      # RegisterTensor -> RegisterLayout
        self.scalars: dict = {}      # vm.Var -> Reg
        self.globals: dict = {}      # GlobalTensor -> (base Reg, dims [Reg u32], strides [Reg u32])
        self.shared_offsets: dict = {}
        self._cache: dict = {}
        self.scratch_bytes = 0
        self._place_shared(plan)

    # ------------------------------------------------------------ utilities
    def at_entry(self):
        """Context: emit into the prologue (values that depend only on %tid, %ctaid and params)."""
        lowerer = self

        class _Ctx:
            def __enter__(self):
                lowerer.em.blocks.append(lowerer.prologue)

            def __exit__(self, *exc):
                lowerer.em.blocks.pop()
        return _Ctx()

    def cached(self, key, make):
        if key not in self._cache:
            with self.at_entry():
                self._cache[key] = make()
        return self._cache[key]

    def layout(self, t: vm.RegisterTensor) -> L.RegisterLayout:
        lay = self.layouts.get(t)
        if lay is None:
            lay = t.layout if isinstance(t.layout, L.RegisterLayout) else None
            if lay is None or lay.num_threads != self.threads or tuple(lay.shape) != tuple(t.shape):
                lay = default_layout(t.shape, self.threads, t.dtype.nbits)
            self.layouts[t] = lay
        return lay

    def u32(self, v) -> T.Imm:
        return T.Imm(int(v) & 0xFFFFFFFF, U32)

    # ------------------------------------------------------------ per-thread indices
    def tid(self) -> T.Reg:
        def make():
            r = self.em.reg(U32, "tid")
            self.em.emit(T.SpecialReg(r, T.SReg.TID_X))
            return r
        return self.cached("tid", make)

    def block_index(self, axis: int) -> T.Reg:
        """%ctaid.{x,y,z} as s32, read once at entry (not once per use: a use
        inside a loop would re-read the special register every iteration)."""
        def make():
            r = self.em.reg(U32, "ctaid")
            self.em.emit(T.SpecialReg(r, (T.SReg.CTAID_X, T.SReg.CTAID_Y, T.SReg.CTAID_Z)[axis]))
            return self.em.mov(r, T.s32, "bid")
        return self.cached(("ctaid", axis), make)

    def digit(self, div: int, size: int) -> T.Reg:
        def make():
            em = self.em
            x = self.tid()
            if div > 1:
                x = em.bin(T.BinOp.SHR, x, self.u32(div.bit_length() - 1), U32) if _pow2(div) else \
                    em.bin(T.BinOp.DIV, x, self.u32(div), U32)
            if div * size < self.threads:
                x = em.bin(T.BinOp.AND, x, self.u32(size - 1), U32) if _pow2(size) else \
                    em.bin(T.BinOp.REM, x, self.u32(size), U32)
            return x
        return self.cached(("digit", div, size), make)

    def thread_index(self, layout: L.RegisterLayout, dim: int):
        """Reg (u32) holding index_dim(tid, 0), or None when it is 0."""
        def make():
            acc = None
            for div, size, weight in thread_terms(layout, dim):
                d = self.digit(div, size)
                term = d if weight == 1 else self.em.bin(T.BinOp.MUL, d, self.u32(weight), U32)
                acc = term if acc is None else self.em.bin(T.BinOp.ADD, acc, term, U32)
            return acc
        return self.cached(("tindex", layout, dim), make)

    def thread_affine(self, layout: L.RegisterLayout, aff: Affine):
        """Reg (u32) with sum(coef_d * index_d(tid, 0)), or None when 0."""
        def make():
            acc = None
            for d, c in enumerate(aff.coefs):
                if c == 0:
                    continue
                ti = self.thread_index(layout, d)
                if ti is None:
                    continue
                term = ti if c == 1 else self.em.bin(T.BinOp.MUL, ti, self.u32(c), U32)
                acc = term if acc is None else self.em.bin(T.BinOp.ADD, acc, term, U32)
            return acc
        return self.cached(("taff", layout, aff.coefs), make)

    def writer_pred(self, layout: L.RegisterLayout):
        """True on one replica of every element (replication digits all 0), or None."""
        def make():
            p = None
            for div, size in replica_terms(layout):
                z = self.em.setp(T.Cmp.EQ, self.digit(div, size), self.u32(0))
                p = self.em.pand(p, z)
            return p
        return self.cached(("writer", layout), make)

    # ------------------------------------------------------------ shared memory
    def _place_shared(self, plan) -> None:
        allocs = [s.out for s in _walk(self.kernel.body) if isinstance(s, vm.AllocShared)]
        offsets = None
        if plan is not None:
            offsets = _plan_offsets(plan)
        cursor = 0
        for s in allocs:
            if offsets is not None and s in offsets:
                self.shared_offsets[s] = int(offsets[s])
            else:
                self.shared_offsets[s] = cursor
            cursor = max(cursor, self.shared_offsets[s] + _shared_nbytes(s))
        if plan is not None:
            cursor = max(cursor, int(getattr(plan, "total_bytes", 0) or 0))
        self.shared_top = (cursor + 15) // 16 * 16

    def shared_base(self) -> T.Reg:
        def make():
            r = self.em.reg(U32, "smem")
            self.em.emit(T.SharedBase(r))
            return r
        return self.cached("smem", make)

    def scratch(self, nbytes: int) -> T.Reg:
        self.scratch_bytes = max(self.scratch_bytes, nbytes)
        return self.cached("scratch", lambda: self.em.bin(T.BinOp.ADD, self.shared_base(),
                                                           self.u32(self.shared_top), U32, "scratch"))

    # ------------------------------------------------------------ scalars
    def scalar(self, e: vm.Expr) -> T.Reg:
        """A block-uniform scalar in its dtype's compute form."""
        em = self.em
        if isinstance(e, vm.Const):
            value = int(e.value) if isinstance(e.value, bool) else e.value
            from ..runtime.args import canonical_scalar
            return em.mov(V.imm(canonical_scalar(value, e.dtype), e.dtype), V.cf_type(e.dtype), "k")
        if isinstance(e, vm.Var):
            if e not in self.scalars:
                raise TLCompileError(f"lowering: scalar '{e.name}' used before it is set")
            return self.scalars[e]
        if isinstance(e, vm.BlockIdx):
            return self.block_index(e.axis)
        if isinstance(e, vm.ScalarCast):
            return V.convert(em, self.scalar(e.value), e.value.dtype, e.type)
        if isinstance(e, vm.Select):
            c = V.to_pred(em, self.scalar(e.cond))
            a = self.cast_to(self.scalar(e.true_value), e.true_value.dtype, e.dtype)
            b = self.cast_to(self.scalar(e.false_value), e.false_value.dtype, e.dtype)
            return em.selp(a, b, c)
        if isinstance(e, vm.Unary):
            op = {vm.UnaryOp.NEG: E.NEG, vm.UnaryOp.INVERT: E.INVERT, vm.UnaryOp.NOT: E.NOT,
                  vm.UnaryOp.ABS: E.ABS, vm.UnaryOp.EXP: E.EXP, vm.UnaryOp.LOG: E.LOG,
                  vm.UnaryOp.SQRT: E.SQRT, vm.UnaryOp.RSQRT: E.RSQRT}[e.op]
            return self.element(op, [(self.scalar(e.operand), e.operand.dtype)], e.dtype)
        if isinstance(e, vm.Binary):
            a = (self.scalar(e.lhs), e.lhs.dtype)
            b = (self.scalar(e.rhs), e.rhs.dtype)
            if e.op is B.CDIV:
                return self._cdiv(a, b, e.dtype)
            return self.element(E(e.op.value), [a, b], e.dtype)
        raise TLCompileError(f"lowering: scalar expression {type(e).__name__}")

    def _cdiv(self, a, b, dt: DataType) -> T.Reg:
        """cdiv(a, b) = -((-a) // b)."""
        na = self.element(E.NEG, [a], dt)
        q = self.element(E.FLOOR_DIV, [(na, dt), b], dt)
        return self.element(E.NEG, [(q, dt)], dt)

    def cast_to(self, x: T.Reg, src: DataType, dst: DataType) -> T.Reg:
        if src == dst:
            return x
        if V.cf_type(src) == V.cf_type(dst) and src.is_integer and dst.is_integer and \
                src.nbits <= dst.nbits and src.is_signed == dst.is_signed:
            return x
        return V.convert(self.em, x, src, dst)

    def element(self, op: vm.ElementOp, args, out: DataType) -> T.Reg:
        """One element-wise op on (register, dtype) operands; the interpreter's
        promotion: arithmetic in out's dtype, comparisons in the operands'."""
        if op is E.WHERE:
            c, x, y = args
            return self.em.selp(self.cast_to(x[0], x[1], out), self.cast_to(y[0], y[1], out),
                                V.to_pred(self.em, c[0]))
        dt = V.operation_dtype(op, out, [d for _, d in args])
        if op in V.LOGICAL:
            regs = [r for r, _ in args]
        else:
            regs = [self.cast_to(r, d, dt) for r, d in args]
        if op in (E.SHL, E.SHR):
            regs[1] = args[1][0]   # the amount keeps its own type
        return V.element_op(self.em, op, regs, dt, out)

    # ------------------------------------------------------------ tiles
    def define(self, t: vm.RegisterTensor, regs: list) -> None:
        """Bind t's registers; a tile defined again (Assign, loops) keeps its registers."""
        if t in self.tiles:
            old = self.tiles[t]
            for o, n in zip(old, regs):
                if o is not n:
                    self.em.emit(T.Mov(o, n))
            return
        # Fresh named registers so that later Assigns can overwrite them.
        ct = V.cf_type(t.dtype)
        fresh = []
        for r in regs:
            d = self.em.reg(ct, "t")
            self.em.emit(T.Mov(d, r))
            fresh.append(d)
        self.tiles[t] = fresh

    def regs(self, t: vm.RegisterTensor) -> list:
        if t not in self.tiles:
            raise TLCompileError(f"lowering: tile '{t.name}' used before it is defined")
        return self.tiles[t]

    def slot_index(self, layout, slot: int, consts=None):
        """[(thread Reg or None, constant)] per dimension for one slot."""
        consts = slot_offsets(layout) if consts is None else consts
        return [(self.thread_index(layout, d), int(consts[slot, d])) for d in range(layout.ndim)]

    def add_index(self, base, const: int):
        """base (Reg u32 or None) + const as a u32 operand."""
        if base is None:
            return self.u32(const)
        if const == 0:
            return base
        return self.em.bin(T.BinOp.ADD, base, self.u32(const), U32)

    def gather(self, sources, dst_layout, dst_aff: Affine, space: int, ct) -> list:
        """The dst tile's registers: each dst slot takes the element whose position
        (dst_aff) some source [(layout, Affine, regs)] holds at that position.
        A relabeling when possible, else through shared scratch."""
        plan = relabel([(lay, aff) for lay, aff, _ in sources], dst_layout, dst_aff, space)
        if plan is not None:
            return [sources[k][2][slot] for k, slot in plan]
        em = self.em
        es = ct.nbits // 8
        base = self.scratch(space * es)
        em.emit(T.Barrier())
        for lay, aff, regs in sources:
            self.write_scratch(base, lay, aff, regs, es)
        em.emit(T.Barrier())
        out = self.read_scratch(base, dst_layout, dst_aff, ct, es)
        em.emit(T.Barrier())
        return out

    def write_scratch(self, base, lay, aff: Affine, regs, es: int) -> None:
        em = self.em
        consts = slot_offsets(lay)
        pred = self.writer_pred(lay)
        tpart = self.thread_affine(lay, aff)
        taddr = base if tpart is None else em.bin(T.BinOp.ADD, base, em.bin(T.BinOp.MUL, tpart, self.u32(es), U32), U32)
        for slot, r in enumerate(regs):
            off = (aff.const + sum(c * int(consts[slot, d]) for d, c in enumerate(aff.coefs))) * es
            em.emit(T.Store(T.Space.SHARED, taddr, off, (r,), pred))

    def read_scratch(self, base, lay, aff: Affine, ct, es: int) -> list:
        em = self.em
        consts = slot_offsets(lay)
        tpart = self.thread_affine(lay, aff)
        taddr = base if tpart is None else em.bin(T.BinOp.ADD, base, em.bin(T.BinOp.MUL, tpart, self.u32(es), U32), U32)
        out = []
        for slot in range(lay.local_size):
            off = (aff.const + sum(c * int(consts[slot, d]) for d, c in enumerate(aff.coefs))) * es
            r = em.reg(ct, "x")
            em.emit(T.Load((r,), T.Space.SHARED, taddr, off))
            out.append(r)
        return out

    def convert_layout(self, x: vm.RegisterTensor, dst_layout) -> list:
        lay = self.layout(x)
        if lay == dst_layout:
            return list(self.regs(x))
        aff = Affine.row_major(x.shape)
        return self.gather([(lay, aff, self.regs(x))], dst_layout, aff, x.size, V.cf_type(x.dtype))

    # ------------------------------------------------------------ driver
    def run(self) -> T.ThreadKernel:
        params = []
        for p in self.kernel.params:
            if isinstance(p, (vm.GlobalTensor, vm.Pointer)):
                params.append(T.Reg(p.name, T.u64))
            else:
                V.check_supported(p.dtype)
                r = T.Reg(p.name, V.cf_type(p.dtype))
                self.scalars[p] = r
                params.append(r)
        for p in self.kernel.tensor_params:
            V.check_supported(p.dtype)
        self.param_regs = {p: r for p, r in zip(self.kernel.params, params)}
        self.em.blocks = [[]]
        self.block(self.kernel.body)
        body = tuple(self.prologue) + tuple(self.em.blocks[0])
        shared = self.shared_top + self.scratch_bytes
        meta = (("params", tuple((p.name, r.type.name) for p, r in zip(self.kernel.params, params))),
                ("vm_kernel", self.kernel.name),
                ("scratch_offset", self.shared_top))
        return T.ThreadKernel(self.kernel.name, tuple(params), self.threads, shared, body, meta,
                              self.kernel.min_blocks)

    def block(self, body) -> None:
        for s in body:
            method = getattr(self, "lower_" + type(s).__name__, None)
            if method is None:
                raise TLTargetError(f"cuda: no lowering for the VM instruction {type(s).__name__}")
            method(s)

    def lowered_block(self, body) -> tuple:
        self.em.open()
        self.block(body)
        return self.em.close()

    # ------------------------------------------------------------ control flow
    def lower_SetScalar(self, s: vm.SetScalar) -> None:
        value = self.cast_to(self.scalar(s.value), s.value.dtype, s.var.dtype)
        if s.var not in self.scalars:
            self.scalars[s.var] = self.em.reg(V.cf_type(s.var.dtype), "v_" + _clean(s.var.name))
        self.em.emit(T.Mov(self.scalars[s.var], value))

    def lower_For(self, s: vm.For) -> None:
        em = self.em
        ct = V.cf_type(s.var.dtype)
        start = self.cast_to(self.scalar(s.start), s.start.dtype, s.var.dtype)
        stop = self.cast_to(self.scalar(s.stop), s.stop.dtype, s.var.dtype)
        step = self.cast_to(self.scalar(s.step), s.step.dtype, s.var.dtype)
        var = self.scalars.get(s.var) or em.reg(ct, "i_" + _clean(s.var.name))
        self.scalars[s.var] = var
        # var = start - step; loop { var += step; if done: break; body }: `continue`
        # then steps too. The exit test depends on the step's sign.
        em.emit(T.Mov(var, em.bin(T.BinOp.SUB, start, step, ct)))
        em.open()
        em.emit(T.Mov(var, em.bin(T.BinOp.ADD, var, step, ct)))
        up = em.setp(T.Cmp.GT, step, T.Imm(0, ct))
        done = em.selp(V.from_pred(em, em.setp(T.Cmp.GE, var, stop)),
                       V.from_pred(em, em.setp(T.Cmp.LE, var, stop)), up)
        leave = V.to_pred(em, done)
        if not (isinstance(s.step, vm.Const) and s.step.value != 0):
            # A zero step (an error on interp and cpu; a GPU kernel has no error channel)
            # leaves at once: without this test, start > stop would spin forever.
            leave = em.bin(T.BinOp.OR, leave, em.setp(T.Cmp.EQ, step, T.Imm(0, ct)), T.pred)
        em.emit(T.Break(leave))
        self.block(s.body)
        em.emit(T.Loop(em.close()))

    def lower_While(self, s: vm.While) -> None:
        em = self.em
        em.open()
        c = V.to_pred(em, self.scalar(s.cond))
        em.emit(T.Break(em.un(T.UnOp.NOT, c, T.pred)))
        self.block(s.body)
        em.emit(T.Loop(em.close()))

    def lower_If(self, s: vm.If) -> None:
        c = V.to_pred(self.em, self.scalar(s.cond))
        then = self.lowered_block(s.then_body)
        orelse = self.lowered_block(s.else_body)
        self.em.emit(T.If(c, then, orelse))

    def lower_Break(self, s) -> None:
        self.em.emit(T.Break())

    def lower_Continue(self, s) -> None:
        self.em.emit(T.Continue())

    def lower_Return(self, s) -> None:
        self.em.emit(T.Return())

    # ------------------------------------------------------------ tile creation
    def lower_Full(self, s: vm.Full) -> None:
        v = self.cast_to(self.scalar(s.value), s.value.dtype, s.out.dtype)
        self.define(s.out, [v] * self.layout(s.out).local_size)

    def lower_Arange(self, s: vm.Arange) -> None:
        lay = self.layout(s.out)
        start = self.cast_to(self.scalar(s.start), s.start.dtype, s.out.dtype)
        ct = V.cf_type(s.out.dtype)
        regs = []
        consts = slot_offsets(lay)
        for slot in range(lay.local_size):
            (tpart, c), = self.slot_index(lay, slot, consts)
            idx = self.add_index(tpart, c)
            idx = self.em.mov(idx, ct) if isinstance(idx, T.Reg) and ct.nbits == 32 else \
                (self.em.cvt(idx, ct) if isinstance(idx, T.Reg) else T.Imm(c, ct))
            regs.append(V.wrap(self.em, self.em.bin(T.BinOp.ADD, start, idx, ct), s.out.dtype))
        self.define(s.out, regs)

    def lower_Cast(self, s: vm.Cast) -> None:
        if lower_cast(self, s):
            return
        src = self.convert_layout(s.x, self.layout(s.out))
        self.define(s.out, [V.convert(self.em, r, s.x.dtype, s.out.dtype) for r in src])

    def lower_Annotate(self, s: vm.Annotate) -> None:
        if isinstance(s.layout, L.RegisterLayout) and s.layout.num_threads == self.threads:
            self.layouts[s.out] = s.layout
        self.define(s.out, self.convert_layout(s.x, self.layout(s.out)))

    def lower_ConvertLayout(self, s) -> None:
        if lower_convert_for_mma(self, s):
            return
        self.define(s.out, self.convert_layout(s.x, self.layout(s.out)))

    def lower_Assign(self, s: vm.Assign) -> None:
        regs = self.convert_layout(s.x, self.layout(s.out))
        assign_records(self, s)     # the target's packed words / f16x2 pairs follow it
        self.define(s.out, regs)

    def lower_View(self, s: vm.View) -> None:
        """Reinterpret the row-major bit stream: through the bit patterns. When
        both element widths are byte multiples and each thread's run covers
        whole output elements this is pure register work; otherwise the
        pattern stream goes through shared memory."""
        em = self.em
        x, out = s.x, s.out
        nx, no = x.dtype.nbits, out.dtype.nbits
        # Element bits of x at row-major stream positions -> scratch as one
        # stream of u32 words (each thread writes its elements' bits), then each
        # out element reads its bits back. Bit-granular: built from 1-bit chunks
        # of gcd(nx, no) bits so that every word is assembled by one thread.
        g = math.gcd(nx, no)
        chunks_x, chunks_o = nx // g, no // g
        total = x.size * chunks_x
        lay_x, lay_o = self.layout(x), self.layout(out)
        # Scratch holds one u32 per g-bit chunk (simple and race-free).
        es = 4 if g <= 32 else 8
        ct_chunk = U32 if es == 4 else T.u64
        base = self.scratch(total * es)
        em.emit(T.Barrier())
        bits_x = [V.encode_bits(em, r, x.dtype) for r in self.regs(x)]
        ax = Affine([c * chunks_x for c in Affine.row_major(x.shape).coefs])
        consts = slot_offsets(lay_x)
        pred = self.writer_pred(lay_x)
        tpart = self.thread_affine(lay_x, ax)
        taddr = base if tpart is None else em.bin(T.BinOp.ADD, base, em.bin(T.BinOp.MUL, tpart, self.u32(es), U32), U32)
        for slot, b in enumerate(bits_x):
            pos = sum(c * int(consts[slot, d]) for d, c in enumerate(ax.coefs))
            for j in range(chunks_x):
                piece = em.bin(T.BinOp.SHR, b, self.u32(j * g), b.type) if j else b
                if g < b.type.nbits:
                    piece = em.bin(T.BinOp.AND, piece, T.Imm((1 << g) - 1, b.type), b.type)
                if piece.type != ct_chunk:
                    piece = em.cvt(piece, ct_chunk)
                em.emit(T.Store(T.Space.SHARED, taddr, (pos + j) * es, (piece,), pred))
        em.emit(T.Barrier())
        ao = Affine([c * chunks_o for c in Affine.row_major(out.shape).coefs])
        consts = slot_offsets(lay_o)
        tpart = self.thread_affine(lay_o, ao)
        taddr = base if tpart is None else em.bin(T.BinOp.ADD, base, em.bin(T.BinOp.MUL, tpart, self.u32(es), U32), U32)
        bt = V.bits_type(out.dtype)
        regs = []
        for slot in range(lay_o.local_size):
            pos = sum(c * int(consts[slot, d]) for d, c in enumerate(ao.coefs))
            acc = None
            for j in range(chunks_o):
                r = em.reg(ct_chunk, "vw")
                em.emit(T.Load((r,), T.Space.SHARED, taddr, (pos + j) * es))
                if r.type != bt:
                    r = em.cvt(r, bt)
                if j:
                    r = em.bin(T.BinOp.SHL, r, self.u32(j * g), bt)
                acc = r if acc is None else em.bin(T.BinOp.OR, acc, r, bt)
            regs.append(V.decode_bits(em, acc, out.dtype))
        em.emit(T.Barrier())
        self.define(out, regs)

    # ------------------------------------------------------------ shapes
    def lower_Reshape(self, s: vm.Reshape) -> None:
        x = s.x
        src = [(self.layout(x), Affine.row_major(x.shape), self.regs(x))]
        self.define(s.out, self.gather(src, self.layout(s.out), Affine.row_major(s.out.shape), x.size,
                                       V.cf_type(x.dtype)))

    def lower_Transpose(self, s: vm.Transpose) -> None:
        x = s.x
        strides = Affine.row_major(x.shape).coefs
        dst_aff = Affine([strides[p] for p in s.perm])
        src = [(self.layout(x), Affine.row_major(x.shape), self.regs(x))]
        self.define(s.out, self.gather(src, self.layout(s.out), dst_aff, x.size, V.cf_type(x.dtype)))

    def broadcast_regs(self, x: vm.RegisterTensor, out_shape, dst_layout) -> list:
        """x's elements at dst_layout's slots of out_shape, numpy-broadcast."""
        strides = Affine.row_major(x.shape).coefs
        pad = len(out_shape) - len(x.shape)
        coefs = [0] * pad + [0 if n == 1 and m != 1 else st
                             for n, m, st in zip(x.shape, out_shape[pad:], strides)]
        src = [(self.layout(x), Affine.row_major(x.shape), self.regs(x))]
        return self.gather(src, dst_layout, Affine(coefs), x.size, V.cf_type(x.dtype))

    def lower_BroadcastTo(self, s: vm.BroadcastTo) -> None:
        self.define(s.out, self.broadcast_regs(s.x, s.out.shape, self.layout(s.out)))

    def lower_Slice(self, s: vm.Slice) -> None:
        x = s.x
        strides = Affine.row_major(x.shape).coefs
        dst_aff = Affine(strides, sum(a * b for a, b in zip(s.starts, strides)))
        src = [(self.layout(x), Affine.row_major(x.shape), self.regs(x))]
        self.define(s.out, self.gather(src, self.layout(s.out), dst_aff, x.size, V.cf_type(x.dtype)))

    def lower_Concat(self, s: vm.Concat) -> None:
        out = s.out
        sources, start = [], 0
        for p in s.parts:
            st = [0] * out.ndim
            st[s.dim] = start
            sources.append((self.layout(p), Affine.row_major(out.shape, st), self.regs(p)))
            start += p.shape[s.dim]
        self.define(out, self.gather(sources, self.layout(out), Affine.row_major(out.shape), out.size,
                                     V.cf_type(out.dtype)))

    # ------------------------------------------------------------ compute
    def operand_regs(self, a, out: vm.RegisterTensor, lay) -> list:
        """An element-wise operand at out's slots: a scalar (one register for
        all) or a tile broadcast to out's shape."""
        if isinstance(a, vm.RegisterTensor):
            if tuple(a.shape) == tuple(out.shape) and self.layout(a) == lay:
                return list(self.regs(a))
            return self.broadcast_regs(a, out.shape, lay)
        r = self.scalar(a)
        return [r] * lay.local_size

    def lower_Elementwise(self, s: vm.Elementwise) -> None:
        if lower_elementwise_half2(self, s):
            return
        lay = self.layout(s.out)
        ops = [(self.operand_regs(a, s.out, lay), a.dtype) for a in s.args]
        regs = []
        for slot in range(lay.local_size):
            regs.append(self.element(s.op, [(r[slot], d) for r, d in ops], s.out.dtype))
        self.define(s.out, regs)

    def lower_Reduce(self, s: vm.Reduce) -> None:
        """Slots, then shfl.bfly over the reduced lanes, then across warps
        (`lower_reduce`) when the operand's layout allows it. Otherwise each
        out slot reads its reduction line from shared scratch and combines it
        in order: sums of floats in f64 (rounded once, as the interpreter),
        integer sums wrap, max/min propagate NaN."""
        if lower_reduce(self, s):
            return
        em = self.em
        x, out = s.x, s.out
        ct = V.cf_type(x.dtype)
        es = ct.nbits // 8
        lay_x, lay_o = self.layout(x), self.layout(out)
        n = x.shape[s.dim]
        strides = Affine.row_major(x.shape).coefs
        # out index -> position of the line's first element in x's row-major order.
        coefs = [st for d, st in enumerate(strides) if d != s.dim or s.keepdim]
        if s.keepdim:
            coefs[s.dim] = 0
        # Fast case: every thread holds whole lines in its own slots.
        srcs = [(lay_x, Affine.row_major(x.shape), self.regs(x))]
        plans = []
        for j in range(n):
            plans.append(relabel([(lay_x, Affine.row_major(x.shape))], lay_o,
                                 Affine(coefs, j * strides[s.dim]), x.size))
            if plans[-1] is None:
                break
        if all(p is not None for p in plans):
            elems = [[self.regs(x)[plans[j][slot][1]] for j in range(n)] for slot in range(lay_o.local_size)]
        else:
            base = self.scratch(x.size * es)
            em.emit(T.Barrier())
            self.write_scratch(base, *srcs[0][:2], self.regs(x), es)
            em.emit(T.Barrier())
            cols = [self.read_scratch(base, lay_o, Affine(coefs, j * strides[s.dim]), ct, es) for j in range(n)]
            em.emit(T.Barrier())
            elems = [[cols[j][slot] for j in range(n)] for slot in range(lay_o.local_size)]
        regs = [self.combine(s.op, line_regs, x.dtype) for line_regs in elems]
        self.define(out, regs)

    def combine(self, op: vm.ReduceOp, regs, dt: DataType) -> T.Reg:
        em = self.em
        if op is vm.ReduceOp.SUM:
            if dt.is_float:
                acc = None
                for r in regs:
                    w = r if r.type == T.f64 else em.cvt(r, T.f64)
                    acc = w if acc is None else em.bin(T.BinOp.ADD, acc, w, T.f64)
                return V.round_to(em, acc, dt)
            acc = regs[0]
            for r in regs[1:]:
                acc = em.bin(T.BinOp.ADD, acc, r)
            return V.wrap(em, acc, dt)
        bop = T.BinOp.MAX if op is vm.ReduceOp.MAX else T.BinOp.MIN
        acc = regs[0]
        for r in regs[1:]:
            acc = em.bin(bop, acc, r)
        return acc

    def lower_Dot(self, s: vm.Dot) -> None:
        lower_dot(self, s)

    # ------------------------------------------------------------ memory
    def lower_Load(self, s: vm.Load) -> None:
        lower_load(self, s)

    def lower_Store(self, s: vm.Store) -> None:
        lower_store(self, s, atomic=False)

    def lower_AtomicAdd(self, s: vm.AtomicAdd) -> None:
        lower_store(self, s, atomic=True)

    def lower_AllocShared(self, s: vm.AllocShared) -> None:
        pass   # placed at construction

    def lower_LoadShared(self, s: vm.LoadShared) -> None:
        lower_load_shared(self, s)

    def lower_StoreShared(self, s: vm.StoreShared) -> None:
        lower_store_shared(self, s)

    def lower_CopyAsync(self, s: vm.CopyAsync) -> None:
        lower_copy_async(self, s)

    def lower_CommitAsync(self, s) -> None:
        lower_commit_async(self, s)

    def lower_WaitAsync(self, s) -> None:
        lower_wait_async(self, s)

    def lower_Barrier(self, s) -> None:
        self.em.emit(T.Barrier())


# ------------------------------------------------------------------ helpers


def _clean(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def _walk(body):
    for s in body:
        yield s
        if isinstance(s, (vm.For, vm.While)):
            yield from _walk(s.body)
        elif isinstance(s, vm.If):
            yield from _walk(s.then_body)
            yield from _walk(s.else_body)


def shared_layout_of(t: vm.SharedTensor) -> SharedLayout:
    return t.layout if isinstance(t.layout, SharedLayout) else shared_row_major(*t.shape)


def _shared_nbytes(t: vm.SharedTensor) -> int:
    size = shared_layout_of(t).size
    return -(-size * t.dtype.nbits // 8)


def _plan_offsets(plan):
    """The plan's SharedTensor -> byte offset mapping (SharedPlan.offsets)."""
    from collections.abc import Mapping
    if isinstance(plan, Mapping):
        return plan
    v = getattr(plan, "offsets", None)
    return v if isinstance(v, Mapping) else None


def lower_to_threads(kernel: vm.Kernel, plan, target) -> T.ThreadKernel:
    """VM kernel (with layouts) -> thread kernel; see the module docstring."""
    return Lowerer(kernel, plan, target).run()
