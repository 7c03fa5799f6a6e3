"""ops/quant_gemv.tl on interp, cpu and the GPU targets against numpy float64.

c = a @ W with W[k, n] = (value(b[k, n]) - zero) * s[k // G, n]. Packed
weights come from tl.pack and the reference from tl.unpack. The shapes are
chosen so that on the CPU some tiles take the fused register micro-kernel
(cpu_qdot: windows inside the tensor) and others the generic path (the last
column block and the last, partial group run past the edge).
"""
from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.backends.cpu_qdot import _fold, _mantissa_words, decode_plan
from tvm_lite.ir import vm

KERNEL = Path(tl.__file__).parent / "ops" / "quant_gemv.tl"

INTS = [f"u{b}" for b in range(1, 9)] + [f"i{b}" for b in range(2, 9)]
FLOATS = ["f3e1m1", "f4e2m1", "f5e2m2", "f6e2m3", "f6e3m2", "f7e3m3", "f8e4m3", "f8e5m2"]
NUMPY_AT = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}


def make_weights(rng, dt, k: int, n: int):
    """Random finite weights of type dt: (argument for b, float64 values)."""
    patterns = rng.integers(0, 1 << dt.nbits, (k, n)).astype(np.uint64)
    stream = tl.dtype(f"u{dt.nbits}")
    if dt.is_float:    # no NaN or inf patterns: the kernel's inputs are weights
        values = tl.unpack(tl.pack(patterns, stream), dt, (k, n))
        patterns[~np.isfinite(values)] = 0
    bits = tl.pack(patterns, stream)
    values = tl.unpack(bits, dt, (k, n)).astype(np.float64)
    if dt.nbits == 8 and dt.is_integer:       # numpy has the type: pass it as such
        bits = bits.view(np.int8 if dt.is_signed else np.uint8).reshape(k, n)
    return bits, values


def run(target, rng, wt, g, m, k, n, zero=False, at="f32", **tiles):
    dt = tl.dtype(wt)
    group = k if g == -1 else g
    tiles.setdefault("BN", 128)       # small tiles: both CPU paths at these sizes
    mod = tl.compile(KERNEL, target=target, WT=wt, G=group, ZERO=int(zero), AT=at, **tiles)
    bits, w = make_weights(rng, dt, k, n)
    groups = -(-k // group)
    s = (rng.random((groups, n)) + 0.5).astype(np.float16)
    if zero:
        z = rng.integers(0, 1 << min(dt.nbits, 4), (groups, n)).astype(np.float16)
        zeros = z.astype(np.float64)
    else:
        z = np.zeros((1, 1), np.float16)
        midpoint = 1 << (dt.nbits - 1) if dt.is_integer and not dt.is_signed else 0
        zeros = np.full((groups, n), float(midpoint))
    a = rng.standard_normal((m, k)).astype(NUMPY_AT[at])
    c = np.full((m, n), np.nan, NUMPY_AT[at])
    mod.quant_gemv(m, n, k, z.shape[0], z.shape[1], a, bits, s, z, c)
    dequant = (w - np.repeat(zeros, group, 0)[:k]) * np.repeat(s.astype(np.float64), group, 0)[:k]
    ref = a.astype(np.float64) @ dequant
    return c.astype(np.float64), ref


def check(c, ref, at="f32"):
    tol = 2e-5 if at == "f32" else 1e-2
    assert np.isfinite(c).all()
    assert np.abs(c - ref).max() <= tol * np.abs(ref).max()


@pytest.mark.parametrize("wt", INTS + FLOATS)
def test_every_weight_type_cpu(rng, wt):
    c, ref = run("cpu", rng, wt, 64, 2, 200, 300)
    check(c, ref)


@pytest.mark.parametrize("wt", ["u4", "i3", "f6e3m2", "u8"])
def test_interp(rng, wt):
    c, ref = run("interp", rng, wt, 64, 2, 72, 136)
    check(c, ref)


@pytest.mark.parametrize("g", [32, 256, -1, 100])
@pytest.mark.parametrize("wt", ["u4", "u3", "f6e3m2"])
def test_group_sizes(rng, wt, g):
    c, ref = run("cpu", rng, wt, g, 1, 300, 260)
    check(c, ref)


@pytest.mark.parametrize("m", [3, 17])
@pytest.mark.parametrize("wt", ["u4", "u6"])
def test_rows(rng, wt, m):
    """Any M with the tile BM = 4 (several blocks of rows, one partial), and
    one block holding all rows (BM = M): the register and the L1 variants."""
    c, ref = run("cpu", rng, wt, 128, m, 256, 384, BM=4)
    check(c, ref)
    c, ref = run("cpu", rng, wt, 128, m, 256, 384, BM=m)
    check(c, ref)


@pytest.mark.parametrize("wt", ["u4", "u5", "f4e2m1"])
def test_zero_points(rng, wt, target):
    c, ref = run(target, rng, wt, 32, 2, 96, 136, zero=True)
    check(c, ref)


@pytest.mark.parametrize("at", ["f16", "bf16"])
def test_activation_types(rng, at):
    c, ref = run("cpu", rng, "u4", 128, 3, 256, 300, at=at)
    check(c, ref, at)


@pytest.mark.parametrize("wt", ["u3", "i7", "f5e2m2"])
def test_small_tiles(rng, wt, target):
    """Odd tile constants: a k tile (64) that does not divide the group (96),
    so the kernel masks the part of a tile past its group; bands that do not
    divide the k tile; an N tile of one chunk for N > 4 bits (64 columns)."""
    c, ref = run(target, rng, wt, 96, 2, 200, 256, BN=64 if tl.dtype(wt).nbits > 4 else 128, BK=64)
    check(c, ref)


def test_decode_plans():
    """The fused CPU path covers every int and every float up to 6 bits;
    the formats with NaN or inf patterns keep the generic path."""
    for wt in INTS + ["f3e1m1", "f4e2m1", "f5e2m2", "f6e2m3", "f6e3m2"]:
        assert decode_plan(tl.dtype(wt)) is not None, wt
    for wt in ["f7e3m3", "f8e4m3", "f8e5m2", "f16"]:
        assert decode_plan(tl.dtype(wt)) is None, wt
    assert decode_plan(tl.dtype("u4")).table[:16] == tuple(float(i) for i in range(16))
    assert decode_plan(tl.dtype("i2")).table[:4] == (0.0, 1.0, -2.0, -1.0)


def test_constant_ops_fold_into_the_table():
    """x - 8 after decoding u4 is free: the table holds value - 8. Decoders
    without a table keep the op (u6 - 32 goes into the mantissa decoding's
    bias, u6 * 0.5 stays an op); a result that could overflow is refused."""
    u4 = _fold(decode_plan(tl.dtype("u4")), ((vm.ElementOp.SUB, 8.0),))
    assert u4.table == tuple(float(i - 8) for i in range(16)) and u4.ops == ()
    scaled = _fold(decode_plan(tl.dtype("f4e2m1")), ((vm.ElementOp.MUL, 0.1),))
    expected = (np.array(decode_plan(tl.dtype("f4e2m1")).table, np.float32) * np.float32(0.1)).tolist()
    assert list(scaled.table) == expected
    u6 = _fold(decode_plan(tl.dtype("u6")), ((vm.ElementOp.MUL, 0.5),))
    assert u6.kind == "int" and u6.ops == ((vm.ElementOp.MUL, 0.5),)
    assert _fold(decode_plan(tl.dtype("u4")), ((vm.ElementOp.MUL, 1e38),)) is None


@pytest.mark.parametrize("wt", [t for t in INTS if int(t[1:]) >= 6])
def test_integers_decode_through_the_mantissa(wt):
    """Every integer type of 6 to 8 bits, alone or minus its midpoint (the
    kernel's constant zero), decodes without a conversion: field + bias built
    in an f32 mantissa, checked bit for bit against the f32 values for every
    field position (the other fields' bits set)."""
    dt = tl.dtype(wt)
    shifts = [()] if dt.is_signed else [(), ((vm.ElementOp.SUB, float(1 << (dt.nbits - 1))),)]
    for ops in shifts:
        plan = _fold(decode_plan(dt), ops)
        assert plan.kind == "mantissa" and plan.ops == (), (wt, ops)
        values = np.array([v - (ops[0][1] if ops else 0.0) for v in
                           [float(p - (1 << dt.nbits) if dt.is_signed and p >> (dt.nbits - 1) else p)
                            for p in range(1 << dt.nbits)]], np.float32)
        patterns = np.arange(1 << dt.nbits, dtype=np.uint32)
        for p in range(24 - dt.nbits):
            mask, exp_bits, offset = _mantissa_words(dt.nbits, dt.is_signed, p, plan.bias)
            lanes = patterns << np.uint32(p)
            lanes |= np.uint32(0xFFFFFFFF) & ~np.uint32(mask)      # other fields' bits, all set
            word = (lanes & np.uint32(mask)) ^ np.uint32(exp_bits)
            got = word.view(np.float32) - np.float32(offset)
            assert np.array_equal(got.view(np.uint32), values.view(np.uint32)), (wt, ops, p)


def test_asm_uses_table_lookups():
    """u4 decodes with vpermps/vpermd and multiplies with FMA in zmm registers."""
    mod = tl.compile(KERNEL, target="cpu", WT="u4", G=128)
    asm = mod.source("asm")
    assert "vperm" in asm and "vfmadd" in asm and "zmm" in asm


# ------------------------------------------------------------ PREFETCH=1 (GPU, M <= 16)
# The tiles ops/matmul.py's GPU_MMA_TILES uses for M <= 16 (f16 activations,
# mma), with the weight tile loaded ahead of its use.
GPU_M16 = dict(BM=16, BN=128, BK=64, DT="f16", PREFETCH=1)


@pytest.mark.parametrize("wt", ["u1", "u2", "u3", "u4", "i4", "u8", "f4e2m1", "f6e3m2"])
@pytest.mark.parametrize("zero", [False, True], ids=["nozero", "zero"])
@pytest.mark.parametrize("m, g, k, target", [(1, 128, 200, "cuda-emu:sm_80"), (16, 32, 232, "cuda-emu:sm_90"),
                                             (5, 256, 520, "cuda-emu:sm_90")], ids=["m1", "m16", "m5"])
def test_prefetch_on_the_emulator(rng, wt, zero, m, g, k, target):
    """K is not a multiple of the k tile (200 = 3 x 64 + 8; 232 = 7 x 32 + 8;
    520 = 8 x 64 + 8; KB = min(G, BK)), so the last loads ahead fall past k,
    some of them wholly: they must read harmless zeros that are never used.
    G = 128 and 256 take the two-register-set loop for <= 4 bits, G = 32 the
    one-ahead loop for every sub-byte type; u8 and zero points take the
    kernel without prefetch, which must be unchanged."""
    c, ref = run(target, rng, wt, g, m, k, 72, zero=zero, at="f16", **GPU_M16)
    check(c, ref, "f16")


@pytest.mark.parametrize("target", ["interp", "cpu"])
@pytest.mark.parametrize("wt", ["u2", "u4"])
def test_prefetch_is_the_same_kernel_on_every_target(rng, wt, target):
    """PREFETCH changes when a tile is loaded, not what is computed."""
    c, ref = run(target, rng, wt, 64, 3, 200, 136, BK=64, PREFETCH=1)
    check(c, ref)


def _weight_load_rows(constants) -> tuple[list, list]:
    """The first rows of the weight tiles the kernel loads before its k
    loops, and those it loads inside them in the first iteration."""
    from collections import defaultdict

    from tvm_lite.passes.lower_to_threads import _walk
    from tvm_lite.runtime.args import eval_expr
    kern = next(iter(tl.compile(KERNEL, target="interp", AT="f16", **constants))).vm
    outer = [s for s in kern.body if isinstance(s, vm.Load) and s.src.name == "b"]
    inner = [s for s in _walk(kern.body) if isinstance(s, vm.Load) and s.src.name == "b" and s not in outer]
    first = defaultdict(int)        # every loop variable (and block index) at 0
    return [eval_expr(s.offsets[0], first) for s in outer], [eval_expr(s.offsets[0], first) for s in inner]


@pytest.mark.parametrize("wt, zero, g, before, inside", [
    # <= 4 bits: two tiles before the loop, two per step, 2 tiles ahead
    ("u1", 0, 128, [0, 1], [2, 3]), ("u2", 0, 256, [0, 1], [2, 3]), ("u3", 0, 128, [0, 1], [2, 3]),
    ("u4", 0, 128, [0, 1], [2, 3]), ("i4", 0, 128, [0, 1], [2, 3]),
    ("u2", 0, 64, [0], [1]), ("f4e2m1", 0, 64, [0], [1]),       # one k tile per group: 1 ahead
    ("u5", 0, 128, [0], [1]), ("u7", 0, 32, [0], [1]), ("f6e3m2", 0, 128, [0], [1]),     # 1 ahead
    ("u8", 0, 128, [], [0]), ("f8e4m3", 0, 128, [], [0]),       # byte types: no prefetch
    ("u4", 1, 128, [], [0]), ("u2", 1, 128, [], [0]),           # zero points: no prefetch
    ("u4", 0, 96, [], [0]),                                     # G % KB != 0: no prefetch
])
def test_prefetch_depth(wt, zero, g, before, inside):
    """With PREFETCH=1 the weight tiles `before` (in k tiles) are loaded
    before the loops and those `inside` in the loop's first step; where
    prefetch does not apply, and with PREFETCH=0, the loop loads the current
    tile."""
    constants = dict(WT=wt, ZERO=zero, G=g, **GPU_M16)
    kb = min(g, GPU_M16["BK"])
    assert _weight_load_rows(constants) == ([t * kb for t in before], [t * kb for t in inside])
    assert _weight_load_rows({**constants, "PREFETCH": 0}) == ([], [0])
