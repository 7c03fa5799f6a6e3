"""Per-lane instruction semantics of the emulator against Python/numpy/ml_dtypes
references: lop3, prmt, shf, bfe (hypothesis over the immediates and random
lanes), integer wraparound, cvt rounding modes, packed f16x2/bf16x2 math."""
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_emulator_util import run_lanes
from tvm_lite.ir import thread as T

N = 128
FAST = settings(max_examples=25, deadline=None)


def _u32(rng, n=N):
    return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)


# ------------------------------------------------------------- bit ops

@FAST
@given(lut=st.integers(0, 255), seed=st.integers(0, 2**32 - 1))
def test_lop3_truth_table(lut, seed):
    rng = np.random.default_rng(seed)
    a, b, c = _u32(rng), _u32(rng), _u32(rng)

    def build(kb, r):
        d = kb.reg("d", T.b32)
        kb.emit(T.Lop3(d, r[0], r[1], r[2], lut))
        return d
    out = run_lanes(build, [(a, T.b32), (b, T.b32), (c, T.b32)], T.b32)
    for k in range(0, N, 7):
        want = 0
        for bit in range(32):
            i = ((int(a[k]) >> bit & 1) << 2) | ((int(b[k]) >> bit & 1) << 1) | (int(c[k]) >> bit & 1)
            want |= ((lut >> i) & 1) << bit
        assert int(out[k]) == want


def test_lop3_matches_documented_examples(rng):
    a, b, c = _u32(rng), _u32(rng), _u32(rng)
    for lut, fn in [(0x80, lambda x, y, z: x & y & z), (0xFE, lambda x, y, z: x | y | z),
                    (0x40, lambda x, y, z: x & y & ~z), (0x1A, lambda x, y, z: (x & y | z) ^ x)]:
        def build(kb, r, lut=lut):
            d = kb.reg("d", T.b32)
            kb.emit(T.Lop3(d, r[0], r[1], r[2], lut))
            return d
        out = run_lanes(build, [(a, T.b32), (b, T.b32), (c, T.b32)], T.b32)
        np.testing.assert_array_equal(out, fn(a, b, c).astype(np.uint32))


def _prmt_ref(a, b, sel):
    src = (int(b) << 32) | int(a)
    out = 0
    for k in range(4):
        ctl = (int(sel) >> (4 * k)) & 0xF
        byte = (src >> (8 * (ctl & 7))) & 0xFF
        if ctl & 8:
            byte = 0xFF if byte & 0x80 else 0
        out |= byte << (8 * k)
    return out


@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_prmt_default_mode(seed):
    rng = np.random.default_rng(seed)
    a, b, sel = _u32(rng), _u32(rng), _u32(rng)

    def build(kb, r):
        d = kb.reg("d", T.b32)
        kb.emit(T.Prmt(d, r[0], r[1], r[2]))
        return d
    out = run_lanes(build, [(a, T.b32), (b, T.b32), (sel, T.b32)], T.b32)
    for k in range(N):
        assert int(out[k]) == _prmt_ref(a[k], b[k], sel[k])


def _shf_ref(lo, hi, c, left, clamp):
    n = min(int(c), 32) if clamp else int(c) & 31
    v = (int(hi) << 32) | int(lo)
    return ((v << n) >> 32) & 0xFFFFFFFF if left else (v >> n) & 0xFFFFFFFF


@FAST
@given(seed=st.integers(0, 2**32 - 1), left=st.booleans(), clamp=st.booleans())
def test_shf_funnel(seed, left, clamp):
    rng = np.random.default_rng(seed)
    lo, hi = _u32(rng), _u32(rng)
    amount = rng.integers(0, 70, N).astype(np.uint32)

    def build(kb, r):
        d = kb.reg("d", T.b32)
        kb.emit(T.Shf(d, r[0], r[1], r[2], left, clamp))
        return d
    out = run_lanes(build, [(lo, T.b32), (hi, T.b32), (amount, T.u32)], T.b32)
    for k in range(N):
        assert int(out[k]) == _shf_ref(lo[k], hi[k], amount[k], left, clamp)


def _bfe_ref(a, pos, length, nbits, signed):
    msb = nbits - 1
    pos, length = int(pos) & 0xFF, int(length) & 0xFF
    a = int(a) & ((1 << nbits) - 1)
    sbit = 0 if (not signed or length == 0) else (a >> min(pos + length - 1, msb)) & 1
    d = 0
    for i in range(nbits):
        bit = (a >> (pos + i)) & 1 if (i < length and pos + i <= msb) else sbit
        d |= bit << i
    if signed and d >> msb:
        d -= 1 << nbits
    return d


@FAST
@given(seed=st.integers(0, 2**32 - 1), type_name=st.sampled_from(["u32", "s32", "u64", "s64"]))
def test_bfe(seed, type_name):
    rng = np.random.default_rng(seed)
    t = T.hw_type(type_name)
    a = rng.integers(0, 1 << 63, N, dtype=np.uint64) * 2 + 1
    if t.nbits == 32:
        a = a.astype(np.uint32)
    pos = rng.integers(0, 80, N).astype(np.uint32)
    length = rng.integers(0, 40, N).astype(np.uint32)
    pos[:4] = [0, 300, 31, 63]          # beyond 255 wraps to 0..255 (8-bit fields)
    length[:4] = [0, 5, 40, 1]

    def build(kb, r):
        d = kb.reg("d", t)
        kb.emit(T.Bfe(d, r[0], r[1], r[2]))
        return d
    out = run_lanes(build, [(a, t), (pos, T.u32), (length, T.u32)], t)
    for k in range(N):
        assert int(out[k]) == _bfe_ref(a[k], pos[k], length[k], t.nbits, t.is_signed), k


# --------------------------------------------------------- integer math

@pytest.mark.parametrize("op,fn", [
    (T.BinOp.ADD, lambda a, b: a + b), (T.BinOp.SUB, lambda a, b: a - b), (T.BinOp.MUL, lambda a, b: a * b),
    (T.BinOp.MUL_HI, lambda a, b: (a * b) >> 32), (T.BinOp.MIN, min), (T.BinOp.MAX, max),
    (T.BinOp.DIV, lambda a, b: int(a / b) if b else None), (T.BinOp.REM, lambda a, b: a - int(a / b) * b if b else None),
    (T.BinOp.SHL, lambda a, b: a << b if b < 32 else 0), (T.BinOp.SHR, lambda a, b: a >> b),
])
@pytest.mark.parametrize("type_name", ["s32", "u32"])
def test_integer_ops_wrap(op, fn, type_name, rng):
    t = T.hw_type(type_name)
    a = _u32(rng)
    b = _u32(rng) if op not in (T.BinOp.SHL, T.BinOp.SHR) else rng.integers(0, 40, N).astype(np.uint32)
    if op in (T.BinOp.DIV, T.BinOp.REM):
        b = (b >> rng.integers(0, 32, N).astype(np.uint32)).astype(np.uint32)
    view = np.int32 if t.is_signed else np.uint32

    def build(kb, r):
        d = kb.reg("d", t)
        kb.emit(T.Binary(op, d, r[0], r[1]))
        return d
    out = run_lanes(build, [(a.view(view), t), (b.view(view) if op not in (T.BinOp.SHL, T.BinOp.SHR) else b, t)], t)
    for k in range(N):
        x = int(a.view(view)[k])
        y = int(b[k]) if op in (T.BinOp.SHL, T.BinOp.SHR) else int(b.view(view)[k])
        want = fn(x, y)
        if want is None:
            continue
        assert (int(out[k]) - want) % (1 << 32) == 0, (op, x, y, int(out[k]), want)


# ---------------------------------------------------------- conversions

def _all_values(dtype):
    """Every finite value of a 16-bit float format plus +-inf, sorted, as float64."""
    with np.errstate(invalid="ignore"):
        v = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype).astype(np.float64)
    v = v[~np.isnan(v)]
    return np.unique(v)


def _directed(x, table, mode):
    """Reference rz/rm/rp rounding of float64 x onto the sorted value table."""
    down = table[np.searchsorted(table, x, side="right") - 1]
    up = table[np.searchsorted(table, x, side="left")]
    if mode == "rm":
        return down
    if mode == "rp":
        return up
    return down if x > 0 else up


@pytest.mark.parametrize("dst", ["f16", "bf16"])
@pytest.mark.parametrize("mode", ["rn", "rz", "rm", "rp"])
def test_cvt_f32_to_half_rounding(dst, mode, rng):
    dtype = np.float16 if dst == "f16" else ml_dtypes.bfloat16
    scale = 1e4 if dst == "f16" else 1e30
    x = (rng.standard_normal(N) * rng.choice([1e-6, 1.0, scale], N)).astype(np.float32)
    x[:4] = [70000.0 if dst == "f16" else 3.4e38, -70000.0 if dst == "f16" else -3.4e38, 0.0, -1e-30]
    t = T.hw_type(dst)

    def build(kb, r):
        d = kb.reg("d", t)
        kb.emit(T.Cvt(d, r[0], T.Rounding(mode)))
        return d
    out = run_lanes(build, [(x, T.f32)], t).view(np.uint16).view(dtype).astype(np.float64)
    if mode == "rn":
        with np.errstate(over="ignore"):
            want = x.astype(dtype).astype(np.float64)        # numpy / ml_dtypes: RNE from float32
        np.testing.assert_array_equal(out, want)
        return
    table = _all_values(dtype)
    for k in range(N):
        assert out[k] == _directed(float(x[k]), table, mode), (float(x[k]), out[k])


@pytest.mark.parametrize("mode", ["rni", "rzi", "rmi", "rpi"])
@pytest.mark.parametrize("dst", ["s32", "u32", "s8"])
def test_cvt_float_to_int_saturates(mode, dst, rng):
    x = (rng.standard_normal(N) * rng.choice([0.7, 100.0, 1e10], N)).astype(np.float32)
    x[:5] = [np.nan, np.inf, -np.inf, 2.5, -2.5]
    t = T.hw_type(dst)

    def build(kb, r):
        d = kb.reg("d", t)
        kb.emit(T.Cvt(d, r[0], T.Rounding(mode)))
        return d
    out = run_lanes(build, [(x, T.f32)], t)
    info = np.iinfo(out.dtype)
    fn = {"rni": np.rint, "rzi": np.trunc, "rmi": np.floor, "rpi": np.ceil}[mode]
    for k in range(N):
        v = float(x[k])
        want = 0 if np.isnan(v) else int(min(max(fn(v), info.min), info.max))
        assert int(out[k]) == want, (v, int(out[k]))


def test_cvt_int_to_f16_and_int_narrowing(rng):
    ints = rng.integers(-(1 << 31), 1 << 31, N).astype(np.int32)

    def to_f16(kb, r):
        d = kb.reg("d", T.f16)
        kb.emit(T.Cvt(d, r[0], T.Rounding.RN))
        return d
    out = run_lanes(to_f16, [(ints, T.s32)], T.f16)
    with np.errstate(over="ignore"):
        want = ints.astype(np.float64).astype(np.float16)
    np.testing.assert_array_equal(out.astype(np.float64), want)

    def to_s8_sat(kb, r):
        d = kb.reg("d", T.s8)
        kb.emit(T.Cvt(d, r[0], None, True))
        return d
    out = run_lanes(to_s8_sat, [(ints, T.s32)], T.s8)
    np.testing.assert_array_equal(out, np.clip(ints, -128, 127))

    def to_u16(kb, r):
        d = kb.reg("d", T.u16)
        kb.emit(T.Cvt(d, r[0]))
        return d
    out = run_lanes(to_u16, [(ints, T.s32)], T.u16)
    np.testing.assert_array_equal(out, ints.astype(np.uint16))   # truncation


def test_cvt_pack_and_f32_fma_single_rounding(rng):
    hi = rng.standard_normal(N).astype(np.float32)
    lo = rng.standard_normal(N).astype(np.float32)

    def pack(kb, r):
        d = kb.reg("d", T.f16x2)
        kb.emit(T.CvtPack(d, r[0], r[1]))
        return d
    out = run_lanes(pack, [(hi, T.f32), (lo, T.f32)], T.f16x2).view(np.float16).reshape(N, 2)
    np.testing.assert_array_equal(out[:, 0], lo.astype(np.float16))
    np.testing.assert_array_equal(out[:, 1], hi.astype(np.float16))

    a, b, c = (rng.standard_normal(N).astype(np.float32) for _ in range(3))

    def fma(kb, r):
        d = kb.reg("d", T.f32)
        kb.emit(T.Fma(d, r[0], r[1], r[2]))
        return d
    out = run_lanes(fma, [(a, T.f32), (b, T.f32), (c, T.f32)], T.f32)
    for k in range(N):
        exact = Fraction(float(a[k])) * Fraction(float(b[k])) + Fraction(float(c[k]))
        got = float(out[k])
        # correctly rounded: no float32 is closer to the exact value
        for nb in (np.nextafter(np.float32(got), np.float32(np.inf)), np.nextafter(np.float32(got), np.float32(-np.inf))):
            assert abs(Fraction(float(nb)) - exact) >= abs(Fraction(got) - exact)


_TABLES = {}


def _fraction_table(dtype):
    """(sorted float64 values, their Fractions, their bit patterns) of a 16-bit float format."""
    key = np.dtype(dtype).name
    if key not in _TABLES:
        bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
        with np.errstate(invalid="ignore"):
            vals = bits.view(dtype).astype(np.float64)
        keep = np.isfinite(vals) & ~((vals == 0) & (bits != 0))     # drop NaN, inf and -0
        order = np.argsort(vals[keep], kind="stable")
        v, b = vals[keep][order], bits[keep][order]
        _TABLES[key] = (v, [Fraction(float(x)) for x in v], b)
    return _TABLES[key]


def _round_rational(q: Fraction, dtype) -> float:
    """Round an exact rational to the nearest finite value of dtype, ties to the even
    bit pattern (inputs here stay far from overflow)."""
    import bisect
    vals, fracs, bits = _fraction_table(dtype)
    i = bisect.bisect_left(fracs, q)
    if i < len(fracs) and fracs[i] == q:
        return float(vals[i])
    dl, dh = q - fracs[i - 1], fracs[i] - q
    if dl != dh:
        return float(vals[i - 1] if dl < dh else vals[i])
    return float(vals[i - 1] if bits[i - 1] % 2 == 0 else vals[i])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "fma"])
@pytest.mark.parametrize("ptype", ["f16x2", "bf16x2"])
def test_packed_half2_ops(op, ptype, rng):
    dtype = np.float16 if ptype == "f16x2" else ml_dtypes.bfloat16
    t = T.hw_type(ptype)
    vals = [rng.standard_normal(2 * N).astype(dtype) for _ in range(3)]
    words = [v.view(np.uint32) for v in vals]

    def build(kb, r):
        d = kb.reg("d", t)
        if op == "fma":
            kb.emit(T.Fma(d, r[0], r[1], r[2]))
        else:
            kb.emit(T.Binary({"add": T.BinOp.ADD, "sub": T.BinOp.SUB, "mul": T.BinOp.MUL}[op], d, r[0], r[1]))
        return d
    out = run_lanes(build, [(w, t) for w in words], t).view(dtype).astype(np.float64)
    a, b, c = ([Fraction(float(x)) for x in v.astype(np.float64)] for v in vals)
    for k in range(0, 2 * N, 3):
        q = {"add": a[k] + b[k], "sub": a[k] - b[k], "mul": a[k] * b[k], "fma": a[k] * b[k] + c[k]}[op]
        if q == 0:
            assert out[k] == 0
            continue
        assert out[k] == _round_rational(q, dtype), (k, float(q), out[k])
