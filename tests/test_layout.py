"""The layout algebra, tested by its laws (DESIGN.md section 5)."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tvm_lite.errors import TLError, TLLayoutError
from tvm_lite.ir.layout import (RegisterLayout, canonicalize, column_local, column_spatial, concat,
                                contiguous_dim_run, contiguous_run, divide, format_layout, local, local_offsets,
                                mma_m16n8k16_a, mma_m16n8k16_b, mma_m16n8k16_c, permute, product, reduce,
                                register_layout, replicate, reshape, spatial)
from tvm_lite.ir.shared_layout import SharedLayout, Swizzle, shared_column_major, shared_row_major

ATOMS = [local, spatial, column_local, column_spatial]
factors = st.sampled_from([1, 2, 3, 4])


@st.composite
def atoms(draw, ndim=2):
    make = draw(st.sampled_from(ATOMS))
    return make(*[draw(factors) for _ in range(ndim)])


@st.composite
def layouts(draw, replication=False, ndim=2, max_atoms=3):
    parts = draw(st.lists(atoms(ndim), min_size=1, max_size=max_atoms))
    if replication and draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), replicate(draw(st.sampled_from([2, 3]))))
    out = parts[0]
    for p in parts[1:]:
        out = out * p
    return out


def all_slots(layout):
    return np.meshgrid(np.arange(layout.num_threads), np.arange(layout.local_size), indexing="ij")


def same_map(x, y):
    """x and y map every (thread, slot) to the same index."""
    if (x.shape, x.num_threads, x.local_size) != (y.shape, y.num_threads, y.local_size):
        return False
    t, l = all_slots(x)
    return all(np.array_equal(a, b) for a, b in zip(x.map(t, l), y.map(t, l)))


# ------------------------------------------------------------------ laws
@settings(max_examples=150, deadline=None)
@given(layouts())
def test_non_replicated_layout_is_a_bijection(layout):
    t, l = all_slots(layout)
    flat = layout.global_index(t, l).ravel()
    assert sorted(flat.tolist()) == list(range(int(np.prod(layout.shape))))
    back_t, back_l = layout.locate(layout.map(t, l))
    np.testing.assert_array_equal(back_t, t)
    np.testing.assert_array_equal(back_l, l)
    # and map inverts locate, over every index of the tile
    idx = tuple(np.indices(layout.shape))
    for x, y in zip(layout.map(*layout.locate(idx)), idx):
        np.testing.assert_array_equal(x, y)


@settings(max_examples=150, deadline=None)
@given(layouts(replication=True, max_atoms=2), layouts(replication=True, max_atoms=2))
def test_product_map_composes_factor_maps(a, b):
    p = a * b
    assume(p.num_threads * p.local_size <= 1 << 14)   # keeps the exhaustive check fast
    assert p == product(a, b)
    assert p.shape == tuple(x * y for x, y in zip(a.shape, b.shape))
    assert p.num_threads == a.num_threads * b.num_threads and p.local_size == a.local_size * b.local_size
    assert p.replication == a.replication * b.replication
    t, l = all_slots(p)
    ta, tb = t // b.num_threads, t % b.num_threads
    la, lb = l // b.local_size, l % b.local_size
    for x, xa, xb, sb in zip(p.map(t, l), a.map(ta, la), b.map(tb, lb), b.shape):
        np.testing.assert_array_equal(x, xa * sb + xb)


@settings(max_examples=60, deadline=None)
@given(layouts(replication=True), layouts(replication=True), layouts(replication=True))
def test_product_is_associative(a, b, c):
    assert (a * b) * c == a * (b * c)


def test_product_is_not_commutative_and_pads_ranks():
    assert spatial(2) * local(2) != local(2) * spatial(2)
    p = local(4) * spatial(2, 3)          # rank 1 padded to [1, 4]
    assert p.shape == (2, 12) and p == local(1, 4) * spatial(2, 3)
    assert spatial(4, 8) * replicate(2) == spatial(4, 8).replicate(2)
    assert (spatial(4, 8) * replicate(2)).shape == (4, 8)
    assert spatial(2).__mul__(3) is NotImplemented


@settings(max_examples=150, deadline=None)
@given(layouts(replication=True), layouts(replication=True))
def test_divide_inverts_product(a, b):
    assert divide(a * b, b) == a
    assert divide(a * b, b).shape == a.shape


def test_divide_refuses_a_layout_not_built_from_the_atom():
    assert divide(local(4), local(2, 2)) is None                       # atom of higher rank
    assert divide(local(4, 4), local(3, 1)) is None                    # shape does not divide
    assert divide(spatial(3) * local(2), local(3)) is None             # cut inside a mode of L
    assert divide(spatial(4) * local(2), spatial(3) * local(2)) is None   # 8 % 6
    assert divide(spatial(8, 4), local(2, 2)) is None                  # spatial vs local digits
    assert divide(spatial(4, 4).local(2, 2), spatial(2, 2)) is None    # B's digits not least significant
    assert divide(local(2, 4) * spatial(4, 2), spatial(4, 4)) is None  # modes differ within a dim
    assert divide(spatial(2), spatial(2) * replicate(2)) is None       # L's thread list runs out
    assert divide(spatial(4) * replicate(2), spatial(2) * replicate(3)) is None  # replication differs
    assert divide(spatial(2) * replicate(2), replicate(2) * spatial(2)) is None  # replication vs mode
    assert divide(column_spatial(2, 2), spatial(1, 2)) is None         # an A digit among B's
    assert divide(spatial(2) * replicate(2), spatial(2)) is None       # replication after B's digits


def test_divide_splits_replication_and_finds_mma_atoms():
    assert divide(spatial(2) * replicate(6), replicate(3)) == spatial(2) * replicate(2)
    assert divide(replicate(6) * spatial(2), replicate(2) * spatial(2)) == replicate(3, ndim=1)   # A has L's rank
    a = mma_m16n8k16_a()
    assert divide(spatial(2, 2) * local(2, 4) * a, a) == spatial(2, 2) * local(2, 4)
    assert divide(a, local(1, 2)) == column_local(2, 2).spatial(8, 4)
    assert divide(spatial(4, 2) * mma_m16n8k16_c(), mma_m16n8k16_c()) == spatial(4, 2)


# --------------------------------------------------------- value semantics
@settings(max_examples=100, deadline=None)
@given(layouts(replication=True))
def test_equal_layouts_hash_equal_and_canonical_form_keeps_the_map(layout):
    rebuilt = replicate(1) * layout * local(1, 1) * spatial(1, 1)
    assert rebuilt == layout and hash(rebuilt) == hash(layout)
    assert {layout: 1}[rebuilt] == 1
    c = canonicalize(layout)
    assert same_map(c, layout) and canonicalize(c).mode_shape == c.mode_shape
    assert all(f > 1 for m in c.mode_shape for f in m)


def test_different_constructions_of_one_map_are_equal():
    assert local(8) == local(2).local(4) == local(2) * local(2) * local(2)
    assert spatial(4, 8) == spatial(2, 1) * spatial(2, 8)
    assert replicate(2) * replicate(3) == replicate(6)
    assert column_spatial(3) == spatial(3) and column_local(1, 5) == local(1, 5)
    assert spatial(2).column_local(2, 3) == spatial(2) * column_local(2, 3)
    assert local(2, 2).mode_shape == ((2,), (2,)) and local(2, 2).mode_sizes == (2, 2)
    assert register_layout([4, 6], [[2, 2], [6]], [0, -2, 2], [1]) == \
        spatial(2, 1).replicate(2).spatial(1, 6) * local(2, 1)
    assert len({local(8), local(2).local(4), local(2, 4), spatial(8)}) == 3
    assert spatial(4) != local(4) and spatial(2, 4) != column_spatial(2, 4)
    assert spatial(4) != "spatial(4)" and local(2, 2) != local(4)


def _signature(layout):
    t, l = all_slots(layout)
    return (layout.shape, layout.num_threads, layout.local_size,
            tuple(x.tobytes() for x in layout.map(t, l)))


def test_canonical_form_is_unique_for_a_map():
    """Over every product of two small atoms (and a replication between):
    same map <=> == <=> same hash, so the canonical form is unique."""
    sizes = [(a, b) for a in (1, 2, 4) for b in (1, 2, 4)]
    atoms_ = [make(*ab) for make in ATOMS for ab in sizes]
    pool = [x * y for x in atoms_ for y in atoms_ if x.num_threads * y.num_threads <= 16]
    pool += [x * replicate(2) * y for x in atoms_[:18] for y in atoms_[18:]]
    groups: dict = {}
    for layout in pool:
        groups.setdefault(_signature(layout), []).append(layout)
    assert len(set(pool)) == len(groups)                 # distinct maps are unequal
    for same in groups.values():                          # equal maps are equal, hash equal
        assert len(set(same)) == 1 and len({hash(x) for x in same}) == 1
        assert len({canonicalize(x).mode_shape for x in same}) == 1


def test_layouts_built_from_lists_are_values():
    a = RegisterLayout([[2], [4]], [1], [0])
    assert a.mode_shape == ((2,), (4,)) and a == local(2, 1) * spatial(1, 4) and {a: 1}[local(2, 1) * spatial(1, 4)]
    assert register_layout(np.array([4]), [np.array([2, 2])], [np.int64(0)], [1]) == spatial(2) * local(2)


@settings(max_examples=60, deadline=None)
@given(layouts(replication=True, ndim=1), layouts(replication=True))
def test_product_pads_the_shorter_rank(a, b):
    a2 = RegisterLayout(((),) + a.mode_shape, a.spatial_modes, a.local_modes)   # padded explicitly
    assert a * b == a2 * b and b * a == b * a2
    assert (a * b).shape == (b.shape[0], a.shape[0] * b.shape[1])


# --------------------------------------------------------------- reduce
@settings(max_examples=80, deadline=None)
@given(layouts(replication=True), st.sampled_from([0, 1, -1, (0, 1)]))
def test_reduce_semantics(layout, dims):
    r = reduce(layout, dims)
    reduced = {d % 2 for d in ((dims,) if isinstance(dims, int) else dims)}
    assert r.shape == tuple(1 if d in reduced else s for d, s in enumerate(layout.shape))
    assert r.num_threads == layout.num_threads
    lost_local = int(np.prod([layout.mode_sizes[e] for e in layout.local_modes if layout.mode_dims[e] in reduced]))
    assert r.local_size * lost_local == layout.local_size
    assert r.num_threads * r.local_size == r.replication * int(np.prod(r.shape))
    # Thread t of r holds exactly the projections of the elements t held,
    # each in one slot (same thread numbering: spatial modes became replication).
    x = layout.map(*all_slots(layout))
    y = r.map(*all_slots(r))
    for t in range(layout.num_threads):
        held = {tuple(0 if d in reduced else int(x[d][t, k]) for d in range(2)) for k in range(layout.local_size)}
        got = [tuple(int(y[d][t, k]) for d in range(2)) for k in range(r.local_size)]
        assert len(set(got)) == len(got) and set(got) == held


def test_reduce_turns_spatial_modes_into_replication():
    layout = spatial(8, 4).local(1, 2)
    r = reduce(layout, 1)
    assert r == spatial(8, 1).replicate(4)
    assert r.shape == (8, 1) and r.num_threads == 32 and r.local_size == 1 and r.replication == 4
    assert r.owners((3, 0)) == [(12, 0), (13, 0), (14, 0), (15, 0)]
    r0 = reduce(local(2, 3).spatial(4, 1), 0)
    assert r0 == local(1, 3) * replicate(4)
    c = reduce(mma_m16n8k16_c(), [1])                 # row sums of an accumulator
    assert c == local(2, 1).spatial(8, 1).replicate(4)
    with pytest.raises(TLLayoutError):
        reduce(layout, 2)


# ------------------------------------------------- permute, reshape, concat
@settings(max_examples=80, deadline=None)
@given(layouts(replication=True, ndim=3), st.permutations([0, 1, 2]))
def test_permute_moves_index_components(layout, perm):
    p = permute(layout, perm)
    t, l = all_slots(layout)
    x, y = layout.map(t, l), p.map(t, l)
    for i, d in enumerate(perm):
        np.testing.assert_array_equal(y[i], x[d])
    assert permute(p, np.argsort(perm)) == layout


@settings(max_examples=80, deadline=None)
@given(layouts(replication=True))
def test_reshape_keeps_the_flat_map(layout):
    n = int(np.prod(layout.shape))
    flat = reshape(layout, (n,))
    t, l = all_slots(layout)
    np.testing.assert_array_equal(flat.map(t, l)[0], layout.global_index(t, l))
    assert reshape(flat, layout.shape) == layout
    assert reshape(layout, (1,) + layout.shape + (1,)).shape == (1,) + layout.shape + (1,)


def test_reshape_regroups_modes_or_refuses():
    assert reshape(spatial(4, 8).local(1, 2), (4, 4, 4)) == spatial(4, 4, 2).local(1, 1, 2)
    assert reshape(local(6), (2, 3)) == local(2, 3)
    with pytest.raises(TLLayoutError):
        reshape(local(6), (4,))
    with pytest.raises(TLLayoutError):
        reshape(spatial(3) * local(2), (2, 3))      # the cut at 3 falls inside the mode of size 3
    with pytest.raises(TLLayoutError):
        reshape(local(4), (0, 4))


@settings(max_examples=60, deadline=None)
@given(layouts(replication=True), st.integers(1, 3), st.sampled_from([0, 1, -1]))
def test_concat_stacks_parts_without_moving_registers(part, n, dim):
    c = concat([part] * n, dim)
    d = dim % 2
    assert c.shape[d] == n * part.shape[d] and c.shape[1 - d] == part.shape[1 - d]
    assert c.num_threads == part.num_threads and c.local_size == n * part.local_size
    t, l = all_slots(part)
    px = part.map(t, l)
    for k in range(n):      # part k's slot l is the result's slot k * L + l
        cx = c.map(t, k * part.local_size + l)
        np.testing.assert_array_equal(cx[d], k * part.shape[d] + px[d])
        np.testing.assert_array_equal(cx[1 - d], px[1 - d])


def test_concat_refuses_mismatched_parts():
    assert concat([spatial(2, 4), spatial(2, 1) * spatial(1, 4)], 1) == local(1, 2) * spatial(2, 4)
    for parts, dim in [([], 0), ([spatial(4), local(4)], 0), ([spatial(2, 4), spatial(2, 4)], 2),
                       ([spatial(2), "spatial(2)"], 0), ([local(2, 1), local(1, 2)], 0)]:
        with pytest.raises(TLLayoutError):
            concat(parts, dim)


def test_permute_rejects_a_non_permutation():
    with pytest.raises(TLLayoutError):
        permute(spatial(2, 4), (0, 0))


# ------------------------------------------------------------ contiguity
def test_contiguity_query():
    assert contiguous_run(spatial(4, 8).local(1, 8), (64, 1)) == 8
    assert contiguous_run(spatial(4, 8).local(1, 8), (1, 4)) == 1
    assert contiguous_run(local(2, 4), (4, 1)) == 8
    assert contiguous_run(local(2, 4), (8, 1)) == 4
    assert contiguous_run(local(2, 6), (8, 1)) == 2         # largest power of two dividing 12
    assert contiguous_run(local(3), (1,)) == 1
    assert contiguous_run(mma_m16n8k16_a(), (16, 1)) == 2
    assert contiguous_run(mma_m16n8k16_b(), (1, 16)) == 2   # B stored column-major (n, k)
    assert contiguous_run(mma_m16n8k16_b(), (8, 1)) == 1
    assert contiguous_run(column_local(2, 4), (4, 1)) == 1
    assert contiguous_run(column_local(2, 4), (1, 2)) == 8
    assert contiguous_run(spatial(2).replicate(2).local(4), (1,)) == 4
    assert local_offsets(local(2, 2), (2, 1)).tolist() == [[0, 1, 2, 3]]
    assert contiguous_run(spatial(4, 8).replicate(2).local(1, 4), (32, 1)) == 4
    assert contiguous_run(local(2, 4) * spatial(4, 8), (32, 1)) == 1   # slots 32 apart
    # None: a stride unknown at compile time; a run may not cross that dimension
    assert contiguous_run(local(2, 4), (None, 1)) == 4
    assert contiguous_run(local(2, 4), (4, 1)) == 8
    assert contiguous_run(local(4, 2), (1, None)) == 1
    assert contiguous_run(column_local(4, 2), (1, None)) == 4
    assert contiguous_run(local(2, 4), (None, None)) == 1
    assert contiguous_dim_run(mma_m16n8k16_a(), 1) == 2 and contiguous_dim_run(mma_m16n8k16_a(), 0) == 1
    assert contiguous_dim_run(spatial(4, 8).local(1, 8), -1) == 8
    assert contiguous_dim_run(mma_m16n8k16_b(), 0) == 2
    for bad in [lambda: contiguous_run(local(2, 4), (1,)), lambda: contiguous_run(local(2), ("x",)),
                lambda: local_offsets(local(2, 2), (None, 1)), lambda: contiguous_dim_run(local(2, 2), 2)]:
        with pytest.raises(TLLayoutError):
            bad()


# --------------------------------------------------------- mma fragments
def test_mma_fragments_follow_the_ptx_isa():
    lane = np.arange(32)[:, None]
    g, tig = lane >> 2, lane % 4
    a, b, c = mma_m16n8k16_a(), mma_m16n8k16_b(), mma_m16n8k16_c()
    i = np.arange(8)[None, :]
    row, col = a.map(lane, i)
    assert a.shape == (16, 16) and a.num_threads == 32 and a.local_size == 8
    np.testing.assert_array_equal(row, g + 8 * ((i >> 1) & 1))
    np.testing.assert_array_equal(col, tig * 2 + (i & 1) + 8 * (i >> 2))
    i = np.arange(4)[None, :]
    row, col = b.map(lane, i)
    assert b.shape == (16, 8) and b.num_threads == 32 and b.local_size == 4
    np.testing.assert_array_equal(row, tig * 2 + (i & 1) + 8 * (i >> 1))
    np.testing.assert_array_equal(col, np.broadcast_to(g, row.shape))
    row, col = c.map(lane, i)
    assert c.shape == (16, 8) and c.num_threads == 32 and c.local_size == 4
    np.testing.assert_array_equal(row, g + 8 * (i >> 1))
    np.testing.assert_array_equal(col, tig * 2 + (i & 1))
    assert b == permute(local(1, 2).spatial(8, 4).local(1, 2), (1, 0))   # B is a transposed-A-like tile
    assert a.replication == b.replication == c.replication == 1


# ----------------------------------------------------- maps, owners, errors
def test_map_and_locate_accept_ints_and_check_ranges():
    layout = spatial(8, 4).local(1, 2)
    assert layout.map(5, 1) == (1, 3) and layout.locate((1, 3)) == (5, 1)
    assert layout.global_index(5, 1) == 11
    assert layout.owners((1, 3)) == [(5, 1)]
    assert replicate(3).map(2, 0) == () and replicate(3).owners(()) == [(0, 0), (1, 0), (2, 0)]
    for bad in [lambda: layout.map(32, 0), lambda: layout.map(0, 2), lambda: layout.map(-1, 0),
                lambda: layout.locate((8, 0)), lambda: layout.locate((0,)),
                lambda: (spatial(4) * replicate(2)).locate((1,))]:
        with pytest.raises(TLLayoutError):
            bad()


def test_layout_errors_are_tl_errors():
    assert issubclass(TLLayoutError, TLError)
    bad = [lambda: local(0, 2), lambda: spatial("x"), lambda: local(2.5), lambda: local(2, 2).local(2, 1.0),
           lambda: replicate(0), lambda: replicate(2, -1), lambda: replicate(2.5),
           lambda: register_layout([4], [[2, 2]], [0], [0]),       # mode 1 missing, mode 0 twice
           lambda: register_layout([4], [[2, 3]], [0], [1]),       # modes do not multiply out
           lambda: register_layout([4], [[4]], [], [-2, 0]),       # replication in the local list
           lambda: RegisterLayout(((0,),), (0,), ()),               # zero-size mode
           lambda: permute(local(2), ("a",))]
    for make in bad:
        with pytest.raises(TLLayoutError):
            make()


def test_printer_draws_threads_and_slots():
    text = str(spatial(2, 2).local(1, 2))
    assert text.splitlines() == ["t0:0 t0:1 t1:0 t1:1", "t2:0 t2:1 t3:0 t3:1"]
    assert format_layout(local(3)) == "t0:0 t0:1 t0:2"
    assert str(reduce(spatial(2, 2), 1)).splitlines() == ["t0-1:0", "t2-3:0"]
    assert str(replicate(2) * spatial(1, 2) * replicate(2)).split() == ["t0-1|t4-5:0", "t2-3|t6-7:0"]
    assert "RegisterLayout(shape=[16, 16]" in repr(mma_m16n8k16_a())
    assert "spatial_modes=[-3]" in str(replicate(3))         # rank 0 prints repr
    assert str(local(1, 2, 2)) == repr(local(1, 2, 2))


# -------------------------------------------------------- shared layouts
@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(1, 4), st.booleans())
def test_swizzles_are_permutations(bits, base, extra, blocks, column):
    shift = bits + extra
    period = 1 << (base + shift + bits)
    make = shared_column_major if column else shared_row_major
    shape = (period, blocks) if column else (blocks, period)
    layout = make(*shape).swizzle(bits, base, shift)
    offsets = np.ravel(layout.offset(tuple(np.indices(shape))))
    assert sorted(offsets.tolist()) == list(range(blocks * period))
    assert layout.size == blocks * period
    sw = Swizzle(bits, base, shift)
    assert sw.period == period
    o = np.arange(period)
    np.testing.assert_array_equal(sw(sw(o)), o)              # an involution


def test_swizzle_formula_and_ldmatrix_banks():
    sw = Swizzle(3, 3, 3)                                    # o ^ ((o >> 3) & 0b111000)
    assert sw(0b101_000_000) == 0b101_101_000 and sw(0b000_111_101) == 0b000_111_101
    layout = shared_row_major(8, 64).swizzle(3, 3, 3)
    chunks = [layout.offset((r, 0)) % 64 // 8 for r in range(8)]
    assert sorted(chunks) == list(range(8))                  # eight rows hit eight 16-byte chunks
    assert layout == shared_row_major(8, 64).swizzle(3, 3, 3) and len({layout, shared_row_major(8, 64)}) == 2


def test_shared_row_and_column_major():
    r, c = shared_row_major(3, 5), shared_column_major(3, 5)
    assert r.strides == (5, 1) and c.strides == (1, 3)
    assert r.offset((2, 4)) == 14 and c.offset((2, 4)) == 14 and c.offset((1, 0)) == 1
    np.testing.assert_array_equal(r.offset((np.arange(3), 1)), [1, 6, 11])
    assert r.size == 15 and c.size == 15 and SharedLayout((4, 4), (8, 1)).size == 28
    assert str(r).splitlines()[0].split() == ["0", "1", "2", "3", "4"]
    assert str(shared_row_major(4)) == "0 1 2 3"
    assert str(shared_row_major(2, 2, 2)) == repr(shared_row_major(2, 2, 2))
    assert "swizzle=(1, 0, 1)" in repr(shared_row_major(4, 4).swizzle(1, 0, 1))
    # a swizzle on a span that is not a whole period still reports 1 + its largest offset
    s = shared_row_major(5).swizzle(1, 0, 2)
    assert s.size == 1 + max(s.offset((i,)) for i in range(5)) == 6


def test_shared_layout_errors():
    bad = [lambda: shared_row_major(4, 8).swizzle(3, 0, 2), lambda: shared_row_major(0, 4),
           lambda: SharedLayout((4,), (1, 1)), lambda: SharedLayout((4,), (-1,)),
           lambda: shared_row_major("a"), lambda: shared_row_major(4).offset((4,)),
           lambda: shared_row_major(4).offset((1, 1)),
           lambda: shared_row_major(8).swizzle(1, 0, 1).swizzle(1, 0, 1)]
    for make in bad:
        with pytest.raises(TLLayoutError):
            make()
