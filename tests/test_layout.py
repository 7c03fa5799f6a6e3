"""The layout algebra, tested by its laws (DESIGN.md section 5)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tvm_lite as tl
from tvm_lite.ir.layout import (column_local, column_spatial, contiguous_run, divide, local,
                                mma_m16n8k16_a, mma_m16n8k16_b, mma_m16n8k16_c, permute, product,
                                reduce, register_layout, replicated, spatial)
from tvm_lite.ir.shared_layout import shared_column_major, shared_row_major

ATOMS = [local, spatial, column_local, column_spatial]
factors = st.sampled_from([1, 2, 3, 4])


@st.composite
def atoms(draw, ndim=2):
    make = draw(st.sampled_from(ATOMS))
    return make(*[draw(factors) for _ in range(ndim)])


@st.composite
def layouts(draw, replication=False):
    parts = draw(st.lists(atoms(), min_size=1, max_size=3))
    if replication and draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), replicated(draw(st.sampled_from([2, 3])), 2))
    out = parts[0]
    for p in parts[1:]:
        out = out * p
    return out


def all_slots(layout):
    return np.meshgrid(np.arange(layout.num_threads), np.arange(layout.local_size), indexing="ij")


def flat_indices(layout):
    t, l = all_slots(layout)
    return layout.global_index(t, l).ravel()


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_non_replicated_layout_is_a_bijection(layout):
    flat = flat_indices(layout)
    assert sorted(flat.tolist()) == list(range(int(np.prod(layout.shape))))
    t, l = all_slots(layout)
    back_t, back_l = layout.locate(layout.map(t, l))
    np.testing.assert_array_equal(back_t, t)
    np.testing.assert_array_equal(back_l, l)


@settings(max_examples=150, deadline=None)
@given(layouts(replication=True), layouts(replication=True))
def test_product_map_composes_factor_maps(a, b):
    p = a * b
    assert p.shape == tuple(x * y for x, y in zip(a.shape, b.shape))
    assert p.num_threads == a.num_threads * b.num_threads and p.local_size == a.local_size * b.local_size
    t, l = all_slots(p)
    ta, tb = t // b.num_threads, t % b.num_threads
    la, lb = l // b.local_size, l % b.local_size
    for x, xa, xb, sb in zip(p.map(t, l), a.map(ta, la), b.map(tb, lb), b.shape):
        np.testing.assert_array_equal(x, xa * sb + xb)


@settings(max_examples=100, deadline=None)
@given(layouts(), layouts(), layouts())
def test_product_is_associative(a, b, c):
    assert (a * b) * c == a * (b * c)


@settings(max_examples=150, deadline=None)
@given(layouts(replication=True), layouts(replication=True))
def test_divide_inverts_product(a, b):
    q = divide(a * b, b)
    assert q is not None and q * b == a * b
    assert q.shape == a.shape and flat_eq(q, a)


def flat_eq(x, y):
    tx, lx = all_slots(x)
    return x.num_threads == y.num_threads and np.array_equal(x.global_index(tx, lx), y.global_index(tx, lx))


def test_divide_refuses_a_layout_not_built_from_the_atom():
    assert divide(spatial(8, 4), local(2, 2)) is None
    assert divide(local(4, 4), local(3, 1)) is None
    assert divide(spatial(4, 4).local(2, 2), spatial(2, 2)) is None


@settings(max_examples=100, deadline=None)
@given(layouts(), st.data())
def test_equal_layouts_hash_equal_and_canonical_form_keeps_the_map(layout, data):
    rebuilt = layout * local(1, 1) * spatial(1, 1)
    assert rebuilt == layout and hash(rebuilt) == hash(layout)
    assert {layout: 1}[rebuilt] == 1
    assert flat_eq(layout.canonical, layout)


def test_splitting_a_mode_gives_an_equal_layout():
    assert local(8) == local(2).local(4) == local(2) * local(2) * local(2)
    assert spatial(4, 8) == spatial(2, 1) * spatial(2, 8)
    assert spatial(4) != local(4) and spatial(2, 4) != column_spatial(2, 4)


def test_reduce_turns_spatial_modes_into_replication():
    layout = spatial(8, 4).local(1, 2)
    r = reduce(layout, 1)
    assert r.shape == (8, 1) and r.num_threads == 32 and r.local_size == 1 and r.replication == 4
    assert sorted(r.owners((3, 0))) == [(12, 0), (13, 0), (14, 0), (15, 0)]
    r0 = reduce(local(2, 3).spatial(4, 1), 0)
    assert r0.shape == (1, 3) and r0.num_threads == 4 and r0.local_size == 3


def test_permute_swaps_dimensions():
    layout = spatial(2, 4).local(3, 1)
    p = permute(layout, (1, 0))
    t, l = all_slots(layout)
    x0, x1 = layout.map(t, l)
    y0, y1 = p.map(t, l)
    np.testing.assert_array_equal(x0, y1)
    np.testing.assert_array_equal(x1, y0)
    with pytest.raises(tl.TLLayoutError):
        permute(layout, (0, 0))


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
    assert b.shape == (16, 8)
    np.testing.assert_array_equal(row, tig * 2 + (i & 1) + 8 * (i >> 1))
    np.testing.assert_array_equal(col, np.broadcast_to(g, row.shape))
    row, col = c.map(lane, i)
    assert c.shape == (16, 8)
    np.testing.assert_array_equal(row, g + 8 * (i >> 1))
    np.testing.assert_array_equal(col, tig * 2 + (i & 1))
    # The instruction recognizes its atom in a warp tiling.
    assert divide(local(2, 4) * a, a) == local(2, 4)


def test_contiguity_query():
    assert contiguous_run(spatial(4, 8).local(1, 8), (64, 1)) == 8
    assert contiguous_run(spatial(4, 8).local(1, 8), (1, 4)) == 1
    assert contiguous_run(local(2, 4), (4, 1)) == 8
    assert contiguous_run(local(2, 4), (8, 1)) == 4
    assert contiguous_run(mma_m16n8k16_a(), (16, 1)) == 2
    assert contiguous_run(column_local(2, 4), (4, 1)) == 1
    with pytest.raises(tl.TLLayoutError):
        contiguous_run(local(2, 4), (1,))


def test_layout_errors_are_tl_errors():
    with pytest.raises(tl.TLLayoutError):
        local(0, 2)
    with pytest.raises(tl.TLLayoutError):
        register_layout([[2, 2]], [0], [0])
    with pytest.raises(tl.TLLayoutError):
        replicated(0)
    with pytest.raises(tl.TLLayoutError):
        (spatial(4) * replicated(2)).locate((1,))


def test_printer_draws_threads_and_slots():
    text = str(spatial(2, 2).local(1, 2))
    assert text.splitlines() == ["t0:0 t0:1 t1:0 t1:1", "t2:0 t2:1 t3:0 t3:1"]
    assert "t0|t1:0" in str(reduce(spatial(2, 2), 1))
    assert "RegisterLayout(shape=[16, 16]" in repr(mma_m16n8k16_a())


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(1, 4))
def test_swizzles_are_permutations(bits, base, extra, blocks):
    shift = bits + extra
    period = 1 << (base + shift + bits)
    layout = shared_row_major(blocks, period).swizzle(bits, base, shift)
    idx = np.indices((blocks, period))
    offsets = layout.offset((idx[0], idx[1])).ravel()
    assert sorted(offsets.tolist()) == list(range(blocks * period))
    assert layout.size == blocks * period


def test_shared_row_and_column_major():
    r, c = shared_row_major(3, 5), shared_column_major(3, 5)
    assert r.strides == (5, 1) and c.strides == (1, 3)
    assert int(r.offset((2, 4))) == 14 and int(c.offset((2, 4))) == 14
    assert r.size == 15 and str(r).splitlines()[0].split() == ["0", "1", "2", "3", "4"]
    with pytest.raises(tl.TLLayoutError):
        shared_row_major(4, 8).swizzle(3, 0, 2)
