"""Lowering of `reduce` to the standard GPU reduction (part of lower_to_threads).

    lower_reduce(lw: Lowerer, s: vm.Reduce) -> bool

Assumes: the operand's layout spreads the reduced dim over thread digits
(`thread_terms`) whose lane parts are power-of-two lane bits (digits at or
above the warp boundary may be anything); returns False, emitting nothing,
otherwise (the caller then uses its shared-memory line path). Guarantees:
the result tile in its own layout, every replica of an element holding the
same bits.

The steps:
1. each thread combines its own slots along the reduced dim;
2. `shfl.sync.bfly` over the lane bits the reduced dim spans: afterwards
   every lane of a butterfly group holds the group's value (the combine is
   commutative, so partners compute identical bits);
3. when warps also span the reduced dim, one shared scratch exchange: one
   lane per (line, warp digit) writes its warp's partial, barrier, every
   thread reads its lines' partials (vector loads) and combines them in
   warp order;
4. the values now sit in `reduce(x layout, dim)` (the reduced digits became
   replication); a relabeling (or the generic conversion) moves them to the
   result's layout.

Arithmetic (`sum_accumulator`): float sums accumulate reassociated as above
in f32 (f16/bf16/f8) or f64 (f64, and f32 unless F32_SUM_ACCUMULATOR says
f32) and round once to the dtype at the end; integer sums wrap; max/min use
the NaN-propagating min/max of the thread IR.
"""
from __future__ import annotations

import numpy as np

from ..ir import layout as L
from ..ir import thread as T
from ..ir import vm
from . import lower_values as V
from .lower_layouts import slot_offsets, thread_terms

LANES = 32
U32 = T.u32


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# The register type float sums of f32 accumulate in. f64 keeps the interpreter's
# and the CPU backend's accuracy (sums in double, rounded once): with f32
# accumulation, tests/test_interp.py::test_reductions_and_shape_ops (rtol 1e-6 on
# 16-term sums of normals, which cancel) fails on about 15% of random inputs.
# T.f32 here is the faster choice, numerically fine for most kernels.
F32_SUM_ACCUMULATOR = T.f64


def sum_accumulator(dt) -> T.HWType:
    """The register type a sum of dt accumulates in: integers in their compute
    form (wrapping), f64 in f64, f32 in F32_SUM_ACCUMULATOR, narrower floats
    (f16, bf16, f8, ...) in f32, rounded once at the end."""
    ct = V.cf_type(dt)
    if not dt.is_float or ct == T.f64:
        return ct
    return F32_SUM_ACCUMULATOR if dt.name == "f32" else T.f32


def split_reduced_digits(layout: L.RegisterLayout, dim: int):
    """(lane bits, lane digits, warp digits) of dim's thread terms, or None when a
    digit below the warp boundary is not made of whole power-of-two lane bits.
    lane bits: xor masks for shfl.bfly; lane digits / warp digits: (div, size)."""
    bits, lane_digits, warp_digits = [], [], []
    for div, size, _ in thread_terms(layout, dim):
        if div >= LANES:
            warp_digits.append((div, size))
            continue
        if not _pow2(div):
            return None
        lane_size = min(size, LANES // div)
        if not _pow2(lane_size) or size % lane_size:
            return None
        lane_digits.append((div, lane_size))
        bits += [div << b for b in range(lane_size.bit_length() - 1)]
        if size > lane_size:
            warp_digits.append((div * lane_size, size // lane_size))
    return bits, lane_digits, warp_digits


def lower_reduce(lw, s: vm.Reduce) -> bool:
    """See the module docstring."""
    x, out, d = s.x, s.out, s.dim
    lay_x = lw.layout(x)
    split = split_reduced_digits(lay_x, d)
    if split is None:
        return False
    bits, lane_digits, warp_digits = split
    em = lw.em
    ct = V.cf_type(x.dtype)
    acc_t = sum_accumulator(x.dtype) if s.op is vm.ReduceOp.SUM else ct

    def combine(a, b):
        if s.op is vm.ReduceOp.SUM:
            return em.bin(T.BinOp.ADD, a, b, acc_t)
        return em.bin(T.BinOp.MAX if s.op is vm.ReduceOp.MAX else T.BinOp.MIN, a, b, acc_t)

    # 1. per-thread: slots that differ only in the reduced dim combine.
    consts = slot_offsets(lay_x)
    keys: dict = {}
    for slot, r in enumerate(lw.regs(x)):
        key = tuple(int(c) for e, c in enumerate(consts[slot]) if e != d)
        if r.type != acc_t:
            r = em.cvt(r, acc_t)
        keys[key] = r if key not in keys else combine(keys[key], r)
    # 2. butterfly over the reduced lane bits.
    for mask in bits:
        for key, r in keys.items():
            keys[key] = combine(r, _shfl_bfly(em, r, mask))
    # 3. across warps through shared scratch.
    if warp_digits:
        _exchange_warps(lw, s, keys, lane_digits, warp_digits, acc_t, combine)
    # Round/wrap once, at the end.
    if s.op is vm.ReduceOp.SUM:
        fin = (lambda r: V.round_to(em, r, x.dtype)) if x.dtype.is_float else (lambda r: V.wrap(em, r, x.dtype))
        keys = {k: fin(r) for k, r in keys.items()}
    # 4. the reduced layout's slots, then the result's layout.
    lay_r = L.reduce(lay_x, d)
    keep_shape = tuple(1 if e == d else n for e, n in enumerate(x.shape))
    consts_r = slot_offsets(lay_r)
    regs = [keys[tuple(int(c) for e, c in enumerate(consts_r[slot]) if e != d)] for slot in range(lay_r.local_size)]
    from .lower_to_threads import Affine   # lazily: lower_to_threads imports this module
    src = [(lay_r, Affine.row_major(keep_shape), regs)]
    lw.define(out, lw.gather(src, lw.layout(out), Affine.row_major(out.shape), out.size, V.cf_type(out.dtype)))
    return True


def _shfl_bfly(em, r: T.Reg, mask: int) -> T.Reg:
    """The value of r on lane (laneid ^ mask), 32 bits at a time."""
    if r.type.nbits == 32:
        b = em.mov(r, T.b32, "sb")
        o = em.reg(T.b32, "sh")
        em.emit(T.Shfl(T.ShflMode.BFLY, o, b, T.Imm(mask, U32), 0x1F))
        return em.mov(o, r.type, "sv")
    # 64-bit values: two shuffles, low and high words.
    bits = em.mov(r, T.u64, "sb")
    halves = [em.cvt(bits, U32), em.cvt(em.bin(T.BinOp.SHR, bits, T.Imm(32, U32), T.u64), U32)]
    got = []
    for h in halves:
        b = em.mov(h, T.b32, "sb")
        o = em.reg(T.b32, "sh")
        em.emit(T.Shfl(T.ShflMode.BFLY, o, b, T.Imm(mask, U32), 0x1F))
        got.append(em.cvt(em.mov(o, U32), T.u64))
    hi = em.bin(T.BinOp.SHL, got[1], T.Imm(32, U32), T.u64)
    return em.mov(em.bin(T.BinOp.OR, hi, got[0], T.u64), r.type, "sv")


def _exchange_warps(lw, s: vm.Reduce, keys: dict, lane_digits, warp_digits, acc_t, combine) -> None:
    """Step 3: keys[line] (a warp's partial, equal on the warp's reduced lanes)
    becomes the combination of all warps' partials, on every thread.
    Scratch: partial of (line p, warp digit w) at element p * W + w."""
    em = lw.em
    x, d = s.x, s.dim
    lay_x = lw.layout(x)
    es = acc_t.nbits // 8
    W = int(np.prod([size for _, size in warp_digits]))
    keep_shape = tuple(1 if e == d else n for e, n in enumerate(x.shape))
    from .lower_to_threads import Affine
    kstride = Affine.row_major(keep_shape).coefs
    coefs = [0 if e == d else c * W for e, c in enumerate(kstride)]
    nlines = int(np.prod(keep_shape))
    base = lw.scratch(nlines * W * es)
    tline = lw.thread_affine(lay_x, Affine(coefs))       # p(thread) * W, or None
    wd = None                                            # the thread's warp digit of the reduced dim
    radix = 1
    for div, size in reversed(warp_digits):
        dg = lw.digit(div, size)
        term = dg if radix == 1 else em.bin(T.BinOp.MUL, dg, lw.u32(radix), U32)
        wd = term if wd is None else em.bin(T.BinOp.ADD, wd, term, U32)
        radix *= size

    def address(elem):
        if elem is None:
            return base
        return em.bin(T.BinOp.ADD, base, em.bin(T.BinOp.MUL, elem, lw.u32(es), U32), U32)

    # One writer per (line, warp digit): replica digits and reduced lane digits 0.
    pred = lw.writer_pred(lay_x)
    for div, size in lane_digits:
        pred = em.pand(pred, em.setp(T.Cmp.EQ, lw.digit(div, size), lw.u32(0)))
    waddr = address(tline if wd is None else (wd if tline is None else em.bin(T.BinOp.ADD, tline, wd, U32)))
    raddr = address(tline)

    def line_offset(key):
        others = [e for e in range(x.ndim) if e != d]
        return sum(c * k for c, k in zip((coefs[e] for e in others), key)) * es

    em.emit(T.Barrier())
    for key, r in keys.items():
        em.emit(T.Store(T.Space.SHARED, waddr, line_offset(key), (r,), pred))
    em.emit(T.Barrier())
    # Vector loads of each line's W partials (naturally aligned: p * W * es with W a
    # power of two, and the scratch base 16-byte aligned).
    vec = 1
    while _pow2(W) and vec * 2 <= W and vec * 2 * es <= 16:
        vec *= 2
    for key in list(keys):
        parts = []
        for j in range(0, W, vec):
            dsts = tuple(em.reg(acc_t, "wp") for _ in range(vec))
            em.emit(T.Load(dsts, T.Space.SHARED, raddr, line_offset(key) + j * es))
            parts += dsts
        acc = parts[0]
        for p in parts[1:]:
            acc = combine(acc, p)
        keys[key] = acc
    em.emit(T.Barrier())
