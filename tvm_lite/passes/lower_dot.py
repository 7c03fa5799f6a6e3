"""`dot` lowering.

mma path: f16/bf16 operands with an f32 accumulator whose layouts (from
infer_gpu_layouts) are outer * m16n8k16 fragment atoms of one warp tiling
(checked numerically per thread, `_mma_plan`) become mma.sync per
(accumulator atom, k tile). Operand fragments come from ldmatrix when the
operand was produced by a ConvertLayout into the fragment layout
(`lower_convert_for_mma`, below: the conversion's swizzled shared scratch is
read with ldmatrix.x4 / .trans); otherwise they are packed pairs of the f32
registers (cvt.rn.f16x2.f32, exact).

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

    from .lower_cast import defined_once
    frags = {t: f for t, f in _mma_frags(lw).items() if defined_once(lw, t)}
    a_frag = [frags[s.a][x] for x in range(len(frags[s.a]))] if s.a in frags else packed(lw.regs(s.a), 8)
    b_frag = [frags[s.b][x] for x in range(len(frags[s.b]))] if s.b in frags else packed(lw.regs(s.b), 4)
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
    # An f32 accumulator sums in f32 with fused multiply-adds, as mma and the CPU
    # backend do (dot may reassociate); wider or narrower float accumulators sum in
    # f64 (f16/bf16 products are exact there), integers in 64 bits.
    if is_float:
        wt = T.f32 if acc.dtype.nbits == 32 and max(a.dtype.nbits, b.dtype.nbits) <= 32 else T.f64
    else:
        wt = T.s64 if acc.dtype.is_signed else T.u64
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


# ----------------------------------------------------------------- ldmatrix
# A ConvertLayout whose result is an mma A or B operand (f16/bf16, 2-D, its
# layout outer * fragment atom) goes through the swizzled scratch the shared
# plan gave it (`ldmatrix_shared_layout`): the producer's threads store their
# elements as f16x2 pairs (one st.shared.v4 per 8 consecutive elements where
# the producer layout allows), then every warp reads its fragments with
# ldmatrix.x4 (A: four 8x8 matrices of one 16x16 atom; B, stored k-major:
# .trans, two 16x8 atoms side by side, or .x2 for a lone atom). The fragment
# registers are handed to `_dot_mma` (no repacking); the tile's f32 element
# registers are also defined (exact widening) for any other consumer.


def _mma_frags(lw) -> dict:
    """tile -> {atom index: tuple of b32 fragment registers} (per Lowerer)."""
    return lw.__dict__.setdefault("_g2_mma_frags", {})


def _dot_users(lw) -> dict:
    """tile -> ("a" | "b", dot) for the operands of every Dot of the kernel."""
    def make():
        from .lower_to_threads import _walk
        users = {}
        for st in _walk(lw.kernel.body):
            if isinstance(st, vm.Dot):
                users.setdefault(st.a, ("a", st))
                users.setdefault(st.b, ("b", st))
        return users
    if "_g2_dot_users" not in lw.__dict__:
        lw.__dict__["_g2_dot_users"] = make()
    return lw.__dict__["_g2_dot_users"]


def _shared_plan(lw):
    if "_g2_shared_plan" not in lw.__dict__:
        from .shared_plan import plan_shared_memory
        lw.__dict__["_g2_shared_plan"] = plan_shared_memory(lw.kernel)
    return lw.__dict__["_g2_shared_plan"]


def _group_run(layout, cap: int) -> int:
    """Aligned groups of consecutive slots along the last dim (power of two <= cap)."""
    run = L.contiguous_dim_run(layout, layout.ndim - 1)
    run = min(run, cap)
    threads = np.arange(layout.num_threads)
    while run > 1:
        if all(not np.any(np.asarray(layout.map(threads, np.full_like(threads, f))[-1]) % run)
               for f in range(0, layout.local_size, run)):
            return run
        run //= 2
    return 1


def lower_convert_for_mma(lw, s) -> bool:
    """Lower ConvertLayout `s` with ldmatrix when its result feeds an mma
    operand (see above); False when it does not apply."""
    out, x = s.out, s.x
    use = _dot_users(lw).get(out)
    if use is None or out.ndim != 2 or out.dtype.name not in ("f16", "bf16") or x.dtype != out.dtype:
        return False
    which, dot = use
    if _mma_plan(lw, dot) is None:
        return False
    plan = _shared_plan(lw)
    # The scratch lives where the plan put it: only when the lowering placed
    # the shared tensors by that same plan (not when it ran without one).
    if lw.shared_top < plan.total_bytes or any(plan.offsets.get(t) != o for t, o in lw.shared_offsets.items()):
        return False
    sl = plan.layouts.get(out)
    rows, cols = out.shape
    if sl is None or tuple(sl.strides) != (cols, 1) or cols % 8 or rows % 8:
        return False
    sw = sl.swizzle_fn
    if sw is not None and sw.bits and sw.base < 3:
        return False
    lay = lw.layout(out)
    per = _ATOMS[which][1]
    if _atom_bases(lay, which) is None:
        return False
    em = lw.em
    base = lw.cached(("g2_ldm_base", out), lambda: em.bin(T.BinOp.ADD, lw.shared_base(),
                                                          T.Imm(plan.offsets[out], U32), U32))
    pt = T.f16x2 if out.dtype.name == "f16" else T.bf16x2

    def element_address(r, c):
        flat = em.bin(T.BinOp.ADD, em.bin(T.BinOp.MUL, r, T.Imm(cols, U32), U32), c, U32) \
            if not isinstance(r, T.Imm) else em.bin(T.BinOp.ADD, c, T.Imm(r.value * cols, U32), U32)
        if sw is not None and sw.bits:
            mask = ((1 << sw.bits) - 1) << sw.base
            hi = em.bin(T.BinOp.AND, em.bin(T.BinOp.SHR, flat, T.Imm(sw.shift, U32), U32), T.Imm(mask, U32), U32)
            flat = em.bin(T.BinOp.XOR, flat, hi, U32)
        return em.bin(T.BinOp.ADD, base, em.bin(T.BinOp.SHL, flat, T.Imm(1, U32), U32), U32)

    def as_reg(v):
        return v if isinstance(v, T.Reg) else em.mov(v, U32)

    # Store: the producer's elements as f16x2 pairs, 16 bytes at a time.
    lx = lw.layout(x)
    run = _group_run(lx, 8)
    cx = slot_offsets(lx)
    xregs = lw.regs(x)
    writer = lw.writer_pred(lx)
    from .lower_cast import half2_of
    shadow = half2_of(lw, x, lx)     # the producer's f16x2 pairs, when it kept them
    em.emit(T.Barrier())
    for first in range(0, lx.local_size, run):
        # Shared addresses depend on %tid only: computed once, at entry.
        addr = lw.cached(("g2_st_addr", out, lx, first), lambda: element_address(
            as_reg(lw.add_index(lw.thread_index(lx, 0), int(cx[first, 0]))),
            as_reg(lw.add_index(lw.thread_index(lx, 1), int(cx[first, 1])))))
        if run == 1:
            h = em.cvt(xregs[first], out.dtype.name == "f16" and T.f16 or T.bf16, T.Rounding.RN)
            em.emit(T.Store(T.Space.SHARED, addr, 0, (em.mov(h, T.u16),), writer))
            continue
        words = []
        for j in range(0, run, 2):
            if shadow is not None:
                p = shadow[(first + j) // 2]
            else:
                p = em.reg(pt, "pk")
                em.emit(T.CvtPack(p, xregs[first + j + 1], xregs[first + j]))
            words.append(em.mov(p, T.b32, "pkb"))
        em.emit(T.Store(T.Space.SHARED, addr, 0, tuple(words), writer))
    em.emit(T.Barrier())
    # Load: ldmatrix per atom (A) or pair of atoms (B).
    lane = lw.digit(1, 32)
    lr = lw.cached(("g2_ldm_lr",), lambda: em.bin(
        T.BinOp.ADD, em.bin(T.BinOp.AND, lane, T.Imm(7, U32), U32),
        em.bin(T.BinOp.AND, lane, T.Imm(8, U32), U32), U32))
    def lane_col(delta):
        """Column offset of the lane's row address: matrices 2 and 3 (lanes 16-31) sit
        `delta` columns to the right of matrices 0 and 1."""
        return lw.cached(("g2_ldm_lc", delta), lambda: em.bin(
            T.BinOp.MUL, em.bin(T.BinOp.SHR, lane, T.Imm(4, U32), U32), T.Imm(delta, U32), U32))

    def corner(d, delta):
        """Thread part of the atom's top-left corner along d, plus the lane's ldmatrix row/col."""
        def make():
            ti = lw.thread_index(lay, d)
            ti = ti if ti is not None else em.mov(0, U32)
            g = em.bin(T.BinOp.SHR, lane, T.Imm(2, U32), U32)
            tig2 = em.bin(T.BinOp.SHL, em.bin(T.BinOp.AND, lane, T.Imm(3, U32), U32), T.Imm(1, U32), U32)
            off = (g if d == 0 else tig2) if which == "a" else (tig2 if d == 0 else g)
            return em.bin(T.BinOp.ADD, em.bin(T.BinOp.SUB, ti, off, U32), lr if d == 0 else lane_col(delta), U32)
        return lw.cached(("g2_ldm_corner", lay, d, 0 if d == 0 else delta), make)

    consts = slot_offsets(lay)
    n_atoms = lay.local_size // per
    corners = {a: (int(consts[a * per, 0]), int(consts[a * per, 1])) for a in range(n_atoms)}
    frags = {}
    todo = list(range(n_atoms))
    while todo:
        a = todo.pop(0)
        r0, c0 = corners[a]
        group, delta = [a], 8
        if which == "b":
            # Any atom of the same k rows to the right (the nearest) fills matrices 2-3.
            mates = sorted((corners[y][1] - c0, y) for y in todo if corners[y][0] == r0 and corners[y][1] > c0)
            if mates:
                delta, y = mates[0]
                group.append(y)
                todo.remove(y)
        nregs = 4 if which == "a" or len(group) == 2 else 2
        addr = lw.cached(("g2_ldm_addr", out, r0, c0, delta), lambda: element_address(
            em.bin(T.BinOp.ADD, corner(0, delta), T.Imm(r0, U32), U32),
            em.bin(T.BinOp.ADD, corner(1, delta), T.Imm(c0, U32), U32)))
        dsts = tuple(em.reg(T.b32, "ldm") for _ in range(nregs))
        em.emit(T.Ldmatrix(dsts, addr, which == "b"))
        if which == "a":
            frags[a] = dsts
        else:
            for k, y in enumerate(group):
                frags[y] = dsts[2 * k:2 * k + 2]
    if plan.reused_after(out):
        em.emit(T.Barrier())
    from .lower_cast import _widen_pair
    regs = []
    for a in range(n_atoms):
        for w in frags[a]:
            regs.extend(_widen_pair(em, w, out.dtype.name))
    _mma_frags(lw)[out] = frags
    lw.define(out, regs)
    return True
