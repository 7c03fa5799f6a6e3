"""CPU lowering of memory instructions: global loads and stores, atomics,
shared memory, and the bit-stream access of sub-byte tensors.

A tile window on a global tensor is walked row by row. For each row the
lowering computes, once, whether the row's outer coordinates are in range and
the in-range column interval [lo, hi); the row is then three simple loops
(zeros, a contiguous copy, zeros) with no per-element bounds checks, so the
copy vectorizes. An interior tile has lo = 0 and hi = the row length.

Byte-sized types copy their storage as is. The rows of an interior window
are copied with explicit LLVM vector loads and stores: the contiguity query
of the layout algebra (`contiguous_dim_run` on the CPU tile layout, all
local) gives the run of slots that are consecutive in memory, and the vector
width is that run capped at the host's SIMD width (`host().simd_bits`: 512
bits with AVX-512, 256 with AVX2). Edge windows take the scalar, clipped
path. Sub-byte types follow the packing
rule (element i at bits [i*N, (i+1)*N), LSB first):
* loads of N <= 8 bits take groups of 8 elements = N whole bytes when the row
  segment starts on a byte boundary (one N-byte integer load, eight shifts
  and masks; LLVM vectorizes it with shuffles); other elements gather the
  bytes covering their field, clamped to the buffer, so nothing is read past
  its end;
* stores write whole groups of N bytes plainly and update partial bytes with
  atomic AND/OR, because a neighbouring block on another core may own the
  other bits of a shared byte.

Inside a `for` loop whose variable moves a load's window, the window of the
next iteration is prefetched (see `prefetch_next_iteration`).
"""
from __future__ import annotations

import functools

import llvmlite.ir as ir

from ..errors import TLTargetError
from ..ir import vm
from ..ir.layout import contiguous_dim_run, local
from ..runtime.cpu_launch import STATUS_SHARED_RANGE
from .cpu_registry import register_lowering
from .cpu_types import F64, I8, I64, row_major_strides, storage_bytes, storage_type
from .llvm import host

CPU = "cpu"


def _byte_sized(dt) -> bool:
    return dt.nbits in (8, 16, 32, 64)


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _min(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _max(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


# ------------------------------------------------------------- bit streams


def read_bits(cg, base: ir.Value, nbytes: ir.Value, nbits: int, flat: ir.Value) -> ir.Value:
    """Bits [flat*N, flat*N + N) of a byte stream as i64, never reading past nbytes."""
    b = cg.b
    wty = I64 if nbits <= 57 else ir.IntType(128)   # the field plus up to 7 bits before it
    bit = b.mul(flat, _c(nbits))
    first = b.lshr(bit, _c(3))
    last = b.sub(nbytes, _c(1))
    word = ir.Constant(wty, 0)
    for k in range((nbits + 14) // 8):      # a field may start at any bit of its first byte
        idx = b.add(first, _c(k))
        inside = b.icmp_unsigned("<=", idx, last)
        byte = b.load(b.gep(base, [b.select(inside, idx, last)]))
        byte = b.select(inside, b.zext(byte, wty), ir.Constant(wty, 0))
        word = b.or_(word, b.shl(byte, ir.Constant(wty, 8 * k)))
    shift = b.and_(bit, _c(7))
    field = b.lshr(word, shift if wty == I64 else b.zext(shift, wty))
    field = field if wty == I64 else b.trunc(field, I64)
    return b.and_(field, _c((1 << nbits) - 1)) if nbits < 64 else field


def write_bits(cg, base: ir.Value, nbytes: ir.Value, nbits: int, flat: ir.Value, bits: ir.Value,
               atomic: bool = True) -> None:
    """Set bits [flat*N, flat*N + N) of a byte stream to the low N bits of `bits`."""
    b = cg.b
    bit = b.mul(flat, _c(nbits))
    first = b.lshr(bit, _c(3))
    shift = b.and_(bit, _c(7))
    low = _c((1 << nbits) - 1) if nbits < 64 else _c(-1)
    value = b.and_(bits, low)
    last = b.sub(nbytes, _c(1))
    for k in range((nbits + 14) // 8):
        idx = b.add(first, _c(k))
        mask_k = _byte_of_shifted(b, low, shift, k)
        value_k = _byte_of_shifted(b, value, shift, k)
        touches = b.and_(b.icmp_unsigned("<=", idx, last), b.icmp_unsigned("!=", mask_k, ir.Constant(I8, 0)))

        def update(idx=idx, mask_k=mask_k, value_k=value_k):
            ptr = b.gep(base, [idx])
            if atomic:
                b.atomic_rmw("and", ptr, b.not_(mask_k), "monotonic")
                b.atomic_rmw("or", ptr, value_k, "monotonic")
            else:
                old = b.load(ptr)
                b.store(b.or_(b.and_(old, b.not_(mask_k)), value_k), ptr)
        cg_masked(cg, touches, update)


def _byte_of_shifted(b, value: ir.Value, shift: ir.Value, k: int) -> ir.Value:
    """Byte k of the 72-bit (value << shift), for an i64 value and shift < 8."""
    if k == 0:
        return b.trunc(b.shl(value, shift), I8)
    # (value << shift) >> 8k == value >> (8k - shift), and 8k - shift >= 1.
    amount = b.sub(_c(8 * k), shift)
    inside = b.icmp_unsigned("<", amount, _c(64))
    byte = b.trunc(b.lshr(value, b.select(inside, amount, _c(0))), I8)
    return b.select(inside, byte, ir.Constant(I8, 0))


def cg_masked(cg, cond: ir.Value, then) -> None:
    """Run `then()` only where cond holds."""
    b = cg.b
    yes = cg.fn.append_basic_block("in")
    done = cg.fn.append_basic_block("in.done")
    b.cbranch(cond, yes, done)
    b.position_at_end(yes)
    then()
    b.branch(done)
    b.position_at_end(done)


def _extract_field(b, word: ir.Value, t: int, dt) -> ir.Value:
    """Element t of a group word (8 fields of N <= 8 bits) in i8 tile storage."""
    n = dt.nbits
    field = b.trunc(b.lshr(word, ir.Constant(word.type, t * n)), I8)
    if dt.is_integer and dt.is_signed:
        spare = ir.Constant(I8, 8 - n)
        return b.ashr(b.shl(field, spare), spare)
    return b.and_(field, ir.Constant(I8, (1 << n) - 1))


def _group_ptr(cg, base: ir.Value, byte: ir.Value, n: int) -> ir.Value:
    return cg.b.bitcast(cg.b.gep(base, [byte]), ir.PointerType(ir.IntType(8 * n)))


# ------------------------------------------------------------- tile windows


def _rows_of_window(cg, g, offsets: list, shape, body) -> None:
    """body(tile_row_flat, gstart, lo, hi, n) for each row of a tile window on g:
    tile element (row, j) is global element gstart + j, in range for lo <= j < hi."""
    b = cg.b
    shape = tuple(shape) or (1,)
    offsets = list(offsets) or [_c(0)]
    rank = len(shape)

    def row(row_flat, index, n):
        ok = ir.Constant(ir.IntType(1), 1)
        grow = _c(0)
        for d in range(rank - 1):
            coord = b.add(offsets[d], index[d])
            ok = b.and_(ok, b.and_(b.icmp_signed(">=", coord, _c(0)), b.icmp_signed("<", coord, g.shape[d])))
            grow = b.add(grow, b.mul(coord, g.strides[d]))
        col0 = offsets[rank - 1]
        lo = _max(b, _c(0), _min(b, _c(n), b.neg(col0)))
        hi = _max(b, lo, _min(b, _c(n), b.sub(g.shape[rank - 1], col0)))
        lo = b.select(ok, lo, _c(0))
        hi = b.select(ok, hi, _c(0))
        body(row_flat, b.add(grow, col0), lo, hi, n)
    cg.rows(shape, row)


def _global_ptr(cg, g) -> ir.Value:
    return cg.b.bitcast(g.base, ir.PointerType(storage_type(g.tensor.dtype)))


def _has_interior_version(dt, shape) -> bool:
    """Byte-sized types, and packed ones whose rows are whole groups of 8."""
    return _byte_sized(dt) or (dt.nbits <= 8 and (tuple(shape) or (1,))[-1] % 8 == 0)


def _window_inside(cg, g, offsets: list, shape) -> ir.Value:
    """i1: the whole window lies inside g (and, for packed types of N <= 8 bits,
    every row starts on a byte boundary, so rows are whole groups of bytes)."""
    b = cg.b
    shape = tuple(shape) or (1,)
    offsets = list(offsets) or [_c(0)]
    ok = ir.Constant(ir.IntType(1), 1)
    for off, n, dim in zip(offsets, shape, g.shape):
        ok = b.and_(ok, b.and_(b.icmp_signed(">=", off, _c(0)), b.icmp_signed("<=", b.add(off, _c(n)), dim)))
    nbits = g.tensor.dtype.nbits
    if not _byte_sized(g.tensor.dtype):
        row_bits = b.mul(g.strides[-2] if len(shape) > 1 else _c(0), _c(nbits))
        col_bits = b.mul(offsets[-1], _c(nbits))
        ok = b.and_(ok, b.icmp_unsigned("==", b.and_(b.or_(row_bits, col_bits), _c(7)), _c(0)))
    return ok


def _interior_rows(cg, g, offsets: list, shape, body) -> None:
    """body(tile_row_flat, gstart, n) for each row of a window known to be inside g."""
    b = cg.b
    shape = tuple(shape) or (1,)
    offsets = list(offsets) or [_c(0)]

    def row(row_flat, index, n):
        gstart = offsets[-1]
        for d in range(len(shape) - 1):
            gstart = b.add(gstart, b.mul(b.add(offsets[d], index[d]), g.strides[d]))
        body(row_flat, gstart, n)
    cg.rows(shape, row)


@functools.lru_cache(maxsize=512)
def _contiguous_run(shape: tuple) -> int:
    """Slots of a CPU tile (layout local(*shape)) that are consecutive in
    memory in aligned groups, with only the last dimension known contiguous."""
    return contiguous_dim_run(local(*shape), -1)


def vector_width(shape, dt) -> int:
    """Elements per explicit vector access of a tile row of dtype dt (1: scalar):
    the contiguity query's run, capped at the host's SIMD width."""
    lanes = host().simd_bits // (8 * storage_bytes(dt))
    return min(lanes, _contiguous_run(tuple(shape) or (1,)))


def _copy_row(cg, src, src0: ir.Value, dst, dst0: ir.Value, n: int, dt, width: int, name: str) -> None:
    """dst[dst0 + j] = src[src0 + j] for j < n (one tile row): src and dst
    point to dt's storage type; `width` (vector_width, dividing n) at a time."""
    b = cg.b
    if width < 2:
        cg.loop(0, n, lambda j: b.store(b.load(b.gep(src, [b.add(src0, j)])), b.gep(dst, [b.add(dst0, j)])),
                name)
        return
    vptr = ir.PointerType(ir.VectorType(storage_type(dt), width))
    align = storage_bytes(dt)   # a global row is only element-aligned

    def chunk(q):
        j = b.mul(q, _c(width))
        v = b.load(b.bitcast(b.gep(src, [b.add(src0, j)]), vptr), align=align)
        b.store(v, b.bitcast(b.gep(dst, [b.add(dst0, j)]), vptr), align=align)
    cg.loop(0, n // width, chunk, name + ".v")


def _if_else(cg, cond: ir.Value, then, otherwise) -> None:
    b = cg.b
    with b.if_else(cond) as (yes, no):
        with yes:
            then()
        with no:
            otherwise()


def load_window(cg, g, offsets: list, out) -> None:
    """out = g[offsets : offsets + out.shape], 0 where out of range.

    Two versions: windows inside the tensor (the common case) copy whole rows
    with constant trip counts; the general version handles the edges."""
    b = cg.b
    dt = g.tensor.dtype
    tile = cg.tile(out)
    zero = ir.Constant(storage_type(dt), 0)

    def inside_row(row_flat, gstart, n):
        if _byte_sized(dt):
            _copy_row(cg, _global_ptr(cg, g), gstart, tile, row_flat, n, dt, vector_width(out.shape, dt), "ld")
        else:
            _load_groups(cg, g.base, b.lshr(b.mul(gstart, _c(dt.nbits)), _c(3)), tile, row_flat, n // 8, dt)

    def edge_row(row_flat, gstart, lo, hi, n):
        def put_zero(j):
            b.store(zero, b.gep(tile, [b.add(row_flat, j)]))
        cg.loop(0, lo, put_zero, "z")
        if _byte_sized(dt):
            src = _global_ptr(cg, g)
            cg.loop(lo, hi, lambda j: b.store(b.load(b.gep(src, [b.add(gstart, j)])),
                                              b.gep(tile, [b.add(row_flat, j)])), "ld")
        else:
            _load_packed_segment(cg, g, tile, row_flat, gstart, lo, hi)
        cg.loop(hi, n, put_zero, "z")
    _over_window(cg, g, offsets, out.shape, inside_row, edge_row)


def _over_window(cg, g, offsets, shape, inside_row, edge_row) -> None:
    """Run a tile window's rows: the constant-bound interior version when the
    whole window is inside the tensor (where the type has one), else the
    row-by-row clipped version."""
    if not _has_interior_version(g.tensor.dtype, shape):
        _rows_of_window(cg, g, offsets, shape, edge_row)
        return
    _if_else(cg, _window_inside(cg, g, offsets, shape),
             lambda: _interior_rows(cg, g, offsets, shape, inside_row),
             lambda: _rows_of_window(cg, g, offsets, shape, edge_row))


def _load_groups(cg, base, first_byte, tile, dst0, groups, dt) -> None:
    """Elements [dst0, dst0 + 8*groups) of a tile from whole N-byte groups at first_byte."""
    b = cg.b
    n = dt.nbits

    def group(q):
        word = b.load(_group_ptr(cg, base, b.add(first_byte, b.mul(q, _c(n))), n), align=1)
        dst = b.add(dst0, b.mul(q, _c(8)))
        for t in range(8):
            b.store(_extract_field(b, word, t, dt), b.gep(tile, [b.add(dst, _c(t))]))
    cg.loop(0, groups, group, "grp")


def _field_to_storage(cg, bits: ir.Value, dt) -> ir.Value:
    """A packed field (zero-extended i64) as tile storage: ints sign-extended for iN."""
    if dt.is_integer:
        return cg.conv.to_storage(cg.conv.wrap(bits, dt) if dt.is_signed else bits, dt)
    st = storage_type(dt)
    return bits if st.width == 64 else cg.b.trunc(bits, st)


def _load_packed_segment(cg, g, tile, row_flat, gstart, lo, hi) -> None:
    b = cg.b
    dt = g.tensor.dtype
    n = dt.nbits

    def one(j):
        bits = read_bits(cg, g.base, g.nbytes, n, b.add(gstart, j))
        b.store(_field_to_storage(cg, bits, dt), b.gep(tile, [b.add(row_flat, j)]))
    if n > 8:
        cg.loop(lo, hi, one, "ldb")
        return
    start_bit = b.mul(b.add(gstart, lo), _c(n))
    aligned = b.icmp_unsigned("==", b.and_(start_bit, _c(7)), _c(0))
    groups = b.select(aligned, b.lshr(b.sub(hi, lo), _c(3)), _c(0))
    first_byte = b.lshr(start_bit, _c(3))
    _load_groups(cg, g.base, first_byte, tile, b.add(row_flat, lo), groups, dt)
    cg.loop(b.add(lo, b.shl(groups, _c(3))), hi, one, "ldb")


def store_window(cg, g, offsets: list, value, add: bool = False) -> None:
    """g[offsets : offsets + value.shape] = value (or +=), dropping out-of-range elements."""
    b = cg.b
    dt = g.tensor.dtype
    tile = cg.tile(value)
    if add and not _byte_sized(dt):
        raise TLTargetError(f"no lowering for AtomicAdd on packed {dt.name} tensors on cpu")

    def put_elements(row_flat, gstart, lo, hi):
        dst = _global_ptr(cg, g)

        def put(j):
            v = b.load(b.gep(tile, [b.add(row_flat, j)]))
            ptr = b.gep(dst, [b.add(gstart, j)])
            if not add:
                b.store(v, ptr)
            elif dt.is_integer:
                b.atomic_rmw("add", ptr, v, "monotonic")    # wraps like the storage type
            else:
                _atomic_float_add(cg, ptr, v, dt)
        cg.loop(lo, hi, put, "st")

    def inside_row(row_flat, gstart, n):
        if _byte_sized(dt) and not add:
            _copy_row(cg, tile, row_flat, _global_ptr(cg, g), gstart, n, dt,
                      vector_width(value.shape, dt), "st")
        elif _byte_sized(dt):
            put_elements(row_flat, gstart, 0, n)
        else:
            _store_groups(cg, g.base, b.lshr(b.mul(gstart, _c(dt.nbits)), _c(3)), tile, row_flat, n // 8, dt)

    def edge_row(row_flat, gstart, lo, hi, n):
        if _byte_sized(dt):
            put_elements(row_flat, gstart, lo, hi)
        else:
            _store_packed_segment(cg, g, tile, row_flat, gstart, lo, hi)
    _over_window(cg, g, offsets, value.shape, inside_row, edge_row)


def _store_groups(cg, base, first_byte, tile, src0, groups, dt) -> None:
    """Whole N-byte groups at first_byte from tile elements [src0, src0 + 8*groups).
    A group's bytes hold exactly its 8 elements: plain stores, no atomics."""
    b = cg.b
    n = dt.nbits
    wty = ir.IntType(8 * n)

    def group(q):
        src = b.add(src0, b.mul(q, _c(8)))
        word = ir.Constant(wty, 0)
        for t in range(8):
            field = b.and_(b.load(b.gep(tile, [b.add(src, _c(t))])), ir.Constant(I8, (1 << n) - 1))
            word = b.or_(word, b.shl(b.zext(field, wty), ir.Constant(wty, t * n)))
        b.store(word, _group_ptr(cg, base, b.add(first_byte, b.mul(q, _c(n))), n), align=1)
    cg.loop(0, groups, group, "grp")


def _atomic_float_add(cg, ptr: ir.Value, stored: ir.Value, dt) -> None:
    """*ptr = round(*ptr + value) with a compare-and-swap loop: the sum is
    formed in double and rounded once to dt, saturating (the interpreter's rule)."""
    b = cg.b
    ity = ir.IntType(storage_bytes(dt) * 8)
    iptr = b.bitcast(ptr, ir.PointerType(ity))
    addend = cg.conv.to_compute(stored, dt, F64)
    pre = b.block
    first = b.load_atomic(iptr, "monotonic", storage_bytes(dt))
    loop = cg.fn.append_basic_block("cas")
    done = cg.fn.append_basic_block("cas.done")
    b.branch(loop)
    b.position_at_end(loop)
    old = b.phi(ity)
    old.add_incoming(first, pre)
    raw = old if storage_type(dt) == ity else b.bitcast(old, storage_type(dt))
    new = cg.conv.to_storage(b.fadd(cg.conv.to_compute(raw, dt, F64), addend), dt)
    new = new if new.type == ity else b.bitcast(new, ity)
    result = b.cmpxchg(iptr, old, new, "monotonic", "monotonic")
    old.add_incoming(b.extract_value(result, 0), loop)
    b.cbranch(b.extract_value(result, 1), done, loop)
    b.position_at_end(done)


def _store_packed_segment(cg, g, tile, row_flat, gstart, lo, hi) -> None:
    b = cg.b
    dt = g.tensor.dtype
    n = dt.nbits
    low = _c((1 << n) - 1)

    def one(j):
        raw = b.load(b.gep(tile, [b.add(row_flat, j)]))
        bits = b.and_(b.zext(raw, I64) if raw.type.width < 64 else raw, low)
        write_bits(cg, g.base, g.nbytes, n, b.add(gstart, j), bits, atomic=True)
    if n > 8:
        cg.loop(lo, hi, one, "stb")
        return
    start_bit = b.mul(b.add(gstart, lo), _c(n))
    aligned = b.icmp_unsigned("==", b.and_(start_bit, _c(7)), _c(0))
    groups = b.select(aligned, b.lshr(b.sub(hi, lo), _c(3)), _c(0))
    first_byte = b.lshr(start_bit, _c(3))
    _store_groups(cg, g.base, first_byte, tile, b.add(row_flat, lo), groups, dt)
    cg.loop(b.add(lo, b.shl(groups, _c(3))), hi, one, "stb")


# ---------------------------------------------------------------- prefetch


def _uses(e: vm.Expr, var: vm.Var) -> bool:
    if e is var:
        return True
    return any(_uses(getattr(e, f), var) for f in ("lhs", "rhs", "operand", "value", "cond",
                                                    "true_value", "false_value")
               if isinstance(getattr(e, f, None), vm.Expr))


def prefetch_next_iteration(cg, g, offsets: tuple, shape) -> None:
    """Inside a loop whose variable moves the window, prefetch the window of
    the next iteration: a weight matrix read down a column strip touches a new
    page every row or two, which the hardware prefetchers do not follow.
    (Prefetches never fault, so no range checks are needed.)"""
    if not cg.for_stack:
        return
    var, step = cg.for_stack[-1]
    if not any(_uses(o, var) for o in offsets):
        return
    b = cg.b
    saved = cg.scalars[var]
    ahead = cg.alloca(I64, name=f"{var.name}.next")
    b.store(b.add(b.load(saved), step), ahead)
    cg.scalars[var] = ahead
    next_offsets = [cg.scalar(o) for o in offsets] or [_c(0)]
    cg.scalars[var] = saved
    shape = tuple(shape) or (1,)
    nbits = g.tensor.dtype.nbits
    lines = -(-shape[-1] * nbits // 512) + 1      # 64-byte lines a row can touch
    fn = cg.prefetch_intrinsic()
    i32 = ir.IntType(32)

    def row(row_flat, index, n):
        flat = next_offsets[-1]
        for d in range(len(shape) - 1):
            flat = b.add(flat, b.mul(b.add(next_offsets[d], index[d]), g.strides[d]))
        first = b.ashr(b.mul(flat, _c(nbits)), _c(3))
        for line in range(lines):
            ptr = b.gep(g.base, [b.add(first, _c(64 * line))])
            b.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
    cg.rows(shape, row)


# ----------------------------------------------------------------- lowerings


@register_lowering(vm.Load, CPU)
def lower_load(cg, s: vm.Load) -> None:
    g = cg.globals[s.src]
    prefetch_next_iteration(cg, g, s.offsets, s.out.shape)
    load_window(cg, g, [cg.scalar(o) for o in s.offsets], s.out)


@register_lowering(vm.CopyAsync, CPU)
def lower_copy_async(cg, s: vm.CopyAsync) -> None:
    """A synchronous masked copy on the CPU (0 out of range, like load)."""
    g = cg.globals[s.src]
    prefetch_next_iteration(cg, g, s.offsets, s.dst.shape)
    load_window(cg, g, [cg.scalar(o) for o in s.offsets], s.dst)


@register_lowering(vm.Store, CPU)
def lower_store(cg, s: vm.Store) -> None:
    store_window(cg, cg.globals[s.dst], [cg.scalar(o) for o in s.offsets], s.value)


@register_lowering(vm.AtomicAdd, CPU)
def lower_atomic_add(cg, s: vm.AtomicAdd) -> None:
    store_window(cg, cg.globals[s.dst], [cg.scalar(o) for o in s.offsets], s.value, add=True)


@register_lowering(vm.AllocShared, CPU)
def lower_alloc_shared(cg, s: vm.AllocShared) -> None:
    """Zero-filled, as in the interpreter, so that a kernel reading shared
    memory it never wrote is at least deterministic (the GPU is not)."""
    size = 1
    for d in s.out.shape:
        size *= d
    cg.memset_zero(cg.tile(s.out), max(1, size) * storage_bytes(s.out.dtype))


def _shared_copy(cg, shared, tile, offsets, to_shared: bool) -> None:
    b = cg.b
    offs = [cg.scalar(o) for o in offsets] or [_c(0)]
    shape = tuple(tile.shape) or (1,)
    full = tuple(shared.shape) or (1,)
    ok = ir.Constant(ir.IntType(1), 1)
    for o, n, size in zip(offs, shape, full):
        ok = b.and_(ok, b.and_(b.icmp_signed(">=", o, _c(0)), b.icmp_signed("<=", b.add(o, _c(n)), _c(size))))
    cg.flag_error(b.not_(ok), STATUS_SHARED_RANGE)
    strides = row_major_strides(full)
    sbuf, tbuf = cg.tile(shared), cg.tile(tile)

    def row(row_flat, index, n):
        sflat = offs[-1]
        for o, i, st in zip(offs, index, strides):
            sflat = b.add(sflat, b.mul(b.add(o, i), _c(st)))
        src, dst, s0, d0 = (tbuf, sbuf, row_flat, sflat) if to_shared else (sbuf, tbuf, sflat, row_flat)
        cg.loop(0, n, lambda j: b.store(b.load(b.gep(src, [b.add(s0, j)])), b.gep(dst, [b.add(d0, j)])), "sh")
    cg_masked(cg, ok, lambda: cg.rows(shape, row))


@register_lowering(vm.LoadShared, CPU)
def lower_load_shared(cg, s: vm.LoadShared) -> None:
    _shared_copy(cg, s.src, s.out, s.offsets, to_shared=False)


@register_lowering(vm.StoreShared, CPU)
def lower_store_shared(cg, s: vm.StoreShared) -> None:
    _shared_copy(cg, s.dst, s.value, s.offsets, to_shared=True)
