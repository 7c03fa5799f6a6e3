"""The PTX printer (backends/ptx.py) and the compile-only path (backends/nvjitlink.py).

Hand-built thread kernels cover every PTX feature the lowering uses; each one
prints to PTX that ptxas (through nvJitLink, no GPU needed) assembles for
sm_80, sm_89 and sm_90 with no spills. The same kernels run on a real GPU in
tests/test_cuda_runtime.py (marked gpu).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

T = pytest.importorskip("tvm_lite.ir.thread")
pytest.importorskip("cuda.bindings.nvjitlink")

from tvm_lite.backends.nvjitlink import compile_ptx  # noqa: E402
from tvm_lite.backends.ptx import emit_ptx, format_imm  # noqa: E402
from tvm_lite.errors import TLCompileError  # noqa: E402

SMS = (80, 89, 90)
G, S = T.Space.GLOBAL, T.Space.SHARED


class Regs:
    """Fresh, uniquely named registers for hand-built kernels."""

    def __init__(self):
        self.count = 0

    def __call__(self, type_name: str, hint: str = "r") -> "T.Reg":
        self.count += 1
        return T.Reg(f"{hint}{self.count}", T.hw_type(type_name))


def imm(value, type_name: str) -> "T.Imm":
    return T.Imm(value, T.hw_type(type_name))


def global_index(r: Regs, body: list) -> "T.Reg":
    """ctaid.x * ntid.x + tid.x, as u32."""
    tid, ctaid, ntid, gid = r("u32", "tid"), r("u32", "ctaid"), r("u32", "ntid"), r("u32", "gid")
    body += [T.SpecialReg(tid, T.SReg.TID_X), T.SpecialReg(ctaid, T.SReg.CTAID_X),
             T.SpecialReg(ntid, T.SReg.NTID_X), T.Fma(gid, ctaid, ntid, tid)]
    return gid


def element_address(r: Regs, body: list, base: "T.Reg", index: "T.Reg", nbytes: int) -> "T.Reg":
    wide, addr = r("u64", "off"), r("u64", "addr")
    body += [T.Binary(T.BinOp.MUL_WIDE, wide, index, imm(nbytes, "u32")),
             T.Binary(T.BinOp.ADD, addr, base, wide)]
    return addr


# ------------------------------------------------------------------ kernels


def vector_add_kernel(threads: int = 128) -> "T.ThreadKernel":
    """c[i] = a[i] + b[i] (f32), 4 elements per thread: one .v4 load/store
    when all 4 are in range, else per-element predicated accesses."""
    r = Regs()
    pa, pb, pc, pn = r("u64", "a"), r("u64", "b"), r("u64", "c"), r("s32", "n")
    body: list = [T.Comment("vector add, 4 floats per thread")]
    gid = global_index(r, body)
    first = r("u32", "first")
    body.append(T.Binary(T.BinOp.SHL, first, gid, imm(2, "u32")))
    aa = element_address(r, body, pa, first, 4)
    ab = element_address(r, body, pb, first, 4)
    ac = element_address(r, body, pc, first, 4)
    last, full = r("s32", "last"), r("pred", "full")
    body += [T.Binary(T.BinOp.ADD, last, first, imm(3, "s32")),
             T.Setp(T.Cmp.LT, full, last, pn)]
    xa = tuple(r("f32", "x") for _ in range(4))
    xb = tuple(r("f32", "y") for _ in range(4))
    xc = tuple(r("f32", "z") for _ in range(4))
    body += [T.Mov(x, imm(0.0, "f32")) for x in xa + xb]
    body += [T.Load(xa, G, aa, 0, full), T.Load(xb, G, ab, 0, full)]
    tail: list = []
    preds = []
    for k in range(4):
        idx, p = r("s32", "idx"), r("pred", "in")
        tail += [T.Binary(T.BinOp.ADD, idx, first, imm(k, "s32")), T.Setp(T.Cmp.LT, p, idx, pn),
                 T.Load((xa[k],), G, aa, 4 * k, p), T.Load((xb[k],), G, ab, 4 * k, p)]
        preds.append(p)
    body.append(T.If(full, (), tuple(tail)))
    body += [T.Binary(T.BinOp.ADD, z, x, y) for z, x, y in zip(xc, xa, xb)]
    body.append(T.Store(G, ac, 0, xc, full))
    store_tail = tuple(T.Store(G, ac, 4 * k, (xc[k],), preds[k]) for k in range(4))
    body.append(T.If(full, (), store_tail))
    return T.ThreadKernel("vector_add", (pa, pb, pc, pn), threads, 0, tuple(body), ())


def mma_kernel(ab: str = "f16", shape: str = "M16N8K16") -> "T.ThreadKernel":
    """One warp: D[16, 8] (f32) = A[16, K] @ B[K, 8], A row-major, B given as
    B^T[8, K] row-major (the "col" operand). Both tiles go global -> shared
    with 16-byte vector copies, then ldmatrix -> mma.sync -> fragment stores."""
    k = 16 if shape == "M16N8K16" else 8
    r = Regs()
    pa, pb, pd = r("u64", "a"), r("u64", "bt"), r("u64", "d")
    body: list = [T.Comment(f"mma {shape} {ab}")]
    lane, base = r("u32", "lane"), r("u32", "smem")
    body += [T.SpecialReg(lane, T.SReg.LANEID), T.SharedBase(base)]
    a_bytes, b_bytes = 16 * k * 2, 8 * k * 2
    # global -> shared, 16 bytes per lane per step
    for src, nbytes, sh_off in ((pa, a_bytes, 0), (pb, b_bytes, a_bytes)):
        for step in range(0, nbytes, 32 * 16):
            off, gaddr, saddr, inb = r("u32", "off"), r("u64", "g"), r("u32", "s"), r("pred", "inb")
            off64 = r("u64", "o")
            words = tuple(r("b32", "w") for _ in range(4))
            body += [T.Fma(off, lane, imm(16, "u32"), imm(step, "u32")),
                     T.Setp(T.Cmp.LT, inb, off, imm(nbytes, "u32")),
                     T.Cvt(off64, off),
                     T.Binary(T.BinOp.ADD, gaddr, src, off64),
                     T.Binary(T.BinOp.ADD, saddr, base, off),
                     T.Load(words, G, gaddr, 0, inb),
                     T.Store(S, saddr, sh_off, words, inb)]
    body.append(T.Barrier())
    # ldmatrix addresses: A (x4 for k16, x2 for k8): lane l gives row l % 16, column block l // 16
    row, colblk, aoff, aaddr = r("u32", "row"), r("u32", "cb"), r("u32", "ao"), r("u32", "aa")
    body += [T.Binary(T.BinOp.AND, row, lane, imm(15, "u32")),
             T.Binary(T.BinOp.SHR, colblk, lane, imm(4, "u32")),
             T.Binary(T.BinOp.MUL, aoff, row, imm(k * 2, "u32")),
             T.Fma(aoff, colblk, imm(16, "u32"), aoff),
             T.Binary(T.BinOp.ADD, aaddr, base, aoff)]
    na, nb = (4, 2) if k == 16 else (2, 1)
    afrag = tuple(r("b32", "fa") for _ in range(na))
    bfrag = tuple(r("b32", "fb") for _ in range(nb))
    body.append(T.Ldmatrix(afrag, aaddr, False))
    # B^T (8 x k): lane l gives row l % 8, column block (l // 8) % 2
    brow, bcb, boff, baddr = r("u32", "brow"), r("u32", "bcb"), r("u32", "bo"), r("u32", "ba")
    body += [T.Binary(T.BinOp.AND, brow, lane, imm(7, "u32")),
             T.Bfe(bcb, lane, imm(3, "u32"), imm(1, "u32")),
             T.Binary(T.BinOp.MUL, boff, brow, imm(k * 2, "u32")),
             T.Fma(boff, bcb, imm(16, "u32"), boff),
             T.Binary(T.BinOp.ADD, baddr, base, boff)]
    body.append(T.Ldmatrix(bfrag, baddr, False))
    dfrag = tuple(r("f32", "acc") for _ in range(4))
    body.append(T.Mma(getattr(T.MmaShape, shape), T.hw_type(ab), dfrag, afrag, bfrag,
                      tuple(imm(0.0, "f32") for _ in range(4))))
    # D fragment: d0,d1 at (lane/4, 2*(lane%4) + {0,1}); d2,d3 eight rows lower
    grp, quad, doff = r("u32", "grp"), r("u32", "quad"), r("u32", "do")
    body += [T.Binary(T.BinOp.SHR, grp, lane, imm(2, "u32")),
             T.Binary(T.BinOp.AND, quad, lane, imm(3, "u32")),
             T.Binary(T.BinOp.MUL, doff, grp, imm(8, "u32")),
             T.Fma(doff, quad, imm(2, "u32"), doff)]
    dptr = element_address(r, body, pd, doff, 4)
    body += [T.Store(G, dptr, 0, dfrag[:2]), T.Store(G, dptr, 8 * 8 * 4, dfrag[2:])]
    return T.ThreadKernel(f"mma_{ab}_{shape.lower()}", (pa, pb, pd), 32, a_bytes + b_bytes,
                          tuple(body), ())


def cp_async_kernel(threads: int = 64) -> "T.ThreadKernel":
    """out[i] = in[threads*4 - 1 - i] (u32) through shared memory: each thread
    cp.async's 16 bytes (zero-filled past n with src-size) and a 4-byte copy,
    waits, syncs, then reads another thread's words."""
    r = Regs()
    pin, pout, pn = r("u64", "inp"), r("u64", "out"), r("s32", "n")
    body: list = [T.Comment("reverse through shared memory with cp.async")]
    tid, base = r("u32", "tid"), r("u32", "smem")
    body += [T.SpecialReg(tid, T.SReg.TID_X), T.SharedBase(base)]
    first, avail, size, nbytes = r("s32", "first"), r("s32", "avail"), r("s32", "size"), r("u32", "srcsz")
    body += [T.Binary(T.BinOp.SHL, first, tid, imm(2, "u32")),
             T.Binary(T.BinOp.SUB, avail, pn, first),
             T.Binary(T.BinOp.MAX, avail, avail, imm(0, "s32")),
             T.Binary(T.BinOp.MIN, size, avail, imm(4, "s32")),
             T.Binary(T.BinOp.SHL, nbytes, size, imm(2, "u32"))]
    gaddr = element_address(r, body, pin, first, 4)
    soff, saddr = r("u32", "soff"), r("u32", "saddr")
    body += [T.Binary(T.BinOp.SHL, soff, tid, imm(4, "u32")),
             T.Binary(T.BinOp.ADD, saddr, base, soff),
             T.CpAsync(saddr, gaddr, 16, nbytes),
             T.CpAsyncCommit()]
    # a second, 4-byte copy of the first word into a scratch area after the tile
    has, scratch = r("pred", "has"), r("u32", "scr")
    body += [T.Setp(T.Cmp.GT, has, size, imm(0, "s32")),
             T.Binary(T.BinOp.SHL, scratch, tid, imm(2, "u32")),
             T.Binary(T.BinOp.ADD, scratch, scratch, base),
             T.Binary(T.BinOp.ADD, scratch, scratch, imm(threads * 16, "u32")),
             T.CpAsync(scratch, gaddr, 4, None, has),
             T.CpAsyncCommit(),
             T.CpAsyncWait(0),
             T.Barrier()]
    words = tuple(r("b32", "w") for _ in range(4))
    other, ooff, oaddr = r("u32", "other"), r("u32", "ooff"), r("u32", "oaddr")
    body += [T.Binary(T.BinOp.SUB, other, imm(threads - 1, "u32"), tid),
             T.Binary(T.BinOp.SHL, ooff, other, imm(4, "u32")),
             T.Binary(T.BinOp.ADD, oaddr, base, ooff),
             T.Load(words, S, oaddr, 0)]
    rev = tuple(reversed(words))
    outaddr = element_address(r, body, pout, first, 4)
    body.append(T.Store(G, outaddr, 0, rev))
    return T.ThreadKernel("cp_async_reverse", (pin, pout, pn), threads, threads * 16 + threads * 4,
                          tuple(body), ())


def shfl_sum_kernel(threads: int = 128) -> "T.ThreadKernel":
    """out[0] += sum(x[0:n]) (f32): a block-strided For loop accumulates,
    a butterfly shfl.sync reduces each warp, lane 0 does red.global.add."""
    r = Regs()
    px, pout, pn = r("u64", "x"), r("u64", "out"), r("s32", "n")
    body: list = [T.Comment("sum with warp shuffles")]
    gid = global_index(r, body)
    nthreads, ctas = r("u32", "nth"), r("u32", "ncta")
    acc, i, v = r("f32", "acc"), r("s32", "i"), r("f32", "v")
    body += [T.SpecialReg(nthreads, T.SReg.NTID_X), T.SpecialReg(ctas, T.SReg.CTAID_X),
             T.Mov(acc, imm(0.0, "f32"))]
    loop_body = []
    addr = element_address(r, loop_body, px, i, 4)
    loop_body += [T.Load((v,), G, addr, 0), T.Binary(T.BinOp.ADD, acc, acc, v)]
    # stride: threads per block times 1 block here (grid-stride over one block)
    body.append(T.For(i, gid, pn, threads, tuple(loop_body), unroll=None))
    bits = r("b32", "bits")
    body.append(T.Mov(bits, acc))
    for off in (16, 8, 4, 2, 1):
        other, fo = r("b32", "o"), r("f32", "fo")
        body += [T.Shfl(T.ShflMode.BFLY, other, bits, imm(off, "u32"), 0x1F),
                 T.Mov(fo, other), T.Binary(T.BinOp.ADD, acc, acc, fo), T.Mov(bits, acc)]
    lane, lead = r("u32", "lane"), r("pred", "lead")
    body += [T.SpecialReg(lane, T.SReg.LANEID), T.Setp(T.Cmp.EQ, lead, lane, imm(0, "u32")),
             T.AtomicAdd(G, pout, 0, acc, None, lead)]
    return T.ThreadKernel("shfl_sum", (px, pout, pn), threads, 0, tuple(body), ())


def dequant_kernel(threads: int = 64) -> "T.ThreadKernel":
    """out[8i:8i+8] (f16) = (q - 8) * scale for eight u4 fields of w[i] (u32),
    field j at bits [4j, 4j+4): lop3 puts a nibble pair into the mantissa of
    0x6400 (1024.0), sub.f16x2 removes 1024 + 8, mul.f16x2 scales. Also
    exercises prmt, shf, bfe, cvt rounding modes, cvt.rn.f16x2.f32 and a Loop
    with Break."""
    r = Regs()
    pw, ps, pout, pn = r("u64", "w"), r("u64", "scale"), r("u64", "out"), r("s32", "n")
    body: list = [T.Comment("u4 -> f16 with lop3")]
    gid = global_index(r, body)
    inr = r("pred", "inr")
    body += [T.Setp(T.Cmp.LT, inr, gid, pn)]
    w, sc = r("b32", "q"), r("f32", "sc")
    waddr = element_address(r, body, pw, gid, 4)
    body += [T.Mov(w, imm(0, "b32")), T.Load((w,), G, waddr, 0, inr),
             T.Load((sc,), G, ps, 0)]
    scale2, magic = r("f16x2", "sc2"), r("f16x2", "magic")
    body += [T.CvtPack(scale2, sc, sc), T.Mov(magic, imm(0x64086408, "f16x2"))]
    outs = []
    for j in range(4):
        # fields j (low half) and j+4 (high half): shift so field j sits at bit 0 and field j+4 at bit 16
        shifted, lo_hi, h = r("b32", "sh"), r("b32", "lh"), r("f16x2", "h")
        body += [T.Shf(shifted, w, w, imm(4 * j, "u32"), left=False, clamp=False),
                 # fields j and j+4 are nibbles at bits 0 and 16 after a 4*j shift plus a prmt
                 T.Prmt(lo_hi, shifted, imm(0, "b32"), imm(0x5210, "u32")),
                 T.Lop3(h, lo_hi, imm(0x000F000F, "b32"), imm(0x64006400, "b32"), 0xEA),
                 T.Binary(T.BinOp.SUB, h, h, magic),
                 T.Binary(T.BinOp.MUL, h, h, scale2)]
        outs.append(h)
    first = r("u32", "o8")
    body.append(T.Binary(T.BinOp.SHL, first, gid, imm(3, "u32")))
    oaddr = element_address(r, body, pout, first, 2)
    body.append(T.Store(G, oaddr, 0, tuple(outs), inr))
    # extra coverage: bfe / cvt rounding / shf.l.clamp inside a Loop with Break
    cnt, top, f, rounded, done = r("s32", "cnt"), r("u32", "top"), r("f32", "f"), r("s32", "rnd"), r("pred", "done")
    wide = r("f32", "wf")
    body += [T.Mov(cnt, imm(0, "s32")),
             T.Loop((T.Bfe(top, w, imm(28, "u32"), imm(4, "u32")),
                     T.Cvt(wide, top, T.Rounding.RN),
                     T.Binary(T.BinOp.MUL, f, wide, imm(0.5, "f32")),
                     T.Cvt(rounded, f, T.Rounding.RNI),
                     T.Binary(T.BinOp.ADD, cnt, cnt, rounded),
                     T.Shf(top, top, w, imm(1, "u32"), left=True, clamp=True),
                     T.Setp(T.Cmp.GE, done, cnt, imm(0, "s32")),
                     T.Break(done)))]
    half = r("f16", "half")
    body += [T.Cvt(half, f, T.Rounding.RN)]
    return T.ThreadKernel("dequant_u4", (pw, ps, pout, pn), threads, 0, tuple(body), ())


def byte_kernel(threads: int = 64) -> "T.ThreadKernel":
    """8-bit arithmetic, which PTX has only for ld/st/cvt: the printer keeps
    u8/s8 values extended in 16-bit registers. Per element i < n:
    ou[i] = (x[i] * 3 + 200) mod 256 (u8), os[i] = max(-y[i], 5) (s8, -(-128) wraps),
    ow[i] = (ou[i] < 100 ? os[i] : ou[i] >> 1) as s32."""
    r = Regs()
    px, py, pou, pos, pow_, pn = (r("u64", "x"), r("u64", "y"), r("u64", "ou"), r("u64", "os"),
                                   r("u64", "ow"), r("s32", "n"))
    body: list = [T.Comment("byte arithmetic")]
    gid = global_index(r, body)
    inr = r("pred", "inr")
    body.append(T.Setp(T.Cmp.LT, inr, gid, pn))
    x, y, u, sneg, smax, half = (r("u8", "x"), r("s8", "y"), r("u8", "u"), r("s8", "neg"), r("s8", "mx"),
                                 r("u8", "half"))
    small, pick, wide = r("pred", "small"), r("s8", "pick"), r("s32", "w")
    body += [T.Mov(x, imm(0, "u8")), T.Mov(y, imm(0, "s8")),
             T.Load((x,), G, element_address(r, body, px, gid, 1), 0, inr),
             T.Load((y,), G, element_address(r, body, py, gid, 1), 0, inr),
             T.Fma(u, x, imm(3, "u8"), imm(200, "u8")),
             T.Unary(T.UnOp.NEG, sneg, y),
             T.Binary(T.BinOp.MAX, smax, sneg, imm(5, "s8")),
             T.Binary(T.BinOp.SHR, half, u, imm(1, "u8")),
             T.Setp(T.Cmp.LT, small, u, imm(100, "u8")),
             T.Selp(pick, smax, half, small),
             T.Cvt(wide, pick)]
    body += [T.Store(G, element_address(r, body, pou, gid, 1), 0, (u,), inr),
             T.Store(G, element_address(r, body, pos, gid, 1), 0, (smax,), inr),
             T.Store(G, element_address(r, body, pow_, gid, 4), 0, (wide,), inr)]
    return T.ThreadKernel("bytes", (px, py, pou, pos, pow_, pn), threads, 0, tuple(body), ())


def byte_reference(x, y):
    """numpy's answer for byte_kernel."""
    u = ((x.astype(np.int64) * 3 + 200) % 256).astype(np.uint8)
    neg = (-y.astype(np.int64)).astype(np.int8)          # -(-128) wraps to -128
    mx = np.maximum(neg, np.int8(5))
    w = np.where(u < 100, mx.astype(np.int32), (u >> 1).astype(np.int32))
    return u, mx, w.astype(np.int32)


KERNELS = {
    "bytes": byte_kernel,
    "vector_add": vector_add_kernel,
    "mma_f16": lambda: mma_kernel("f16", "M16N8K16"),
    "mma_bf16": lambda: mma_kernel("bf16", "M16N8K16"),
    "mma_f16_k8": lambda: mma_kernel("f16", "M16N8K8"),
    "cp_async": cp_async_kernel,
    "shfl_sum": shfl_sum_kernel,
    "dequant": dequant_kernel,
}


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("sm", SMS)
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_assembles_without_spills(name, sm):
    ptx = emit_ptx(KERNELS[name](), sm)
    assert f".target sm_{sm}" in ptx and ".version 8.0" in ptx
    result = compile_ptx(ptx, sm)
    assert result.cubin[:4] == b"\x7fELF"
    assert result.spill_stores == 0 and result.spill_loads == 0, result.log
    assert 0 < result.registers <= 255


def test_vector_add_uses_v4_and_predicates():
    ptx = emit_ptx(vector_add_kernel(), 80)
    assert re.search(r"@%full\w* ld\.global\.v4\.f32 \{", ptx)
    assert re.search(r"@%full\w* st\.global\.v4\.f32 \[", ptx)
    assert re.search(r"@%in\w* ld\.global\.f32 ", ptx)
    assert "add.rn.f32" in ptx
    assert ".param .u64 param_a" in ptx and "ld.param.u64" in ptx
    assert ".maxntid 128, 1, 1" in ptx
    # the tail branch depends on tid: never bra.uni
    assert re.search(r"@%full\w* bra \$L_", ptx) and "bra.uni $L_endif" not in ptx


def test_mma_kernel_instructions():
    ptx = emit_ptx(mma_kernel("bf16"), 90)
    assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in ptx
    assert "ldmatrix.sync.aligned.m8n8.x2.shared.b16" in ptx
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in ptx
    assert ".extern .shared .align 16 .b8 tl_smem[];" in ptx
    assert re.search(r"mov\.u32 %smem\d+, tl_smem;", ptx)


def test_cp_async_instructions():
    ptx = emit_ptx(cp_async_kernel(), 80)
    assert re.search(r"cp\.async\.cg\.shared\.global \[%\w+\], \[%\w+\], 16, %srcsz\w*;", ptx)
    assert re.search(r"@%has\w* cp\.async\.ca\.shared\.global \[%\w+\], \[%\w+\], 4;", ptx)
    assert "cp.async.commit_group;" in ptx and "cp.async.wait_group 0;" in ptx and "bar.sync 0;" in ptx


def test_shfl_and_uniform_loop():
    ptx = emit_ptx(shfl_sum_kernel(), 80)
    assert ptx.count("shfl.sync.bfly.b32") == 5
    assert "red.global.add.f32" in ptx
    # the loop starts at a per-thread index: its exit branch is divergent
    assert re.search(r"@%tmp_pred_\d+ bra \$L_for_end", ptx)


def test_uniform_branch_is_bra_uni():
    r = Regs()
    n, i, acc, p = r("s32", "n"), r("s32", "i"), r("s32", "acc"), r("pred", "p")
    cta = r("u32", "cta")
    body = (T.SpecialReg(cta, T.SReg.CTAID_X), T.Mov(acc, imm(0, "s32")),
            T.For(i, imm(0, "s32"), n, 1, (T.Binary(T.BinOp.ADD, acc, acc, i),)),
            T.Setp(T.Cmp.EQ, p, cta, imm(0, "u32")),
            T.If(p, (T.Binary(T.BinOp.ADD, acc, acc, imm(1, "s32")),)))
    k = T.ThreadKernel("uniform", (n,), 32, 0, body, ())
    ptx = emit_ptx(k, 80)
    assert re.search(r"@%tmp_pred_0 bra\.uni \$L_for_end", ptx)
    assert re.search(r"@!%p\w* bra\.uni \$L_endif", ptx)
    compile_ptx(ptx, 80)


def test_dequant_bit_ops():
    ptx = emit_ptx(dequant_kernel(), 89)
    assert "lop3.b32" in ptx and ", 0xEA;" in ptx
    assert "prmt.b32" in ptx and "shf.r.wrap.b32" in ptx and "shf.l.clamp.b32" in ptx
    assert "bfe.u32" in ptx and "sub.rn.f16x2" in ptx and "mul.rn.f16x2" in ptx
    assert "cvt.rn.f16x2.f32" in ptx and "cvt.rni.s32.f32" in ptx and "cvt.rn.f16.f32" in ptx
    assert "mov.b32 %magic" in ptx and "0x64086408" in ptx


def test_float_immediates_are_hex():
    assert format_imm(imm(1.0, "f32")) == "0f3F800000"
    assert format_imm(imm(-2.5, "f64")) == "0dC004000000000000"
    assert format_imm(imm(1.0, "f16")) == "0x3C00"
    assert format_imm(imm(-1, "s32")) == "-1"
    assert format_imm(imm(-1, "u32")) == "0xFFFFFFFF"


def test_bf16x2_arithmetic_before_sm90_uses_fma():
    r = Regs()
    out = r("u64", "out")
    a, b, c = r("bf16x2", "a"), r("bf16x2", "b"), r("bf16x2", "c")
    body = (T.Mov(a, imm(0x3F804000, "bf16x2")), T.Mov(b, imm(0x40403F80, "bf16x2")),
            T.Binary(T.BinOp.ADD, c, a, b), T.Binary(T.BinOp.MUL, c, c, b), T.Binary(T.BinOp.SUB, c, c, a),
            T.Store(G, out, 0, (c,)))
    k = T.ThreadKernel("bf16_ops", (out,), 32, 0, body, ())
    ptx80, ptx90 = emit_ptx(k, 80), emit_ptx(k, 90)
    assert "add.rn.bf16x2" not in ptx80 and ptx80.count("fma.rn.bf16x2") == 3
    assert "add.rn.bf16x2" in ptx90
    for sm, ptx in ((80, ptx80), (90, ptx90)):
        compile_ptx(ptx, sm)


def test_broken_ptx_raises_with_the_line():
    ptx = emit_ptx(vector_add_kernel(), 80)
    lines = ptx.splitlines()
    at = next(i for i, line in enumerate(lines) if "add.rn.f32" in line)
    lines[at] = lines[at].replace("add.rn.f32", "add.rn.f33")
    with pytest.raises(TLCompileError) as info:
        compile_ptx("\n".join(lines), 80)
    message = str(info.value)
    assert f"line {at + 1}" in message
    assert "add.rn.f33" in message          # the offending line, quoted
    assert info.value.ptx_line.strip().startswith(str(at + 1))


def test_compile_is_cached():
    ptx = emit_ptx(vector_add_kernel(), 80)
    assert compile_ptx(ptx, 80) is compile_ptx(ptx, 80)
    assert compile_ptx(ptx, 80) is not compile_ptx(ptx.replace("sm_80", "sm_90"), 90)


def test_unprintable_statement_is_a_compile_error():
    r = Regs()
    p = r("pred", "p")
    k = T.ThreadKernel("bad", (), 32, 0, (T.Unary(T.UnOp.SQRT, p, p),), ())
    with pytest.raises(TLCompileError):
        emit_ptx(k, 80)


def test_byte_registers_are_16_bit():
    """PTX has no 8-bit mov/add/setp/selp: 8-bit values live in .b16 registers,
    loads extend (ld.u8 / ld.s8), results of arithmetic are re-extended."""
    ptx = emit_ptx(byte_kernel(), 80)
    assert ".reg .b8" not in ptx and "mov.b8" not in ptx
    assert re.search(r"ld\.global\.u8 ", ptx) and re.search(r"ld\.global\.s8 ", ptx)
    assert "mad.lo.u16" in ptx and "neg.s16" in ptx and "max.s16" in ptx and "setp.lo.u16" in ptx
    assert "and.b16" in ptx and "cvt.s16.s8" in ptx          # re-extension after mad / neg
    assert "st.global.u8" in ptx and "st.global.s8" in ptx


def test_byte_kernel_matches_numpy_in_the_emulator(rng):
    """The thread IR semantics the printer must keep (the GPU runs the same
    kernel in test_cuda_runtime.py)."""
    from tvm_lite.backends.emulator import run_thread_kernel
    n = 100
    x = rng.integers(0, 256, n, dtype=np.uint8)
    y = rng.integers(-128, 128, n, dtype=np.int8)
    y[:2] = (-128, 127)
    ou, os_, ow = np.zeros(n, np.uint8), np.zeros(n, np.int8), np.zeros(n, np.int32)
    k = byte_kernel(64)
    names = [p.name for p in k.params]
    run_thread_kernel(k, -(-n // 64), dict(zip(names, (x, y, ou, os_, ow))), {names[-1]: n})
    for got, want in zip((ou, os_, ow), byte_reference(x, y)):
        np.testing.assert_array_equal(got, want)


def test_missing_nvjitlink_library_is_a_target_error(monkeypatch):
    from cuda.bindings import nvjitlink
    from tvm_lite.backends import nvjitlink as nj
    from tvm_lite.errors import TLTargetError

    def missing(*args):
        raise RuntimeError("Failure finding libnvJitLink.so")
    monkeypatch.setattr(nvjitlink, "create", missing)
    monkeypatch.setattr(nj, "_cache", {})
    with pytest.raises(TLTargetError, match="nvJitLink library"):
        compile_ptx(emit_ptx(byte_kernel(), 80), 80)


def _ptxas():
    from tvm_lite.backends.nvjitlink import find_ptxas
    exe = find_ptxas()
    if exe is None:
        pytest.skip("no ptxas (the nvidia-cuda-nvcc wheel is not installed)")
    return exe


@pytest.mark.parametrize("sm", SMS)
def test_ptxas_fallback_reports_what_nvjitlink_reports(sm):
    _ptxas()
    ptx = emit_ptx(vector_add_kernel(), sm)
    by_ptxas = compile_ptx(ptx, sm, assembler="ptxas")
    by_nvjitlink = compile_ptx(ptx, sm, assembler="nvjitlink")
    assert by_ptxas.cubin[:4] == b"\x7fELF"
    assert by_ptxas.resources() == by_nvjitlink.resources()
    assert by_ptxas.registers > 0


def test_ptxas_fallback_quotes_the_rejected_line():
    _ptxas()
    lines = emit_ptx(vector_add_kernel(), 80).splitlines()
    at = next(i for i, line in enumerate(lines) if "add.rn.f32" in line)
    lines[at] = lines[at].replace("add.rn.f32", "add.rn.f33")
    with pytest.raises(TLCompileError) as info:
        compile_ptx("\n".join(lines), 80, assembler="ptxas")
    assert "add.rn.f33" in info.value.ptx_line
    assert "tl-ptxas-" not in str(info.value)      # no temporary paths in the message


def test_min_blocks_caps_the_registers():
    """`@kernel(min_blocks=B)` prints `.minnctapersm B`, and ptxas then keeps
    the registers per thread within 65536 / (B * threads) (here 64 for 8
    blocks of 128 threads, which this 64x64 matmul tile exceeds unbounded)."""
    import tvm_lite as tl
    from conftest import EXAMPLES
    src = open(f"{EXAMPLES}/matmul.tl").read()
    src = src.replace("@kernel(warps=4)", "@kernel(warps=4, min_blocks=MINB)")
    src = src.replace("BK: int = 32]", "BK: int = 32, MINB: int = 0]")
    figures = {}
    for bound in (0, 8):
        kern = tl.compile(src, target="cuda:sm_80", BM=64, BN=64, MINB=bound).matmul
        ptx = kern.source("ptx")
        assert (".minnctapersm 8" in ptx) == (bound == 8)
        assert (", min 8 blocks per SM" in kern.source("thread")) == (bound == 8)
        assert ("warps=4 min_blocks=8 grid=" in kern.source("vm")) == (bound == 8)
        figures[bound] = compile_ptx(ptx, 80).registers
    assert figures[8] <= 64 < figures[0]
