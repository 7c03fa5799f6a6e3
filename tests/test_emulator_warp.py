"""Warp-collective instructions of the emulator against numpy: mma fragments
(built here, lane by lane, from the PTX ISA tables), ldmatrix, shfl.sync."""
import ml_dtypes
import numpy as np
import pytest

from test_emulator_util import KernelBuilder
from tvm_lite.backends.emulator import HazardError, run_thread_kernel
from tvm_lite.ir import thread as T

HALF = {"f16": np.float16, "bf16": ml_dtypes.bfloat16}


# ---------------------------------------------------------------- mma

def _a_position(shape, lane, i):
    """(row, col) of element a_i held by `lane` (PTX ISA, f16/bf16 A fragment)."""
    group, tig = lane // 4, lane % 4
    if shape == "m16n8k16":
        row = group if i in (0, 1, 4, 5) else group + 8
        col = tig * 2 + (i & 1) + (8 if i >= 4 else 0)
    else:
        row = group if i in (0, 1) else group + 8
        col = tig * 2 + (i & 1)
    return row, col


def _b_position(shape, lane, i):
    group, tig = lane // 4, lane % 4
    if shape == "m16n8k16":
        row = tig * 2 + (i & 1) + (8 if i >= 2 else 0)
    else:
        row = tig * 2 + i
    return row, group


def _c_position(lane, i):
    group, tig = lane // 4, lane % 4
    return (group if i < 2 else group + 8), tig * 2 + (i & 1)


def _fragment_words(matrix, shape, nregs, position):
    """(32, nregs) uint32: register r of a lane holds elements 2r (low half) and 2r+1."""
    bits = matrix.view(np.uint16)
    words = np.zeros((32, nregs), np.uint32)
    for lane in range(32):
        for i in range(2 * nregs):
            r, c = position(shape, lane, i)
            words[lane, i // 2] |= np.uint32(int(bits[r, c]) << (16 * (i % 2)))
    return words


def _mma_kernel(shape, ab):
    na, nb = (4, 2) if shape == "m16n8k16" else (2, 1)
    kb = KernelBuilder(f"mma_{shape}_{ab}", threads=64)   # two warps, each its own problem
    pa, pb, pc, pd = (kb.param(n) for n in "abcd")
    a = kb.load_lane(pa, T.b32, na)
    b = kb.load_lane(pb, T.b32, nb) if nb > 1 else kb.load_lane(pb, T.b32, 1)
    c = kb.load_lane(pc, T.f32, 4)
    d = [kb.reg("d", T.f32) for _ in range(4)]
    kb.emit(T.Mma(T.MmaShape(shape), T.hw_type(ab), tuple(d), tuple(a), tuple(b), tuple(c)))
    kb.store_lane(pd, d)
    return kb.kernel(), na, nb


@pytest.mark.parametrize("shape", ["m16n8k16", "m16n8k8"])
@pytest.mark.parametrize("ab", ["f16", "bf16"])
def test_mma_fragments_match_numpy(shape, ab, rng):
    K = 16 if shape == "m16n8k16" else 8
    kernel, na, nb = _mma_kernel(shape, ab)
    words_a, words_b, cs, refs = [], [], [], []
    for _ in range(2):   # one problem per warp
        A = rng.standard_normal((16, K)).astype(HALF[ab])
        B = rng.standard_normal((K, 8)).astype(HALF[ab])
        C = rng.standard_normal((16, 8)).astype(np.float32)
        words_a.append(_fragment_words(A, shape, na, _a_position))
        words_b.append(_fragment_words(B, shape, nb, _b_position))
        c_lanes = np.zeros((32, 4), np.float32)
        for lane in range(32):
            for i in range(4):
                c_lanes[lane, i] = C[_c_position(lane, i)]
        cs.append(c_lanes)
        refs.append(A.astype(np.float64) @ B.astype(np.float64) + C)
    d = np.zeros((64, 4), np.float32)
    run_thread_kernel(kernel, 1, dict(a=np.concatenate(words_a), b=np.concatenate(words_b),
                                      c=np.concatenate(cs), d=d))
    for w in range(2):
        D = np.zeros((16, 8))
        for lane in range(32):
            for i in range(4):
                D[_c_position(lane, i)] = d[w * 32 + lane, i]
        np.testing.assert_allclose(D, refs[w], rtol=1e-6, atol=1e-5)


def test_mma_with_inactive_lanes_is_a_hazard(rng):
    kb = KernelBuilder("mma_partial", threads=32)
    a = [kb.reg("a", T.b32) for _ in range(4)]
    b = [kb.reg("b", T.b32) for _ in range(2)]
    d = [kb.reg("d", T.f32) for _ in range(4)]
    p = kb.reg("p", T.pred)
    kb.emit(*(T.Mov(r, T.Imm(0, T.b32)) for r in a + b),
            T.Setp(T.Cmp.LT, p, kb.tid, T.Imm(31, T.u32)),
            T.If(p, (T.Mma(T.MmaShape.M16N8K16, T.f16, tuple(d), tuple(a), tuple(b),
                           (T.Imm(0.0, T.f32),) * 4),)))
    with pytest.raises(HazardError, match="lane\\(s\\) 31 inactive"):
        run_thread_kernel(kb.kernel(), 1)


# ------------------------------------------------------------ ldmatrix

def _ldmatrix_kernel(nmat, trans, image_bytes):
    """Copy `image` into shared (16 bytes per step, per-thread For bounds),
    bar.sync, ldmatrix with per-lane row offsets, store the registers."""
    kb = KernelBuilder(f"ldmatrix_x{nmat}", threads=32, shared_bytes=image_bytes)
    pimg, prow, pout = kb.param("img"), kb.param("rows"), kb.param("out")
    base = kb.reg("smem", T.u32)
    kb.emit(T.SharedBase(base))
    j = kb.reg("j", T.s32)
    chunks = image_bytes // 16
    words = [kb.reg("w", T.b32) for _ in range(4)]
    src, soff, sdst = kb.reg("src", T.u64), kb.reg("soff", T.u64), kb.reg("sdst", T.u32)
    kb.emit(T.For(j, T.Reg(kb.tid.name, T.u32), T.Imm(chunks, T.s32), 32, (
        T.Binary(T.BinOp.MUL_WIDE, soff, j, T.Imm(16, T.s32)),
        T.Binary(T.BinOp.ADD, src, pimg, soff),
        T.Load(tuple(words), T.Space.GLOBAL, src),
        T.Fma(sdst, j, T.Imm(16, T.s32), base),
        T.Store(T.Space.SHARED, sdst, 0, tuple(words)),
    )), T.Barrier())
    row_off = kb.load_lane(prow, T.u32)[0]
    addr = kb.reg("a", T.u32)
    kb.emit(T.Binary(T.BinOp.ADD, addr, base, row_off))
    dsts = [kb.reg("r", T.b32) for _ in range(nmat)]
    kb.emit(T.Ldmatrix(tuple(dsts), addr, trans))
    kb.store_lane(pout, dsts)
    return kb.kernel()


@pytest.mark.parametrize("nmat", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix(nmat, trans, rng):
    rows_total = 8 * nmat
    slots = 2 * rows_total                               # rows land in a shuffled subset of slots
    image = rng.integers(0, 1 << 16, (slots, 8), dtype=np.uint16)
    slot_of_row = rng.permutation(slots)[:rows_total]
    row_offsets = np.zeros(32, np.uint32)
    row_offsets[:rows_total] = slot_of_row * 16
    # lanes beyond the address-supplying ones hold junk addresses: ldmatrix ignores them
    row_offsets[rows_total:] = 7
    out = np.zeros((32, nmat), np.uint32)
    kernel = _ldmatrix_kernel(nmat, trans, image.nbytes)
    run_thread_kernel(kernel, 1, dict(img=image, rows=row_offsets, out=out))
    for m in range(nmat):
        mat = image[slot_of_row[8 * m: 8 * m + 8]]            # mat[r] = row r of matrix m
        if trans:
            mat = mat.T
        for lane in range(32):
            lo, hi = mat[lane // 4, 2 * (lane % 4)], mat[lane // 4, 2 * (lane % 4) + 1]
            assert out[lane, m] == int(lo) | (int(hi) << 16), (m, lane)


def test_ldmatrix_misaligned_row_is_a_hazard(rng):
    image = rng.integers(0, 1 << 16, (16, 8), dtype=np.uint16)
    rows = (np.arange(32, dtype=np.uint32) % 8) * 16
    rows[3] += 4
    kernel = _ldmatrix_kernel(1, False, image.nbytes)
    with pytest.raises(HazardError, match="misaligned 16-byte"):
        run_thread_kernel(kernel, 1, dict(img=image, rows=rows, out=np.zeros((32, 1), np.uint32)))


# ----------------------------------------------------------------- shfl

def _shfl_reference(mode, values, b, c, warp_size=32):
    """PTX ISA shfl.sync semantics, lane by lane."""
    out = np.empty_like(values)
    for w in range(len(values) // warp_size):
        for lane in range(warp_size):
            bval = int(b[w * warp_size + lane]) & 0x1F
            cval, segmask = c & 0x1F, (c >> 8) & 0x1F
            max_lane = (lane & segmask) | (cval & ~segmask)
            min_lane = lane & segmask
            if mode == "up":
                j = lane - bval
                ok = j >= max_lane
            elif mode == "down":
                j = lane + bval
                ok = j <= max_lane
            elif mode == "bfly":
                j = lane ^ bval
                ok = j <= max_lane
            else:
                j = min_lane | (bval & ~segmask)
                ok = j <= max_lane
            out[w * warp_size + lane] = values[w * warp_size + (j if ok else lane)]
    return out


@pytest.mark.parametrize("mode,c", [("idx", 0x1F), ("idx", 0x181F), ("up", 0), ("up", 0x1800),
                                    ("down", 0x1F), ("down", 0x1C1F), ("bfly", 0x1F), ("bfly", 0x1F0F)])
def test_shfl_modes(mode, c, rng):
    kb = KernelBuilder("shfl", threads=64)
    px, pb, pout = kb.param("x"), kb.param("b"), kb.param("out")
    x = kb.load_lane(px, T.b32)[0]
    b = kb.load_lane(pb, T.u32)[0]
    d = kb.reg("d", T.b32)
    kb.emit(T.Shfl(T.ShflMode(mode), d, x, b, c))
    kb.store_lane(pout, [d])
    values = rng.integers(0, 1 << 32, 64, dtype=np.uint32)
    lanes = rng.integers(0, 40, 64).astype(np.uint32)        # some beyond 31: only b[4:0] counts
    out = np.zeros(64, np.uint32)
    run_thread_kernel(kb.kernel(), 1, dict(x=values, b=lanes, out=out))
    np.testing.assert_array_equal(out, _shfl_reference(mode, values, lanes, c))


def test_shfl_butterfly_reduction(rng):
    """A warp sum by five bfly shuffles of f32 values (what the lowering emits)."""
    kb = KernelBuilder("warp_sum", threads=64)
    px, pout = kb.param("x"), kb.param("out")
    acc = kb.load_lane(px, T.f32)[0]
    for k in (16, 8, 4, 2, 1):
        other_bits = kb.reg("o", T.b32)
        kb.emit(T.Shfl(T.ShflMode.BFLY, other_bits, T.Reg(acc.name, T.f32), T.Imm(k, T.u32), 0x1F))
        other = kb.reg("of", T.f32)
        kb.emit(T.Mov(other, other_bits), T.Binary(T.BinOp.ADD, acc, acc, other))
    kb.store_lane(pout, [acc])
    x = rng.standard_normal(64).astype(np.float32)
    out = np.zeros(64, np.float32)
    run_thread_kernel(kb.kernel(), 1, dict(x=x, out=out))
    for w in range(2):
        np.testing.assert_allclose(out[w * 32:(w + 1) * 32], x[w * 32:(w + 1) * 32].astype(np.float64).sum(),
                                   rtol=1e-5, atol=1e-5)


def test_shfl_in_divergent_code_is_a_hazard():
    kb = KernelBuilder("shfl_div", threads=32)
    p, d = kb.reg("p", T.pred), kb.reg("d", T.b32)
    kb.emit(T.Setp(T.Cmp.LT, p, kb.tid, T.Imm(8, T.u32)),
            T.If(p, (T.Shfl(T.ShflMode.IDX, d, T.Imm(1, T.b32), T.Imm(0, T.u32), 0x1F),)))
    with pytest.raises(HazardError, match="inactive"):
        run_thread_kernel(kb.kernel(), 1)
    # with a membermask of exactly the active lanes it is fine
    kb2 = KernelBuilder("shfl_mask", threads=32)
    p, d = kb2.reg("p", T.pred), kb2.reg("d", T.b32)
    kb2.emit(T.Setp(T.Cmp.LT, p, kb2.tid, T.Imm(8, T.u32)),
             T.If(p, (T.Shfl(T.ShflMode.IDX, d, T.Imm(1, T.b32), T.Imm(0, T.u32), 0x1F, 0xFF),)))
    run_thread_kernel(kb2.kernel(), 1)
