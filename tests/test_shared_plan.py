"""Shared-memory planning (passes/shared_plan.py): liveness-based reuse,
no overlap of live buffers, 128-byte alignment, ldmatrix swizzles."""
import dataclasses
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tvm_lite as tl
from conftest import EXAMPLES
from tvm_lite.ir import vm
from tvm_lite.ir.dtypes import dtype
from tvm_lite.ir.functor import collect
from tvm_lite.passes.gpu_layouts import infer_gpu_layouts
from tvm_lite.passes.shared_plan import ALIGNMENT, first_fit, ldmatrix_shared_layout, plan_shared_memory

OPS_QMATMUL = os.path.join(os.path.dirname(tl.__file__), "ops", "qmatmul.tl")


def planned(source, **constants):
    k = tl.compile(source, target="interp", **constants).program.kernels[0]
    k = infer_gpu_layouts(k, "cuda-emu")
    return k, plan_shared_memory(k)


def _overlap(a, b):
    return a[0] <= b[1] and b[0] <= a[1]


def _assert_valid(plan_offsets, items, total):
    for key, size, _ in items:
        assert plan_offsets[key] % ALIGNMENT == 0
        assert plan_offsets[key] + size <= total
    for i, (k1, s1, l1) in enumerate(items):
        for k2, s2, l2 in items[i + 1:]:
            if _overlap(l1, l2) and s1 and s2:
                o1, o2 = plan_offsets[k1], plan_offsets[k2]
                assert o1 + s1 <= o2 or o2 + s2 <= o1, (k1, k2)


lifetimes = st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 40), st.integers(0, 30)),
                     min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(lifetimes)
def test_first_fit_never_overlaps_live_buffers(raw):
    items = [(i, size, (start, start + length)) for i, (size, start, length) in enumerate(raw)]
    offsets, total = first_fit(items)
    _assert_valid(offsets, items, total)
    # never worse than giving every buffer its own aligned slot
    assert total <= sum(-(-s // ALIGNMENT) * ALIGNMENT for _, s, _ in items)
    # and at least what is live at the busiest moment
    for _, _, (s, _) in items:
        live = sum(sz for _, sz, lt in items if lt[0] <= s <= lt[1])
        assert total >= live


def test_disjoint_lifetimes_share_bytes():
    offsets, total = first_fit([("a", 1000, (0, 3)), ("b", 700, (4, 9)), ("c", 300, (10, 10))])
    assert offsets == {"a": 0, "b": 0, "c": 0}
    assert total == 1000


def test_overlapping_lifetimes_get_disjoint_aligned_bytes():
    offsets, total = first_fit([("a", 1000, (0, 5)), ("b", 700, (5, 9))])
    assert offsets["a"] == 0 and offsets["b"] == 1024
    assert total == 1724


TWO_PHASES = """\
@kernel(warps=4)
def k(a: f16[64, 64], c: f16[64, 64]):
    s1 = shared(f16, [64, 64])
    copy_async(s1, a, [0, 0])
    wait_async(0)
    barrier()
    t = load_shared(s1)
    barrier()
    s2 = shared(f32, [32, 64])
    store_shared(s2, cast(t[0:32, 0:64], f32))
    barrier()
    store(c, cast(load_shared(s2), f16), [0, 0])
"""


def test_buffers_with_disjoint_lifetimes_reuse_bytes():
    src = TWO_PHASES.replace("t[0:32, 0:64]", "slice(t, [0, 0], [32, 64])")
    k, plan = planned(src)
    s1, s2 = [s.out for s in collect(k.body, vm.AllocShared)]
    assert plan.offset(s1) == plan.offset(s2) == 0
    assert plan.sizes[s1] == 64 * 64 * 2 and plan.sizes[s2] == 32 * 64 * 4
    assert plan.total_bytes == 8192


def test_buffers_live_across_a_loop_do_not_overlap_its_scratch():
    # the user buffer is read inside the loop, whose dot converts an operand each iteration
    src = """\
@kernel(warps=4)
def k(k: i32, a: f16[64, 64], b: f16[k, 64], c: f32[64, 64]):
    s1 = shared(f16, [64, 64])
    copy_async(s1, a, [0, 0])
    wait_async(0)
    barrier()
    acc = zeros(f32, [64, 64])
    for i in range(k // 64):
        acc = dot(load_shared(s1), load(b, [i * 64, 0], [64, 64]), acc)
    store(c, acc, [0, 0])
"""
    k, plan = planned(src)
    (s1,) = [s.out for s in collect(k.body, vm.AllocShared)]
    cvts = collect(k.body, vm.ConvertLayout)
    assert cvts
    for cvt in cvts:
        lo, hi = plan.offset(cvt), plan.offset(cvt) + plan.sizes[cvt.dst]
        assert hi <= plan.offset(s1) or plan.offset(s1) + plan.sizes[s1] <= lo
        assert plan.offset(cvt) == plan.offset(cvt.dst)
    loop = next(s for s in k.body if isinstance(s, vm.For))
    # the buffer's lifetime covers the whole loop
    s1_life = plan.lifetimes[s1]
    assert s1_life[1] >= max(plan.lifetimes[c.dst][1] for c in cvts)
    assert loop is not None


@pytest.mark.parametrize("wt", ["u4", "u3"])
def test_qmatmul_plan(wt):
    k, plan = planned(OPS_QMATMUL, WT=wt)
    cvts = collect(k.body, vm.ConvertLayout)
    assert len(cvts) == 2
    items = [(c.dst, plan.sizes[c.dst], plan.lifetimes[c.dst]) for c in cvts]
    _assert_valid(plan.offsets, items, plan.total_bytes)
    assert plan.total_bytes % ALIGNMENT == 0
    assert plan.total_bytes == 16 * 64 * 2 + 64 * 128 * 2     # both operands read by the one mma
    for c in cvts:   # mma operand scratch is swizzled for ldmatrix
        assert plan.layout(c).swizzle_fn is not None


def test_kernels_without_shared_memory_plan_nothing():
    _, plan = planned(os.path.join(EXAMPLES, "vector_add.tl"))
    assert plan.total_bytes == 0 and not plan.offsets


@pytest.mark.parametrize("cols", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("dt", ["f16", "bf16", "u8"])
def test_ldmatrix_layout_is_a_conflict_free_permutation(cols, dt):
    d = dtype(dt)
    rows = 32
    lay = ldmatrix_shared_layout((rows, cols), d)
    r, c = np.indices((rows, cols))
    offsets = lay.offset((r, c))
    assert sorted(offsets.ravel().tolist()) == list(range(rows * cols))   # a permutation, no padding
    per_chunk = 128 // d.nbits
    chunks = cols // per_chunk
    if chunks > 1:
        assert lay.swizzle_fn is not None
    # 16-byte chunks stay whole: a row's chunk is contiguous after swizzling
    starts = offsets[:, ::per_chunk]
    for j in range(per_chunk):
        np.testing.assert_array_equal(offsets[:, j::per_chunk], starts + j)
    # ldmatrix reads one chunk column of 8 consecutive rows: 8 distinct 16-byte bank groups
    for r0 in range(0, rows, 8):
        for ch in range(chunks):
            groups = (offsets[r0:r0 + 8, ch * per_chunk] * d.nbits // 128) % 8
            assert len(set(groups.tolist())) == 8, (r0, ch, groups)


def test_ldmatrix_layout_falls_back_to_row_major():
    assert ldmatrix_shared_layout((16, 24), dtype("f16")).swizzle_fn is None    # not a power of two
    assert ldmatrix_shared_layout((4, 4, 8), dtype("f16")).swizzle_fn is None   # not 2-D
    assert ldmatrix_shared_layout((16, 8), dtype("f16")).swizzle_fn is None     # one chunk per row


def test_plan_is_frozen():
    _, plan = planned(OPS_QMATMUL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.total_bytes = 0
    with pytest.raises(TypeError):
        plan.offsets[object()] = 0
