"""Executing a thread kernel: every statement is compiled once into a Python
closure over numpy vectors (one lane per thread of the block), then the
closures run block after block.

Lockstep with active masks: `BlockState.active` says which threads execute
the current statement. If runs the then-part with the threads whose predicate
holds and the else-part with the others; For/Loop iterate while any thread is
still in the loop; Break/Continue/Return take threads out of the mask until
the loop's end / the next iteration / for good. Register writes are masked
(inactive lanes keep their value); memory accesses touch only active lanes
(and, for predicated ones, lanes whose predicate holds).

Warp-collective instructions (ldmatrix, mma, shfl) need every lane of a warp
that executes them (all of `membermask` for shfl) active; bar.sync needs every
thread of the block that has not returned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import thread as T
from ..ir.thread_printer import format_stmt
from . import emulator_values as V
from .emulator_memory import (SHARED_BASE, AsyncCopies, EmulatorError, GlobalMemory, SharedMemory,
                              hazard)

MAX_LOOP_ITERATIONS = 50_000_000


class _LoopFrame:
    __slots__ = ("brk", "cont")

    def __init__(self, n: int):
        self.brk = np.zeros(n, bool)
        self.cont = np.zeros(n, bool)


class BlockState:
    """Registers, masks and memories of one block being emulated."""

    def __init__(self, prog: "CompiledKernel", regs: list, gmem: GlobalMemory, shared: SharedMemory,
                 ctaid: tuple[int, int, int]):
        n = prog.threads
        self.n = n
        self.regs = regs
        self.gmem = gmem
        self.shared = shared
        self.copies = AsyncCopies(n)
        self.ctaid = ctaid
        self.exited = np.zeros(n, bool)
        self.loops: list[_LoopFrame] = []
        self.set_active(np.ones(n, bool))

    def set_active(self, mask: np.ndarray) -> None:
        self.active = mask
        self.any = bool(mask.any())
        self.full = self.any and bool(mask.all())

    def write(self, slot: int, raw: np.ndarray) -> None:
        if self.full:
            self.regs[slot] = raw
        else:
            self.regs[slot] = np.where(self.active, raw, self.regs[slot])

    def write_lanes(self, slot: int, lanes: np.ndarray, raw: np.ndarray) -> None:
        new = self.regs[slot].copy()
        new[lanes] = raw
        self.regs[slot] = new


@dataclass
class CompiledKernel:
    kernel: T.ThreadKernel
    threads: int
    slots: dict          # Reg -> slot
    run: object          # callable(BlockState)

    def initial_registers(self, seed: int) -> list:
        """Random bits for every register (read-only arrays, in slot order), so that
        reading an unwritten register gives nonsense, not zeros. Drawn in one call:
        kernels have up to ~10^4 registers."""
        rng = np.random.default_rng(seed)
        ordered = sorted(self.slots.items(), key=lambda kv: kv[1])
        bits = rng.integers(0, 1 << 63, (len(ordered), self.threads), dtype=np.uint64)
        bits ^= rng.integers(0, 2, bits.shape, dtype=np.uint64) << np.uint64(63)
        regs = []
        for (reg, _), row in zip(ordered, bits):
            arr = (row & np.uint64(1)).astype(bool) if reg.type.is_pred else row.astype(V.raw_dtype(reg.type))
            arr.setflags(write=False)
            regs.append(arr)
        return regs


def _where(s: T.Stmt) -> str:
    return format_stmt(s)


class _Compiler:
    def __init__(self, kernel: T.ThreadKernel):
        self.kernel = kernel
        self.n = kernel.threads
        if self.n <= 0 or self.n % 32:
            raise EmulatorError(f"emulator: thread kernel '{kernel.name}' has {self.n} threads per block; "
                                f"a positive multiple of 32 is required")
        self.slots: dict[T.Reg, int] = {}
        for p in kernel.params:
            self.slot(p)
        self.tid = np.arange(self.n, dtype=np.int64)
        self.lane = (self.tid % 32).astype(np.uint32)
        self.warp = (self.tid // 32).astype(np.uint32)
        self.loop_depth = 0

    # ---------------------------------------------------------- registers
    def slot(self, r: T.Reg) -> int:
        if not isinstance(r, T.Reg):
            raise EmulatorError(f"emulator: expected a register, got {r!r}")
        s = self.slots.get(r)
        if s is None:
            s = self.slots[r] = len(self.slots)
        return s

    def reader(self, op, t: T.HWType, s: T.Stmt):
        """A function state -> (n,) typed array of instruction type t."""
        if isinstance(op, T.Imm):
            try:
                bits = V.imm_bits(op.value, t)
            except (TypeError, ValueError, OverflowError) as e:
                raise EmulatorError(f"emulator: bad immediate {op!r} for {t} in `{_where(s)}`: {e}") from None
            arr = np.full(self.n, V.bits_to_typed(bits, t))
            arr.setflags(write=False)
            return lambda st: arr
        slot = self.slot(op)
        rt = op.type
        if t.is_pred or rt.is_pred:
            if not (t.is_pred and rt.is_pred):
                raise EmulatorError(f"emulator: register %{op.name}:{rt} used as {t} in `{_where(s)}`")
            return lambda st: st.regs[slot]
        dt = V.typed_dtype(t)
        if rt.nbits == t.nbits:
            return lambda st: st.regs[slot].view(dt)
        if rt.is_float or t.is_float:
            raise EmulatorError(f"emulator: register %{op.name}:{rt} used as {t} in `{_where(s)}` "
                                f"(sizes differ)")
        rdt = V.typed_dtype(rt)
        return lambda st: st.regs[slot].view(rdt).astype(dt)

    def as_int64(self, op, s: T.Stmt):
        """Reader of an address/amount operand as int64 values (unsigned interpretation of its bits)."""
        if isinstance(op, T.Imm):
            arr = np.full(self.n, int(op.value), np.int64)
            return lambda st: arr
        t = op.type
        slot = self.slot(op)
        if t.is_pred or t.is_float:
            raise EmulatorError(f"emulator: %{op.name}:{t} used as an address or amount in `{_where(s)}`")
        ut = V.uint_dtype(t.nbits)
        return lambda st: st.regs[slot].view(ut).astype(np.int64)

    def writer(self, r: T.Reg, s: T.Stmt):
        """A function (state, typed array) -> None storing into r's raw bits."""
        slot = self.slot(r)
        raw = V.raw_dtype(r.type)
        if r.type.is_pred:
            return lambda st, v: st.write(slot, np.asarray(v, bool))
        nbytes = r.type.nbits // 8

        def w(st, v):
            if v.dtype.itemsize != nbytes:
                raise EmulatorError(f"emulator: internal: a {v.dtype} result written to %{r.name}:{r.type} "
                                    f"in `{_where(s)}`")
            if st.full:
                st.regs[slot] = v.view(raw)
            else:
                st.regs[slot] = np.where(st.active, v.view(raw), st.regs[slot])
        return w

    # ---------------------------------------------------------- driver
    def compile_block(self, body) -> callable:
        fns = [self.compile(s) for s in body]
        fns = [f for f in fns if f is not None]

        def run(st):
            for f in fns:
                f(st)
                if not st.any:
                    return
        return run

    def compile(self, s: T.Stmt):
        method = getattr(self, "c_" + type(s).__name__, None)
        if method is None:
            raise EmulatorError(f"emulator: no semantics for {type(s).__name__}")
        return method(s)

    # ---------------------------------------------------------- simple statements
    def c_Comment(self, s):
        return None

    def c_SpecialReg(self, s: T.SpecialReg):
        w = self.writer(s.dst, s)
        dt = V.typed_dtype(s.dst.type)
        n = self.n
        fixed = {T.SReg.TID_X: self.tid, T.SReg.NTID_X: np.full(n, n), T.SReg.LANEID: self.lane,
                 T.SReg.WARPID: self.warp}
        if s.which in fixed:
            value = fixed[s.which].astype(dt)
            return lambda st: w(st, value)
        axis = {T.SReg.CTAID_X: 0, T.SReg.CTAID_Y: 1, T.SReg.CTAID_Z: 2}[s.which]
        return lambda st: w(st, np.full(n, st.ctaid[axis], dt))

    def c_SharedBase(self, s: T.SharedBase):
        w = self.writer(s.dst, s)
        value = np.full(self.n, SHARED_BASE, V.typed_dtype(s.dst.type))
        return lambda st: w(st, value)

    def c_Mov(self, s: T.Mov):
        t = s.dst.type
        if isinstance(s.src, T.Reg) and s.src.type.nbits != t.nbits and not (t.is_int and s.src.type.is_int):
            raise EmulatorError(f"emulator: mov between {s.src.type} and {t} in `{_where(s)}` (sizes differ)")
        r = self.reader(s.src, t, s)
        w = self.writer(s.dst, s)
        return lambda st: w(st, r(st))

    def c_Unary(self, s: T.Unary):
        t = s.dst.type
        w = self.writer(s.dst, s)
        op = s.op
        if op in (T.UnOp.POPC, T.UnOp.CLZ):
            src_t = s.a.type if isinstance(s.a, T.Reg) else t
            r = self.reader(s.a, T.hw_type(f"b{src_t.nbits}"), s)
            nb = src_t.nbits
            out = V.typed_dtype(t)
            if op is T.UnOp.POPC:
                return lambda st: w(st, V.popc(r(st)).astype(out))
            return lambda st: w(st, V.clz(r(st), nb).astype(out))
        r = self.reader(s.a, t, s)
        if t.is_pred:
            if op is not T.UnOp.NOT:
                raise EmulatorError(f"emulator: {op.name} on a predicate in `{_where(s)}`")
            return lambda st: w(st, ~r(st))
        if t.is_float:
            return lambda st: w(st, V.float_unary(op, r(st), t))
        if op not in (T.UnOp.NEG, T.UnOp.NOT, T.UnOp.ABS):
            raise EmulatorError(f"emulator: {op.name} on {t} in `{_where(s)}`")
        return lambda st: w(st, V.int_unary(op, r(st), t))

    def c_Binary(self, s: T.Binary):
        t, op = s.dst.type, s.op
        w = self.writer(s.dst, s)
        if t.is_pred:
            ra, rb = self.reader(s.a, t, s), self.reader(s.b, t, s)
            fn = {T.BinOp.AND: np.logical_and, T.BinOp.OR: np.logical_or, T.BinOp.XOR: np.logical_xor}.get(op)
            if fn is None:
                raise EmulatorError(f"emulator: {op.name} on predicates in `{_where(s)}`")
            return lambda st: w(st, fn(ra(st), rb(st)))
        if t.is_float:
            ra, rb = self.reader(s.a, t, s), self.reader(s.b, t, s)
            if op not in V._FLOAT_BINARY:
                raise EmulatorError(f"emulator: {op.name} on {t} in `{_where(s)}`")
            return lambda st: w(st, V.float_binary(op, ra(st), rb(st), t))
        if op is T.BinOp.MUL_WIDE:
            src_t = s.a.type if isinstance(s.a, T.Reg) else s.b.type
            if src_t.nbits * 2 != t.nbits or src_t.is_float:
                raise EmulatorError(f"emulator: MUL_WIDE from {src_t} to {t} in `{_where(s)}`")
            ra, rb = self.reader(s.a, src_t, s), self.reader(s.b, src_t, s)
            fn = V.int_binary_fn(op, t, src_t)
            return lambda st: w(st, fn(ra(st), rb(st)))
        ra = self.reader(s.a, t, s)
        if op in (T.BinOp.SHL, T.BinOp.SHR) and isinstance(s.b, T.Imm) and 0 <= int(s.b.value) < t.nbits:
            # A constant amount below the width: one numpy shift (>> is arithmetic on signed types).
            amount = V.typed_dtype(t).type(int(s.b.value))
            shift = np.left_shift if op is T.BinOp.SHL else np.right_shift
            return lambda st: w(st, shift(ra(st), amount))
        if op in (T.BinOp.SHL, T.BinOp.SHR):
            rb = self.as_int64(s.b, s)
        else:
            rb = self.reader(s.b, t, s)
        try:
            fn = V.int_binary_fn(op, t)
        except KeyError:
            raise EmulatorError(f"emulator: {op.name} on {t} in `{_where(s)}`") from None
        return lambda st: w(st, fn(ra(st), rb(st)))

    def c_Fma(self, s: T.Fma):
        t = s.dst.type
        w = self.writer(s.dst, s)
        ra, rb, rc = (self.reader(x, t, s) for x in (s.a, s.b, s.c))
        if t.is_float:
            return lambda st: w(st, V.float_fma(ra(st), rb(st), rc(st), t))
        dt = V.typed_dtype(t)

        return lambda st: w(st, (ra(st) * rb(st) + rc(st)).astype(dt, copy=False))

    def c_Setp(self, s: T.Setp):
        t = s.a.type if isinstance(s.a, T.Reg) else s.b.type
        w = self.writer(s.dst, s)
        ra, rb = self.reader(s.a, t, s), self.reader(s.b, t, s)
        if t.is_pred:
            if s.cmp not in (T.Cmp.EQ, T.Cmp.NE):
                raise EmulatorError(f"emulator: {s.cmp.name} on predicates in `{_where(s)}`")
        if t.is_packed:
            raise EmulatorError(f"emulator: setp on packed {t} in `{_where(s)}`")
        if t.is_float:
            return lambda st: w(st, V.float_compare(s.cmp, ra(st), rb(st)))
        return lambda st: w(st, V.int_compare(s.cmp, ra(st), rb(st)))

    def c_Selp(self, s: T.Selp):
        t = s.dst.type
        w = self.writer(s.dst, s)
        ra, rb = self.reader(s.a, t, s), self.reader(s.b, t, s)
        rp = self.reader(s.pred, T.pred, s)
        return lambda st: w(st, np.where(rp(st), ra(st), rb(st)))

    def c_Cvt(self, s: T.Cvt):
        dt_, st_ = s.dst.type, s.src.type
        if dt_.is_packed or st_.is_packed:
            raise EmulatorError(f"emulator: cvt between {st_} and {dt_} in `{_where(s)}`")
        w = self.writer(s.dst, s)
        r = self.reader(s.src, st_, s)
        out = V.typed_dtype(dt_)
        fn = V.cvt_fn(st_, dt_, s.rounding, s.saturate)

        return lambda st: w(st, np.asarray(fn(r(st))).astype(out, copy=False))

    def c_CvtPack(self, s: T.CvtPack):
        t = s.dst.type
        if not t.is_packed:
            raise EmulatorError(f"emulator: CvtPack into {t} in `{_where(s)}`")
        w = self.writer(s.dst, s)
        rh, rl = self.reader(s.hi, T.f32, s), self.reader(s.lo, T.f32, s)
        el = t.element

        def f(st):
            lo = V.to_float(rl(st).astype(np.float64), el)
            hi = V.to_float(rh(st).astype(np.float64), el)
            w(st, V.pack_halves(np.stack([lo, hi], axis=1)))
        return f

    def c_Lop3(self, s: T.Lop3):
        w = self.writer(s.dst, s)
        ra, rb, rc = (self.reader(x, T.b32, s) for x in (s.a, s.b, s.c))
        lut = s.lut & 0xFF
        return lambda st: w(st, V.lop3(ra(st), rb(st), rc(st), lut))

    def c_Prmt(self, s: T.Prmt):
        w = self.writer(s.dst, s)
        ra, rb, rc = (self.reader(x, T.b32, s) for x in (s.a, s.b, s.selector))
        if isinstance(s.selector, T.Imm):
            gather = V.prmt_imm_fn(int(s.selector.value) & 0xFFFF)
            return lambda st: w(st, gather(ra(st), rb(st)))
        return lambda st: w(st, V.prmt(ra(st), rb(st), rc(st)))

    def c_Shf(self, s: T.Shf):
        w = self.writer(s.dst, s)
        rl, rh = self.reader(s.lo, T.b32, s), self.reader(s.hi, T.b32, s)
        rs = self.as_int64(s.shift, s)
        left, clamp = s.left, s.clamp
        return lambda st: w(st, V.shf(rl(st), rh(st), rs(st), left, clamp))

    def c_Bfe(self, s: T.Bfe):
        t = s.dst.type
        if t.name not in ("u32", "s32", "u64", "s64", "b32", "b64"):
            raise EmulatorError(f"emulator: bfe into {t} in `{_where(s)}`")
        w = self.writer(s.dst, s)
        ra = self.reader(s.a, t, s)
        rp, rl = self.as_int64(s.pos, s), self.as_int64(s.length, s)
        return lambda st: w(st, V.bfe(ra(st), rp(st), rl(st), t))

    # ---------------------------------------------------------- memory
    def _selected(self, pred_reader):
        """A function state -> lane indices that execute a (predicated) access."""
        if pred_reader is None:
            return lambda st: np.nonzero(st.active)[0]
        return lambda st: np.nonzero(st.active & pred_reader(st))[0]

    def _check_align(self, addr, width: int, lanes, where: str) -> None:
        bad = (addr % width) != 0
        if bad.any():
            k = int(np.argmax(bad))
            raise hazard(where, int(lanes[k]),
                         f"misaligned {width}-byte access at address 0x{int(addr[k]):x} "
                         f"(address % {width} = {int(addr[k] % width)})")

    def c_Load(self, s: T.Load):
        where = _where(s)
        t = s.dsts[0].type
        if any(d.type != t for d in s.dsts) or len(s.dsts) not in (1, 2, 4) or t.is_pred:
            raise EmulatorError(f"emulator: bad vector load `{where}`")
        es = t.nbits // 8
        width = es * len(s.dsts)
        if width > 16:
            raise EmulatorError(f"emulator: a {width * 8}-bit load `{where}` (at most 128 bits)")
        if s.space is T.Space.LOCAL:
            raise EmulatorError(f"emulator: `{where}`: the thread IR declares no local variables, so the "
                                f"local space has nothing to address")
        addr_r = self.as_int64(s.addr, s)
        sel = self._selected(None if s.pred is None else self.reader(s.pred, T.pred, s))
        slots = [self.slot(d) for d in s.dsts]
        raw = V.raw_dtype(t)
        offset = s.offset
        shared = s.space is T.Space.SHARED

        def f(st):
            lanes = sel(st)
            if lanes.size == 0:
                return
            addr = addr_r(st)[lanes] + offset
            self._check_align(addr, width, lanes, where)
            data = (st.shared.read(addr, width, lanes, where) if shared
                    else st.gmem.read(addr, width, lanes, where))
            for k, slot in enumerate(slots):
                vals = np.ascontiguousarray(data[:, k * es:(k + 1) * es]).view(raw).reshape(-1)
                st.write_lanes(slot, lanes, vals)
        return f

    def c_Store(self, s: T.Store):
        where = _where(s)
        t = next((x.type for x in s.srcs if isinstance(x, T.Reg)), s.srcs[0].type)
        if len(s.srcs) not in (1, 2, 4) or t.is_pred:
            raise EmulatorError(f"emulator: bad vector store `{where}`")
        es = t.nbits // 8
        width = es * len(s.srcs)
        if width > 16:
            raise EmulatorError(f"emulator: a {width * 8}-bit store `{where}` (at most 128 bits)")
        if s.space is T.Space.LOCAL:
            raise EmulatorError(f"emulator: `{where}`: the thread IR declares no local variables, so the "
                                f"local space has nothing to address")
        addr_r = self.as_int64(s.addr, s)
        readers = [self.reader(x, t, s) for x in s.srcs]
        sel = self._selected(None if s.pred is None else self.reader(s.pred, T.pred, s))
        offset = s.offset
        shared = s.space is T.Space.SHARED
        raw = V.raw_dtype(t)

        def f(st):
            lanes = sel(st)
            if lanes.size == 0:
                return
            addr = addr_r(st)[lanes] + offset
            self._check_align(addr, width, lanes, where)
            cols = [np.ascontiguousarray(r(st)[lanes]).view(raw).view(np.uint8).reshape(-1, es) for r in readers]
            data = np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0]
            if shared:
                st.shared.write(addr, data, lanes, where)
            else:
                st.gmem.write(addr, data, lanes, where)
        return f

    def c_AtomicAdd(self, s: T.AtomicAdd):
        where = _where(s)
        t = s.dst.type if s.dst is not None else s.value.type
        if t.name not in ("f32", "f64", "u32", "s32", "u64", "b32"):
            raise EmulatorError(f"emulator: atomic add on {t} in `{where}`")
        if s.space is T.Space.LOCAL:
            raise EmulatorError(f"emulator: atomic on the local space in `{where}`")
        dt = V.typed_dtype(t)
        es = dt.itemsize
        addr_r = self.as_int64(s.addr, s)
        rv = self.reader(s.value, t, s)
        sel = self._selected(None if s.pred is None else self.reader(s.pred, T.pred, s))
        dst_slot = None if s.dst is None else self.slot(s.dst)
        offset = s.offset
        shared = s.space is T.Space.SHARED

        def f(st):
            lanes = sel(st)
            if lanes.size == 0:
                return
            addr = addr_r(st)[lanes] + offset
            self._check_align(addr, es, lanes, where)
            vals = rv(st)[lanes]
            if shared:
                idx = st.shared.atomic_indices(addr, es, lanes, where)
                view = st.shared.data[: st.shared.nbytes // es * es].view(dt)
                groups = [(view, idx[:, 0] // es, np.ones(len(lanes), bool))]
            else:
                bi, off = st.gmem.locate(addr, es, lanes, where)
                groups = [(st.gmem.typed_view(b, dt), off // es, bi == b) for b in np.unique(bi)]
            old = np.zeros(len(lanes), dt)
            for view, elem, m in groups:
                if dst_slot is None:
                    np.add.at(view, elem[m], vals[m])
                else:   # in thread order: each thread sees the sum of the earlier ones
                    for k in np.nonzero(m)[0]:
                        old[k] = view[elem[k]]
                        view[elem[k]] = dt.type(old[k] + vals[k])
            if shared:
                st.shared.atomic_done(idx, lanes)
            if dst_slot is not None:
                st.write_lanes(dst_slot, lanes, old.view(V.raw_dtype(s.dst.type)))
        return f

    def c_CpAsync(self, s: T.CpAsync):
        where = _where(s)
        size = s.size
        if size not in (4, 8, 16):
            raise EmulatorError(f"emulator: cp.async of {size} bytes in `{where}`")
        dst_r, src_r = self.as_int64(s.dst_addr, s), self.as_int64(s.src_addr, s)
        ss_r = None if s.src_size is None else self.as_int64(s.src_size, s)
        sel = self._selected(None if s.pred is None else self.reader(s.pred, T.pred, s))

        def f(st):
            lanes = sel(st)
            if lanes.size == 0:
                return
            dst = dst_r(st)[lanes]
            src = src_r(st)[lanes]
            self._check_align(dst, size, lanes, where)
            self._check_align(src, size, lanes, where)
            src_size = np.full(len(lanes), size, np.int64) if ss_r is None else ss_r(st)[lanes]
            if (src_size > size).any() or (src_size < 0).any():
                k = int(np.argmax((src_size > size) | (src_size < 0)))
                raise hazard(where, int(lanes[k]), f"cp.async src-size {int(src_size[k])} outside [0, {size}]")
            data = np.zeros((len(lanes), size), np.uint8)
            for n in np.unique(src_size):
                if n == 0:
                    continue
                m = src_size == n
                data[m, :n] = st.gmem.read(src[m], int(n), lanes[m], where)
            idx = st.shared.offsets(dst, size, lanes, where, "cp.async destination")
            st.shared._check_pending(idx, lanes, where, "cp.async into")
            st.shared._check_war(idx, lanes, where)
            st.copies.issue(st.shared, lanes, idx, data)
        return f

    def c_CpAsyncCommit(self, s):
        return lambda st: st.copies.commit(np.nonzero(st.active)[0])

    def c_CpAsyncWait(self, s: T.CpAsyncWait):
        n = int(s.n)
        return lambda st: st.copies.wait(st.shared, st.active, n)

    def c_Barrier(self, s):
        where = _where(s)

        def f(st):
            expected = ~st.exited
            if not np.array_equal(st.active, expected):
                missing = np.nonzero(expected & ~st.active)[0]
                raise hazard(where, int(np.nonzero(st.active)[0][0]),
                             f"divergent barrier: bar.sync reached by {int(st.active.sum())} of "
                             f"{int(expected.sum())} running threads (thread {int(missing[0])} is not here)")
            st.shared.barrier()
        return f

    # ---------------------------------------------------------- warp collectives
    def _warp_mask(self, st, where: str, member: np.ndarray | None = None) -> np.ndarray:
        """Warps (bool per warp) executing a warp-collective instruction. Every lane
        of such a warp must be active (for shfl: every lane of `member` that has
        not exited); otherwise the instruction's result is undefined."""
        act = st.active.reshape(-1, 32)
        executing = act.any(axis=1)
        if member is None:
            need = np.ones_like(act)
        else:
            need = member[None, :] & ~st.exited.reshape(-1, 32)
        missing = executing[:, None] & need & ~act
        if missing.any():
            w = int(np.argmax(missing.any(axis=1)))
            lanes = np.nonzero(missing[w])[0]
            raise hazard(where, w * 32 + int(np.nonzero(act[w])[0][0]),
                         f"warp-collective instruction executed by warp {w} with lane(s) "
                         f"{', '.join(map(str, lanes[:8]))}{' ...' if len(lanes) > 8 else ''} inactive")
        return executing

    def c_Shfl(self, s: T.Shfl):
        where = _where(s)
        w = self.writer(s.dst, s)
        ra = self.reader(s.src, T.b32, s)
        rb = self.as_int64(s.lane, s)
        c = int(s.clamp)
        mask = int(s.mask) & 0xFFFFFFFF
        member = np.array([(mask >> i) & 1 for i in range(32)], bool)
        lane = self.lane.astype(np.int64)
        cval, segmask = c & 0x1F, (c >> 8) & 0x1F
        max_lane = (lane & segmask) | (cval & ~segmask)
        min_lane = lane & segmask
        base = (self.tid // 32) * 32
        mode = s.mode

        def f(st):
            self._warp_mask(st, where, member)
            act = st.active
            outside = act & ~member[self.lane]
            if outside.any():
                k = int(np.argmax(outside))
                raise hazard(where, k, f"shfl.sync executed by lane {k % 32}, which is not in membermask "
                                       f"0x{mask:08x}")
            b = rb(st) & 0x1F
            if mode is T.ShflMode.UP:
                j = lane - b
                ok = j >= max_lane
            elif mode is T.ShflMode.DOWN:
                j = lane + b
                ok = j <= max_lane
            elif mode is T.ShflMode.BFLY:
                j = lane ^ b
                ok = j <= max_lane
            else:
                j = min_lane | (b & ~segmask)
                ok = j <= max_lane
            j = np.where(ok, j, lane)
            src = base + j
            bad = act & ~(act[src] & member[j])
            if bad.any():
                k = int(np.argmax(bad))
                raise hazard(where, k, f"shfl.sync reads lane {int(j[k])}, which is inactive or not in "
                                       f"membermask 0x{mask:08x}")
            w(st, ra(st)[src])
        return f

    def c_Ldmatrix(self, s: T.Ldmatrix):
        where = _where(s)
        nmat = len(s.dsts)
        if nmat not in (1, 2, 4) or any(d.type.nbits != 32 for d in s.dsts):
            raise EmulatorError(f"emulator: ldmatrix needs 1, 2 or 4 32-bit registers: `{where}`")
        addr_r = self.as_int64(s.addr, s)
        slots = [self.slot(d) for d in s.dsts]
        raws = [V.raw_dtype(d.type) for d in s.dsts]
        trans = s.trans
        lane = np.arange(32)
        row_of_lane, pair_of_lane = lane // 4, lane % 4

        def f(st):
            executing = self._warp_mask(st, where)
            warps = np.nonzero(executing)[0]
            if warps.size == 0:
                return
            # address-supplying lanes: matrix m, row r <- lane 8m + r of each warp
            src_lanes = (warps[:, None] * 32 + np.arange(8 * nmat)[None, :]).reshape(-1)
            addr = addr_r(st)[src_lanes]
            self._check_align(addr, 16, src_lanes, where)
            rows = st.shared.read(addr, 16, src_lanes, where)                 # (W*8*nmat, 16) bytes
            mats = rows.view(np.uint16).reshape(len(warps), nmat, 8, 8)        # [w, m, row, col]
            if trans:
                mats = mats.transpose(0, 1, 3, 2)
            lo = mats[:, :, row_of_lane, 2 * pair_of_lane]                     # [w, m, lane]
            hi = mats[:, :, row_of_lane, 2 * pair_of_lane + 1]
            words = lo.astype(np.uint32) | (hi.astype(np.uint32) << np.uint32(16))
            lanes_all = (warps[:, None] * 32 + lane[None, :]).reshape(-1)
            for m, (slot, raw) in enumerate(zip(slots, raws)):
                st.write_lanes(slot, lanes_all, words[:, m, :].reshape(-1).view(raw))
        return f

    def c_Mma(self, s: T.Mma):
        where = _where(s)
        M, N, K = s.shape.mnk
        if s.ab_type.name not in ("f16", "bf16"):
            raise EmulatorError(f"emulator: mma with {s.ab_type} operands: `{where}`")
        if len(s.a) != s.shape.a_regs or len(s.b) != s.shape.b_regs or len(s.c) != 4 or len(s.d) != 4:
            raise EmulatorError(f"emulator: mma.{s.shape.value} needs {s.shape.a_regs} A, {s.shape.b_regs} B, "
                                f"4 C and 4 D registers: `{where}`")
        ra = [self.reader(x, T.b32, s) for x in s.a]
        rb = [self.reader(x, T.b32, s) for x in s.b]
        rc = [self.reader(x, T.f32, s) for x in s.c]
        d_slots = [self.slot(x) for x in s.d]
        if any(x.type.nbits != 32 for x in s.d):
            raise EmulatorError(f"emulator: mma D registers must be 32-bit: `{where}`")
        half = V._FLOAT[s.ab_type.name]
        a_rc, b_rc, c_rc = _mma_fragments(s.shape)
        lane = np.arange(32)

        def gather(readers, st, warps, n_elems):
            """(W, 32, n_elems) float64 elements of a fragment, element e = reg e//2, half e%2."""
            words = np.stack([r(st).reshape(-1, 32)[warps] for r in readers], axis=-1)   # (W, 32, nregs)
            h = np.ascontiguousarray(words).view(half).astype(np.float64)            # (W, 32, 2*nregs)
            return h[..., :n_elems]

        def f(st):
            executing = self._warp_mask(st, where)
            warps = np.nonzero(executing)[0]
            if warps.size == 0:
                return
            W = len(warps)
            A = np.zeros((W, M, K))
            B = np.zeros((W, K, N))
            C = np.zeros((W, M, N))
            av = gather(ra, st, warps, 2 * len(ra))
            bv = gather(rb, st, warps, 2 * len(rb))
            for e, (rows, cols) in enumerate(a_rc):
                A[:, rows, cols] = av[:, :, e]
            for e, (rows, cols) in enumerate(b_rc):
                B[:, rows, cols] = bv[:, :, e]
            cv = [r(st).reshape(-1, 32)[warps].astype(np.float64) for r in rc]
            for i, (rows, cols) in enumerate(c_rc):
                C[:, rows, cols] = cv[i]
            D = (A @ B + C).astype(np.float32)
            lanes_all = (warps[:, None] * 32 + lane[None, :]).reshape(-1)
            for i, (rows, cols) in enumerate(c_rc):
                vals = D[:, rows, cols].reshape(-1)
                st.write_lanes(d_slots[i], lanes_all, vals.view(np.uint32))
        return f

    # ---------------------------------------------------------- control flow
    def c_If(self, s: T.If):
        rp = self.reader(s.pred, T.pred, s)
        then = self.compile_block(s.then)
        orelse = self.compile_block(s.orelse) if s.orelse else None

        def f(st):
            saved = st.active
            p = rp(st)
            take = saved & p
            other = saved & ~p
            result = np.zeros_like(saved)
            if take.any():
                st.set_active(take)
                then(st)
                result = st.active
            if orelse is None:
                result = result | other
            elif other.any():
                st.set_active(other)
                orelse(st)
                result = result | st.active
            st.set_active(result)
        return f

    def _loop_body(self, body):
        self.loop_depth += 1
        try:
            return self.compile_block(body)
        finally:
            self.loop_depth -= 1

    def c_Loop(self, s: T.Loop):
        body = self._loop_body(s.body)
        where = "loop"

        def f(st):
            frame = _LoopFrame(st.n)
            st.loops.append(frame)
            cur = st.active
            it = 0
            while cur.any():
                it += 1
                if it > MAX_LOOP_ITERATIONS:
                    raise EmulatorError(f"emulator: `{where}` ran {MAX_LOOP_ITERATIONS} iterations")
                st.set_active(cur)
                body(st)
                cur = st.active | frame.cont
                frame.cont = np.zeros(st.n, bool)
            st.loops.pop()
            st.set_active(frame.brk)
        return f

    def c_For(self, s: T.For):
        if s.step == 0:
            raise EmulatorError(f"emulator: a For loop with step 0: `{_where(s)}`")
        if s.var.type.nbits != 32 or not s.var.type.is_int:
            raise EmulatorError(f"emulator: For loop variable %{s.var.name} must be a 32-bit integer")
        r_start = self.reader(s.start, T.s32, s)
        r_stop = self.reader(s.stop, T.s32, s)
        slot = self.slot(s.var)
        body = self._loop_body(s.body)
        step = np.int32(s.step)
        up = s.step > 0
        where = _where(s)

        def f(st):
            st.write(slot, r_start(st).view(np.uint32))
            frame = _LoopFrame(st.n)
            st.loops.append(frame)
            cur = st.active
            done = np.zeros(st.n, bool)
            it = 0
            while True:
                var = st.regs[slot].view(np.int32)
                stop = r_stop(st)
                cond = var < stop if up else var > stop
                done |= cur & ~cond
                cur = cur & cond
                if not cur.any():
                    break
                it += 1
                if it > MAX_LOOP_ITERATIONS:
                    raise EmulatorError(f"emulator: `{where}` ran {MAX_LOOP_ITERATIONS} iterations")
                st.set_active(cur)
                body(st)
                cur = st.active | frame.cont
                frame.cont = np.zeros(st.n, bool)
                st.set_active(cur)
                st.write(slot, (st.regs[slot].view(np.int32) + step).view(np.uint32))
            st.loops.pop()
            st.set_active(done | frame.brk)
        return f

    def _exit_loop(self, s, kind: str):
        if self.loop_depth == 0:
            raise EmulatorError(f"emulator: {kind} outside a loop")
        rp = None if s.pred is None else self.reader(s.pred, T.pred, s)
        attr = "brk" if kind == "Break" else "cont"

        def f(st):
            leaving = st.active if rp is None else st.active & rp(st)
            frame = st.loops[-1]
            setattr(frame, attr, getattr(frame, attr) | leaving)
            st.set_active(st.active & ~leaving)
        return f

    def c_Break(self, s: T.Break):
        return self._exit_loop(s, "Break")

    def c_Continue(self, s: T.Continue):
        return self._exit_loop(s, "Continue")

    def c_Return(self, s):
        def f(st):
            st.exited = st.exited | st.active
            st.set_active(np.zeros(st.n, bool))
        return f


def _mma_fragments(shape: T.MmaShape):
    """Per element e of the A, B and C/D fragments: (row per lane, col per lane)
    as (32,) arrays, from the PTX ISA's fragment tables (m16n8k16 / m16n8k8,
    .f16/.bf16 operands, .f32 accumulators):
      groupID = laneid >> 2, threadID_in_group = laneid % 4
      A m16n8k16: row = groupID (+8 for a2, a3, a6, a7); col = 2*tig + (i & 1) (+8 for i >= 4)
      A m16n8k8:  row = groupID (+8 for a2, a3);         col = 2*tig + (i & 1)
      B m16n8k16: row = 2*tig + (i & 1) (+8 for i >= 2); col = groupID
      B m16n8k8:  row = 2*tig + i;                       col = groupID
      C/D:        row = groupID (+8 for c2, c3);         col = 2*tig + (i & 1)
    """
    lane = np.arange(32)
    g, tig = lane >> 2, lane % 4
    if shape is T.MmaShape.M16N8K16:
        a = [(g + 8 * ((i >> 1) & 1), 2 * tig + (i & 1) + 8 * (i >= 4)) for i in range(8)]
        b = [(2 * tig + (i & 1) + 8 * (i >= 2), g) for i in range(4)]
    else:
        a = [(g + 8 * (i >= 2), 2 * tig + (i & 1)) for i in range(4)]
        b = [(2 * tig + i, g) for i in range(2)]
    c = [(g + 8 * (i >= 2), 2 * tig + (i & 1)) for i in range(4)]
    return a, b, c


def compile_kernel(kernel: T.ThreadKernel) -> CompiledKernel:
    comp = _Compiler(kernel)
    run = comp.compile_block(kernel.body)
    return CompiledKernel(kernel, comp.n, comp.slots, run)


def run_blocks(prog: CompiledKernel, grid: tuple[int, int, int], gmem: GlobalMemory,
               param_values: dict, seed: int = 0) -> None:
    """Run every block of `grid` (x fastest). `param_values`: Reg -> raw bits (int)."""
    n = prog.threads
    rng = np.random.default_rng(seed + 1)      # shared-memory garbage
    kernel = prog.kernel
    garbage = prog.initial_registers(seed)
    for reg, value in param_values.items():
        slot = prog.slots.get(reg)
        if slot is not None:
            arr = np.full(n, value, V.raw_dtype(reg.type))
            arr.setflags(write=False)
            garbage[slot] = arr
    gx, gy, gz = grid
    with np.errstate(all="ignore"):
        for z in range(gz):
            for y in range(gy):
                for x in range(gx):
                    shared = SharedMemory(int(kernel.shared_bytes), rng)
                    st = BlockState(prog, list(garbage), gmem, shared, (x, y, z))
                    prog.run(st)
