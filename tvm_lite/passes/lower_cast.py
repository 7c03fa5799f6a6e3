"""`cast` of packed low-bit tiles to f16 / bf16 through bit tricks, and
element-wise f16/bf16 arithmetic on packed pairs.

    lower_cast(lw, s: vm.Cast) -> bool                (True when it lowered s)
    lower_elementwise_half2(lw, s: vm.Elementwise) -> bool
    record_words(lw, tile, layout, run, groups)       (by the global load)
    record_half2(lw, tile, layout, pairs) / half2_of(lw, tile, layout)
    assign_records(lw, s: vm.Assign)                  (by lower_Assign)
    packed_run(layout, nbits), defined_once(lw, tile)

A cast from any 1..8-bit integer or float type to f16/bf16 uses
`select_dequant.dequant_packed` (lop3/prmt field extraction, the magic-number
int -> f16 trick, exponent placement for small floats) on 32-bit words that
hold consecutive fields of one thread, instead of one conversion per element.

Assumes: the tile's layout gives each thread aligned groups of `run >= 2`
consecutive elements along the last (contiguous) dimension
(`layout.contiguous_dim_run`), with run * bits a multiple of 32. The words
come either from the global load that produced the tile (`record_words`:
the raw bit stream the load read, so nothing is unpacked and repacked) or,
for integer tiles, are repacked from the element registers with shifts and
ors. Records (words, pairs) of a tile are made by its first definition and
are used where they describe its value (`_records_hold`): the tile has no
other writer, or every other writer is an Assign (a loop-carried tile, e.g.
a weight tile prefetched one iteration ahead), which `assign_records` makes
update the records in place too. Magnitude bounds kept with the pairs are
used only for tiles with one writer (a loop-carried value's bound is not
known). Guarantees: the result equals `lower_values.convert` bit for bit (the
dequant library rounds like cvt.rn). Any other cast returns False and the
generic element-wise lowering runs.

The tile's compute form stays one f32 register per f16/bf16 element
(lower_values.cf_type): each f16x2 half is widened with one exact
float -> float cvt (bf16: one shift / mask), never a cvt from an integer.
"""
from __future__ import annotations

import numpy as np

from ..ir import layout as L
from ..ir import thread as T
from ..ir import vm
from . import lower_values as V
from .select_dequant import dequant_packed, folds_offset, supports

U32 = T.u32


def _store(lw) -> dict:
    """Per-lowering map tile -> (layout, run, [words per slot group]); lives on
    the Lowerer instance (no module state)."""
    return lw.__dict__.setdefault("_g2_packed_words", {})


def defined_once(lw, tile: vm.RegisterTensor) -> bool:
    """Whether exactly one VM instruction writes `tile`. An Assign (loop-
    carried values) overwrites the tile's registers in place, so what its
    producer knew holds only for a tile defined once: mma fragments
    (lower_dot) and magnitude bounds. Words and pairs are kept up to date
    through Assigns (`_records_hold`)."""
    return len(_writers(lw).get(id(tile), ())) == 1


def _writers(lw) -> dict:
    """id(tile) -> the VM statements that write it, in program order (the
    first one defines it; the builder makes every later one an Assign).
    Lives on the Lowerer instance, like the records."""
    writers = lw.__dict__.get("_g2_writers")
    if writers is None:
        from .lower_to_threads import _walk
        writers = {}
        for st in _walk(lw.kernel.body):
            out = getattr(st, "out", None)
            if isinstance(out, vm.RegisterTensor):
                writers.setdefault(id(out), []).append(st)
        lw.__dict__["_g2_writers"] = writers
    return writers


def _records_hold(lw, tile: vm.RegisterTensor) -> bool:
    """Whether the records the first definition of `tile` left (words,
    pairs) hold its value wherever it is read: every later writer is an
    Assign, and `assign_records` keeps the records of an Assign's target up
    to date (a decision made from the program text, since a read in a loop
    body is lowered before the Assign that feeds the next iteration)."""
    return all(isinstance(st, vm.Assign) for st in _writers(lw).get(id(tile), [])[1:])


def assign_records(lw, s: vm.Assign) -> None:
    """`s.out <- s.x`: the target's records (from its first definition) take
    the source's value in their own registers, so that they stay valid across
    iterations. From the source's records of the same layout (and run) this
    is one mov per word or pair; otherwise they are rebuilt from the source's
    element registers (integer fields repacked, float fields re-encoded;
    f16/bf16 elements packed in pairs, exactly). Called before the element
    registers are moved."""
    if s.x is s.out:
        return
    em = lw.em
    words = _store(lw).get(s.out)
    if words is not None:
        lay, run, groups = words
        src = _store(lw).get(s.x)
        if src is not None and src[0] == lay and src[1] == run and _records_hold(lw, s.x):
            new = src[2]
        else:
            new = _repack(lw, lw.convert_layout(s.x, lay), s.x.dtype, run)
        for dst_words, src_words in zip(groups, new):
            for d, w in zip(dst_words, src_words):
                if d is not w:
                    em.emit(T.Mov(d, w))
    pairs = _half2_store(lw).get(s.out)
    if pairs is not None:
        lay, regs, _ = pairs
        new = half2_of(lw, s.x, lay)
        if new is None:
            elems = lw.convert_layout(s.x, lay)
            for j, d in enumerate(regs):
                em.emit(T.CvtPack(d, elems[2 * j + 1], elems[2 * j]))
            return
        for d, p in zip(regs, new):
            if d is not p:
                em.emit(T.Mov(d, p))


def record_words(lw, tile: vm.RegisterTensor, layout, run: int, groups) -> None:
    """The load of `tile` read each aligned group of `run` slots as the 32-bit
    words `groups[g]` (little-endian bit stream, field 0 at bit 0)."""
    _store(lw)[tile] = (layout, run, [tuple(g) for g in groups])


def packed_run(layout: L.RegisterLayout, nbits: int) -> int:
    """The group length (slots) for word access along the last dimension: a
    power of two, run * nbits a multiple of 32 and at most 256 (eight words:
    32 fields of 5 or 7 bits) - or 512 where 256 bits would leave an odd
    number of words (64 fields of 5 or 7 bits: v2 loads instead of b32
    ones), groups starting at multiples of run in every thread; 0 when
    there is none."""
    if layout.ndim == 0:
        return 0
    most = L.contiguous_dim_run(layout, layout.ndim - 1)
    run = most
    while run > 1 and run * nbits > 256:
        run //= 2
    if run * 2 <= most and (run * nbits) % 64 == 32:
        run *= 2
    if run < 2 or (run * nbits) % 32:
        return 0
    threads = np.arange(layout.num_threads)
    for first in range(0, layout.local_size, run):
        idx = layout.map(threads, np.full_like(threads, first))
        if np.any(np.asarray(idx[-1]) % run):
            return 0
    return run


def lower_cast(lw, s: vm.Cast) -> bool:
    src, dst = s.x.dtype, s.out.dtype
    if src == dst:
        return _lower_identity_cast(lw, s)
    if dst.name not in ("f16", "bf16") or src.nbits > 8 or not supports(src, dst):
        return False
    lay = lw.layout(s.out)
    run = packed_run(lay, src.nbits)
    if not run:
        return False
    rec = _store(lw).get(s.x) if _records_hold(lw, s.x) else None
    if rec is not None and rec[0] == lay and rec[1] == run:
        groups = rec[2]
    elif src.is_integer:
        groups = _repack(lw, lw.convert_layout(s.x, lay), src, run)
    else:
        return False
    em = lw.em

    def namer(hint, t):
        return em.reg(t, hint)

    # `cast(x) - c` (the zero point of unsigned weights) folds into the
    # conversion's final fma when the cast has no other reader.
    fused = _offset_consumer(lw, s)
    offset = fused[1] if fused is not None and folds_offset(src, dst, fused[1]) else 0
    regs, all_pairs = [], []
    for words in groups:
        stmts, pairs = dequant_packed(namer, list(words), src, dst, run, offset=offset)
        for st in stmts:
            em.emit(st)
        all_pairs.extend(pairs)
        for p in pairs:
            regs.extend(_widen_pair(em, p, dst.name))
    out = s.out
    if offset:
        # The consumer's result is defined here; s.out itself has no reader.
        out = fused[0].out
        _fused_store(lw).add(id(fused[0]))
    lw.define(out, regs)
    record_half2(lw, out, lay, all_pairs, bound=_cast_bound(src, dst, offset))
    return True


def _fused_store(lw) -> set:
    """ids of the element-wise statements already computed by a cast (lives on
    the Lowerer instance, like the other records)."""
    return lw.__dict__.setdefault("_g2_fused", set())


def _readers(lw) -> dict:
    """id(tile) -> the VM statements that read it (any field but `out`)."""
    readers = lw.__dict__.get("_g2_readers")
    if readers is None:
        import dataclasses
        from .lower_to_threads import _walk
        readers = {}
        for st in _walk(lw.kernel.body):
            for f in dataclasses.fields(st):
                if f.name == "out":
                    continue
                value = getattr(st, f.name)
                for v in (value if isinstance(value, tuple) else (value,)):
                    if isinstance(v, vm.RegisterTensor):
                        readers.setdefault(id(v), []).append(st)
        lw.__dict__["_g2_readers"] = readers
    return readers


def _offset_consumer(lw, s: vm.Cast):
    """(e, c) when the cast's only reader is e = `cast - c` or `cast + (-c)`
    (or `(-c) + cast`) with a constant c, of the same dtype, shape and layout."""
    if not s.x.dtype.is_integer or not defined_once(lw, s.out):
        return None
    readers = _readers(lw).get(id(s.out), [])
    if len(readers) != 1:
        return None
    e = readers[0]
    if not isinstance(e, vm.Elementwise) or len(e.args) != 2 or e.out.dtype != s.out.dtype \
            or tuple(e.out.shape) != tuple(s.out.shape) or lw.layout(e.out) != lw.layout(s.out):
        return None
    a, b = e.args
    if e.op == vm.ElementOp.SUB and a is s.out and _integral_const(b):
        return e, int(b.value)
    if e.op == vm.ElementOp.ADD and (a is s.out) != (b is s.out):
        c = b if a is s.out else a
        if _integral_const(c):
            return e, -int(c.value)
    return None


def _integral_const(c) -> bool:
    return isinstance(c, vm.Const) and not isinstance(c.value, bool) and float(c.value).is_integer()


def _cast_bound(src, dst, offset: int = 0) -> float | None:
    """The largest magnitude a cast of src values to dst (minus an integer
    offset) can give, when every src value is finite (None when src has inf
    or NaN)."""
    if src.is_float and (src.has_inf or src.has_nan):
        return None
    return float(min(max(abs(src.min - offset), abs(src.max - offset)), dst.max))


def _lower_identity_cast(lw, s: vm.Cast) -> bool:
    """cast(x, x.dtype) is x (every value is already rounded to its dtype):
    copies of the registers, and of x's f16x2 shadow, so a consumer of the
    cast (an mma operand) still finds the pairs. Copies, not x's registers:
    an Assign to x later updates x's pairs in place, and must not change
    the cast's value."""
    lay = lw.layout(s.out)
    em = lw.em
    regs = lw.convert_layout(s.x, lay)
    lw.define(s.out, [em.mov(r, r.type, "id") for r in regs])
    if s.out.dtype.name in _HALF2:
        pairs = half2_of(lw, s.x, lay)
        if pairs is not None:
            bound = _half2_store(lw)[s.x][2] if defined_once(lw, s.x) else None
            record_half2(lw, s.out, lay, [em.mov(p, p.type, "h2") for p in pairs], bound=bound)
    return True


def _repack(lw, regs, src, run: int) -> list:
    """Words of consecutive fields from element registers (compute form:
    integers as they are, floats re-encoded to their bit patterns)."""
    em = lw.em
    n = src.nbits
    groups = []
    for first in range(0, len(regs), run):
        words = [None] * (run * n // 32)
        for k in range(run):
            r = regs[first + k]
            if src.is_float:
                b = V.encode_bits(em, r, src)
            else:
                b = r if r.type == U32 else em.mov(r, U32)
                if src.is_signed:   # sign-extended compute form: keep the field
                    b = em.bin(T.BinOp.AND, b, T.Imm(src.mask, U32), U32)
            o = k * n
            wi, sh = o // 32, o % 32
            part = em.bin(T.BinOp.SHL, b, T.Imm(sh, U32), U32) if sh else b
            words[wi] = part if words[wi] is None else em.bin(T.BinOp.OR, words[wi], part, U32)
            if sh + n > 32:
                hi = em.bin(T.BinOp.SHR, b, T.Imm(32 - sh, U32), U32)
                words[wi + 1] = hi if words[wi + 1] is None else em.bin(T.BinOp.OR, words[wi + 1], hi, U32)
        groups.append([w if w is not None else em.mov(0, U32) for w in words])
    return groups


def _widen_pair(em, p: T.Reg, dst: str) -> list:
    """An f16x2 / bf16x2 register -> [low, high] in f32 (exact)."""
    b = em.mov(p, U32, "pb")
    if dst == "bf16":
        lo = em.bin(T.BinOp.SHL, b, T.Imm(16, U32), U32)
        hi = em.bin(T.BinOp.AND, b, T.Imm(0xFFFF0000, U32), U32)
        return [em.mov(lo, T.f32, "v"), em.mov(hi, T.f32, "v")]
    out = []
    for half in (b, em.bin(T.BinOp.SHR, b, T.Imm(16, U32), U32)):
        h = em.mov(em.cvt(half, T.u16), T.f16)
        out.append(em.cvt(h, T.f32))
    return out


# ------------------------------------------------------------ f16x2 shadows
# A 16-bit float tile whose producer had its values as packed pairs (the
# dequant above, a word-wise global load) keeps them as a "shadow": pair j
# holds slots 2j (low half) and 2j + 1 (high half). Element-wise mul/add/sub
# of such tiles run on the pairs (mul.rn.f16x2: the product / sum rounded
# once, as the interpreter's f16 arithmetic - f32 has 2p+2 bits, so its
# double rounding is innocuous), and the mma operand conversion stores the
# pairs without repacking. A pair with an inf or NaN half is redone element
# by element, because the VM saturates finite overflow to +-max where the
# packed instruction gives inf. The f32 element registers are still defined
# (exact widening) for any other consumer; unused ones are dead code.

_HALF2 = {"f16": T.f16x2, "bf16": T.bf16x2}


def _half2_store(lw) -> dict:
    return lw.__dict__.setdefault("_g2_half2", {})


def record_half2(lw, tile: vm.RegisterTensor, layout, pairs, bound: float | None = None) -> None:
    """Pairs (f16x2/bf16x2 registers, or u32 words) of `tile` in `layout`;
    `bound`, when known, is a finite bound on the magnitude of every element
    (then no element is inf or NaN)."""
    t = _HALF2[tile.dtype.name]
    em = lw.em
    regs = [p if p.type == t else em.mov(p, t, "h2") for p in pairs]
    _half2_store(lw)[tile] = (layout, regs, bound)


def half2_of(lw, tile: vm.RegisterTensor, layout):
    """The tile's pairs when it has a shadow in `layout`, else None."""
    rec = _half2_store(lw).get(tile)
    return rec[1] if rec is not None and rec[0] == layout and _records_hold(lw, tile) else None


def _half2_constant(lw, c, dt):
    """A scalar constant operand as a pair register holding it twice, or None
    when it is not a constant exactly representable in dt."""
    if not isinstance(c, vm.Const) or isinstance(c.value, bool):
        return None
    from ..ir.dtypes import decode, encode
    value = float(c.value)
    bits = int(encode(np.array([value]), dt)[0])
    if not np.isfinite(value) or float(decode(np.array([bits]), dt)[0]) != value:
        return None
    return lw.em.mov(T.Imm(bits * 0x10001, U32), _HALF2[dt.name], "hc")


def _operand_pairs(lw, a, out: vm.RegisterTensor, lay):
    """(pairs, magnitude bound or None) of an element-wise operand for `out`'s
    slot pairs: a tile's shadow (_broadcast_pairs) or a constant; None when
    the operand has no pair form."""
    if isinstance(a, vm.RegisterTensor):
        if a.dtype != out.dtype:
            return None
        pairs = _broadcast_pairs(lw, a, out, lay)
        if pairs is None:
            return None
        # The bound is of the first definition's value: only then the value read.
        return pairs, (_half2_store(lw)[a][2] if defined_once(lw, a) else None)
    const = _half2_constant(lw, a, out.dtype)
    if const is None:
        return None
    return [const] * (lay.local_size // 2), abs(float(a.value))


def _broadcast_pairs(lw, a: vm.RegisterTensor, out: vm.RegisterTensor, lay):
    """a's pairs at out's slot pairs when out's slots (2j, 2j+1) take a's slots
    (2i, 2i+1) in every thread (same layout, or a broadcast that keeps pairs)."""
    from .lower_layouts import relabel
    from .lower_to_threads import Affine
    la = lw.layout(a)
    pairs = half2_of(lw, a, la)
    if pairs is None:
        return None
    if tuple(a.shape) == tuple(out.shape) and la == lay:
        return list(pairs)
    strides = Affine.row_major(a.shape).coefs
    pad = len(out.shape) - len(a.shape)
    coefs = [0] * pad + [0 if n == 1 and m != 1 else st for n, m, st in zip(a.shape, out.shape[pad:], strides)]
    plan = relabel([(la, Affine.row_major(a.shape))], lay, Affine(coefs), a.size)
    if plan is None:
        return None
    out_pairs = []
    for j in range(0, len(plan), 2):
        (_, lo), (_, hi) = plan[j], plan[j + 1]
        if lo % 2 or hi != lo + 1:
            return None
        out_pairs.append(pairs[lo // 2])
    return out_pairs


_CHECK_PAIRS = 4    # pairs per overflow test: fewer tests vs. fewer live registers

_PAIR_OPS = {vm.ElementOp.MUL: T.BinOp.MUL, vm.ElementOp.ADD: T.BinOp.ADD, vm.ElementOp.SUB: T.BinOp.SUB}


def lower_elementwise_half2(lw, s: vm.Elementwise) -> bool:
    """mul/add/sub of 16-bit float tiles with shadows (or a tile and a
    constant), pairwise; False when it does not apply (then the element-wise
    lowering runs). When magnitude bounds show that no result can overflow
    (e.g. dequantized integers minus their zero point), the pairs need no
    overflow test."""
    if id(s) in _fused_store(lw):       # computed by the cast it reads
        return True
    out = s.out
    op = _PAIR_OPS.get(s.op)
    if op is None or out.dtype.name not in _HALF2 or len(s.args) != 2:
        return False
    if not any(isinstance(a, vm.RegisterTensor) for a in s.args):
        return False
    lay = lw.layout(out)
    if lay.local_size % 2:
        return False
    operands = [_operand_pairs(lw, a, out, lay) for a in s.args]
    if any(p is None for p in operands):
        return False
    em = lw.em
    dt = out.dtype
    t = _HALF2[dt.name]
    (ops_a, bound_a), (ops_b, bound_b) = operands
    bound = None
    if bound_a is not None and bound_b is not None:
        bound = bound_a * bound_b if s.op == vm.ElementOp.MUL else bound_a + bound_b
        if bound <= dt.max:     # |exact result| <= max: rounding cannot pass max either
            pairs = []
            for pa, pb in zip(ops_a, ops_b):
                d = em.reg(t, "h2")
                em.emit(T.Binary(op, d, pa, pb))
                pairs.append(d)
            _define_from_pairs(lw, out, lay, pairs, bound)
            return True
    # A half is inf or NaN iff its magnitude bits + (0x8000 - inf) carry into
    # bit 15 (no carry crosses halves: 0x7fff + 0x400 < 0x10000).
    bump = (0x8000 - (0x7C00 if dt.name == "f16" else 0x7F80)) * 0x10001
    pairs = []
    for g in range(0, len(ops_a), _CHECK_PAIRS):
        group, flags = [], None
        for pa, pb in zip(ops_a[g:g + _CHECK_PAIRS], ops_b[g:g + _CHECK_PAIRS]):
            d = em.reg(t, "h2")
            em.emit(T.Binary(op, d, pa, pb))
            mag = em.bin(T.BinOp.AND, em.mov(d, U32, "hb"), T.Imm(0x7FFF7FFF, U32), U32)
            f = em.bin(T.BinOp.ADD, mag, T.Imm(bump, U32), U32)
            flags = f if flags is None else em.bin(T.BinOp.OR, flags, f, U32)
            group.append((d, pa, pb))
        # Such a half may be a finite overflow, which the VM rounds to +-max:
        # then (rarely) redo the group element by element, as the generic lowering.
        big = em.setp(T.Cmp.NE, em.bin(T.BinOp.AND, flags, T.Imm(0x80008000, U32), U32), T.Imm(0, U32), U32)
        em.open()
        for d, pa, pb in group:
            halves = [lw.element(s.op, [(a, dt), (b, dt)], dt)
                      for a, b in zip(_widen_pair(em, pa, dt.name), _widen_pair(em, pb, dt.name))]
            em.emit(T.CvtPack(d, halves[1], halves[0]))
        em.emit(T.If(big, em.close()))
        pairs.extend(d for d, _, _ in group)
    _define_from_pairs(lw, out, lay, pairs, None)
    return True


def _define_from_pairs(lw, out: vm.RegisterTensor, lay, pairs, bound) -> None:
    """Define `out` from its pairs: the f32 element registers (exact widening;
    dead code unless some consumer needs them) and the shadow."""
    regs = []
    for p in pairs:
        regs.extend(_widen_pair(lw.em, p, out.dtype.name))
    lw.define(out, regs)
    record_half2(lw, out, lay, pairs, bound)
