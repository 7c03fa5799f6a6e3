"""Register layouts: how a tile's elements are spread over threads and slots.

A register layout maps (thread t in [0, T), local slot l in [0, L)) to an index
of the tile's shape (DESIGN.md section 5):

* each dimension is split into *modes* (factors whose product is the
  dimension); the index in that dimension is the row-major ravel of its modes'
  digits, first mode most significant;
* every mode is *spatial* (its digit is part of the thread id) or *local* (part
  of the slot id); the spatial list may also hold *replication* entries: r
  threads that hold the same elements;
* the thread id is the row-major ravel of the spatial list's digits, the slot
  id that of the local list's.

Representation: `modes[d]` are the factors of dimension d; modes are numbered
0, 1, ... across dimensions in order; `spatial` and `local` list mode numbers,
and a negative entry -r in `spatial` is an r-fold replication.

Layouts are values: equality and hashing use the canonical form (size-1 modes
dropped, neighbouring modes merged), so two constructions of the same mapping
compare equal and can key a dict.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import TLLayoutError


def _prod(xs) -> int:
    return math.prod(xs)


@dataclass(frozen=True, eq=False)
class RegisterLayout:
    modes: tuple[tuple[int, ...], ...]
    spatial_modes: tuple[int, ...]
    local_modes: tuple[int, ...]

    def __post_init__(self):
        n = sum(len(m) for m in self.modes)
        used = sorted([e for e in self.spatial_modes if e >= 0] + list(self.local_modes))
        if used != list(range(n)):
            raise TLLayoutError(f"every mode must appear once in spatial or local: modes {self.modes}, "
                                f"spatial {self.spatial_modes}, local {self.local_modes}")
        if any(f < 1 for m in self.modes for f in m):
            raise TLLayoutError(f"mode sizes must be positive: {self.modes}")

    # ------------------------------------------------------------ properties
    @cached_property
    def mode_sizes(self) -> tuple[int, ...]:
        return tuple(f for m in self.modes for f in m)

    @cached_property
    def mode_dims(self) -> tuple[int, ...]:
        return tuple(d for d, m in enumerate(self.modes) for _ in m)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(_prod(m) for m in self.modes)

    @property
    def ndim(self) -> int:
        return len(self.modes)

    def _entry_size(self, e: int) -> int:
        return -e if e < 0 else self.mode_sizes[e]

    @property
    def num_threads(self) -> int:
        return _prod(self._entry_size(e) for e in self.spatial_modes)

    @property
    def local_size(self) -> int:
        return _prod(self.mode_sizes[e] for e in self.local_modes)

    @property
    def replication(self) -> int:
        return _prod(-e for e in self.spatial_modes if e < 0)

    @property
    def is_replicated(self) -> bool:
        return self.replication > 1

    # ------------------------------------------------------------------ maps
    def map(self, thread, local) -> tuple:
        """The tile index held by (thread, local); vectorized over arrays."""
        thread, local = np.asarray(thread), np.asarray(local)
        digits: dict[int, np.ndarray] = {}
        for ids, value, size_of in ((self.spatial_modes, thread, self._entry_size),
                                    (self.local_modes, local, lambda e: self.mode_sizes[e])):
            rest = value
            for e in reversed(ids):
                size = size_of(e)
                if e >= 0:
                    digits[e] = rest % size
                rest = rest // size
        index = []
        mode = 0
        for dim_modes in self.modes:
            x = np.zeros(np.broadcast(thread, local).shape, dtype=np.int64)
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

    def owners(self, index) -> list[tuple[int, int]]:
        """Every (thread, local) holding the element at `index`."""
        t, l = np.meshgrid(np.arange(self.num_threads), np.arange(self.local_size), indexing="ij")
        where = np.ones(t.shape, bool)
        for x, i in zip(self.map(t, l), index):
            where &= x == i
        return [(int(a), int(b)) for a, b in zip(t[where], l[where])]

    def locate(self, index) -> tuple:
        """The inverse of `map` for a non-replicated layout (vectorized)."""
        if self.is_replicated:
            raise TLLayoutError("locate() needs a non-replicated layout; use owners()")
        index = [np.asarray(i) for i in index]
        digits: dict[int, np.ndarray] = {}
        mode = sum(len(m) for m in self.modes)
        for dim_modes, x in zip(reversed(self.modes), reversed(index)):
            rest = x
            for f in reversed(dim_modes):
                mode -= 1
                digits[mode] = rest % f
                rest = rest // f

        def ravel(ids):
            v = 0
            for e in ids:
                v = v * self.mode_sizes[e] + digits[e]
            return v
        t, l = ravel(self.spatial_modes), ravel(self.local_modes)
        return (t if np.ndim(t) else int(t)), (l if np.ndim(l) else int(l))

    # --------------------------------------------------------------- algebra
    def __mul__(self, other: "RegisterLayout") -> "RegisterLayout":
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
        return product(self, replicated(n))

    # ------------------------------------------------------- value semantics
    @cached_property
    def canonical(self) -> "RegisterLayout":
        return canonicalize(self)

    def _key(self):
        c = self.canonical
        return (c.modes, c.spatial_modes, c.local_modes)

    def __eq__(self, other) -> bool:
        return isinstance(other, RegisterLayout) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"RegisterLayout(shape={list(self.shape)}, modes={[list(m) for m in self.modes]}, " \
               f"spatial={list(self.spatial_modes)}, local={list(self.local_modes)})"

    def __str__(self) -> str:
        from .layout_print import format_layout
        return format_layout(self)


def register_layout(modes, spatial_ids, local_ids) -> RegisterLayout:
    return RegisterLayout(tuple(tuple(int(f) for f in m) for m in modes),
                          tuple(int(e) for e in spatial_ids), tuple(int(e) for e in local_ids))


def _atom(shape, kind: str, column_major: bool) -> RegisterLayout:
    if any(int(s) < 1 for s in shape):
        raise TLLayoutError(f"layout sizes must be positive, got {list(shape)}")
    modes = tuple((int(s),) for s in shape)
    ids = tuple(range(len(shape)))
    if column_major:
        ids = ids[::-1]
    return RegisterLayout(modes, ids if kind == "spatial" else (), ids if kind == "local" else ())


def local(*shape: int) -> RegisterLayout:
    """Every element in one thread, slots in row-major order."""
    return _atom(shape, "local", False)


def spatial(*shape: int) -> RegisterLayout:
    """One element per thread, threads in row-major order."""
    return _atom(shape, "spatial", False)


def column_local(*shape: int) -> RegisterLayout:
    return _atom(shape, "local", True)


def column_spatial(*shape: int) -> RegisterLayout:
    return _atom(shape, "spatial", True)


def replicated(n: int, ndim: int = 1) -> RegisterLayout:
    """n threads holding the same single element (a rank-`ndim` [1, ...] tile)."""
    if n < 1:
        raise TLLayoutError(f"replication must be >= 1, got {n}")
    return RegisterLayout(((),) * ndim, (-n,) if n > 1 else (), ())


def product(a: RegisterLayout, b: RegisterLayout) -> RegisterLayout:
    """A * B: B's digits are the least significant in every dimension, thread and slot."""
    nd = max(a.ndim, b.ndim)
    am = ((),) * (nd - a.ndim) + a.modes
    bm = ((),) * (nd - b.ndim) + b.modes
    # New numbering: per dimension, A's modes then B's.
    a_new, b_new, modes, k = [], [], [], 0
    a_iter, b_iter = itertools.count(), itertools.count()
    a_map, b_map = {}, {}
    for d in range(nd):
        for f in am[d]:
            a_map[next(a_iter)] = k
            k += 1
        for f in bm[d]:
            b_map[next(b_iter)] = k
            k += 1
        modes.append(am[d] + bm[d])

    def renumber(ids, mapping):
        return tuple(mapping[e] if e >= 0 else e for e in ids)
    return RegisterLayout(tuple(modes), renumber(a.spatial_modes, a_map) + renumber(b.spatial_modes, b_map),
                          renumber(a.local_modes, a_map) + renumber(b.local_modes, b_map))


def canonicalize(layout: RegisterLayout) -> RegisterLayout:
    """Drop size-1 modes and merge neighbours; the result maps identically."""
    sizes = list(layout.mode_sizes)
    dims = list(layout.mode_dims)
    spatial_ids = [e for e in layout.spatial_modes if not (e >= 0 and sizes[e] == 1) and e != -1]
    local_ids = [e for e in layout.local_modes if sizes[e] != 1]
    alive = [i for i in range(len(sizes)) if sizes[i] != 1]
    changed = True
    while changed:
        changed = False
        for ids in (spatial_ids, local_ids):
            for i in range(len(ids) - 1):
                x, y = ids[i], ids[i + 1]
                if x < 0 and y < 0:
                    ids[i:i + 2] = [x * -y]   # -r1, -r2 -> -(r1 r2)
                    changed = True
                    break
                if x >= 0 and y >= 0 and dims[x] == dims[y] and alive.index(y) == alive.index(x) + 1:
                    sizes[x] *= sizes[y]
                    ids[i:i + 2] = [x]
                    alive.remove(y)
                    changed = True
                    break
            if changed:
                break
    number = {old: new for new, old in enumerate(alive)}
    modes = tuple(tuple(sizes[i] for i in alive if dims[i] == d) for d in range(layout.ndim))
    return RegisterLayout(modes, tuple(number[e] if e >= 0 else e for e in spatial_ids),
                          tuple(number[e] for e in local_ids))


def _split(layout: RegisterLayout, cuts: list[list[int]]) -> RegisterLayout | None:
    """Refine each dimension's modes so that its digits break at the given
    suffix products (cuts[d] = products of trailing modes that must be mode
    boundaries); None if a mode cannot be split there."""
    modes, spatial_ids, local_ids = [], [], []
    replace: dict[int, list[int]] = {}
    k = 0
    old = 0
    for d, dim_modes in enumerate(layout.modes):
        new_dim: list[int] = []
        suffix = _prod(dim_modes)
        for f in dim_modes:
            lo = suffix // f        # product of the modes after this one
            inner = sorted(c for c in cuts[d] if lo < c < suffix)
            parts, prev = [], lo
            for c in inner:
                if c % prev:
                    return None
                parts.append(c // prev)
                prev = c
            if suffix % prev:
                return None
            parts.append(suffix // prev)
            parts = parts[::-1]   # most significant first
            replace[old] = list(range(k, k + len(parts)))
            new_dim += parts
            k += len(parts)
            old += 1
            suffix = lo
        modes.append(tuple(new_dim))
    for e in layout.spatial_modes:
        spatial_ids += replace[e] if e >= 0 else [e]
    for e in layout.local_modes:
        local_ids += replace[e]
    return RegisterLayout(tuple(modes), tuple(spatial_ids), tuple(local_ids))


def _suffix_products(dim_modes) -> list[int]:
    out, p = [], 1
    for f in reversed(dim_modes):
        p *= f
        out.append(p)
    return out


def divide(layout: RegisterLayout, atom: RegisterLayout) -> RegisterLayout | None:
    """The A with A * atom == layout, or None when the layout is not built from atom."""
    L, B = canonicalize(layout), canonicalize(atom)
    nd = max(L.ndim, B.ndim)
    if L.ndim < nd:
        return None
    B = RegisterLayout(((),) * (nd - B.ndim) + B.modes, B.spatial_modes, B.local_modes)
    if any(l % b for l, b in zip(L.shape, B.shape)):
        return None
    cuts = [sorted(set(_suffix_products(lm) + _suffix_products(bm)) | {bs})
            for lm, bm, bs in zip(L.modes, B.modes, B.shape)]
    L2 = _split(L, [[c for c in cs if c <= bs] for cs, bs in zip(cuts, B.shape)])
    B2 = _split(B, [[c for c in cs if c <= bs] for cs, bs in zip(cuts, B.shape)])
    if L2 is None or B2 is None:
        return None
    # Pair each of B's modes with L's trailing modes in the same dimension.
    pair: dict[int, int] = {}
    a_modes = []
    lk = bk = 0
    for lm, bm in zip(L2.modes, B2.modes):
        n_a = len(lm) - len(bm)
        if n_a < 0 or tuple(lm[n_a:]) != tuple(bm):
            return None
        a_modes.append(tuple(lm[:n_a]))
        for j in range(len(bm)):
            pair[bk + j] = lk + n_a + j
        lk += len(lm)
        bk += len(bm)

    def strip(l_ids, b_ids):
        """l_ids without the suffix matching b_ids; a replication factor of L
        may be split, since replication digits do not affect the map."""
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
    a_spatial, a_local = strip(L2.spatial_modes, B2.spatial_modes), strip(L2.local_modes, B2.local_modes)
    if a_spatial is None or a_local is None:
        return None
    kept = sorted(e for e in a_spatial + a_local if e >= 0)
    number = {old: new for new, old in enumerate(kept)}
    result = RegisterLayout(tuple(a_modes), tuple(number[e] if e >= 0 else e for e in a_spatial),
                            tuple(number[e] for e in a_local))
    return canonicalize(result) if product(result, atom) == layout else None


def reduce(layout: RegisterLayout, dims) -> RegisterLayout:
    """Reduce over `dims`: they become size 1, their spatial modes replication
    (same place in the thread id), their local modes vanish."""
    dims = {d % layout.ndim for d in ([dims] if isinstance(dims, int) else dims)}
    sizes, mdims = layout.mode_sizes, layout.mode_dims
    keep = [i for i in range(len(sizes)) if mdims[i] not in dims]
    number = {old: new for new, old in enumerate(keep)}
    spatial_ids = tuple(number[e] if e >= 0 and mdims[e] not in dims else (-sizes[e] if e >= 0 else e)
                        for e in layout.spatial_modes)
    local_ids = tuple(number[e] for e in layout.local_modes if mdims[e] not in dims)
    modes = tuple(() if d in dims else m for d, m in enumerate(layout.modes))
    return canonicalize(RegisterLayout(modes, spatial_ids, local_ids))


def permute(layout: RegisterLayout, perm) -> RegisterLayout:
    """Reorder the dimensions: result dim i is layout dim perm[i]."""
    perm = tuple(perm)
    if sorted(perm) != list(range(layout.ndim)):
        raise TLLayoutError(f"{list(perm)} is not a permutation of {layout.ndim} dims")
    starts = list(itertools.accumulate([0] + [len(m) for m in layout.modes]))
    order = [starts[d] + j for d in perm for j in range(len(layout.modes[d]))]
    number = {old: new for new, old in enumerate(order)}
    return RegisterLayout(tuple(layout.modes[d] for d in perm),
                          tuple(number[e] if e >= 0 else e for e in layout.spatial_modes),
                          tuple(number[e] for e in layout.local_modes))


def local_offsets(layout: RegisterLayout, strides) -> np.ndarray:
    """[threads, slots] memory offsets of every element for row-major-ish strides."""
    t, l = np.meshgrid(np.arange(layout.num_threads), np.arange(layout.local_size), indexing="ij")
    return sum(x * s for x, s in zip(layout.map(t, l), strides))


def contiguous_run(layout: RegisterLayout, strides) -> int:
    """Largest power of two R dividing local_size such that every aligned group
    of R consecutive slots of every thread sits at consecutive offsets."""
    if len(strides) != layout.ndim:
        raise TLLayoutError(f"{len(strides)} strides for a rank-{layout.ndim} layout")
    offsets = local_offsets(layout, strides)
    run = 1 << (layout.local_size & -layout.local_size).bit_length() - 1
    while run > 1:
        groups = offsets.reshape(layout.num_threads, -1, run)
        if np.all(np.diff(groups, axis=2) == 1):
            return run
        run //= 2
    return 1


# mma.sync m16n8k16 fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16"),
# expressed in the algebra rather than special-cased.
def mma_m16n8k16_a() -> RegisterLayout:
    """A operand [16 (m), 16 (k)]: a_i at row g + 8*((i>>1)&1), col 2*tig + (i&1) + 8*(i>>2)."""
    return column_local(2, 2).spatial(8, 4).local(1, 2)


def mma_m16n8k16_b() -> RegisterLayout:
    """B operand [16 (k), 8 (n)]: b_i at row 2*tig + (i&1) + 8*(i>>1), col g."""
    return local(2, 1).column_spatial(4, 8).local(2, 1)


def mma_m16n8k16_c() -> RegisterLayout:
    """Accumulator [16 (m), 8 (n)]: c_i at row g + 8*(i>>1), col 2*tig + (i&1)."""
    return local(2, 1).spatial(8, 4).local(1, 2)
