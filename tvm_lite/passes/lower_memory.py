"""Memory instructions of the GPU lowering: global load/store/atomic_add,
shared load/store and copy_async.

Global accesses: element (slot) i of a thread sits at position
p_d = offset_d + index_d in every dimension; it is in range when
p_d < dim_d as unsigned (a negative p wraps to a huge value), and its
row-major element number is sum(p_d * stride_d). Loads are predicated with
the zero-initialised destination kept when out of range; stores are
predicated. Byte-aligned element types are accessed at their width.

Sub-byte / non-byte-aligned types (the packed bit stream):
* loads read the 1-3 bytes that hold the element (each byte predicated so
  that nothing past the stream is touched) and extract the field;
* stores: bytes can be shared between elements held by different threads,
  so a packed store goes through shared scratch and thread 0 writes the tile
  element by element with byte read-modify-writes (correct within a block;
  two blocks storing into one byte at the same time would race - the VM's
  sequential block order is not a GPU guarantee).
* atomic_add on 8/16-bit integers: red.add on the aligned 32-bit word with a
  carry fix-up from the returned old word (no CAS needed); f32, i32 and u32
  use the native atomic.

Vectorization: when a thread's layout has runs of consecutive slots along
the contiguous last dimension, a run is read with one 64/128-bit load under
a block-uniform runtime test (tensor base, last-dim offset and last dim all
multiples of the run), else the per-element code runs. Tiles of 1..8-bit
types whose runs span whole 32-bit words (`_words_load`) are read as words
of the packed stream (ld.global.v4.b32 where the run is 16 bytes) with a
byte-wise fallback, and the words go to the cast lowering (lower_cast.py),
which dequantizes them with bit tricks.
"""
from __future__ import annotations

import numpy as np

from ..errors import TLTargetError
from ..ir import layout as L
from ..ir import thread as T
from ..ir import vm
from ..ir.dtypes import DataType
from . import lower_values as V
from .lower_layouts import default_layout, slot_offsets

U32 = T.u32
_LOAD_TYPE = {8: T.u8, 16: T.u16, 32: T.u32, 64: T.u64}


def global_info(lw, g: vm.GlobalTensor):
    """(base u64, dims [u32], strides [u32]) of a global tensor, computed at entry."""
    def make():
        em = lw.em
        base = lw.param_regs[g]
        dims = []
        for d in g.shape:
            r = lw.scalar(d)
            if r.type.nbits == 64:
                r = em.cvt(r, U32)
            elif r.type != U32:
                r = em.mov(r, U32)
            dims.append(r)
        strides = [None] * len(dims)
        acc = None
        for d in range(len(dims) - 1, -1, -1):
            strides[d] = acc
            acc = dims[d] if acc is None else em.bin(T.BinOp.MUL, acc, dims[d], U32)
        return base, dims, strides
    return lw.cached(("global", g), make)


def _offsets(lw, offsets) -> list:
    out = []
    for o in offsets:
        r = lw.scalar(o)
        if r.type.nbits == 64:
            r = lw.em.cvt(r, U32)
        elif r.type != U32:
            r = lw.em.mov(r, U32)
        out.append(r)
    return out


class Access:
    """Positions, masks and element numbers of one tile access, per slot."""

    def __init__(self, lw, layout: L.RegisterLayout, offsets, dims, strides):
        self.lw = lw
        em = lw.em
        self.layout = layout
        self.consts = slot_offsets(layout)
        # offset_d + thread part, once per access.
        self.starts = []
        for d, off in enumerate(offsets):
            ti = lw.thread_index(layout, d)
            self.starts.append(off if ti is None else em.bin(T.BinOp.ADD, off, ti, U32))
        self.dims, self.strides = dims, strides

    def position(self, slot: int, d: int):
        return self.lw.add_index(self.starts[d], int(self.consts[slot, d]))

    def mask(self, slot: int):
        em = self.lw.em
        p = None
        for d, dim in enumerate(self.dims):
            if dim is None:
                continue
            p = em.pand(p, em.setp(T.Cmp.LT, self.position(slot, d), dim, U32))
        return p

    def flat(self, slot: int):
        em = self.lw.em
        acc = None
        for d in range(len(self.starts)):
            pos = self.position(slot, d)
            st = self.strides[d]
            term = pos if st is None else em.bin(T.BinOp.MUL, pos, st, U32)
            acc = term if acc is None else em.bin(T.BinOp.ADD, acc, term, U32)
        return acc


def _address(em, base, flat, scale: int):
    """base (u64) + flat * scale."""
    if isinstance(flat, T.Imm):
        return em.bin(T.BinOp.ADD, base, T.Imm(flat.value * scale, T.u64), T.u64)
    wide = em.reg(T.u64, "w")
    em.emit(T.Binary(T.BinOp.MUL_WIDE, wide, flat, T.Imm(scale, U32)))
    return em.bin(T.BinOp.ADD, base, wide, T.u64)


def load_bits(em, space, base, flat, pred, dt: DataType):
    """The bit pattern (u32/u64) of element number `flat` of a tensor at `base`
    (u64 global / u32 shared address); 0 where pred is false."""
    bt = V.bits_type(dt)
    if dt.is_byte_aligned:
        lt = _LOAD_TYPE[dt.nbits]
        r = _zero_byte(em, "ld") if lt.nbits == 8 else em.mov(0, lt, "ld")
        addr = _address(em, base, flat, dt.nbits // 8) if space is T.Space.GLOBAL else \
            _shared_address(em, base, flat, dt.nbits // 8)
        em.emit(T.Load((r,), space, addr, 0, pred))
        return r if lt == bt else em.cvt(r, bt)
    N = dt.nbits
    wt = U32 if N <= 25 else T.u64
    if isinstance(flat, T.Imm):
        flat = em.mov(flat, U32)
    bitpos = em.reg(T.u64, "bp")
    em.emit(T.Binary(T.BinOp.MUL_WIDE, bitpos, flat, T.Imm(N, U32)))
    byte = em.bin(T.BinOp.SHR, bitpos, T.Imm(3, U32), T.u64)
    sh = em.cvt(em.bin(T.BinOp.AND, bitpos, T.Imm(7, T.u64), T.u64), U32)
    if space is T.Space.GLOBAL:
        addr = em.bin(T.BinOp.ADD, base, byte, T.u64)
    else:
        addr = em.bin(T.BinOp.ADD, base, em.cvt(byte, U32), U32)
    span = em.bin(T.BinOp.ADD, sh, T.Imm(N, U32), U32)
    acc = None
    for j in range((7 + N + 7) // 8):
        pj = pred if j == 0 else em.pand(pred, em.setp(T.Cmp.GT, span, T.Imm(8 * j, U32), U32))
        r = _zero_byte(em, "ldb")
        em.emit(T.Load((r,), space, addr, j, pj))
        w = em.cvt(r, wt)
        if j:
            w = em.bin(T.BinOp.SHL, w, T.Imm(8 * j, U32), wt)
        acc = w if acc is None else em.bin(T.BinOp.OR, acc, w, wt)
    v = em.bin(T.BinOp.SHR, acc, sh, wt)
    v = em.bin(T.BinOp.AND, v, T.Imm(dt.mask, wt), wt)
    return v if wt == bt else em.cvt(v, bt)


def _zero_byte(em, hint: str) -> T.Reg:
    """A zeroed 8-bit register (the destination of a predicated byte load).
    A cvt from a 16-bit immediate, because PTX has no mov.b8."""
    r = em.reg(T.u8, hint)
    em.emit(T.Cvt(r, T.Imm(0, T.u16)))
    return r


def _shared_address(em, base, flat, scale: int):
    if isinstance(flat, T.Imm):
        return em.bin(T.BinOp.ADD, base, T.Imm(flat.value * scale, U32), U32)
    off = flat if scale == 1 else em.bin(T.BinOp.MUL, flat, T.Imm(scale, U32), U32)
    return em.bin(T.BinOp.ADD, base, off, U32)


def store_bits_aligned(em, space, base, flat, pred, bits, dt: DataType) -> None:
    st = _LOAD_TYPE[dt.nbits]
    v = bits if bits.type == st else em.cvt(bits, st)
    addr = _address(em, base, flat, dt.nbits // 8) if space is T.Space.GLOBAL else \
        _shared_address(em, base, flat, dt.nbits // 8)
    em.emit(T.Store(space, addr, 0, (v,), pred))


def store_bits_packed_serial(em, space, base, flat, pred, bits, dt: DataType) -> None:
    """Read-modify-write the bytes of one packed element (one writer only)."""
    N = dt.nbits
    if N > 25:
        raise TLTargetError(f"cuda: stores of {dt.name} (packed, over 25 bits) are not supported")
    wt = U32
    if isinstance(flat, T.Imm):
        flat = em.mov(flat, U32)
    bitpos = em.reg(T.u64, "bp")
    em.emit(T.Binary(T.BinOp.MUL_WIDE, bitpos, flat, T.Imm(N, U32)))
    byte = em.bin(T.BinOp.SHR, bitpos, T.Imm(3, U32), T.u64)
    sh = em.cvt(em.bin(T.BinOp.AND, bitpos, T.Imm(7, T.u64), T.u64), U32)
    addr = em.bin(T.BinOp.ADD, base, byte, T.u64) if space is T.Space.GLOBAL else \
        em.bin(T.BinOp.ADD, base, em.cvt(byte, U32), U32)
    b = bits if bits.type == wt else em.cvt(bits, wt)
    val = em.bin(T.BinOp.SHL, b, sh, wt)
    msk = em.bin(T.BinOp.SHL, T.Imm(dt.mask, wt), sh, wt)
    span = em.bin(T.BinOp.ADD, sh, T.Imm(N, U32), U32)
    for j in range((7 + N + 7) // 8):
        pj = pred if j == 0 else em.pand(pred, em.setp(T.Cmp.GT, span, T.Imm(8 * j, U32), U32))
        old = _zero_byte(em, "ob")
        em.emit(T.Load((old,), space, addr, j, pj))
        o = em.cvt(old, wt)
        vj = em.bin(T.BinOp.SHR, val, T.Imm(8 * j, U32), wt) if j else val
        mj = em.bin(T.BinOp.SHR, msk, T.Imm(8 * j, U32), wt) if j else msk
        new = em.bin(T.BinOp.OR, em.bin(T.BinOp.AND, o, em.un(T.UnOp.NOT, mj, wt), wt),
                     em.bin(T.BinOp.AND, vj, mj, wt), wt)
        em.emit(T.Store(space, addr, j, (em.cvt(new, T.u8),), pj))


# ------------------------------------------------------------------ global


def lower_load(lw, s: vm.Load) -> None:
    g, out = s.src, s.out
    lay = lw.layout(out)
    base, dims, strides = global_info(lw, g)
    acc = Access(lw, lay, _offsets(lw, s.offsets), dims, strides)
    from .lower_cast import packed_run
    words_run = packed_run(lay, g.dtype.nbits) \
        if (g.dtype.nbits <= 8 or g.dtype.name in ("f16", "bf16")) and len(dims) else 0
    run = _vector_run(lay, g.dtype)
    if words_run:
        regs = _words_load(lw, acc, base, g.dtype, words_run, s.offsets, out)
    elif run > 1:
        regs = _vector_load(lw, acc, base, g.dtype, run, s.offsets)
    else:
        regs = [_load_slot(lw, acc, base, g.dtype, slot) for slot in range(lay.local_size)]
    lw.define(out, regs)


def _load_slot(lw, acc: Access, base, dt: DataType, slot: int):
    em = lw.em
    bits = load_bits(em, T.Space.GLOBAL, base, acc.flat(slot), acc.mask(slot), dt)
    return V.decode_bits(em, bits, dt)


def _vector_run(lay: L.RegisterLayout, dt: DataType) -> int:
    """Slots per vector access along the last dim (power of two, <= 128 bits)."""
    if not dt.is_byte_aligned or lay.ndim == 0:
        return 1
    run = L.contiguous_dim_run(lay, lay.ndim - 1)
    while run > 1 and run * dt.nbits > 128:
        run //= 2
    return run


def _vector_ok(lw, acc: Access, base, offsets, run: int, es: int, elems_aligned: bool = False):
    """Block-uniform: base aligned (to run * es bytes, or to es bytes when
    `elems_aligned`), last-dim offset and size multiples of run."""
    em = lw.em
    off_last = _offsets(lw, offsets[-1:])[0]
    align = es if elems_aligned else run * es
    a = em.bin(T.BinOp.AND, em.cvt(base, U32), T.Imm(align - 1, U32), U32)
    p = em.setp(T.Cmp.EQ, a, T.Imm(0, U32), U32)
    p = em.pand(p, em.setp(T.Cmp.EQ, em.bin(T.BinOp.AND, off_last, T.Imm(run - 1, U32), U32), T.Imm(0, U32), U32))
    p = em.pand(p, em.setp(T.Cmp.EQ, em.bin(T.BinOp.AND, acc.dims[-1], T.Imm(run - 1, U32), U32),
                           T.Imm(0, U32), U32))
    return p


def _vector_load(lw, acc: Access, base, dt: DataType, run: int, offsets) -> list:
    em = lw.em
    lay = acc.layout
    es = dt.nbits // 8
    # Pack sub-32-bit elements into b32 words for the vector access.
    per_word = max(1, 32 // dt.nbits)
    word_t = U32 if dt.nbits <= 32 else T.u64
    words_per_run = run // per_word if dt.nbits < 32 else run
    ok = _vector_ok(lw, acc, base, offsets, run, es)
    bits_regs = [em.reg(V.bits_type(dt), "vb") for _ in range(lay.local_size)]
    # Vector path.
    em.open()
    for first in range(0, lay.local_size, run):
        ws = tuple(em.reg(word_t, "vw") for _ in range(words_per_run))
        for w in ws:
            em.emit(T.Mov(w, T.Imm(0, word_t)))
        addr = _address(em, base, acc.flat(first), es)
        em.emit(T.Load(ws, T.Space.GLOBAL, addr, 0, acc.mask(first)))
        for k in range(run):
            w = ws[k // per_word] if dt.nbits < 32 else ws[k]
            if dt.nbits < 32:
                sh = (k % per_word) * dt.nbits
                v = em.bin(T.BinOp.SHR, w, T.Imm(sh, U32), U32) if sh else w
                v = em.bin(T.BinOp.AND, v, T.Imm(dt.mask, U32), U32)
            else:
                v = w
            em.emit(T.Mov(bits_regs[first + k], v))
    fast = em.close()
    # Element path.
    em.open()
    for slot in range(lay.local_size):
        b = load_bits(em, T.Space.GLOBAL, base, acc.flat(slot), acc.mask(slot), dt)
        em.emit(T.Mov(bits_regs[slot], b))
    slow = em.close()
    em.emit(T.If(ok, fast, slow))
    return [V.decode_bits(em, b, dt) for b in bits_regs]


def _words_load(lw, acc: Access, base, dt: DataType, run: int, offsets, out) -> list:
    """Fields of 1..8 bits (or f16/bf16: the words are then the tile's f16x2
    pairs, `lower_cast.record_half2`), `run` consecutive ones per aligned slot group
    (run * bits a multiple of 32, at most 256): each group is read as 32-bit words
    of the packed stream - one ld.global.v4/v2/b32 per group when the base,
    the last-dim offset and the last dim allow it (block-uniform test), else
    element by element (byte-aligned types) or byte by byte over the group's
    bit range (packed types, `_words_bytewise`), predicated and zero out of
    range, into the same words. The words are handed to the cast lowering
    (lower_cast.record_words); the element registers are extracted from them."""
    from .lower_cast import record_half2, record_words
    em = lw.em
    lay = acc.layout
    n = dt.nbits
    nw = run * n // 32
    width = next(w for w in (4, 2, 1) if nw % w == 0)
    ok = _vector_ok(lw, acc, base, offsets, run, 4 * width, elems_aligned=True)
    groups = []
    for first in range(0, lay.local_size, run):
        ws = [em.reg(U32, "pw") for _ in range(nw)]
        for w in ws:
            em.emit(T.Mov(w, T.Imm(0, U32)))
        groups.append(ws)
    # Vector path: the group's first field starts a (width*4)-byte aligned word.
    em.open()
    for gi, first in enumerate(range(0, lay.local_size, run)):
        flat = acc.flat(first)
        if isinstance(flat, T.Imm):
            flat = em.mov(flat, U32)
        bitpos = em.reg(T.u64, "bp")
        em.emit(T.Binary(T.BinOp.MUL_WIDE, bitpos, flat, T.Imm(n, U32)))
        addr = em.bin(T.BinOp.ADD, base, em.bin(T.BinOp.SHR, bitpos, T.Imm(3, U32), T.u64), T.u64)
        pred = acc.mask(first)
        for i in range(0, nw, width):
            em.emit(T.Load(tuple(groups[gi][i:i + width]), T.Space.GLOBAL, addr, 4 * i, pred))
    fast = em.close()
    # Unaligned base or ragged last dim: element loads for byte-aligned types
    # (naturally aligned), byte loads of the group's bit range for packed ones.
    em.open()
    for gi, first in enumerate(range(0, lay.local_size, run)):
        if dt.is_byte_aligned:
            ws = groups[gi]
            for k in range(run):
                b = load_bits(em, T.Space.GLOBAL, base, acc.flat(first + k), acc.mask(first + k), dt)
                wi, sh = divmod(k * n, 32)
                part = em.bin(T.BinOp.SHL, b, T.Imm(sh, U32), U32) if sh else b
                em.emit(T.Binary(T.BinOp.OR, ws[wi], ws[wi], part))
        else:
            _words_bytewise(lw, acc, base, dt, run, first, groups[gi])
    slow = em.close()
    em.emit(T.If(ok, fast, slow))
    record_words(lw, out, lay, run, groups)
    if dt.name in ("f16", "bf16"):
        record_half2(lw, out, lay, [w for ws in groups for w in ws])
    regs = []
    for ws in groups:
        for k in range(run):
            wi, sh = divmod(k * n, 32)
            v = em.bin(T.BinOp.SHR, ws[wi], T.Imm(sh, U32), U32) if sh else ws[wi]
            if sh + n > 32:
                v = em.bin(T.BinOp.OR, v, em.bin(T.BinOp.SHL, ws[wi + 1], T.Imm(32 - sh, U32), U32), U32)
            if n < 32:
                v = em.bin(T.BinOp.AND, v, T.Imm(dt.mask, U32), U32)
            regs.append(V.decode_bits(em, v, dt))
    return regs


def _words_bytewise(lw, acc: Access, base, dt: DataType, run: int, first: int, ws) -> None:
    """One group's words from single-byte loads: the group's fields are the
    contiguous stream bits [flat0 * N, flat0 * N + run * N) of one row; read
    the bytes that hold valid fields (the row's remaining ones, at most run),
    shift the stream down by the sub-byte start (funnel shifts) and clear the
    bits of fields past the row's end (they belong to the next row)."""
    em = lw.em
    n = dt.nbits
    nw = len(ws)
    last = len(acc.dims) - 1
    pred = acc.mask(first)               # row in range and its first field too
    col0 = acc.position(first, last)
    valid = em.bin(T.BinOp.MIN, em.bin(T.BinOp.SUB, acc.dims[last], col0, U32), T.Imm(run, U32), U32)
    nbits = em.bin(T.BinOp.MUL, valid, T.Imm(n, U32), U32)
    flat = acc.flat(first)
    if isinstance(flat, T.Imm):
        flat = em.mov(flat, U32)
    bitpos = em.reg(T.u64, "bp")
    em.emit(T.Binary(T.BinOp.MUL_WIDE, bitpos, flat, T.Imm(n, U32)))
    addr = em.bin(T.BinOp.ADD, base, em.bin(T.BinOp.SHR, bitpos, T.Imm(3, U32), T.u64), T.u64)
    sh = em.bin(T.BinOp.AND, em.cvt(bitpos, U32), T.Imm(7, U32), U32)
    span = em.bin(T.BinOp.ADD, sh, nbits, U32)          # stream bits to read from addr
    raw = [None] * (nw + 1)
    for j in range(4 * nw + 1):
        pj = em.pand(pred, em.setp(T.Cmp.GT, span, T.Imm(8 * j, U32), U32))
        b = _zero_byte(em, "ldb")
        em.emit(T.Load((b,), T.Space.GLOBAL, addr, j, pj))
        w = em.cvt(b, U32)
        if j % 4:
            w = em.bin(T.BinOp.SHL, w, T.Imm(8 * (j % 4), U32), U32)
        k = j // 4
        raw[k] = w if raw[k] is None else em.bin(T.BinOp.OR, raw[k], w, U32)
    for k in range(nw):
        v = em.reg(U32, "sw")
        em.emit(T.Shf(v, raw[k], raw[k + 1], sh, False, False))
        # keep the bits below nbits - 32k (all of them from 32 on)
        keep = em.bin(T.BinOp.MIN, em.bin(T.BinOp.SUB, em.bin(T.BinOp.MAX, nbits, T.Imm(32 * k, U32), U32),
                                          T.Imm(32 * k, U32), U32), T.Imm(32, U32), U32)
        mask = em.bin(T.BinOp.SUB, em.bin(T.BinOp.SHL, T.Imm(1, U32), keep, U32), T.Imm(1, U32), U32)
        em.emit(T.Mov(ws[k], em.bin(T.BinOp.AND, v, mask, U32)))


def lower_store(lw, s, atomic: bool) -> None:
    em = lw.em
    g, x = s.dst, s.value
    dt = g.dtype
    lay = lw.layout(x)
    regs = lw.regs(x)
    base, dims, strides = global_info(lw, g)
    if not dt.is_byte_aligned:
        if atomic:
            raise TLTargetError(f"cuda: atomic_add on {dt.name} (packed) is not supported")
        _store_packed_serial(lw, T.Space.GLOBAL, base, x, regs, lay, _offsets(lw, s.offsets), dims, strides,
                             x.dtype, dt)
        return
    acc = Access(lw, lay, _offsets(lw, s.offsets), dims, strides)
    writer = lw.writer_pred(lay)
    for slot, r in enumerate(regs):
        pred = em.pand(writer, acc.mask(slot))
        v = lw.cast_to(r, x.dtype, dt)
        flat = acc.flat(slot)
        if atomic:
            _atomic_add(lw, base, flat, pred, v, dt)
        else:
            store_bits_aligned(em, T.Space.GLOBAL, base, flat, pred, V.encode_bits(em, v, dt), dt)


def _atomic_add(lw, base, flat, pred, v, dt: DataType) -> None:
    em = lw.em
    if dt.name == "f32" or (dt.is_integer and dt.nbits == 32):
        t = T.f32 if dt.is_float else (T.s32 if dt.is_signed else U32)
        addr = _address(em, base, flat, 4)
        em.emit(T.AtomicAdd(T.Space.GLOBAL, addr, 0, v if v.type == t else em.mov(v, t), None, pred))
        return
    if dt.is_integer and dt.nbits in (8, 16):
        # Add into the aligned word, then undo the carry into the next field.
        byte_addr = _address(em, base, flat, dt.nbits // 8)
        lo = em.cvt(byte_addr, U32)
        shift = em.bin(T.BinOp.SHL, em.bin(T.BinOp.AND, lo, T.Imm(3, U32), U32), T.Imm(3, U32), U32)
        word = em.bin(T.BinOp.AND, byte_addr, T.Imm(~3 & 0xFFFFFFFFFFFFFFFF, T.u64), T.u64)
        field = em.bin(T.BinOp.AND, em.mov(v, U32) if v.type != U32 else v, T.Imm(dt.mask, U32), U32)
        old = em.reg(U32, "old")
        em.emit(T.AtomicAdd(T.Space.GLOBAL, word, 0, em.bin(T.BinOp.SHL, field, shift, U32), old, pred))
        old_field = em.bin(T.BinOp.AND, em.bin(T.BinOp.SHR, old, shift, U32), T.Imm(dt.mask, U32), U32)
        carry = em.setp(T.Cmp.GT, em.bin(T.BinOp.ADD, old_field, field, U32), T.Imm(dt.mask, U32), U32)
        undo_shift = em.bin(T.BinOp.ADD, shift, T.Imm(dt.nbits, U32), U32)
        undo = em.bin(T.BinOp.SUB, T.Imm(0, U32), em.bin(T.BinOp.SHL, T.Imm(1, U32), undo_shift, U32), U32)
        em.emit(T.AtomicAdd(T.Space.GLOBAL, word, 0, undo, None, em.pand(pred, carry)))
        return
    raise TLTargetError(f"cuda: atomic_add on {dt.name} tensors is not supported (f32, 8/16/32-bit integers are)")


def _store_packed_serial(lw, space, base, x, regs, lay, offsets, dims, strides, src_dt, dt) -> None:
    """Packed store: the tile's patterns through scratch, thread 0 writes them."""
    from .lower_to_threads import Affine
    em = lw.em
    bits = [V.encode_bits(em, lw.cast_to(r, src_dt, dt), dt) for r in regs]
    bits = [b if b.type == U32 else em.cvt(b, U32) for b in bits]
    scratch = lw.scratch(x.size * 4)
    em.emit(T.Barrier())
    lw.write_scratch(scratch, lay, Affine.row_major(x.shape), bits, 4)
    em.emit(T.Barrier())
    em.open()
    i = em.reg(T.s32, "pi")
    em.emit(T.Mov(i, T.Imm(-1, T.s32)))
    em.open()
    em.emit(T.Mov(i, em.bin(T.BinOp.ADD, i, T.Imm(1, T.s32), T.s32)))
    em.emit(T.Break(em.setp(T.Cmp.GE, i, T.Imm(x.size, T.s32))))
    iu = em.mov(i, U32)
    b = em.reg(U32, "pb")
    em.emit(T.Load((b,), T.Space.SHARED, em.bin(T.BinOp.ADD, scratch, em.bin(T.BinOp.MUL, iu, T.Imm(4, U32), U32),
                                                 U32), 0))
    # Tile index of element i (row-major), then its position in the tensor.
    rest = iu
    idx = [None] * x.ndim
    for d in range(x.ndim - 1, -1, -1):
        n = x.shape[d]
        idx[d] = em.bin(T.BinOp.REM, rest, T.Imm(n, U32), U32) if d else rest
        if d:
            rest = em.bin(T.BinOp.DIV, rest, T.Imm(n, U32), U32)
    pred, flat = None, None
    for d in range(x.ndim):
        pos = em.bin(T.BinOp.ADD, offsets[d], idx[d], U32)
        if dims[d] is not None:
            pred = em.pand(pred, em.setp(T.Cmp.LT, pos, dims[d], U32))
        term = pos if strides[d] is None else em.bin(T.BinOp.MUL, pos, strides[d], U32)
        flat = term if flat is None else em.bin(T.BinOp.ADD, flat, term, U32)
    store_bits_packed_serial(em, space, base, flat, pred, b, dt)
    em.emit(T.Loop(em.close()))
    serial = em.close()
    only0 = em.setp(T.Cmp.EQ, lw.tid(), T.Imm(0, U32), U32)
    em.emit(T.If(only0, serial))
    em.emit(T.Barrier())


# ------------------------------------------------------------------ shared


class SharedAccess:
    """Element numbers (after the shared layout's strides and swizzle) per slot."""

    def __init__(self, lw, t: vm.SharedTensor, layout: L.RegisterLayout, offsets):
        from .lower_to_threads import shared_layout_of
        self.lw = lw
        self.sl = shared_layout_of(t)
        self.consts = slot_offsets(layout)
        em = lw.em
        self.starts = []
        for d, off in enumerate(offsets):
            ti = lw.thread_index(layout, d)
            self.starts.append(off if ti is None else em.bin(T.BinOp.ADD, off, ti, U32))

    def flat(self, slot: int):
        em = self.lw.em
        acc = None
        for d, st in enumerate(self.sl.strides):
            if st == 0:
                continue
            pos = self.lw.add_index(self.starts[d], int(self.consts[slot, d]))
            term = pos if st == 1 else em.bin(T.BinOp.MUL, pos, T.Imm(st, U32), U32)
            acc = term if acc is None else em.bin(T.BinOp.ADD, acc, term, U32)
        if acc is None:
            acc = em.mov(0, U32)
        sw = self.sl.swizzle_fn
        if sw is not None and sw.bits:
            mask = ((1 << sw.bits) - 1) << sw.base
            hi = em.bin(T.BinOp.AND, em.bin(T.BinOp.SHR, acc, T.Imm(sw.shift, U32), U32), T.Imm(mask, U32), U32)
            acc = em.bin(T.BinOp.XOR, acc, hi, U32)
        return acc


def shared_base_of(lw, t: vm.SharedTensor):
    return lw.cached(("sbase", t), lambda: lw.em.bin(T.BinOp.ADD, lw.shared_base(),
                                                     T.Imm(lw.shared_offsets[t], U32), U32))


def lower_load_shared(lw, s: vm.LoadShared) -> None:
    em = lw.em
    lay = lw.layout(s.out)
    offsets = _offsets(lw, s.offsets) if s.offsets else [T.Imm(0, U32)] * s.src.ndim
    acc = SharedAccess(lw, s.src, lay, offsets)
    base = shared_base_of(lw, s.src)
    regs = []
    for slot in range(lay.local_size):
        bits = load_bits(em, T.Space.SHARED, base, acc.flat(slot), None, s.src.dtype)
        regs.append(V.decode_bits(em, bits, s.src.dtype))
    lw.define(s.out, regs)


def lower_store_shared(lw, s: vm.StoreShared) -> None:
    em = lw.em
    x, t = s.value, s.dst
    lay = lw.layout(x)
    offsets = _offsets(lw, s.offsets) if s.offsets else [T.Imm(0, U32)] * t.ndim
    base = shared_base_of(lw, t)
    regs = lw.regs(x)
    if not t.dtype.is_byte_aligned:
        _store_packed_shared(lw, s, base, offsets)
        return
    acc = SharedAccess(lw, t, lay, offsets)
    writer = lw.writer_pred(lay)
    for slot, r in enumerate(regs):
        v = lw.cast_to(r, x.dtype, t.dtype)
        store_bits_aligned(em, T.Space.SHARED, base, acc.flat(slot), writer, V.encode_bits(em, v, t.dtype), t.dtype)


def _store_packed_shared(lw, s: vm.StoreShared, base, offsets) -> None:
    from .lower_to_threads import shared_layout_of
    sl = shared_layout_of(s.dst)
    if sl.swizzle_fn is not None and sl.swizzle_fn.bits:
        raise TLTargetError("cuda: swizzled shared tensors of packed (sub-byte) types are not supported")
    x = s.value
    dims = [None] * x.ndim
    strides = [T.Imm(st, U32) for st in sl.strides]
    _store_packed_serial(lw, T.Space.SHARED, base, x, lw.regs(x), lw.layout(x), offsets, dims, strides,
                         x.dtype, s.dst.dtype)


def lower_copy_async(lw, s: vm.CopyAsync) -> None:
    """cp.async 16-byte copies (zero-filled out of range through src-size)
    when the element type, the shared layout and a block-uniform runtime test
    (global base 16-byte aligned, last-dim offset and size multiples of the
    chunk) allow; otherwise a synchronous copy: every thread loads its share
    of the window (masked: 0 out of range) and stores it to shared memory. The
    program's wait_async and barrier order both like the asynchronous copy."""
    em = lw.em
    t, g = s.dst, s.src
    lay = default_layout(t.shape, lw.threads, t.dtype.nbits)
    base_g, dims, strides = global_info(lw, g)
    offsets = _offsets(lw, s.offsets)
    acc = Access(lw, lay, offsets, dims, strides)
    sacc = SharedAccess(lw, t, lay, [T.Imm(0, U32)] * t.ndim)
    sbase = shared_base_of(lw, t)
    writer = lw.writer_pred(lay)
    chunk = _cp_async_chunk(lw, t, lay)
    if chunk:
        es = t.dtype.nbits // 8
        ok = _vector_ok(lw, acc, base_g, s.offsets, chunk, es)
        em.open()
        for first in range(0, lay.local_size, chunk):
            mask = acc.mask(first)
            size = None if mask is None else em.selp(T.Imm(16, U32), T.Imm(0, U32), mask, U32)
            dst = _shared_address(em, sbase, sacc.flat(first), es)
            src = _address(em, base_g, acc.flat(first), es)
            em.emit(T.CpAsync(dst, src, 16, size, writer))
        fast = em.close()
        lw.__dict__["_g2_uncommitted"] = True
        em.open()
        _copy_sync(lw, t, g, lay, acc, sacc, sbase, base_g, writer)
        em.emit(T.If(ok, fast, em.close()))
        return
    _copy_sync(lw, t, g, lay, acc, sacc, sbase, base_g, writer)


def _cp_async_chunk(lw, t: vm.SharedTensor, lay) -> int:
    """Elements per 16-byte cp.async chunk when every chunk of the copy is 16
    contiguous, 16-byte aligned bytes in shared memory and along the global
    last dimension (one thread's aligned slot group); else 0."""
    from .lower_to_threads import shared_layout_of
    dt = t.dtype
    if not dt.is_byte_aligned or dt.nbits > 64 or t.ndim == 0:
        return 0
    e = 128 // dt.nbits
    sl = shared_layout_of(t)
    sw = sl.swizzle_fn
    if (t.shape[-1] % e or sl.strides[-1] != 1 or any(st % e for st in sl.strides[:-1])
            or (sw is not None and sw.bits and sw.base < e.bit_length() - 1)
            or lw.shared_offsets.get(t, 1) % 16):
        return 0
    if L.contiguous_dim_run(lay, lay.ndim - 1) < e:
        return 0
    threads = np.arange(lay.num_threads)
    for first in range(0, lay.local_size, e):
        if np.any(np.asarray(lay.map(threads, np.full_like(threads, first))[-1]) % e):
            return 0
    return e


def lower_commit_async(lw, s) -> None:
    lw.__dict__["_g2_uncommitted"] = False
    lw.em.emit(T.CpAsyncCommit())


def lower_wait_async(lw, s) -> None:
    """cp.async.wait_group n. The frontend commits after every copy_async; a
    VM program that waits on copies it never committed (in program order)
    gets them committed as a group here first."""
    if lw.__dict__.get("_g2_uncommitted"):
        lower_commit_async(lw, s)
    lw.em.emit(T.CpAsyncWait(int(s.n)))


def _copy_sync(lw, t, g, lay, acc, sacc, sbase, base_g, writer) -> None:
    em = lw.em
    if not t.dtype.is_byte_aligned:
        # Through registers and the packed shared store.
        regs = [V.decode_bits(em, load_bits(em, T.Space.GLOBAL, base_g, acc.flat(k), acc.mask(k), g.dtype), g.dtype)
                for k in range(lay.local_size)]
        tmp = vm.RegisterTensor(f"{t.name}_copy", t.dtype, t.shape, lay)
        lw.layouts[tmp] = lay
        lw.tiles[tmp] = regs
        _store_packed_shared(lw, vm.StoreShared(t, tmp, ()), sbase, [T.Imm(0, U32)] * t.ndim)
        return
    for k in range(lay.local_size):
        bits = load_bits(em, T.Space.GLOBAL, base_g, acc.flat(k), acc.mask(k), g.dtype)
        store_bits_aligned(em, T.Space.SHARED, sbase, sacc.flat(k), writer, bits, t.dtype)
