"""GPU layout inference: a RegisterLayout over warps*32 threads for every register tile.

Entry point: `infer_gpu_layouts(kernel, target) -> vm.Kernel`.

Assumes a verified VM kernel (after the default VM passes). Guarantees, for the
returned kernel (checked by `check_layouts`, which the pass runs on its result):

* every RegisterTensor carries a layout whose shape is the tensor's shape and
  whose thread count is exactly T = kernel.warps * 32 (tiles with fewer
  elements than threads, and the extra warps of small tiles, are replicated);
* layouts change only at `vm.ConvertLayout(dst, src)` instructions, which this
  pass inserts right before the consumer that needs them. Every other
  instruction relates its operand and result layouts by one fixed rule, the
  *layout contract* the lowering can rely on:

  - Cast, Assign, Annotate: operand layout == result layout (Annotate's result
    is the pinned layout; a pin over fewer threads than T is extended with
    replicate(T / pin_threads) as the most significant thread digit);
  - Elementwise, BroadcastTo: a tensor operand of the result's shape has the
    result's layout; a broadcast operand has `broadcast_layout(out.layout,
    operand.shape)` (the broadcast dims reduced away, missing leading dims
    dropped) - each thread holds exactly the operand values its result slots
    need, replicated where the result is spread over threads;
  - Dot: see `dot_layouts`; `is_mma_dot(dot)` says whether it is an mma.sync
    m16n8k16 dot (f16/bf16 operands, f32 accumulator, M % 16 == N % 8 ==
    K % 16 == 0) or an FMA dot (everything else: every thread holds whole rows
    of A and whole columns of B for its accumulator slots);
  - Reduce: the operand's layout is shuffle-reducible over `dim`
    (`is_shuffle_reducible`: the reduced dim's thread digits are power-of-two
    lane bits, so a local reduction plus shfl.bfly finishes it) and the result
    is `layout.reduce(x.layout, dim)` (with the dim dropped when not keepdim);
  - View: with g_in = lcm(bits_in, bits_out) / bits_in and g_out likewise,
    x.layout == A * local(1, .., g_in) and out.layout == A * local(1, .., g_out)
    (`view_layout`): each thread reinterprets whole groups of its own bits;
  - Transpose: out = permute(x, perm); Reshape: out = reshape(x, out.shape);
  - Concat: all parts have one layout P and out = concat([P] * n, dim), or
    (parts of unequal shape) parts and out are all `full_local` layouts
    (every thread holds the whole tile);
  - Slice: out = `slice_layout(x.layout, ...)` (x.layout with its outermost
    local mode of each sliced dim shortened: each thread keeps a subset of
    its slots); where the producer's layout cannot be cut, x is converted to
    `slice_source_layout` first;
  - Load, LoadShared, Full, Arange, Store, StoreShared, AtomicAdd: any layout
    (a replicated Store writes the same value several times; a replicated
    AtomicAdd must be predicated to one replica by the lowering).

How layouts are chosen. A networkx MultiDiGraph over the register tensors
(edges producer -> consumer, labelled with the instruction) is solved by
priority, Dijkstra-like: the best pending candidate - by priority class, then
the earlier seed whose front it belongs to, then distance from that seed -
fixes its tensor's layout, which then propagates along the graph's edges, both
ways through layout-preserving instructions (cast, element-wise, broadcast,
assign, annotate) and forwards into derived results. Ordering fronts by seed
makes two loads combined element-wise agree on the first one's layout rather
than converting one of them.
Classes, strongest first:
  5 annotate pins (and view(..., layout=));
  4 dot results / accumulators (mma fragment or FMA layout);
  3 global loads: each thread reads 16 contiguous bytes (`load_layout`;
    packed types: whole 32-bit words, so that no thread is a replica);
  2 what a dot operand or a reduce would like (so a loaded operand keeps its
    coalesced layout and is converted - through shared memory, where the
    lowering can use ldmatrix - while one computed from scratch is built in
    the fragment layout directly);
  1 defaults for tiles with no preference (full/arange/load_shared, and loads
    used only as broadcast operands, which thus take their consumer's layout);
Results of dot/reduce/view/transpose/reshape/concat/slice/annotate, and of
casts from sub-byte types, are *derived*: only their operands decide them (so
packed sub-byte tiles are dequantized in their load layout and any layout
change happens on the wide type). Loop-carried tiles (Assign) are one graph
node with the assigned value, so they keep one layout across iterations.

Where conversions go: right before the first consumer that needs the layout,
reused by later consumers until the source is re-assigned; a conversion of a
tile that a loop neither defines nor re-assigns is hoisted in front of the
outermost such loop. So in qmatmul the A tile and the dequantized, scaled B
tile are each converted once per k-step into their mma fragments (through a
swizzled shared buffer, see shared_plan.py), and nothing else is converted.

mma warp arrangement (`mma_dot_layouts`): the [M, N] accumulator is a grid of
M/16 x N/8 m16n8 atoms; the warps form a wm x wn grid over it (wm | M/16,
wn | N/8, wm * wn | warps, any leftover warps replicate), choosing the most
warps in use, then the smallest per-warp operand footprint M/wm + N/wn, then
the larger wn. With rm = M/(16 wm), rn = N/(8 wn), kk = K/16 and
W = spatial(wm, wn):
    C = local(rm, rn) * W * replicate(r) * mma_m16n8k16_c
    A = local(rm, kk) * reduce(W, 1) * replicate(r) * mma_m16n8k16_a
    B = local(kk, rn) * reduce(W, 0) * replicate(r) * mma_m16n8k16_b
so divide(C, mma_c), divide(A, mma_a) and divide(B, mma_b) all exist, and the
warp at grid position (i, j) holds A's row block i and B's column block j.
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import TLCompileError, TLLayoutError
from ..ir import vm
from ..ir.layout import (RegisterLayout, canonicalize, concat, divide, local, mma_m16n8k16_a, mma_m16n8k16_b,
                         mma_m16n8k16_c, permute, product, reduce, replicate, reshape, spatial)
from ..runtime.target import Target, parse_target

__all__ = ["infer_gpu_layouts", "check_layouts", "is_mma_dot", "dot_layouts", "mma_dot_layouts",
           "fma_dot_layouts", "load_layout", "blocked_layout", "broadcast_layout", "view_layout",
           "is_shuffle_reducible", "reduce_layout", "full_local", "slice_layout", "DotLayouts"]

LANES = 32
_MMA_TYPES = ("f16", "bf16")

# priority classes (module docstring)
PIN, DOT, LOAD, WISH, DEFAULT, FALLBACK = 5, 4, 3, 2, 1, 0


# ======================================================= layout constructors
def _vector_elems(dt) -> int:
    """Elements in the smallest whole number of 16-byte chunks: 128/b when b
    divides 128, else lcm(128, b)/b (u3: 128 elements = 48 bytes)."""
    return math.lcm(128, dt.nbits) // dt.nbits


def blocked_layout(shape, threads: int, vec: int = 1, order=None, lane_cap: Optional[dict] = None) -> RegisterLayout:
    """A tiled layout over exactly `threads` threads:
    local(outer) * spatial(threads, in `order`) * local(1, .., vec).

    `vec` contiguous elements of the last dim per thread (it must divide that
    dim); then threads along the dims of `order` (fastest first; default last
    dim first), each dim taking gcd(remaining size, remaining threads)
    threads, at most lane_cap[d] for dims listed there; leftover threads
    replicate as the most significant thread digit; what is left of each dim
    is an outer local mode (slots row-major over dims, vec innermost).
    """
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd == 0:
        return replicate(threads)
    if shape[-1] % vec:
        raise TLLayoutError(f"blocked_layout: vec {vec} does not divide {shape[-1]}")
    order = list(range(nd - 1, -1, -1)) if order is None else list(order)
    rest = list(shape)
    rest[-1] //= vec
    t = [1] * nd
    left = threads
    for d in order:
        cap = left if lane_cap is None or d not in lane_cap else min(left, lane_cap[d])
        t[d] = math.gcd(rest[d], cap)
        rest[d] //= t[d]
        left //= t[d]
    mode_shape, ids_outer, ids_thread, k = [], {}, {}, 0
    vec_id = None
    for d in range(nd):
        modes = [rest[d], t[d]]
        ids_outer[d], ids_thread[d] = k, k + 1
        k += 2
        if d == nd - 1:
            modes.append(vec)
            vec_id = k
            k += 1
        mode_shape.append(tuple(modes))
    spatial_ids = ([-left] if left > 1 else []) + [ids_thread[d] for d in reversed(order)]
    spatial_ids += [ids_thread[d] for d in range(nd) if d not in order]
    local_ids = [ids_outer[d] for d in range(nd)] + [vec_id]
    return canonicalize(RegisterLayout(tuple(mode_shape), tuple(spatial_ids), tuple(local_ids)))


def _packed_vec(shape, dt, threads: int) -> int:
    """The per-thread run of a packed (sub-byte or non-byte-aligned) tile: the
    longest of lcm(128, b)/b, halved down to whole 32-bit words
    (lcm(32, b)/b fields, e.g. 32 u3 = 3 words), that divides the last dim
    and still leaves a run for every thread. A 16-byte run of a small tile
    (u3 [64, 128]: one 48-byte row per thread, 64 rows) would otherwise
    leave threads over, replicating the tile - every thread loading and
    dequantizing twice the fields it needs."""
    word = math.lcm(32, dt.nbits) // dt.nbits
    runs = math.prod(shape) // threads
    vec = _vector_elems(dt)
    while vec > word and vec % 2 == 0 and (shape[-1] % vec or vec > runs):
        vec //= 2
    return vec if shape[-1] % vec == 0 else math.gcd(shape[-1], _vector_elems(dt))


def load_layout(shape, dt, threads: int) -> RegisterLayout:
    """The coalesced global-load layout: each thread holds a run of the last
    dim worth whole 16-byte chunks (`_vector_elems`; narrower, gcd with the
    dim's size, for narrow tiles; for packed types a run of whole 32-bit
    words short enough that no thread is left over, `_packed_vec`), threads
    then spatial along the row, then over rows; outer repetitions local;
    leftover threads replicate."""
    shape = tuple(shape)
    if not shape:
        return replicate(threads)
    if not dt.is_byte_aligned:
        vec = _packed_vec(shape, dt, threads)
    else:
        vec = math.gcd(shape[-1], _vector_elems(dt))
    return blocked_layout(shape, threads, vec)


def default_layout(shape, dt, threads: int) -> RegisterLayout:
    return load_layout(shape, dt, threads)


def full_local(shape, threads: int) -> RegisterLayout:
    """Every thread holds the whole tile: local(*shape) * replicate(threads)."""
    return product(replicate(threads), local(*shape)) if shape else replicate(threads)


def extend_threads(layout: RegisterLayout, threads: int, what: str) -> RegisterLayout:
    """`layout` over exactly `threads` threads: replicate(threads / n) * layout."""
    n = layout.num_threads
    if n == threads:
        return layout
    if n > threads or threads % n:
        raise TLLayoutError(f"{what}: the layout spreads over {n} threads, but the kernel has {threads} "
                            f"(warps * 32); use a layout over a divisor of {threads} threads")
    return product(replicate(threads // n, layout.ndim), layout)


def _drop_dims(layout: RegisterLayout, dims) -> RegisterLayout:
    """Remove size-1, mode-less dims (after reduce) from a layout."""
    dims = set(dims)
    c = canonicalize(layout)
    assert all(not c.mode_shape[d] for d in dims), (layout, dims)
    return RegisterLayout(tuple(m for d, m in enumerate(c.mode_shape) if d not in dims),
                          c.spatial_modes, c.local_modes)


def broadcast_layout(out_layout: RegisterLayout, shape) -> RegisterLayout:
    """The layout a broadcast operand of `shape` needs under a result layout:
    the broadcast dims reduced (their thread digits become replication, their
    slots vanish) and missing leading dims dropped (numpy alignment)."""
    shape = tuple(shape)
    nd = out_layout.ndim
    lead = nd - len(shape)
    out_shape = out_layout.shape
    dims = list(range(lead)) + [lead + i for i, s in enumerate(shape) if s == 1 and out_shape[lead + i] != 1]
    if not dims:
        return out_layout
    r = reduce(out_layout, dims)
    return _drop_dims(r, range(lead)) if lead else r


def expand_layout(layout: RegisterLayout, out_shape) -> RegisterLayout:
    """A result layout for broadcasting a tile of `layout` to `out_shape`:
    each thread holds every broadcast copy of its elements (as local slots)."""
    out_shape = tuple(out_shape)
    lead = len(out_shape) - layout.ndim
    src_shape = (1,) * lead + tuple(layout.shape)
    factors = [o // s if s == 1 else 1 for o, s in zip(out_shape, src_shape)]
    return product(local(*factors), layout)


def view_groups(src_dt, dst_dt) -> tuple[int, int]:
    """(g_in, g_out): elements of each dtype in lcm(bits) bits."""
    bits = math.lcm(src_dt.nbits, dst_dt.nbits)
    return bits // src_dt.nbits, bits // dst_dt.nbits


def _group_atom(ndim: int, g: int) -> RegisterLayout:
    return local(*([1] * (ndim - 1) + [g]))


def view_layout(x_layout: RegisterLayout, src_dt, dst_dt) -> Optional[RegisterLayout]:
    """The layout of view(x, dst_dt): x = A * local(1, .., g_in) ->
    A * local(1, .., g_out); None if x's layout does not hold whole groups."""
    g_in, g_out = view_groups(src_dt, dst_dt)
    a = divide(x_layout, _group_atom(x_layout.ndim, g_in)) if g_in > 1 else x_layout
    if a is None:
        return None
    a = _repad(a, x_layout.ndim)
    return canonicalize(product(a, _group_atom(x_layout.ndim, g_out))) if g_out > 1 else canonicalize(a)


def _repad(layout: RegisterLayout, ndim: int) -> RegisterLayout:
    if layout.ndim == ndim:
        return layout
    return RegisterLayout(((),) * (ndim - layout.ndim) + layout.mode_shape, layout.spatial_modes, layout.local_modes)


def is_shuffle_reducible(layout: RegisterLayout, dim: int) -> bool:
    """True when the reduced dim's thread digits are power-of-two digits lying
    inside the lane bits (thread id bits 0..4): a per-thread reduction over
    the slots plus shfl.bfly over those lanes reduces it."""
    c = canonicalize(layout)
    below = 1
    for e in reversed(c.spatial_modes):
        size = -e if e < 0 else c.mode_sizes[e]
        if e >= 0 and c.mode_dims[e] == dim:
            if size & (size - 1) or below * size > LANES:
                return False
        below *= size
    return True


def reduce_layout(shape, dt, dim: int, threads: int) -> RegisterLayout:
    """A shuffle-reducible layout: the reduced dim spread over up to 32 lanes
    first (after a 16-byte run when it is the last dim), then the other dims."""
    shape = tuple(shape)
    nd = len(shape)
    vec = math.gcd(shape[-1], _vector_elems(dt))
    order = [dim] + [d for d in range(nd - 1, -1, -1) if d != dim]
    return blocked_layout(shape, threads, vec, order, lane_cap={dim: LANES})


def _squeeze_reduced(layout: RegisterLayout, dim: int, keepdim: bool) -> RegisterLayout:
    r = reduce(layout, dim)
    return r if keepdim else _drop_dims(r, [dim])


def slice_layout(layout: RegisterLayout, starts, out_shape) -> Optional[RegisterLayout]:
    """x.layout restricted to a slice when, in every sliced dim, the slice is
    a run of whole blocks of the dim's outermost mode and that mode is local:
    the result is the same layout with that mode shortened (each thread keeps
    a subset of its slots). None otherwise."""
    c = canonicalize(layout)
    mode_shape = [list(m) for m in c.mode_shape]
    for d, (st, n, full) in enumerate(zip(starts, out_shape, c.shape)):
        if n == full:
            continue
        if not mode_shape[d]:
            return None
        first = sum(len(m) for m in c.mode_shape[:d])
        if first in c.spatial_modes:
            return None
        block = full // mode_shape[d][0]
        if st % block or n % block:
            return None
        mode_shape[d][0] = n // block
    return canonicalize(RegisterLayout(tuple(tuple(m) for m in mode_shape), c.spatial_modes, c.local_modes))


def slice_source_layout(shape, starts, out_shape, dt, threads: int) -> RegisterLayout:
    """A layout for a slice's operand that `slice_layout` can cut: when every
    sliced dim's window is an aligned block (size n divides the dim, start a
    multiple of n), local(dim / n per sliced dim) * load_layout(out_shape), so
    the window is one value of an outer local digit; else full_local."""
    factors = []
    for st, n, full in zip(starts, out_shape, shape):
        if full % n or st % n:
            return full_local(shape, threads)
        factors.append(full // n)
    return canonicalize(product(local(*factors), load_layout(out_shape, dt, threads)))


# ================================================================= dots
@dataclass(frozen=True)
class DotLayouts:
    mma: bool
    a: RegisterLayout
    b: RegisterLayout
    c: RegisterLayout
    warp_grid: tuple[int, int] = (1, 1)   # (wm, wn) for mma dots


def _is_mma_shape(m: int, n: int, k: int, a_dt, acc_dt) -> bool:
    return (a_dt.name in _MMA_TYPES and acc_dt.name == "f32"
            and m % 16 == 0 and n % 8 == 0 and k % 16 == 0)


def _warp_grid(m_atoms: int, n_atoms: int, warps: int, m: int, n: int) -> tuple[int, int]:
    best = None
    for wm in (d for d in range(1, warps + 1) if warps % d == 0):
        for wn in (d for d in range(1, warps // wm + 1) if (warps // wm) % d == 0):
            if m_atoms % wm or n_atoms % wn:
                continue
            key = (-(wm * wn), m / wm + n / wn, -wn)
            if best is None or key < best[0]:
                best = (key, (wm, wn))
    return best[1]


def mma_dot_layouts(m: int, n: int, k: int, warps: int) -> DotLayouts:
    """The m16n8k16 fragment tiling of an [M, K] x [K, N] dot (module docstring)."""
    wm, wn = _warp_grid(m // 16, n // 8, warps, m, n)
    r = warps // (wm * wn)
    rm, rn, kk = m // (16 * wm), n // (8 * wn), k // 16
    w = spatial(wm, wn)
    rep = replicate(r, 2)
    c = local(rm, rn) * w * rep * mma_m16n8k16_c()
    a = local(rm, kk) * reduce(w, 1) * rep * mma_m16n8k16_a()
    b = local(kk, rn) * reduce(w, 0) * rep * mma_m16n8k16_b()
    return DotLayouts(True, a, b, c, (wm, wn))


def fma_dot_layouts(m: int, n: int, k: int, acc_dt, threads: int) -> DotLayouts:
    """FMA dot: C blocked over the threads; A = reduce(C, 1) * local(1, K) and
    B = local(K, 1) * reduce(C, 0): each thread holds the rows of A and the
    columns of B its accumulator slots need."""
    c = blocked_layout((m, n), threads, math.gcd(n, 4))
    a = product(reduce(c, 1), local(1, k))
    b = product(local(k, 1), reduce(c, 0))
    return DotLayouts(False, canonicalize(a), canonicalize(b), c)


def dot_layouts(dot: vm.Dot, warps: int) -> DotLayouts:
    """The layouts a dot's operands and accumulator get (mma or FMA)."""
    (m, k), (_, n) = dot.a.shape, dot.b.shape
    if _is_mma_shape(m, n, k, dot.a.dtype, dot.acc.dtype):
        return mma_dot_layouts(m, n, k, warps)
    return fma_dot_layouts(m, n, k, dot.acc.dtype, warps * LANES)


def is_mma_dot(dot: vm.Dot) -> bool:
    """For a dot after inference: True when it is lowered to mma.sync
    m16n8k16 (its operand and accumulator layouts divide by the fragment
    atoms), False for an FMA dot."""
    if dot.a.layout is None or not _is_mma_shape(dot.a.shape[0], dot.b.shape[1], dot.a.shape[1],
                                                 dot.a.dtype, dot.acc.dtype):
        return False
    return (divide(dot.a.layout, mma_m16n8k16_a()) is not None
            and divide(dot.b.layout, mma_m16n8k16_b()) is not None
            and divide(dot.out.layout, mma_m16n8k16_c()) is not None)


# ========================================================= the graph solver
_DERIVED = (vm.Dot, vm.Annotate, vm.View, vm.Reduce, vm.Reshape, vm.Transpose, vm.Concat, vm.Slice)


def _tensor_operands(instr) -> list[vm.RegisterTensor]:
    """The register tiles an instruction reads (not its out)."""
    out = []
    for f in dataclasses.fields(instr):
        if f.name == "out":
            continue
        v = getattr(instr, f.name)
        for item in v if isinstance(v, tuple) else (v,):
            if isinstance(item, vm.RegisterTensor):
                out.append(item)
    return out


def _is_widening_subbyte_cast(s) -> bool:
    """A cast from a sub-byte type keeps its operand's layout (it is derived):
    a layout change then happens after it, on the wide type, so no
    conversion ever moves packed sub-byte fields between threads because of
    a consumer of the cast."""
    return isinstance(s, vm.Cast) and s.x.dtype.nbits < 8


def _instrs(body):
    for s in body:
        if isinstance(s, (vm.For, vm.While)):
            yield from _instrs(s.body)
        elif isinstance(s, vm.If):
            yield from _instrs(s.then_body)
            yield from _instrs(s.else_body)
        elif isinstance(s, vm.Instr):
            yield s


class _Solver:
    def __init__(self, kernel: vm.Kernel):
        self.kernel = kernel
        self.T = kernel.num_threads
        import networkx as nx   # here, not at import time: it costs a new process ~100 ms

        self.graph = nx.MultiDiGraph()
        self.tensor: dict[int, vm.RegisterTensor] = {}
        self.defn: dict[int, Any] = {}            # first definition of each tile
        self.assigns: dict[int, list] = {}       # tile -> Assign instrs targeting it
        self.layout: dict[int, RegisterLayout] = {}
        self.klass: dict[int, int] = {}
        self.derived: set[int] = set()
        self.dots: dict[int, DotLayouts] = {}     # id(Dot) -> its layouts
        self.needs: dict[int, dict] = {}          # id(instr) -> {id(operand): layout} fixed at derivation
        self.pins: dict[int, RegisterLayout] = {}
        self.heap: list = []
        self._origin: Optional[int] = None   # the seed whose front is propagating
        self.seq = itertools.count()
        self._build()

    # ---------------------------------------------------------- graph
    def _node(self, t: vm.RegisterTensor) -> int:
        if id(t) not in self.tensor:
            self.tensor[id(t)] = t
            self.graph.add_node(id(t))
        return id(t)

    def _build(self) -> None:
        for s in _instrs(self.kernel.body):
            out = getattr(s, "out", None)
            if isinstance(s, vm.Assign):
                self.assigns.setdefault(self._node(s.out), []).append(s)
                self.graph.add_edge(self._node(s.x), id(s.out), instr=s)
                continue
            ops = [self._node(t) for t in _tensor_operands(s)]
            if isinstance(out, vm.RegisterTensor):
                o = self._node(out)
                self.defn[o] = s
                for x in ops:
                    self.graph.add_edge(x, o, instr=s)
                if isinstance(s, _DERIVED) or _is_widening_subbyte_cast(s):
                    self.derived.add(o)

    # ---------------------------------------------------------- queue
    def push(self, node: int, layout: Optional[RegisterLayout], klass: int, dist: int) -> None:
        if layout is None or node in self.layout:
            return
        seq = next(self.seq)
        origin = seq if self._origin is None else self._origin
        heapq.heappush(self.heap, (-klass, origin, dist, seq, node, layout))

    def offer(self, node: int, layout: Optional[RegisterLayout], klass: int, dist: int) -> None:
        """A preference from a neighbour: only free (not derived) tiles take it."""
        if node not in self.derived:
            self.push(node, layout, klass, dist)

    def solve(self) -> None:
        self._seed()
        while self.heap:
            negk, origin, dist, _, node, layout = heapq.heappop(self.heap)
            if node in self.layout:
                continue
            t = self.tensor[node]
            assert layout.shape == t.shape and layout.num_threads == self.T, (t.name, layout, t.shape)
            self.layout[node], self.klass[node] = layout, -negk
            self._origin = origin
            self._propagate(node, -negk, dist)
            self._origin = None
        missing = [self.tensor[n].name for n in self.tensor if n not in self.layout]
        if missing:   # every tile is seeded or derived from seeded ones
            raise TLCompileError(f"GPU layout inference left tiles without a layout: {missing}")

    def _seed(self) -> None:
        T = self.T
        for node, s in self.defn.items():
            t = self.tensor[node]
            if isinstance(s, vm.Annotate):
                pin = extend_threads(s.layout, T, f"annotate(%{s.x.name})")
                self.pins[node] = pin
                self.push(node, pin, PIN, 0)
            elif isinstance(s, vm.View) and t.layout is not None:
                pin = extend_threads(t.layout, T, f"view(%{s.x.name}, layout=)")
                self.pins[node] = pin
                self.push(node, pin, PIN, 0)
            elif isinstance(s, vm.Dot):
                d = dot_layouts(s, self.kernel.warps)
                self.dots[id(s)] = d
                self.push(node, d.c, DOT, 0)
            elif isinstance(s, vm.Load):
                uses = [e for e in self.graph.out_edges(node, data="instr")]
                only_bcast = bool(uses) and all(
                    isinstance(i, vm.Elementwise) and i.out.shape != t.shape for _, _, i in uses)
                klass = DEFAULT if only_bcast else LOAD
                self.push(node, load_layout(t.shape, t.dtype, T), klass, 0)
            elif isinstance(s, vm.Reduce):
                # the reduce wishes for a shuffle-reducible operand
                self.offer(id(s.x), reduce_layout(s.x.shape, s.x.dtype, s.dim, T), WISH, 0)
            if node not in self.derived and not isinstance(s, (vm.Load, vm.Dot)):
                self.push(node, default_layout(t.shape, t.dtype, T),
                          DEFAULT if isinstance(s, (vm.LoadShared, vm.Full, vm.Arange)) else FALLBACK, 0)

    # ---------------------------------------------------------- propagation
    def _propagate(self, node: int, klass: int, dist: int) -> None:
        L = self.layout[node]
        d1 = dist + 1
        # forward: consumers
        for _, o, s in self.graph.out_edges(node, data="instr"):
            if isinstance(s, (vm.Cast, vm.Assign)):
                self.offer(o, L, klass, d1)
            elif isinstance(s, vm.Elementwise):
                if self.tensor[node].shape == s.out.shape:
                    self.offer(o, L, klass, d1)
            elif isinstance(s, vm.BroadcastTo):
                self.offer(o, expand_layout(L, s.out.shape), klass, d1)
            if o in self.derived and o not in self.layout:
                self._derive(o, s, klass, d1)
        # backward: producers (and Assign sources of a loop-carried tile)
        s = self.defn.get(node)
        if isinstance(s, vm.Cast):
            self.offer(id(s.x), L, klass, d1)
        elif isinstance(s, (vm.Elementwise, vm.BroadcastTo)):
            for x in _tensor_operands(s):
                self.offer(id(x), broadcast_layout(L, x.shape), klass, d1)
        elif isinstance(s, vm.Annotate):
            self.offer(id(s.x), L, klass, d1)
        elif isinstance(s, vm.Dot):
            d = self.dots[id(s)]
            self.offer(id(s.acc), d.c, klass, d1)
            self.offer(id(s.a), d.a, WISH, d1)
            self.offer(id(s.b), d.b, WISH, d1)
        for a in self.assigns.get(node, ()):
            self.offer(id(a.x), L, klass, d1)

    def _derive(self, o: int, s, klass: int, dist: int) -> None:
        """Compute a derived result's layout once all its operands have one;
        record the operand layouts it assumes (conversions go there)."""
        ops = _tensor_operands(s)
        if any(id(x) not in self.layout for x in ops):
            return
        T = self.T
        lay = {id(x): self.layout[id(x)] for x in ops}
        need: dict[int, RegisterLayout] = {}
        out: Optional[RegisterLayout] = None
        if isinstance(s, (vm.Dot, vm.Annotate)) or o in self.pins:
            return    # seeded; their operand needs are fixed rules
        if isinstance(s, vm.Cast):
            need[id(s.x)] = out = lay[id(s.x)]
        elif isinstance(s, vm.View):
            x = lay[id(s.x)]
            out = view_layout(x, s.x.dtype, s.out.dtype)
            if out is None:
                g_in, _ = view_groups(s.x.dtype, s.out.dtype)
                vec = math.gcd(s.x.shape[-1], math.lcm(_vector_elems(s.x.dtype), g_in))
                x = blocked_layout(s.x.shape, T, vec)
                out = view_layout(x, s.x.dtype, s.out.dtype)
            need[id(s.x)] = x
        elif isinstance(s, vm.Reduce):
            x = lay[id(s.x)]
            if not is_shuffle_reducible(x, s.dim):
                x = reduce_layout(s.x.shape, s.x.dtype, s.dim, T)
            need[id(s.x)] = x
            out = _squeeze_reduced(x, s.dim, s.keepdim)
        elif isinstance(s, vm.Transpose):
            need[id(s.x)] = lay[id(s.x)]
            out = permute(lay[id(s.x)], s.perm)
        elif isinstance(s, vm.Reshape):
            x = lay[id(s.x)]
            try:
                out = reshape(x, s.out.shape)
            except TLLayoutError:
                x = full_local(s.x.shape, T)
                out = full_local(s.out.shape, T)
                klass = FALLBACK
            need[id(s.x)] = x
        elif isinstance(s, vm.Concat):
            first = lay[id(s.parts[0])]
            if all(p.shape == s.parts[0].shape for p in s.parts):
                for p in s.parts:
                    need[id(p)] = first
                out = concat([first] * len(s.parts), s.dim)
            else:
                for p in s.parts:
                    need[id(p)] = full_local(p.shape, T)
                out = full_local(s.out.shape, T)
                klass = FALLBACK
        elif isinstance(s, vm.Slice):
            x = lay[id(s.x)]
            out = slice_layout(x, s.starts, s.out.shape)
            if out is None:
                x = slice_source_layout(s.x.shape, s.starts, s.out.shape, s.x.dtype, T)
                out = slice_layout(x, s.starts, s.out.shape)
                if x == full_local(s.x.shape, T):
                    klass = FALLBACK
            need[id(s.x)] = x
        else:   # pragma: no cover - _DERIVED lists exactly the cases above
            raise TLCompileError(f"GPU layout inference: no rule for {type(s).__name__}")
        self.needs[id(s)] = need
        self.push(o, out, klass, dist)

    # ---------------------------------------------------------- requirements
    def required(self, s, new_out: Optional[vm.RegisterTensor]) -> dict[int, RegisterLayout]:
        """{id(old operand) or field name: layout it must have} for one
        instruction, given the final layouts (a field name wins)."""
        if id(s) in self.needs:
            return self.needs[id(s)]
        L = new_out.layout if new_out is not None else None
        if isinstance(s, (vm.Cast, vm.Assign, vm.Annotate)):
            return {id(s.x): L}
        if isinstance(s, vm.View):   # pinned view
            g_in, g_out = view_groups(s.x.dtype, s.out.dtype)
            x = view_layout(L, s.out.dtype, s.x.dtype)
            if x is None:
                raise TLLayoutError(f"view(%{s.x.name}, layout=): the layout must give each thread whole "
                                    f"groups of {g_out} {s.out.dtype.name} elements along the last dim")
            return {id(s.x): x}
        if isinstance(s, (vm.Elementwise, vm.BroadcastTo)):
            return {id(x): broadcast_layout(L, x.shape) for x in _tensor_operands(s)}
        if isinstance(s, vm.Dot):   # keyed by field: dot(x, x, acc) needs x twice
            d = self.dots[id(s)]
            return {"a": d.a, "b": d.b, "acc": d.c}
        return {}


# ================================================================= rewrite
@dataclass
class _Scope:
    """One body being rewritten. Conversions already emitted and still valid
    are cached per scope (key: (id(old tile), layout)); a loop scope also
    knows which tiles its body defines or re-assigns, to hoist conversions of
    loop-invariant tiles in front of it."""
    cache: dict
    loop: bool = False
    defined: frozenset = frozenset()
    assigned: frozenset = frozenset()
    hoisted: list = dataclasses.field(default_factory=list)


class _Rewriter:
    """Rebuilds the body with laid-out tiles and inserts ConvertLayout right
    before the first consumer that needs it - or, for a tile defined outside
    a loop and not re-assigned in it, in front of the outermost such loop
    (a loop-invariant conversion runs once). A conversion is reused by later
    consumers until its source tile is re-assigned."""

    def __init__(self, solver: _Solver):
        self.solver = solver
        self.new: dict[int, vm.RegisterTensor] = {}
        self._names = {t.name for t in solver.tensor.values()}
        self._count = itertools.count()
        self.scopes: list[_Scope] = []

    def tile(self, t: vm.RegisterTensor) -> vm.RegisterTensor:
        n = self.new.get(id(t))
        if n is None:
            n = dataclasses.replace(t, layout=self.solver.layout[id(t)])
            self.new[id(t)] = n
        return n

    def fresh_name(self, base: str) -> str:
        while True:
            name = f"{base}_cvt{next(self._count)}"
            if name not in self._names:
                self._names.add(name)
                return name

    def _forget(self, ids) -> None:
        for sc in self.scopes:
            for k in [k for k in sc.cache if k[0] in ids]:
                del sc.cache[k]

    def body(self, stmts: tuple, scope: _Scope) -> tuple:
        self.scopes.append(scope)
        out: list = []
        for s in stmts:
            if isinstance(s, (vm.For, vm.While)):
                inner = _Scope({}, loop=True,
                               defined=frozenset(id(i.out) for i in _instrs(s.body)
                                                 if isinstance(getattr(i, "out", None), vm.RegisterTensor)),
                               assigned=frozenset(id(a.out) for a in _assigns_in(s.body)))
                self._forget(inner.assigned)   # the back edge makes them stale inside and after
                new_body = self.body(s.body, inner)
                out.extend(inner.hoisted)
                out.append(dataclasses.replace(s, body=new_body))
            elif isinstance(s, vm.If):
                then_body = self.body(s.then_body, _Scope({}))
                else_body = self.body(s.else_body, _Scope({}))
                out.append(dataclasses.replace(s, then_body=then_body, else_body=else_body))
            elif isinstance(s, vm.Instr):
                out.extend(self.instr(s))
            else:
                out.append(s)
        self.scopes.pop()
        return tuple(out)

    def _lookup(self, key):
        for sc in reversed(self.scopes):
            if key in sc.cache:
                return sc.cache[key]
        return None

    def _home(self, x: vm.RegisterTensor) -> Optional[int]:
        """Index of the outermost loop scope the conversion of x can be
        hoisted in front of (None: emit in place)."""
        home = None
        for i in range(len(self.scopes) - 1, 0, -1):
            sc = self.scopes[i]
            if not sc.loop:
                continue
            if id(x) in sc.defined or id(x) in sc.assigned:
                break
            home = i
        return home

    def instr(self, s) -> list:
        old_out = getattr(s, "out", None)
        new_out = self.tile(old_out) if isinstance(old_out, vm.RegisterTensor) else None
        need = self.solver.required(s, new_out)
        pre: list = []

        def operand(x, field):
            if not isinstance(x, vm.RegisterTensor):
                return x
            src = self.tile(x)
            want = need.get(field, need.get(id(x)))
            if want is None or want == src.layout:
                return src
            key = (id(x), want)
            dst = self._lookup(key)
            if dst is None:
                dst = vm.RegisterTensor(self.fresh_name(x.name), x.dtype, x.shape, want)
                cvt = vm.ConvertLayout(dst, src)
                home = self._home(x)
                if home is None:
                    pre.append(cvt)
                    self.scopes[-1].cache[key] = dst
                else:
                    self.scopes[home].hoisted.append(cvt)
                    self.scopes[home - 1].cache[key] = dst
            return dst

        changes = {}
        for f in dataclasses.fields(s):
            v = getattr(s, f.name)
            if f.name == "out" and new_out is not None:
                changes["out"] = new_out
            elif isinstance(s, vm.Annotate) and f.name == "layout":
                changes["layout"] = new_out.layout   # the pin, over all T threads
            elif isinstance(v, tuple):
                changes[f.name] = tuple(operand(i, None) for i in v)
            else:
                changes[f.name] = operand(v, f.name)
        if isinstance(s, vm.Assign):
            self._forget({id(s.out)})   # conversions of its old value are stale
        return pre + [dataclasses.replace(s, **changes)]


def _assigns_in(body) -> list:
    return [s for s in _instrs(body) if isinstance(s, vm.Assign)]


# ============================================================ entry points
def infer_gpu_layouts(kernel: vm.Kernel, target: "Target | str" = "cuda") -> vm.Kernel:
    """Give every register tile of `kernel` a layout over warps*32 threads and
    insert ConvertLayout where a consumer needs another layout (module
    docstring). The result passes the VM verifier and `check_layouts`."""
    parse_target(target)   # validates; all supported sm share the same fragments
    solver = _Solver(kernel)
    solver.solve()
    rewriter = _Rewriter(solver)
    body = rewriter.body(kernel.body, _Scope({}))
    result = dataclasses.replace(kernel, body=body)
    check_layouts(result)
    return result


def check_layouts(kernel: vm.Kernel) -> None:
    """Check the layout contract of the module docstring on an inferred
    kernel; raise TLCompileError naming the instruction that breaks it."""
    from ..ir.printer import format_instr
    T = kernel.num_threads

    def fail(s, msg):
        raise TLCompileError(f"GPU layouts: kernel '{kernel.name}': {format_instr(s)}: {msg}")

    for s in _instrs(kernel.body):
        tiles = _tensor_operands(s)
        out = getattr(s, "out", None)
        if isinstance(out, vm.RegisterTensor):
            tiles.append(out)
        for t in tiles:
            if t.layout is None:
                fail(s, f"%{t.name} has no layout")
            if t.layout.shape != t.shape:
                fail(s, f"%{t.name}: the layout covers {list(t.layout.shape)}, the tile is {list(t.shape)}")
            if t.layout.num_threads != T:
                fail(s, f"%{t.name}: the layout spans {t.layout.num_threads} threads, not {T}")
        L = out.layout if isinstance(out, vm.RegisterTensor) else None
        if isinstance(s, (vm.Cast, vm.Assign, vm.Annotate)):
            if s.x.layout != L:
                fail(s, "operand and result layouts differ")
        elif isinstance(s, (vm.Elementwise, vm.BroadcastTo)):
            for x in _tensor_operands(s):
                if x.layout != broadcast_layout(L, x.shape):
                    fail(s, f"%{x.name} does not have the broadcast layout of the result")
        elif isinstance(s, vm.Dot):
            d = dot_layouts(s, kernel.warps)
            if (s.a.layout, s.b.layout, s.acc.layout, L) != (d.a, d.b, d.c, d.c):
                fail(s, "dot operands do not have the dot's layouts")
        elif isinstance(s, vm.Reduce):
            if not is_shuffle_reducible(s.x.layout, s.dim):
                fail(s, "the reduce operand is not shuffle-reducible")
            if L != _squeeze_reduced(s.x.layout, s.dim, s.keepdim):
                fail(s, "the reduce result is not reduce(operand layout)")
        elif isinstance(s, vm.View):
            if view_layout(s.x.layout, s.x.dtype, s.out.dtype) != L:
                fail(s, "the view result is not the scaled operand layout")
        elif isinstance(s, vm.Transpose):
            if permute(s.x.layout, s.perm) != L:
                fail(s, "the transpose result is not permute(operand layout)")
        elif isinstance(s, vm.Reshape):
            if reshape(s.x.layout, s.out.shape) != L:
                fail(s, "the reshape result is not reshape(operand layout)")
        elif isinstance(s, vm.Concat):
            ls = [p.layout for p in s.parts]
            ok = (all(p == ls[0] for p in ls) and L == concat(ls, s.dim)) or \
                 (all(p.layout == full_local(p.shape, T) for p in s.parts) and L == full_local(s.out.shape, T))
            if not ok:
                fail(s, "concat parts/result layouts break the concat rule")
        elif isinstance(s, vm.Slice):
            ok = slice_layout(s.x.layout, s.starts, s.out.shape) == L or \
                (s.x.layout == full_local(s.x.shape, T) and L == full_local(s.out.shape, T))
            if not ok:
                fail(s, "the slice result layout breaks the slice rule")
        elif isinstance(s, vm.ConvertLayout):
            if s.src.layout == s.dst.layout:
                fail(s, "a conversion between equal layouts")
