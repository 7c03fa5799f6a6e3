"""CPU lowering of a dequantizing dot: `load` of a packed weight tile, `cast`
to f32, optional `x op constant` steps, `dot` -- the inner loop of every
quantized GEMV/GEMM (ops/quant_gemv.tl).

    %tb   = load(%b, offsets)          # WT[KB, BN], WT an N <= 8 bit type
    %tb_1 = cast(%tb) -> f32
    %tb_2 = elementwise(-, [%tb_1, 8.0])   # any + - * by constants (optional)
    %out  = dot(%ta, %tb_2, acc=%acc)  # f32 accumulator; no chain tile used elsewhere

The generic lowering stores the packed tile, decodes it into a float array
and then multiplies; here the weights go from global memory straight into
AVX-512 registers and into FMAs (`match` finds the pattern, `lower` emits
it). It is chosen by the statements' shape, never by a kernel's name.

Decoding (host with AVX-512F/BW; a 16-lane f32 vector is one zmm):
* Lanes. A 32-bit lane holds E consecutive fields (E = 8 for N <= 4, else 4),
  so one chunk of 16*E columns of a row is 2*E*N bytes: a plain 16/32/64-byte
  load, or a masked one (vmovdqu8) for 40/48/56 bytes. One one-source byte shuffle (vpermb/vpmovzx: a
  constant `shufflevector` LLVM selects) places each lane's bytes; for N = 5 and 7 a
  lane starts mid-byte and one variable shift (vpsrlvd) aligns it.
* Fields. Field t of every lane is `lane >> t*N` (one uniform shift; the
  mantissa decoding shifts only for fields reaching past bit 22); the bits
  above the field are left in place and ignored by the next step.
* Values, without an int -> float conversion where a table fits:
  N <= 4: a 16-entry f32 table through vpermps (which reads only the low
  4 index bits; entry i holds value(i mod 2^N)), for every int and float
  format; N = 5: a 32-entry table through vpermi2ps; N = 6 floats: the
  magnitude's 32-entry table and the sign bit xor-ed in; N >= 6 integers:
  the field is made an f32 mantissa in place (one vpternlogd: mask, exponent,
  sign bit flipped for signed) and one subtraction gives field + bias, with no
  shift while the field lies below bit 23 (see "mantissa" decoding below).
  Constant steps are folded into the table (u4's midpoint costs nothing),
  or follow the arithmetic decoders as vector ops; each is the f32
  operation the element-wise instruction performs, so results are equal.
* Column order. Vector t holds the columns e*E + t of the chunk (lane e), so
  the accumulators are kept in that order (a scratch array per dot) and
  permuted from and back to the tiles' order with shuffles once per dot.

Loop order (`_micro_kernel`): rows of the window in bands of BAND rows;
per band the chunks left to right, so memory is read a few whole rows at a
time (runs of contiguous lines the hardware prefetcher follows, plus a
software prefetch PREFETCH_ROWS ahead). For up to IB rows of `a` (IB*E <= 16
accumulator registers) each decoded vector feeds IB FMAs straight from
registers. For more rows the band (WIDE_BAND rows) is decoded once into an
L1 buffer, and a 4-row x 4-vector register-blocked FMA loop reads it.

Windows that are not wholly inside the tensor, or do not start on a byte
boundary, take the generic path (both versions are emitted behind one
test). Only the multiply-adds of the dot are fused (llvm.fma): the dot is
the instruction whose summation order the language leaves free.
"""
from __future__ import annotations

import dataclasses

import llvmlite.ir as ir
import numpy as np

from ..ir import vm
from ..ir.float_codec import decode_table
from .cpu_types import F32, I8, I32, I64, fits_f32
from .llvm import host

V16F = ir.VectorType(F32, 16)
V16I = ir.VectorType(I32, 16)
# Measured on znver4 (K=N=8192, u4): rows per band, and how far ahead (in rows)
# the weights are prefetched, into L2 (locality 2): a band is a few rows'
# worth of lines, which L1 cannot hold 16 rows ahead.
BAND = 4
WIDE_BAND = 16          # for many rows of a: decoded once per band into L1
WIDE_BLOCK = (4, 4)     # its register block: 4 rows of a x 4 vectors (16 accumulators)
PREFETCH_ROWS = 16
PREFETCH_LOCALITY = 2


@dataclasses.dataclass(frozen=True)
class DecodePlan:
    nbits: int
    per_lane: int          # fields per 32-bit lane (E)
    kind: str              # "lut16", "lut32", "lut32_sign", "int", "mantissa"
    signed: bool
    table: tuple           # f32 values indexed by pattern (lut kinds)
    ops: tuple = ()        # (op, constant) applied after decoding ("int": as vector ops;
                           # lut kinds: already in the table)
    bias: float = 0.0      # "mantissa": value(pattern) = field + bias (field sign-extended
                           # for signed types), exact in f32

    @property
    def chunk_cols(self) -> int:
        return 16 * self.per_lane

    @property
    def chunk_bytes(self) -> int:
        return 2 * self.per_lane * self.nbits


def _pattern_values(dt) -> list[float]:
    n = dt.nbits
    if dt.is_float:
        return [float(v) for v in decode_table(dt)]
    if dt.is_signed:
        return [float(p - (1 << n) if p >> (n - 1) else p) for p in range(1 << n)]
    return [float(p) for p in range(1 << n)]


def decode_plan(dt) -> DecodePlan | None:
    """How to decode fields of type dt to f32 vectors, or None (no fast path)."""
    n = dt.nbits
    if n > 8 or not (dt.is_integer or dt.is_float):
        return None
    per_lane = 8 if n <= 4 else 4
    if dt.is_float and n > 6:
        return None
    values = _pattern_values(dt)
    if any(v != v or abs(v) == float("inf") for v in values):
        return None
    if n <= 4:
        return DecodePlan(n, per_lane, "lut16", False, tuple(values[i % (1 << n)] for i in range(16)))
    if n == 5:
        return DecodePlan(n, per_lane, "lut32", False, tuple(values))
    if dt.is_float:      # n == 6: magnitude table of the 5 low bits, sign bit 5
        return DecodePlan(n, per_lane, "lut32_sign", False, tuple(values[:32]))
    return DecodePlan(n, per_lane, "int", dt.is_signed, ())


# "mantissa" decoding: a field at bits p .. p+N-1 of a lane (p + N <= 23), with
# every other bit cleared and the exponent of 2^(23-p) put above it, is the f32
# value 2^(23-p) + field (the field's bits are the mantissa's, worth 1 each);
# one subtraction of 2^(23-p) - bias gives field + bias exactly. The masking and
# the exponent are one bitwise select (vpternlogd, on any vector pipe) and the
# subtraction runs on the FP adders, so a field costs no shift and no
# shuffle-unit permute. A signed field's top bit is inverted in the same
# select: 2^(23-p) + (field ^ 2^(N-1)) - 2^(N-1) is the sign-extended field.
MANTISSA_BITS = 23


def _mantissa_words(n: int, signed: bool, p: int, bias: float):
    """(mask of the field's bits at p, the bits put around them, what to
    subtract) as ints and an f32: F = (lane & mask) ^ exp_bits for unsigned,
    and the top field bit flipped for signed (exp_bits has it set)."""
    field = ((1 << n) - 1) << p
    exp_bits = (127 + MANTISSA_BITS - p) << MANTISSA_BITS
    if signed:
        exp_bits |= 1 << (p + n - 1)
    offset = float(1 << (MANTISSA_BITS - p)) + (float(1 << (n - 1)) if signed else 0.0) - bias
    return field, exp_bits, offset


def _mantissa_bias(n: int, signed: bool, values) -> float | None:
    """bias when for every pattern and every field position p the mantissa
    decoding gives exactly the f32 `values[pattern]` (checked by running it in
    numpy f32, bit for bit), else None."""
    vals = np.array(values[:1 << n], np.float32)
    pats = np.arange(1 << n, dtype=np.int64)
    ints = np.where(pats >> (n - 1), pats - (1 << n), pats) if signed else pats
    bias = float(vals[0]) - float(ints[0])
    for p in range(MANTISSA_BITS - n + 1):
        mask, exp_bits, offset = _mantissa_words(n, signed, p, bias)
        if float(np.float32(offset)) != offset:
            return None
        words = ((pats << p) & mask) ^ exp_bits
        got = words.astype(np.uint32).view(np.float32) - np.float32(offset)
        if not np.array_equal(got.view(np.uint32), vals.view(np.uint32)):
            return None
    return bias


def _try_mantissa(plan: DecodePlan, values) -> DecodePlan:
    """plan switched to the "mantissa" decoding where it is exact for `values`
    (the 2^N pattern values after the folded steps), else plan. Only for the
    arithmetic decoder ("int": N >= 6): it replaces shift, mask, convert and
    the constant steps. The table kinds (N <= 5) stay: a select needs its two
    constants per field position in registers and copies of the lanes
    (vpternlogd overwrites an input), which for 8 fields a lane made the loop
    half again as long and u3/u4 slower at K = N = 8192 on znver4, though
    faster with the weights in cache."""
    if plan.kind != "int":
        return plan
    bias = _mantissa_bias(plan.nbits, plan.signed, values)
    if bias is None:
        return plan
    return dataclasses.replace(plan, kind="mantissa", table=(), ops=(), bias=bias)


def _host_ok() -> bool:
    return host().has("avx512f") and host().has("avx512bw")


_FOLDABLE = {vm.ElementOp.ADD: np.add, vm.ElementOp.SUB: np.subtract, vm.ElementOp.MUL: np.multiply}


def _scalar_op(stmt, x):
    """(op, constant) when stmt is `x op c` or `c op x` (ADD, MUL) with c a
    constant, else None."""
    if not isinstance(stmt, vm.Elementwise) or stmt.op not in _FOLDABLE or len(stmt.args) != 2 \
            or stmt.out.dtype.name != "f32" or stmt.out.shape != x.shape:
        return None
    first, second = stmt.args
    if first is x and isinstance(second, vm.Const):
        return stmt.op, float(second.value)
    if second is x and isinstance(first, vm.Const) and stmt.op is not vm.ElementOp.SUB:
        return stmt.op, float(first.value)
    return None


def _fold(plan: DecodePlan, ops: tuple) -> DecodePlan | None:
    """plan with `ops` applied to every decoded value, or None where a result
    could leave the finite f32 range (the saturation rule would apply).
    Each op is an f32 operation, rounded as the element-wise instruction is."""
    if not ops:
        return _try_mantissa(plan, _plain_values(plan))
    bound = max(abs(v) for v in plan.table) if plan.table else float(1 << plan.nbits)
    for op, c in ops:
        bound = bound * abs(c) if op is vm.ElementOp.MUL else bound + abs(c)
    if not bound < 1e30:
        return None
    table = np.array(plan.table or _plain_values(plan), np.float32)
    for op, c in ops:
        table = _FOLDABLE[op](table, np.float32(c), dtype=np.float32)
    mantissa = _try_mantissa(plan, table)
    if mantissa is not plan:
        return mantissa
    if plan.kind in ("int", "lut32_sign"):     # decoded by arithmetic: ops follow it
        return dataclasses.replace(plan, ops=ops)
    return dataclasses.replace(plan, table=tuple(float(v) for v in table))


def _plain_values(plan: DecodePlan) -> tuple:
    """The 2^N pattern values of a plan before any folded step (from its
    table, or for "int" the integers themselves)."""
    n = plan.nbits
    if plan.table:
        return plan.table[:1 << n]
    return tuple(float(p - (1 << n) if plan.signed and p >> (n - 1) else p) for p in range(1 << n))


def match(cg, stmts, i: int):
    """(statements, load, dot, plan) when stmts[i:] starts with the pattern
    load -> cast to f32 -> [x op constant, or a rebinding `x <- y`]* -> dot
    (operand b), and no tile of the chain is used outside it; else None."""
    if i + 2 >= len(stmts) or not _host_ok():
        return None
    load, cast = stmts[i], stmts[i + 1]
    if not (isinstance(load, vm.Load) and isinstance(cast, vm.Cast)) or cast.x is not load.out \
            or cast.out.dtype.name != "f32" or len(load.out.shape) != 2:
        return None
    x, ops, j = cast.out, [], i + 2
    while j < len(stmts):
        s = stmts[j]
        if isinstance(s, vm.Assign) and s.x is x:
            x = s.out
        else:
            op = _scalar_op(s, x)
            if op is None:
                break
            ops.append(op)
            x = s.out
        j += 1
    if j >= len(stmts):
        return None
    dot = stmts[j]
    if not isinstance(dot, vm.Dot) or dot.b is not x or dot.a is x:
        return None
    if dot.out.dtype.name != "f32" or dot.acc.dtype.name != "f32" or not fits_f32(dot.a.dtype):
        return None
    chain = list(stmts[i:j + 1])
    from .cpu_codegen import _uses_within
    for t in [load.out] + [s.out for s in chain[1:-1]]:
        if cg.uses[id(t)] != _uses_within(chain, t):
            return None       # a decoded tile is needed elsewhere: it must exist
    plan = decode_plan(load.src.dtype)
    if plan is None or load.out.shape[1] % plan.chunk_cols:
        return None
    plan = _fold(plan, tuple(ops))
    if plan is None:
        return None
    return tuple(chain), load, dot, plan


# ------------------------------------------------------------------ helpers


def _i32s(values) -> ir.Constant:
    return ir.Constant(V16I, [ir.Constant(I32, v) for v in values])


def _mask(values) -> ir.Constant:
    return ir.Constant(ir.VectorType(I32, len(values)), [ir.Constant(I32, v) for v in values])


def _f32s(values) -> ir.Constant:
    return ir.Constant(V16F, [ir.Constant(F32, v) for v in values])


def _declare(cg, name: str, ret: ir.Type, args: list) -> ir.Function:
    if name in cg.module.globals:
        return cg.module.globals[name]
    return ir.Function(cg.module, ir.FunctionType(ret, args), name=name)


def _concat(b, vecs: list) -> ir.Value:
    """One vector of all of `vecs` (equal lengths, a power-of-two count), in order."""
    while len(vecs) > 1:
        n = vecs[0].type.count
        vecs = [b.shuffle_vector(vecs[j], vecs[j + 1], _mask(range(2 * n))) for j in range(0, len(vecs), 2)]
    return vecs[0]


def _load_bytes(cg, ptr: ir.Value, size: int) -> ir.Value:
    """`size` bytes at ptr as a <64 x i8>, bytes past `size` zero and never
    read: a 16/32/64-byte load, or one masked load (vmovdqu8 with a constant
    mask; masked-off bytes do not fault)."""
    b = cg.b
    v64 = ir.VectorType(I8, 64)
    if size == 64:
        return b.load(b.bitcast(ptr, ir.PointerType(v64)), align=1)
    if size in (16, 32):
        piece = b.load(b.bitcast(ptr, ir.PointerType(ir.VectorType(I8, size))), align=1)
        return b.shuffle_vector(piece, ir.Constant(piece.type, None),
                                _mask([j if j < size else size for j in range(64)]))
    bits = ir.VectorType(ir.IntType(1), 64)
    fn = _declare(cg, "llvm.masked.load.v64i8.p0", v64, [ptr.type, I32, bits, v64])
    mask = ir.Constant(bits, [ir.Constant(ir.IntType(1), int(j < size)) for j in range(64)])
    return b.call(fn, [ptr, ir.Constant(I32, 1), mask, ir.Constant(v64, None)])


def _lanes(cg, plan: DecodePlan, ptr: ir.Value) -> ir.Value:
    """The chunk at ptr as 16 x i32 lanes, lane e holding fields e*E .. e*E+E-1 from bit 0."""
    b = cg.b
    n, e_per = plan.nbits, plan.per_lane
    raw = _load_bytes(cg, ptr, plan.chunk_bytes)
    # Bytes of a lane above its fields are never read (every decoder masks,
    # shifts them out, or uses a table that ignores them), so they take any
    # byte of `raw` rather than a zero: a one-source byte permute (vpermb)
    # instead of a two-source one against a zero vector (vpermt2b).
    mask, shifts = [], []
    for e in range(16):
        bit = e * e_per * n
        shifts.append(bit % 8)
        for j in range(4):
            mask.append(min(bit // 8 + j, 63))
    if mask != list(range(64)):
        raw = b.shuffle_vector(raw, ir.Constant(raw.type, None), _mask(mask))
    lanes = b.bitcast(raw, V16I)
    if any(shifts):
        lanes = b.lshr(lanes, _i32s(shifts))
    return lanes


def _fields(cg, plan: DecodePlan, lanes: ir.Value) -> list:
    """(x, p) for each field t of the lanes: the field is at bits p .. p+N-1
    of every lane of x. Table and arithmetic kinds need it at bit 0 (one
    uniform shift per field); "mantissa" takes it anywhere below bit 23, so
    the lanes are shifted only when a field would reach past it."""
    b, n = cg.b, plan.nbits
    if plan.kind != "mantissa":
        return [(b.lshr(lanes, _i32s([t * n] * 16)) if t else lanes, 0) for t in range(plan.per_lane)]
    fields, base, x = [], 0, lanes
    for t in range(plan.per_lane):
        if t * n - base + n > MANTISSA_BITS:
            base = t * n
            x = b.lshr(lanes, _i32s([base] * 16))
        fields.append((x, t * n - base))
    return fields


def _field_values(cg, plan: DecodePlan, x: ir.Value, p: int) -> ir.Value:
    """16 f32 values of a field held at bit p of every lane of x (p = 0 but
    for "mantissa"; the bits around it belong to other fields and are ignored)."""
    b = cg.b
    n = plan.nbits
    if plan.kind == "mantissa":
        mask, exp_bits, offset = _mantissa_words(n, plan.signed, p, plan.bias)
        word = b.xor(b.and_(x, _i32s([mask] * 16)), _i32s([exp_bits] * 16))
        return b.fsub(b.bitcast(word, V16F), _f32s([offset] * 16))
    if plan.kind == "lut16":
        fn = _declare(cg, "llvm.x86.avx512.permvar.sf.512", V16F, [V16F, V16I])
        return b.call(fn, [_f32s(plan.table), x])
    if plan.kind in ("lut32", "lut32_sign"):
        fn = _declare(cg, "llvm.x86.avx512.vpermi2var.ps.512", V16F, [V16F, V16I, V16F])
        value = b.call(fn, [_f32s(plan.table[:16]), x, _f32s(plan.table[16:32])])
        if plan.kind == "lut32":
            return value
        sign = b.and_(b.shl(x, _i32s([32 - n] * 16)), _i32s([-0x80000000] * 16))   # bit n-1 -> 31
        value = b.bitcast(b.xor(b.bitcast(value, V16I), sign), V16F)
    elif plan.signed:
        value = b.sitofp(b.ashr(b.shl(x, _i32s([32 - n] * 16)), _i32s([32 - n] * 16)), V16F)
    else:
        value = b.sitofp(b.and_(x, _i32s([(1 << n) - 1] * 16)), V16F)
    for op, c in plan.ops:
        value = {vm.ElementOp.ADD: b.fadd, vm.ElementOp.SUB: b.fsub,
                 vm.ElementOp.MUL: b.fmul}[op](value, _f32s([c] * 16))
    return value


def _all_fields(cg, plan: DecodePlan, lanes: ir.Value) -> list:
    return [_field_values(cg, plan, x, p) for x, p in _fields(cg, plan, lanes)]


def _splat(b, scalar: ir.Value) -> ir.Value:
    v = b.insert_element(ir.Constant(V16F, None), scalar, ir.Constant(I32, 0))
    return b.shuffle_vector(v, ir.Constant(V16F, None), _mask([0] * 16))


# ------------------------------------------------------------------ lowering


def lower(cg, stmts: tuple, load: vm.Load, dot: vm.Dot, plan: DecodePlan) -> None:
    """Emit the pattern: the register micro-kernel when the window is inside
    the tensor and byte aligned, else the generic lowering of `stmts`."""
    from .cpu_memory import _window_inside, lower_load
    g = cg.globals[load.src]
    offsets = [cg.scalar(o) for o in load.offsets]
    inside = _window_inside(cg, g, offsets, load.out.shape)
    with cg.b.if_else(inside) as (fast, generic):
        with fast:
            _micro_kernel(cg, g, offsets, load, dot, plan)
        with generic:
            lower_load(cg, load)
            cg.body(list(stmts[1:]))


def _micro_kernel(cg, g, offsets, load: vm.Load, dot: vm.Dot, plan: DecodePlan) -> None:
    """out = acc + a @ decode(window), the window inside g and byte aligned
    (loop order and register use: the module docstring). The accumulators
    live in `scratch`, in the decoded column order, between bands."""
    from .cpu_dot import _decoded
    b = cg.b
    n, e_per = plan.nbits, plan.per_lane
    kb, bn = load.out.shape
    bm = dot.a.shape[0]
    cols, nbytes = plan.chunk_cols, plan.chunk_bytes
    chunks = bn // cols

    def c64(v):
        return ir.Constant(I64, v)

    row_bytes = b.lshr(b.mul(g.strides[0], c64(n)), c64(3))
    first = b.add(b.mul(offsets[0], g.strides[0]), offsets[1])
    base = b.gep(g.base, [b.lshr(b.mul(first, c64(n)), c64(3))])
    a_buf = cg.tile(dot.a) if dot.a.dtype.name == "f32" else _decoded(cg, dot.a, F32)
    acc_in, out = cg.tile(dot.acc), cg.tile(dot.out)
    # scratch[(i * chunks + c) * E + t] is accumulator vector t of row i, chunk c
    scratch = cg.alloca(V16F, max(2, bm * chunks * e_per), name="qacc")
    fma = _declare(cg, "llvm.fma.v16f32", V16F, [V16F, V16F, V16F])
    prefetch = cg.prefetch_intrinsic()
    i32 = ir.IntType(32)
    ib = max(1, 16 // e_per)
    to_natural = [(j % e_per) * 16 + j // e_per for j in range(cols)]
    natural_ty = ir.VectorType(F32, cols)

    def slot(i, cidx, t):
        return b.gep(scratch, [b.add(b.mul(b.add(c64(i * chunks), cidx), c64(e_per)), c64(t))])

    def row_ptr(tile, i, cidx):
        return b.bitcast(b.gep(tile, [b.add(c64(i * bn), b.mul(cidx, c64(cols)))]), ir.PointerType(natural_ty))

    def permute_in(cidx):
        for i in range(bm):
            natural = b.load(row_ptr(acc_in, i, cidx), align=4)
            for t in range(e_per):
                b.store(b.shuffle_vector(natural, natural, _mask([e * e_per + t for e in range(16)])),
                        slot(i, cidx, t))
    cg.loop(0, chunks, permute_in, "qin")

    regs = {(r, t): cg.alloca(V16F, name=f"qreg{r}_{t}") for r in range(min(ib, bm)) for t in range(e_per)}
    wide = bm > ib
    band_rows = WIDE_BAND if wide else BAND
    if wide:       # the band's decoded weights: wbuf[r * E + t]
        wbuf = cg.alloca(V16F, band_rows * e_per, name="qw")
        rb, tb = WIDE_BLOCK           # register block: rb rows of a x tb vectors = 16 accumulators
        wregs = {(r, t): cg.alloca(V16F, name=f"qwr{r}_{t}") for r in range(rb) for t in range(tb)}

    def fetch(cbase, kk):
        ptr = b.gep(cbase, [b.mul(kk, row_bytes)])
        ahead = b.gep(ptr, [b.mul(row_bytes, c64(PREFETCH_ROWS))])
        for line in range(0, nbytes, 64):
            b.call(prefetch, [b.gep(ahead, [c64(line)]), ir.Constant(i32, 0),
                              ir.Constant(i32, PREFETCH_LOCALITY), ir.Constant(i32, 1)])
        return _lanes(cg, plan, ptr)

    def a_splat(i, kk):
        return _splat(b, b.load(b.gep(a_buf, [b.add(c64(i * kb), kk)])))

    def band(start):
        stop = b.select(b.icmp_signed("<", b.add(start, c64(band_rows)), c64(kb)),
                        b.add(start, c64(band_rows)), c64(kb))

        def chunk(cidx):
            cbase = b.gep(base, [b.mul(cidx, c64(nbytes))])
            if wide:
                def decode_row(kk):
                    values = _all_fields(cg, plan, fetch(cbase, kk))
                    for t in range(e_per):
                        b.store(values[t],
                                b.gep(wbuf, [b.add(b.mul(b.sub(kk, start), c64(e_per)), c64(t))]))
                cg.loop(start, stop, decode_row, "qd")
                for i0 in range(0, bm, rb):
                    for t0 in range(0, e_per, tb):
                        rows, ts = range(i0, min(i0 + rb, bm)), range(t0, min(t0 + tb, e_per))
                        for i in rows:
                            for t in ts:
                                b.store(b.load(slot(i, cidx, t)), wregs[(i - i0, t - t0)])

                        def step(kk, rows=rows, ts=ts, i0=i0, t0=t0):
                            row = b.mul(b.sub(kk, start), c64(e_per))
                            ws = [b.load(b.gep(wbuf, [b.add(row, c64(t))])) for t in ts]
                            for i in rows:
                                av = a_splat(i, kk)
                                for t, w in zip(ts, ws):
                                    reg = wregs[(i - i0, t - t0)]
                                    b.store(b.call(fma, [av, w, b.load(reg)]), reg)
                        cg.loop(start, stop, step, "qk")
                        for i in rows:
                            for t in ts:
                                b.store(b.load(wregs[(i - i0, t - t0)]), slot(i, cidx, t))
                return
            rows = range(bm)
            for i in rows:
                for t in range(e_per):
                    b.store(b.load(slot(i, cidx, t)), regs[(i, t)])

            def step(kk):
                avals = [a_splat(i, kk) for i in rows]
                values = _all_fields(cg, plan, fetch(cbase, kk))
                for t in range(e_per):
                    w = values[t]
                    for i, av in zip(rows, avals):
                        reg = regs[(i, t)]
                        b.store(b.call(fma, [av, w, b.load(reg)]), reg)
            cg.loop(start, stop, step, "qk")
            for i in rows:
                for t in range(e_per):
                    b.store(b.load(regs[(i, t)]), slot(i, cidx, t))
        cg.loop(0, chunks, chunk, "qc")
    cg.strided_loop(0, kb + (-kb) % band_rows, band_rows, band, "qb")

    def permute_out(cidx):
        for i in range(bm):
            vecs = [b.load(slot(i, cidx, t)) for t in range(e_per)]
            natural = b.shuffle_vector(_concat(b, vecs), ir.Constant(natural_ty, None), _mask(to_natural))
            b.store(natural, row_ptr(out, i, cidx), align=4)
    cg.loop(0, chunks, permute_out, "qout")


__all__ = ["DecodePlan", "decode_plan", "match", "lower"]
