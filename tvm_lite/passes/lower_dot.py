"""`dot` lowering.

mma path: f16/bf16 operands with an f32 accumulator whose layouts (from
infer_gpu_layouts) are outer * m16n8k16 fragment atoms of one warp tiling
(checked numerically per thread, `_mma_plan`) become mma.sync per
(accumulator atom, k tile); operands are packed pairs of the f32 registers
(cvt.rn.f16x2.f32, exact). The fragments come straight from the registers
the loads / casts produced (no ldmatrix yet).

Generic path (every dtype, every layout): a and b go to shared scratch in
row-major order; each thread then runs a loop over k for every output slot
it holds, reading a[i, k] and b[k, j] from scratch. Float accumulators sum
in f64 starting from acc and round once to acc's dtype (the interpreter's
rule, up to the f64 sum's own rounding); integer accumulators sum in 64
bits and wrap to acc's width.
"""
from __future__ import annotations

import numpy as np

from ..ir import layout as L
from ..ir import thread as T
from ..ir import vm
from . import lower_values as V
from .lower_layouts import slot_offsets

U32 = T.u32


def lower_dot(lw, s: vm.Dot) -> None:
    plan = _mma_plan(lw, s)
    if plan is not None:
        _dot_mma(lw, s, plan)
    else:
        _dot_fma(lw, s)


# ----------------------------------------------------------------- mma.sync

_ATOMS = {"a": (L.mma_m16n8k16_a, 8), "b": (L.mma_m16n8k16_b, 4), "c": (L.mma_m16n8k16_c, 4)}


def _atom_bases(layout, which):
    """[threads, atoms, 2]: the index of each atom's slot 0 minus its in-atom
    lane offset, i.e. the atom's top-left corner, per thread; None when the
    layout is not (outer) * atom with atom slots and lanes least significant."""
    atom_fn, per = _ATOMS[which]
    if L.divide(layout, atom_fn()) is None or layout.local_size % per:
        return None
    t = np.arange(layout.num_threads)[:, None]
    n_atoms = layout.local_size // per
    slots = np.arange(n_atoms)[None, :] * per
    r, c = layout.map(np.broadcast_to(t, (t.shape[0], n_atoms)), np.broadcast_to(slots, (t.shape[0], n_atoms)))
    lane = t % 32
    if which == "a" or which == "c":
        r, c = r - lane // 4, c - 2 * (lane % 4)
    else:
        r, c = r - 2 * (lane % 4), c - lane // 4
    return np.stack([r, c], axis=-1)


def _mma_plan(lw, s: vm.Dot):
    """[(c atom, [(a atom, b atom) per k tile])] when the operands' layouts are
    the m16n8k16 fragments of one consistent warp tiling; else None."""
    a, b, acc = s.a, s.b, s.acc
    if a.dtype.name not in ("f16", "bf16") or b.dtype != a.dtype or acc.dtype.name != "f32":
        return None
    M, K = a.shape
    N = b.shape[1]
    if M % 16 or N % 8 or K % 16:
        return None
    la, lb, lc = lw.layout(a), lw.layout(b), lw.layout(s.out)
    if lw.layout(acc) != lc:
        return None
    ba, bb, bc = _atom_bases(la, "a"), _atom_bases(lb, "b"), _atom_bases(lc, "c")
    if ba is None or bb is None or bc is None:
        return None
    # Atom corners must be uniform within each warp (they are whole fragments).
    for base in (ba, bb, bc):
        w = base.reshape(-1, 32, base.shape[1], 2)
        if not (w == w[:, :1]).all():
            return None
    plan = []
    for oc in range(bc.shape[1]):
        row, col = bc[:, oc, 0], bc[:, oc, 1]
        steps = []
        for kk in range(K // 16):
            oa = [x for x in range(ba.shape[1]) if (ba[:, x, 0] == row).all() and (ba[:, x, 1] == kk * 16).all()]
            ob = [x for x in range(bb.shape[1]) if (bb[:, x, 0] == kk * 16).all() and (bb[:, x, 1] == col).all()]
            if not oa or not ob:
                return None
            steps.append((oa[0], ob[0]))
        plan.append((oc, steps))
    return plan


def _dot_mma(lw, s: vm.Dot, plan) -> None:
    """mma.sync.m16n8k16 per (c atom, k tile); f16/bf16 values packed in pairs
    (exact: the compute-form f32 registers hold f16/bf16 values)."""
    em = lw.em
    pt = T.f16x2 if s.a.dtype.name == "f16" else T.bf16x2
    ab = T.f16 if s.a.dtype.name == "f16" else T.bf16

    def packed(regs, per):
        out = []
        for base in range(0, len(regs), per):
            group = []
            for j in range(0, per, 2):
                d = em.reg(pt, "pk")
                em.emit(T.CvtPack(d, regs[base + j + 1], regs[base + j]))
                group.append(d)
            out.append(tuple(group))
        return out

    a_frag = packed(lw.regs(s.a), 8)
    b_frag = packed(lw.regs(s.b), 4)
    acc = lw.regs(s.acc)
    out = list(acc)
    for oc, steps in plan:
        c = tuple(acc[oc * 4 + i] for i in range(4))
        for oa, ob in steps:
            d = tuple(em.reg(T.f32, "mma") for _ in range(4))
            em.emit(T.Mma(T.MmaShape.M16N8K16, ab, d, a_frag[oa], b_frag[ob], c))
            c = d
        out[oc * 4:oc * 4 + 4] = list(c)
    lw.define(s.out, out)


def _dot_fma(lw, s: vm.Dot) -> None:
    from .lower_to_threads import Affine
    em = lw.em
    a, b, acc, out = s.a, s.b, s.acc, s.out
    M, K = a.shape
    N = b.shape[1]
    ct_a, ct_b = V.cf_type(a.dtype), V.cf_type(b.dtype)
    es_a, es_b = ct_a.nbits // 8, ct_b.nbits // 8
    b_off = (M * K * es_a + 7) // 8 * 8
    base = lw.scratch(b_off + K * N * es_b)
    em.emit(T.Barrier())
    lw.write_scratch(base, lw.layout(a), Affine.row_major(a.shape), lw.regs(a), es_a)
    b_base = em.bin(T.BinOp.ADD, base, T.Imm(b_off, U32), U32)
    lw.write_scratch(b_base, lw.layout(b), Affine.row_major(b.shape), lw.regs(b), es_b)
    em.emit(T.Barrier())
    lay = lw.layout(out)
    acc_regs = lw.convert_layout(acc, lay)
    is_float = acc.dtype.is_float
    wt = T.f64 if is_float else (T.s64 if acc.dtype.is_signed else T.u64)
    sums = []
    for r in acc_regs:
        w = em.reg(wt, "acc")
        em.emit(T.Mov(w, r if r.type == wt else em.cvt(r, wt)))
        sums.append(w)
    consts = slot_offsets(lay)
    ti = lw.thread_index(lay, 0)
    tj = lw.thread_index(lay, 1)
    # Per-thread row / column bases (bytes), constants per slot go in the offsets.
    a_row = base if ti is None else em.bin(T.BinOp.ADD, base, em.bin(T.BinOp.MUL, ti, T.Imm(K * es_a, U32), U32), U32)
    b_col = b_base if tj is None else em.bin(T.BinOp.ADD, b_base, em.bin(T.BinOp.MUL, tj, T.Imm(es_b, U32), U32), U32)
    k = em.reg(U32, "k")
    em.emit(T.Mov(k, T.Imm(0xFFFFFFFF, U32)))
    em.open()
    em.emit(T.Mov(k, em.bin(T.BinOp.ADD, k, T.Imm(1, U32), U32)))
    em.emit(T.Break(em.setp(T.Cmp.GE, k, T.Imm(K, U32), U32)))
    a_k = em.bin(T.BinOp.ADD, a_row, em.bin(T.BinOp.MUL, k, T.Imm(es_a, U32), U32), U32)
    b_k = em.bin(T.BinOp.ADD, b_col, em.bin(T.BinOp.MUL, k, T.Imm(N * es_b, U32), U32), U32)
    cache_a, cache_b = {}, {}
    for slot, w in enumerate(sums):
        i, j = int(consts[slot, 0]), int(consts[slot, 1])
        if i not in cache_a:
            r = em.reg(ct_a, "da")
            em.emit(T.Load((r,), T.Space.SHARED, a_k, i * K * es_a))
            cache_a[i] = r if r.type == wt else em.cvt(r, wt)
        if j not in cache_b:
            r = em.reg(ct_b, "db")
            em.emit(T.Load((r,), T.Space.SHARED, b_k, j * es_b))
            cache_b[j] = r if r.type == wt else em.cvt(r, wt)
        em.emit(T.Fma(w, cache_a[i], cache_b[j], w))
    em.emit(T.Loop(em.close()))
    em.emit(T.Barrier())
    if is_float:
        regs = [V.round_to(em, w, acc.dtype) for w in sums]
    else:
        regs = [V.wrap(em, w, acc.dtype) for w in sums]
    lw.define(out, regs)
