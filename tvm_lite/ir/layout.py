"""Register layouts: how a tile's elements are spread over threads and slots.

A register layout maps (thread t in [0, T), local slot l in [0, L)) to an index
of the tile's shape (DESIGN.md section 5). Representation (Tilus-like):

* `mode_shape[d]` splits dimension d into *modes*, factors whose product is
  shape[d] (no modes: size 1). The index x_d is the row-major ravel of its
  modes' digits, first mode most significant. Modes are numbered 0, 1, ...
  across all dimensions in order (dimension 0's modes first).
* `spatial_modes` lists mode ids whose digits form the thread id, row-major
  (first entry most significant). A *negative* entry -r is an r-fold
  replication: a thread digit of size r that selects no element, so r
  threads hold the same data.
* `local_modes` lists mode ids whose digits form the slot id, row-major.
* every mode id appears exactly once in spatial_modes or local_modes.

Layouts are values: `==` and `hash` use the canonical form (size-1 modes and
-1 replications dropped; modes adjacent in the same dimension and consecutive
in the same list merged; adjacent replications merged). The canonical form is
unique for a given (thread, slot) -> index map, so two constructions of one
mapping compare equal and key a dict alike.

Free functions do the algebra: `product` (also `A * B`), `divide`, `reduce`,
`permute`, `reshape`, `concat`, `canonicalize`, `contiguous_run`,
`contiguous_dim_run`.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import TLLayoutError
from .layout_print import format_layout

__all__ = ["RegisterLayout", "register_layout", "local", "spatial", "column_local", "column_spatial",
           "replicate", "product", "divide", "reduce", "permute", "reshape", "concat",
           "canonicalize", "contiguous_run", "contiguous_dim_run", "local_offsets", "format_layout",
           "mma_m16n8k16_a", "mma_m16n8k16_b", "mma_m16n8k16_c"]


def _ints(xs, what: str) -> tuple[int, ...]:
    # operator.index takes Python and numpy integers and refuses floats, so
    # 2.5 is an error rather than a silent 2.
    try:
        return tuple(operator.index(x) for x in xs)
    except TypeError:
        raise TLLayoutError(f"{what} must be integers, got {xs!r}") from None


def _renumber(ids, number: dict[int, int]) -> tuple[int, ...]:
    """Map mode ids through `number`, keeping replication entries."""
    return tuple(number[e] if e >= 0 else e for e in ids)


@dataclass(frozen=True, eq=False)
class RegisterLayout:
    """A register layout (module docstring). Build with the constructors and
    the algebra; construct directly only with a valid mode assignment. The
    fields are the raw form; == and hash compare canonical forms."""
    mode_shape: tuple[tuple[int, ...], ...]
    spatial_modes: tuple[int, ...]
    local_modes: tuple[int, ...]

    def __post_init__(self):
        # Normalize to tuples of ints so that a layout built from lists still
        # hashes, and so that repr and equality never see numpy integers.
        object.__setattr__(self, "mode_shape", tuple(_ints(m, "mode sizes") for m in self.mode_shape))
        object.__setattr__(self, "spatial_modes", _ints(self.spatial_modes, "spatial modes"))
        object.__setattr__(self, "local_modes", _ints(self.local_modes, "local modes"))
        n = sum(len(m) for m in self.mode_shape)
        if any(f < 1 for m in self.mode_shape for f in m):
            raise TLLayoutError(f"mode sizes must be positive: {self.mode_shape}")
        if any(e < 0 for e in self.local_modes):
            raise TLLayoutError(f"replication belongs in spatial_modes, not local_modes: {self.local_modes}")
        used = sorted([e for e in self.spatial_modes if e >= 0] + list(self.local_modes))
        if used != list(range(n)):
            raise TLLayoutError(f"every mode must appear exactly once in spatial or local modes: "
                                f"mode_shape {self.mode_shape}, spatial {self.spatial_modes}, "
                                f"local {self.local_modes}")

    # ------------------------------------------------------------ properties
    @cached_property
    def mode_sizes(self) -> tuple[int, ...]:
        """Size of every mode, by mode id."""
        return tuple(f for m in self.mode_shape for f in m)

    @cached_property
    def mode_dims(self) -> tuple[int, ...]:
        """Dimension of every mode, by mode id."""
        return tuple(d for d, m in enumerate(self.mode_shape) for _ in m)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(math.prod(m) for m in self.mode_shape)

    @property
    def ndim(self) -> int:
        return len(self.mode_shape)

    def _entry_size(self, e: int) -> int:
        return -e if e < 0 else self.mode_sizes[e]

    @property
    def num_threads(self) -> int:
        return math.prod(self._entry_size(e) for e in self.spatial_modes)

    @property
    def local_size(self) -> int:
        return math.prod(self.mode_sizes[e] for e in self.local_modes)

    @property
    def replication(self) -> int:
        """How many threads hold each element (1: not replicated)."""
        return math.prod(-e for e in self.spatial_modes if e < 0)

    @property
    def is_replicated(self) -> bool:
        return self.replication > 1

    # ------------------------------------------------------------------ maps
    def _digits_of_ids(self, thread, local) -> dict[int, np.ndarray]:
        digits: dict[int, np.ndarray] = {}
        for ids, value in ((self.spatial_modes, thread), (self.local_modes, local)):
            rest = value
            for e in reversed(ids):
                size = self._entry_size(e)
                if e >= 0:
                    digits[e] = rest % size
                rest = rest // size
        return digits

    def map(self, thread, local) -> tuple:
        """The tile index held by (thread, local): one array per dimension,
        broadcast over the two arguments (plain ints when both are ints)."""
        thread = np.asarray(thread, dtype=np.int64)
        local = np.asarray(local, dtype=np.int64)
        if np.any((thread < 0) | (thread >= self.num_threads)) or np.any((local < 0) | (local >= self.local_size)):
            raise TLLayoutError(f"(thread, local) outside [0, {self.num_threads}) x [0, {self.local_size})")
        digits = self._digits_of_ids(thread, local)
        shape = np.broadcast(thread, local).shape
        index, mode = [], 0
        for dim_modes in self.mode_shape:
            x = np.zeros(shape, dtype=np.int64)
            for f in dim_modes:
                x = x * f + digits[mode]
                mode += 1
            index.append(x if x.ndim else int(x))
        return tuple(index)

    def global_index(self, thread, local):
        """Row-major flat index of map(thread, local)."""
        flat = 0
        for x, s in zip(self.map(thread, local), self.shape):
            flat = flat * s + x
        return flat

    def _index_digits(self, index) -> dict[int, np.ndarray]:
        if len(index) != self.ndim:
            raise TLLayoutError(f"a rank-{self.ndim} layout needs {self.ndim} indices, got {len(index)}")
        digits: dict[int, np.ndarray] = {}
        mode = len(self.mode_sizes)
        for dim_modes, x, s in zip(reversed(self.mode_shape), reversed(index), reversed(self.shape)):
            rest = np.asarray(x, dtype=np.int64)
            if np.any((rest < 0) | (rest >= s)):
                raise TLLayoutError(f"index {x} out of range for a dimension of size {s}")
            for f in reversed(dim_modes):
                mode -= 1
                digits[mode] = rest % f
                rest = rest // f
        return digits

    def _ravel(self, ids, digits):
        v = 0
        for e in ids:
            v = v * self.mode_sizes[e] + digits[e]
        return v if np.ndim(v) else int(v)

    def locate(self, index) -> tuple:
        """The inverse of `map` for a non-replicated layout: (thread, local)
        holding `index` (a tuple of ints or of broadcastable arrays)."""
        if self.is_replicated:
            raise TLLayoutError("locate() needs a non-replicated layout; use owners()")
        digits = self._index_digits(tuple(index))
        return self._ravel(self.spatial_modes, digits), self._ravel(self.local_modes, digits)

    def owners(self, index) -> list[tuple[int, int]]:
        """Every (thread, local) holding the element at `index` (ints), sorted."""
        digits = {e: int(v) for e, v in self._index_digits(tuple(index)).items()}
        threads = [0]
        for e in self.spatial_modes:
            size = self._entry_size(e)
            choices = range(size) if e < 0 else (digits[e],)
            threads = [t * size + c for t in threads for c in choices]
        slot = self._ravel(self.local_modes, digits)
        return sorted((t, slot) for t in threads)

    # --------------------------------------------------------------- algebra
    def __mul__(self, other):
        if not isinstance(other, RegisterLayout):
            return NotImplemented
        return product(self, other)

    def local(self, *shape: int) -> "RegisterLayout":
        """self * local(*shape): the fluent form, spatial(8, 4).local(1, 2)."""
        return product(self, local(*shape))

    def spatial(self, *shape: int) -> "RegisterLayout":
        return product(self, spatial(*shape))

    def column_local(self, *shape: int) -> "RegisterLayout":
        return product(self, column_local(*shape))

    def column_spatial(self, *shape: int) -> "RegisterLayout":
        return product(self, column_spatial(*shape))

    def replicate(self, n: int) -> "RegisterLayout":
        return product(self, replicate(n))

    # ------------------------------------------------------- value semantics
    @cached_property
    def canonical(self) -> "RegisterLayout":
        return canonicalize(self)

    @cached_property
    def _key(self):
        c = self.canonical
        return (c.mode_shape, c.spatial_modes, c.local_modes)

    def __eq__(self, other) -> bool:
        if not isinstance(other, RegisterLayout):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return (f"RegisterLayout(shape={list(self.shape)}, mode_shape={[list(m) for m in self.mode_shape]}, "
                f"spatial_modes={list(self.spatial_modes)}, local_modes={list(self.local_modes)})")

    def __str__(self) -> str:
        """format_layout: a grid of `t<thread>:<slot>` cells (ranks 1 and 2)."""
        return format_layout(self)


# ------------------------------------------------------------- constructors
def register_layout(shape, mode_shape, spatial_modes, local_modes) -> RegisterLayout:
    """The general constructor; `shape[d]` must be the product of `mode_shape[d]`."""
    layout = RegisterLayout(tuple(mode_shape), spatial_modes, local_modes)
    if layout.shape != _ints(shape, "shape"):
        raise TLLayoutError(f"mode_shape {layout.mode_shape} does not multiply out to shape {list(shape)}")
    return layout


def _atom(shape, spatial_kind: bool, column_major: bool) -> RegisterLayout:
    shape = _ints(shape, "layout sizes")
    if any(s < 1 for s in shape):
        raise TLLayoutError(f"layout sizes must be positive, got {list(shape)}")
    ids = tuple(range(len(shape)))
    if column_major:
        ids = ids[::-1]
    return RegisterLayout(tuple((s,) for s in shape), ids if spatial_kind else (), () if spatial_kind else ids)


def local(*shape: int) -> RegisterLayout:
    """Every element in one thread, slots in row-major order."""
    return _atom(shape, False, False)


def spatial(*shape: int) -> RegisterLayout:
    """One element per thread, threads in row-major order."""
    return _atom(shape, True, False)


def column_local(*shape: int) -> RegisterLayout:
    """Every element in one thread, slots in column-major order (last dim's digit most significant)."""
    return _atom(shape, False, True)


def column_spatial(*shape: int) -> RegisterLayout:
    """One element per thread, threads in column-major order."""
    return _atom(shape, True, True)


def replicate(n: int, ndim: int = 0) -> RegisterLayout:
    """n threads holding the same single element. Rank 0 by default, so a
    product pads it to the other factor's rank: spatial(4, 8).replicate(2)."""
    n, ndim = _ints((n, ndim), "replicate() arguments")
    if n < 1 or ndim < 0:
        raise TLLayoutError(f"replicate() needs n >= 1 and ndim >= 0, got n={n}, ndim={ndim}")
    return RegisterLayout(((),) * ndim, (-n,) if n > 1 else (), ())


# ------------------------------------------------------------------ algebra
def _pad(layout: RegisterLayout, ndim: int) -> RegisterLayout:
    """The same layout with leading size-1 dimensions up to rank `ndim`."""
    return RegisterLayout(((),) * (ndim - layout.ndim) + layout.mode_shape, layout.spatial_modes, layout.local_modes)


def product(a: RegisterLayout, b: RegisterLayout) -> RegisterLayout:
    """A * B: x_d = a_d * sB_d + b_d, t = tA * TB + tB, l = lA * LB + lB.
    The shorter rank is padded with leading 1s. Associative, not commutative."""
    nd = max(a.ndim, b.ndim)
    a, b = _pad(a, nd), _pad(b, nd)
    # New numbering: per dimension, A's modes (more significant) then B's.
    a_map, b_map, mode_shape, k = {}, {}, [], 0
    ai = bi = 0
    for am, bm in zip(a.mode_shape, b.mode_shape):
        for _ in am:
            a_map[ai], ai, k = k, ai + 1, k + 1
        for _ in bm:
            b_map[bi], bi, k = k, bi + 1, k + 1
        mode_shape.append(am + bm)
    return RegisterLayout(tuple(mode_shape),
                          _renumber(a.spatial_modes, a_map) + _renumber(b.spatial_modes, b_map),
                          _renumber(a.local_modes, a_map) + _renumber(b.local_modes, b_map))


def canonicalize(layout: RegisterLayout) -> RegisterLayout:
    """Drop size-1 modes and -1 replications; merge modes adjacent in one
    dimension and consecutive in one list, and adjacent replications. The
    result maps identically and is unique for the map."""
    sizes, dims = list(layout.mode_sizes), layout.mode_dims
    spatial_ids = [e for e in layout.spatial_modes if e != -1 and (e < 0 or sizes[e] != 1)]
    local_ids = [e for e in layout.local_modes if sizes[e] != 1]
    alive = [i for i in range(len(sizes)) if sizes[i] != 1]
    for ids in (spatial_ids, local_ids):
        i = 0
        while i + 1 < len(ids):
            x, y = ids[i], ids[i + 1]
            if x < 0 and y < 0:
                ids[i:i + 2] = [-(x * y)]   # -r1, -r2 -> -(r1 r2)
            elif (x >= 0 and y >= 0 and dims[x] == dims[y]
                  and alive.index(y) == alive.index(x) + 1):
                sizes[x] *= sizes[y]
                ids[i:i + 2] = [x]
                alive.remove(y)
            else:
                i += 1
    number = {old: new for new, old in enumerate(alive)}
    mode_shape = tuple(tuple(sizes[i] for i in alive if dims[i] == d) for d in range(layout.ndim))
    return RegisterLayout(mode_shape, _renumber(spatial_ids, number), _renumber(local_ids, number))


def _refine(layout: RegisterLayout, cuts) -> RegisterLayout | None:
    """Split modes so that, in every dimension d, each c in cuts[d] is a
    product of trailing modes (a digit boundary). None if a cut falls inside
    a mode without dividing it (the split would not be a digit split)."""
    mode_shape, replace, k, old = [], {}, 0, 0
    for dim_modes, dim_cuts in zip(layout.mode_shape, cuts):
        new_dim: list[int] = []
        hi = math.prod(dim_modes)
        for f in dim_modes:
            lo = hi // f        # product of the modes after this one
            parts, prev = [], lo
            for c in sorted(c for c in set(dim_cuts) if lo < c < hi):
                if c % prev or hi % c:
                    return None
                parts.append(c // prev)
                prev = c
            parts.append(hi // prev)
            parts.reverse()     # most significant first
            replace[old] = list(range(k, k + len(parts)))
            new_dim += parts
            k, old, hi = k + len(parts), old + 1, lo
        mode_shape.append(tuple(new_dim))
    spatial_ids = [n for e in layout.spatial_modes for n in (replace[e] if e >= 0 else [e])]
    local_ids = [n for e in layout.local_modes for n in replace[e]]
    return RegisterLayout(tuple(mode_shape), tuple(spatial_ids), tuple(local_ids))


def _suffix_products(sizes) -> list[int]:
    out, p = [1], 1
    for f in reversed(sizes):
        p *= f
        out.append(p)
    return out


def _strip_suffix(l_ids, b_ids, pair) -> list[int] | None:
    """l_ids without a tail matching b_ids (B's mode ids mapped by `pair`). A
    replication of L may be split to match B's, since replication digits do
    not affect the map; None if the tail does not match."""
    rest = list(l_ids)
    for e in reversed(b_ids):
        if not rest:
            return None
        last = rest.pop()
        if e >= 0:
            if last != pair[e]:
                return None
        elif last >= 0 or last % e:
            return None
        elif last != e:
            rest.append(-(last // e))
    return rest


def divide(layout: RegisterLayout, atom: RegisterLayout) -> RegisterLayout | None:
    """The (canonical) A with A * atom == layout, or None when there is none:
    the atom's shape, thread count or slot count does not divide the
    layout's, or the atom's digits are not the least significant digits of
    the layout's index, thread and slot ids in the same arrangement. A has
    the layout's rank and is unique when it exists (its map is
    layout.map(tA * TB, lA * LB) // sB)."""
    L, B = canonicalize(layout), canonicalize(atom)
    if B.ndim > L.ndim:
        return None
    B = _pad(B, L.ndim)
    if any(ls % bs for ls, bs in zip(L.shape, B.shape)):
        return None
    cuts = [[c for c in _suffix_products(lm) if c <= bs] + _suffix_products(bm)
            for lm, bm, bs in zip(L.mode_shape, B.mode_shape, B.shape)]
    L2 = _refine(L, cuts)
    if L2 is None:
        return None
    B2 = _refine(B, cuts)   # L2's success makes the cuts a divisor chain, so B2 succeeds
    pair: dict[int, int] = {}   # B2 mode id -> L2 mode id
    a_shape, a_ids, lk, bk = [], [], 0, 0
    for lm, bm in zip(L2.mode_shape, B2.mode_shape):
        n_a = len(lm) - len(bm)   # both refined at the same cuts: lm ends with bm
        a_shape.append(tuple(lm[:n_a]))
        a_ids += range(lk, lk + n_a)
        pair.update({bk + j: lk + n_a + j for j in range(len(bm))})
        lk, bk = lk + len(lm), bk + len(bm)
    a_spatial = _strip_suffix(L2.spatial_modes, B2.spatial_modes, pair)
    a_local = _strip_suffix(L2.local_modes, B2.local_modes, pair)
    if a_spatial is None or a_local is None:
        return None
    number = {old: new for new, old in enumerate(a_ids)}
    result = canonicalize(RegisterLayout(tuple(a_shape), _renumber(a_spatial, number), _renumber(a_local, number)))
    assert product(result, atom) == layout, (layout, atom, result)
    return result


def reduce(layout: RegisterLayout, dims) -> RegisterLayout:
    """Reduce over `dims` (an int or ints; negative counts from the end): they
    become size 1, their spatial modes become replication at the same place
    in the thread id, their local modes vanish. Thread count is unchanged."""
    dims = [dims] if isinstance(dims, (int, np.integer)) else list(dims)
    if any(not -layout.ndim <= d < layout.ndim for d in dims):
        raise TLLayoutError(f"reduce dims {dims} out of range for a rank-{layout.ndim} layout")
    dims = {d % layout.ndim for d in dims}
    sizes, mdims = layout.mode_sizes, layout.mode_dims
    number = {old: new for new, old in enumerate(i for i in range(len(sizes)) if mdims[i] not in dims)}
    spatial_ids = tuple(e if e < 0 else (-sizes[e] if mdims[e] in dims else number[e])
                        for e in layout.spatial_modes)
    local_ids = tuple(number[e] for e in layout.local_modes if mdims[e] not in dims)
    mode_shape = tuple(() if d in dims else m for d, m in enumerate(layout.mode_shape))
    return canonicalize(RegisterLayout(mode_shape, spatial_ids, local_ids))


def permute(layout: RegisterLayout, perm) -> RegisterLayout:
    """Reorder the dimensions: result dimension i is layout dimension perm[i]."""
    perm = _ints(perm, "a permutation")
    if sorted(perm) != list(range(layout.ndim)):
        raise TLLayoutError(f"{list(perm)} is not a permutation of {layout.ndim} dims")
    starts = [0]
    for m in layout.mode_shape:
        starts.append(starts[-1] + len(m))
    order = [starts[d] + j for d in perm for j in range(len(layout.mode_shape[d]))]
    number = {old: new for new, old in enumerate(order)}
    return RegisterLayout(tuple(layout.mode_shape[d] for d in perm),
                          _renumber(layout.spatial_modes, number), _renumber(layout.local_modes, number))


def reshape(layout: RegisterLayout, new_shape) -> RegisterLayout:
    """The same (thread, slot) -> row-major flat index map on `new_shape`.
    Needs the modes to regroup cleanly: every new dimension boundary must fall
    on a digit boundary of some mode split; else TLLayoutError."""
    new_shape = _ints(new_shape, "shape")
    if any(s < 1 for s in new_shape) or math.prod(new_shape) != math.prod(layout.shape):
        raise TLLayoutError(f"cannot reshape {list(layout.shape)} to {list(new_shape)}")
    c = canonicalize(layout)
    flat = RegisterLayout((tuple(f for m in c.mode_shape for f in m),), c.spatial_modes, c.local_modes)
    fine = _refine(flat, [_suffix_products(new_shape)])
    if fine is None:
        raise TLLayoutError(f"the modes of {layout!r} do not regroup into shape {list(new_shape)}")
    groups, sizes, i = [], fine.mode_shape[0], 0
    for s in new_shape:
        group = []
        while math.prod(group) < s:
            group.append(sizes[i])
            i += 1
        groups.append(tuple(group))
    return canonicalize(RegisterLayout(tuple(groups), fine.spatial_modes, fine.local_modes))


def concat(parts, dim: int) -> RegisterLayout:
    """The layout of `concat(parts, dim)` where every part has the same layout
    P: the parts are stacked along `dim` by a new local mode of size
    len(parts), the most significant digit of both the dimension and the slot
    id. So x_dim = part * P.shape[dim] + p_dim and slot = part * P.local_size
    + p_slot: the result's registers are the parts' registers one after the
    other, and concatenation moves no data. Parts with different layouts
    (even of equal shape) raise TLLayoutError; the caller converts them first.
    """
    parts = list(parts)
    if not parts or any(not isinstance(p, RegisterLayout) for p in parts):
        raise TLLayoutError("concat() needs a non-empty list of register layouts")
    first = parts[0]
    if any(p != first for p in parts[1:]):
        raise TLLayoutError(f"concat() needs one layout for all parts, got {parts!r}")
    if not -first.ndim <= dim < first.ndim:
        raise TLLayoutError(f"concat dim {dim} out of range for a rank-{first.ndim} layout")
    sizes = [1] * first.ndim
    sizes[dim % first.ndim] = len(parts)
    return local(*sizes) * first


# ------------------------------------------------------------- contiguity
def _strides_or_none(layout: RegisterLayout, strides) -> tuple:
    strides = tuple(strides)
    if len(strides) != layout.ndim:
        raise TLLayoutError(f"{len(strides)} strides for a rank-{layout.ndim} layout")
    return tuple(None if s is None else _ints([s], "strides")[0] for s in strides)


def _all_slots(layout: RegisterLayout):
    return np.meshgrid(np.arange(layout.num_threads), np.arange(layout.local_size), indexing="ij")


def local_offsets(layout: RegisterLayout, strides) -> np.ndarray:
    """[num_threads, local_size] int64 array: the memory offset
    sum(index_d * strides[d]) of the element each (thread, slot) holds.
    Strides are integers (elements); see contiguous_run for None."""
    strides = _strides_or_none(layout, strides)
    if None in strides:
        raise TLLayoutError("local_offsets() needs integer strides")
    t, l = _all_slots(layout)
    return sum((x * s for x, s in zip(layout.map(t, l), strides)), np.zeros(t.shape, dtype=np.int64))


def contiguous_run(layout: RegisterLayout, strides) -> int:
    """Largest power of two R dividing local_size such that, for every thread
    and every aligned slot group [k R, (k + 1) R), the memory offsets step by
    exactly +1 from one slot to the next.

    strides[d] is dimension d's stride in elements, or None for a stride
    unknown at compile time (a runtime row pitch): a group may then not move
    along d at all. The alignment of each group's first offset is not checked
    here; the caller combines R with its divisibility facts (local_offsets
    gives the offsets) to pick the memory operation width. Costs O(T * L).
    """
    strides = _strides_or_none(layout, strides)
    t, l = _all_slots(layout)
    index = layout.map(t, l)
    offsets = sum((x * s for x, s in zip(index, strides) if s is not None), np.zeros(t.shape, dtype=np.int64))
    # A step is good when the known offset moves by +1 and no unknown-stride
    # dimension moves (any move there jumps by an unknown amount).
    good = np.diff(offsets, axis=1) == 1
    for x, s in zip(index, strides):
        if s is None:
            good &= np.diff(x, axis=1) == 0
    run = layout.local_size & -layout.local_size
    while run > 1:
        # Steps inside aligned groups of `run` slots: all but every run-th one.
        inside = (np.arange(1, layout.local_size) % run) != 0
        if np.all(good[:, inside]):
            return run
        run //= 2
    return 1


def contiguous_dim_run(layout: RegisterLayout, dim: int) -> int:
    """contiguous_run when only dimension `dim` is known to be contiguous
    (stride 1) and every other stride is unknown: the largest power-of-two R
    such that each aligned group of R slots walks x_dim by +1 and stays put
    in every other dimension. This is the per-dimension fact for tensors with
    runtime strides (global memory)."""
    if not -layout.ndim <= dim < layout.ndim:
        raise TLLayoutError(f"dim {dim} out of range for a rank-{layout.ndim} layout")
    strides = [None] * layout.ndim
    strides[dim % layout.ndim] = 1
    return contiguous_run(layout, strides)


# ------------------------------------------------------------ mma fragments
# mma.sync m16n8k16 fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"
# with .f16/.bf16 operands), expressed in the algebra rather than special-cased.
# lane: g = lane >> 2, tig = lane % 4; slot i counts the 16-bit elements.
def mma_m16n8k16_a() -> RegisterLayout:
    """A operand [16 (m), 16 (k)]: a_i at row g + 8*((i>>1)&1), col 2*tig + (i&1) + 8*(i>>2)."""
    return column_local(2, 2).spatial(8, 4).local(1, 2)


def mma_m16n8k16_b() -> RegisterLayout:
    """B operand [16 (k), 8 (n)]: b_i at row 2*tig + (i&1) + 8*(i>>1), col g."""
    return local(2, 1).column_spatial(4, 8).local(2, 1)


def mma_m16n8k16_c() -> RegisterLayout:
    """Accumulator [16 (m), 8 (n)]: c_i at row g + 8*(i>>1), col 2*tig + (i&1)."""
    return local(2, 1).spatial(8, 4).local(1, 2)
