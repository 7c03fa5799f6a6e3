"""GPU layout inference (passes/gpu_layouts.py): every register tile gets a
layout over warps*32 threads, mma dots get fragment layouts, global loads read
16 contiguous bytes per thread, annotate pins, and conversions appear only
where a consumer needs another layout."""
import dataclasses
import glob
import math
import os

import numpy as np
import pytest

import tvm_lite as tl
from conftest import EXAMPLES, QMATMUL
from tvm_lite.errors import TLCompileError, TLLayoutError
from tvm_lite.ir import vm
from tvm_lite.ir.dtypes import dtype
from tvm_lite.ir.functor import IRRewriter, collect
from tvm_lite.ir.layout import (contiguous_dim_run, divide, local, local_offsets, mma_m16n8k16_a, mma_m16n8k16_b,
                                mma_m16n8k16_c, product, reduce, replicate, spatial)
from tvm_lite.ir.verifier import verify_program
from tvm_lite.passes.gpu_layouts import (blocked_layout, broadcast_layout, check_layouts, infer_gpu_layouts,
                                         is_mma_dot, is_shuffle_reducible, load_layout, view_layout)

OPS_QMATMUL = os.path.join(os.path.dirname(tl.__file__), "ops", "qmatmul.tl")
WARPS = [1, 2, 4, 8]
WEIGHT_TYPES = ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "i3", "i4", "f4e2m1", "f6e3m2", "f8e4m3"]


def vm_kernel(source, warps=None, **constants):
    k = tl.compile(source, target="interp", **constants).program.kernels[0]
    return k if warps is None else dataclasses.replace(k, warps=warps)


def infer(kernel):
    out = infer_gpu_layouts(kernel, "cuda-emu:sm_80")
    verify_program(vm.Program((out,)))
    return out


def instrs(kernel, cls=vm.Instr):
    return [s for s in collect(kernel.body, cls)]


def tiles(kernel):
    seen = {}
    for t in collect(kernel.body, vm.RegisterTensor):
        seen[id(t)] = t
    return list(seen.values())


def owners_per_element(layout):
    """How many (thread, slot) pairs hold each element, row-major."""
    t, l = np.meshgrid(np.arange(layout.num_threads), np.arange(layout.local_size), indexing="ij")
    flat = layout.global_index(t, l).ravel()
    return np.bincount(flat, minlength=math.prod(layout.shape))


KERNELS = ([(p, {}) for p in sorted(glob.glob(os.path.join(EXAMPLES, "*.tl")))]
           + [(OPS_QMATMUL, {"WT": wt}) for wt in WEIGHT_TYPES]
           + [(QMATMUL, {"WT": "u3", "BN": 64}), (QMATMUL, {"BM": 32, "BK": 32})])


def _kernel_id(case):
    src, consts = case
    name = os.path.basename(src) if "\n" not in src else "conftest.QMATMUL"
    return name + "".join(f"-{k}={v}" for k, v in consts.items())


@pytest.mark.parametrize("case", KERNELS, ids=_kernel_id)
@pytest.mark.parametrize("warps", WARPS)
def test_every_tile_gets_an_exact_layout_over_all_threads(case, warps):
    src, consts = case
    out = infer(vm_kernel(src, warps, **consts))
    T = warps * 32
    for t in tiles(out):
        assert t.layout is not None, t.name
        assert t.layout.shape == t.shape
        assert t.layout.num_threads == T
        counts = owners_per_element(t.layout)
        # every element is held, each by exactly `replication` (thread, slot) pairs
        assert np.all(counts == t.layout.replication), t.name
    for dot in instrs(out, vm.Dot):
        if dot.a.dtype.name in ("f16", "bf16"):
            assert is_mma_dot(dot)
            assert divide(dot.a.layout, mma_m16n8k16_a()) is not None
            assert divide(dot.b.layout, mma_m16n8k16_b()) is not None
            assert divide(dot.acc.layout, mma_m16n8k16_c()) is not None
            assert dot.acc.layout == dot.out.layout


@pytest.mark.parametrize("wt", ["u4", "u3", "u2", "u8", "f6e3m2", "u1", "u5", "u7"])
@pytest.mark.parametrize("warps", WARPS)
def test_weight_load_reads_16_contiguous_bytes_per_thread(wt, warps):
    """16-byte runs where the tile has enough of them for every thread; else
    (packed types: 64 x 128 u3 is 64 rows of 48 bytes) runs of whole 32-bit
    words short enough that no thread holds a replica."""
    out = infer(vm_kernel(OPS_QMATMUL, warps, WT=wt))
    (load,) = [s for s in instrs(out, vm.Load) if s.src.name == "b"]
    layout, bits = load.out.layout, load.out.dtype.nbits
    run = contiguous_dim_run(layout, 1)          # row pitch unknown: runs stay in one row
    tile_bits = math.prod(load.out.shape) * bits
    chunk = math.lcm(128, bits)                  # whole 16-byte chunks of whole fields
    if tile_bits < chunk * warps * 32:
        chunk = math.lcm(32, bits)
        assert layout.replication == 1
    assert run * bits % chunk == 0 and run * bits >= chunk
    # every run starts on a chunk boundary of the tile (rows of BN elements are whole chunks)
    offsets = local_offsets(layout, (load.out.shape[1], 1))
    starts = offsets[:, ::run]
    assert np.all(starts * bits % chunk == 0)
    # and the weights are dequantized in that layout: no sub-byte tile is ever converted
    for cvt in instrs(out, vm.ConvertLayout):
        assert cvt.src.dtype.nbits >= 8


def test_activation_and_scale_loads_are_direct():
    out = infer(vm_kernel(OPS_QMATMUL, WT="u4"))
    loads = {s.src.name: s.out for s in instrs(out, vm.Load)}
    a = loads["a"].layout
    assert contiguous_dim_run(a, 1) == 8                            # 8 x f16 = 16 bytes
    (mul,) = instrs(out, vm.Elementwise)
    ts = loads["s"]
    # the [1, BN] scale row is loaded straight in the broadcast layout of its consumer
    assert ts.layout == broadcast_layout(mul.out.layout, ts.shape)
    assert ts.layout.is_replicated
    assert all(c.src is not ts for c in instrs(out, vm.ConvertLayout))


@pytest.mark.parametrize("warps", WARPS)
def test_matmul_mma_tiling_and_loop_carried_accumulator(warps):
    out = infer(vm_kernel(os.path.join(EXAMPLES, "matmul.tl"), warps))
    (dot,) = instrs(out, vm.Dot)
    (full,) = instrs(out, vm.Full)
    (assign,) = instrs(out, vm.Assign)
    assert full.out.layout == dot.out.layout == assign.out.layout == assign.x.layout
    assert assign.x is dot.out                       # no conversion on the back edge
    # the A and B operands come from coalesced loads through one conversion each
    cvts = instrs(out, vm.ConvertLayout)
    assert sorted(c.dst.name for c in cvts) == sorted([dot.a.name, dot.b.name])
    for c in cvts:
        assert isinstance(c.src.layout, type(c.dst.layout)) and c.src.layout != c.dst.layout


def test_mma_warp_grid_uses_every_warp_when_it_can():
    out = infer(vm_kernel(os.path.join(EXAMPLES, "matmul.tl"), 4))
    (dot,) = instrs(out, vm.Dot)
    # 32x32 with 4 warps: a 2x2 warp grid, no replication of the accumulator
    assert not dot.out.layout.is_replicated
    wc = divide(dot.out.layout, mma_m16n8k16_c())
    assert wc == local(1, 2) * spatial(2, 2)
    # one warp on a 16x8 accumulator: replicated over the idle warps
    small = infer(vm_kernel(os.path.join(EXAMPLES, "matmul.tl"), 8, BM=16, BN=8, BK=16))
    (d2,) = instrs(small, vm.Dot)
    assert d2.out.layout == product(replicate(8, 2), mma_m16n8k16_c())


def test_conversions_appear_only_where_needed():
    for src, consts in KERNELS:
        for warps in (1, 4):
            out = infer(vm_kernel(src, warps, **consts))
            for cvt in instrs(out, vm.ConvertLayout):
                # dropping any one conversion breaks the layout contract
                with pytest.raises(TLCompileError):
                    check_layouts(_without(out, cvt))
    for name in ("vector_add.tl", "softmax.tl"):
        assert not instrs(infer(vm_kernel(os.path.join(EXAMPLES, name))), vm.ConvertLayout)


def _without(kernel, cvt):
    class Drop(IRRewriter):
        def rewrite_ConvertLayout(self, s):
            return () if s is cvt else s

        def rewrite_tensor(self, t):
            return cvt.src if t is cvt.dst else t

    return dataclasses.replace(kernel, body=Drop().rewrite(kernel.body))


ANNOTATED = """\
@kernel(warps={warps})
def k(x: f32[64], y: f32[64]):
    t = annotate(load(x, [0], [64]), spatial(32).local(2))
    store(y, t * 2.0, [0])
"""


@pytest.mark.parametrize("warps", [1, 2, 4])
def test_annotate_pins_the_layout(warps):
    out = infer(vm_kernel(ANNOTATED.format(warps=warps)))
    (ann,) = instrs(out, vm.Annotate)
    pin = spatial(32).local(2)
    expect = pin if warps == 1 else product(replicate(warps, 1), pin)
    assert ann.out.layout == expect and ann.x.layout == expect
    # the load takes the pinned layout directly: nothing to convert
    assert not instrs(out, vm.ConvertLayout)
    (load,) = instrs(out, vm.Load)
    assert load.out.layout == expect


def test_annotate_with_too_many_threads_is_an_error():
    with pytest.raises(TLLayoutError, match="threads"):
        infer(vm_kernel(ANNOTATED.format(warps=1).replace("spatial(32).local(2)", "spatial(64)")))


def test_annotate_wins_over_a_dot_by_converting():
    src = """\
@kernel(warps=1)
def k(a: f16[16, 16], b: f16[16, 8], c: f32[16, 8]):
    acc = dot(load(a, [0, 0], [16, 16]), load(b, [0, 0], [16, 8]), zeros(f32, [16, 8]))
    store(c, annotate(acc, spatial(16, 2).local(1, 4)), [0, 0])
"""
    out = infer(vm_kernel(src))
    (ann,) = instrs(out, vm.Annotate)
    (dot,) = instrs(out, vm.Dot)
    assert ann.out.layout == spatial(16, 2).local(1, 4)
    assert dot.out.layout == mma_m16n8k16_c()
    assert any(c.src is dot.out and c.dst is ann.x for c in instrs(out, vm.ConvertLayout))


MIX = """\
@kernel(warps=4)
def mix(n: i32, x: f32[n, 64], y: f32[n, 64], w: u8[n, 64], a: f16[64, 64], c: f32[64, 64]):
    t = load(x, [0, 0], [32, 64])
    s0 = sum(t, dim=0, keepdim=True)
    r = reshape(transpose(t), [16, 128])
    h = concat([slice(t, [0, 0], [16, 64]), slice(t, [16, 0], [16, 64])], dim=0)
    v = view(load(w, [0, 0], [32, 64]), u4)
    q = cast(v, f32)
    store(x, reshape(r, [32, 64]) + slice(q, [0, 64], [32, 64]), [0, 0])
    buf = shared(f16, [64, 64])
    copy_async(buf, a, [0, 0])
    wait_async(0)
    barrier()
    ta = load_shared(buf)
    acc = load(c, [0, 0], [64, 64])
    for i in range(4):
        acc = dot(ta, ta, acc)
    f = dot(t, load(y, [0, 0], [64, 16]), zeros(f32, [32, 16]))
    store(c, acc, [0, 0])
    store(y, t - s0 + h + broadcast_to(slice(f, [0, 0], [32, 1]), [32, 64]), [0, 0])
"""


@pytest.mark.parametrize("warps", WARPS)
def test_every_instruction_kind(warps):
    out = infer(vm_kernel(MIX, warps))
    T = warps * 32
    for t in tiles(out):
        assert t.layout.num_threads == T and t.layout.shape == t.shape
    for r in instrs(out, vm.Reduce):
        assert is_shuffle_reducible(r.x.layout, r.dim)
    # the shared tile feeding the dot is built in the A fragment directly (ldmatrix);
    # its use as B is converted once, hoisted out of the loop
    (loop,) = [s for s in out.body if isinstance(s, vm.For)]
    assert not collect(loop.body, vm.ConvertLayout)
    (ls,) = instrs(out, vm.LoadShared)
    assert divide(ls.out.layout, mma_m16n8k16_a()) is not None
    # the loop-carried accumulator is loaded straight in the mma C layout
    (acc_load,) = [s for s in instrs(out, vm.Load) if s.src.name == "c"]
    (mma,) = [d for d in instrs(out, vm.Dot) if is_mma_dot(d)]
    assert acc_load.out.layout == mma.out.layout
    # the f32 dot is an FMA dot: each thread holds whole rows of A and columns of B
    (fma,) = [d for d in instrs(out, vm.Dot) if not is_mma_dot(d)]
    _check_fma_coverage(fma)


def _check_fma_coverage(dot):
    C, A, B = dot.out.layout, dot.a.layout, dot.b.layout
    K = dot.a.shape[1]
    for t in range(C.num_threads):
        rows, cols = C.map(t, np.arange(C.local_size))
        a_rows, a_cols = A.map(t, np.arange(A.local_size))
        b_rows, b_cols = B.map(t, np.arange(B.local_size))
        for m in set(rows.tolist()):
            assert set(a_cols[a_rows == m].tolist()) == set(range(K))
        for n in set(cols.tolist()):
            assert set(b_rows[b_cols == n].tolist()) == set(range(K))


def _bits_per_slot(layout, nbits):
    t, l = np.meshgrid(np.arange(layout.num_threads), np.arange(layout.local_size), indexing="ij")
    flat = layout.global_index(t, l)           # [T, L] row-major element index
    return flat[..., None] * nbits + np.arange(nbits)   # [T, L, nbits] bit positions


@pytest.mark.parametrize("src,dst", [("u8", "u4"), ("u4", "u8"), ("u3", "u8"), ("u8", "u3"),
                                     ("f16", "u32"), ("u32", "f16"), ("f32", "i32")])
def test_view_layout_keeps_every_thread_on_its_own_bits(src, dst):
    s, d = dtype(src), dtype(dst)
    g_in = math.lcm(s.nbits, d.nbits) // s.nbits
    shape = (8, g_in * 64)
    x = blocked_layout(shape, 64, vec=2 * g_in)
    y = view_layout(x, s, d)
    assert y is not None and y.shape == (8, shape[1] * s.nbits // d.nbits)
    xb = _bits_per_slot(x, s.nbits).reshape(x.num_threads, -1)
    yb = _bits_per_slot(y, d.nbits).reshape(y.num_threads, -1)
    np.testing.assert_array_equal(xb, yb)


def test_blocked_layout_replicates_tiny_tiles():
    for shape in [(1,), (2, 2), (3, 5), (1, 1)]:
        lay = blocked_layout(shape, 256)
        assert lay.num_threads == 256 and lay.shape == shape
        assert np.all(owners_per_element(lay) == lay.replication)


def test_broadcast_layout_is_the_reduced_result_layout():
    c = local(2, 2) * spatial(2, 2) * mma_m16n8k16_c()
    assert broadcast_layout(c, (1, 32)) == reduce(c, 0)
    assert broadcast_layout(c, (64, 1)) == reduce(c, 1)
    assert broadcast_layout(c, (32,)).shape == (32,)
    assert broadcast_layout(c, c.shape) == c


def test_reduce_of_a_row_split_over_warps_is_converted_once():
    src = """\
@kernel(warps=4)
def k(x: f32[128, 8], y: f32[1, 8]):
    store(y, sum(load(x, [0, 0], [128, 8]), dim=0, keepdim=True), [0, 0])
"""
    out = infer(vm_kernel(src))
    (r,) = instrs(out, vm.Reduce)
    assert is_shuffle_reducible(r.x.layout, 0)
    assert not is_shuffle_reducible(load_layout((128, 8), dtype("f32"), 128), 0)
    assert len(instrs(out, vm.ConvertLayout)) == 1


def test_view_without_whole_groups_converts_its_operand():
    assert view_layout(blocked_layout((8, 48), 64, vec=2), dtype("u8"), dtype("u3")) is None
    src = """\
@kernel(warps=2)
def k(w: u8[8, 48], y: f16[8, 128]):
    store(y, cast(view(load(w, [0, 0], [8, 48]), u3), f16), [0, 0])
"""
    out = infer(vm_kernel(src))
    (v,) = instrs(out, vm.View)
    assert view_layout(v.x.layout, v.x.dtype, v.out.dtype) == v.out.layout


def test_loads_combined_element_wise_agree_instead_of_converting():
    src = """\
@kernel(warps=4)
def k(x: f16[32, 64], y: f32[32, 64], z: f32[32, 64]):
    store(z, cast(load(x, [0, 0], [32, 64]), f32) + load(y, [0, 0], [32, 64]), [0, 0])
"""
    out = infer(vm_kernel(src))
    assert not instrs(out, vm.ConvertLayout)
    lx, ly = [s.out.layout for s in instrs(out, vm.Load)]
    assert lx == ly == load_layout((32, 64), dtype("f16"), 128)   # the first load's 16-byte layout


def test_epilogue_operand_is_loaded_in_the_accumulator_layout():
    src = """\
@kernel(warps=4)
def k(a: f16[32, 32], b: f16[32, 32], bias: f32[32, 32], c: f32[32, 32]):
    acc = dot(load(a, [0, 0], [32, 32]), load(b, [0, 0], [32, 32]), zeros(f32, [32, 32]))
    store(c, acc + load(bias, [0, 0], [32, 32]), [0, 0])
"""
    out = infer(vm_kernel(src))
    (dot,) = instrs(out, vm.Dot)
    (bias,) = [s.out for s in instrs(out, vm.Load) if s.src.name == "bias"]
    assert bias.layout == dot.out.layout
    assert len(instrs(out, vm.ConvertLayout)) == 2      # only the two mma operands


CONTROL = """\
@kernel(warps=2)
def k(n: i32, x: f32[n], total: f32[1], y: f32[n]):
    t = load(x, [0], [256])
    acc = zeros(f32, [256])
    i = 0
    while i < n:
        if i % 2 == 0:
            acc = acc + t
        else:
            acc = acc - exp(t)
        i = i + 1
    atomic_add(total, sum(acc, dim=0), [0])
    store(y, acc, [0])
"""


@pytest.mark.parametrize("warps", WARPS)
def test_control_flow_atomics_and_1d_reductions(warps):
    out = infer(vm_kernel(CONTROL, warps))
    (r,) = instrs(out, vm.Reduce)
    assert r.out.shape == (1,) and r.out.layout.shape == (1,)
    assert r.out.layout.replication == warps * 32
    assigns = instrs(out, vm.Assign)
    assert len({a.out.layout for a in assigns} | {a.x.layout for a in assigns}) == 1
    for t in tiles(out):
        assert t.layout.num_threads == warps * 32
