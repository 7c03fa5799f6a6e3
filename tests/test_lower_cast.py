"""The GPU lowering of `cast` from packed 1..8-bit tiles to f16/bf16
(passes/lower_cast.py, select_dequant) and the word-wise global load that
feeds it (passes/lower_memory.py): bit-exact against the reference
interpreter on the emulator, on the vector path (aligned base, last dim a
multiple of the run) and on the byte path (unaligned base, ragged last dim)."""
import ml_dtypes
import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.backends.gpu_pipeline import lower_for_gpu
from tvm_lite.ir import thread as T

CAST = """\
@kernel(warps=4)
def castk[WT: dtype = u4, DT: dtype = f16](m: i32, n: i32, w: WT[m, n], o: DT[m, n]):
    grid(cdiv(m, 64), cdiv(n, 128))
    t = load(w, [block.x * 64, block.y * 128], [64, 128])
    store(o, cast(t, DT), [block.x * 64, block.y * 128])
"""

TYPES = ["u1", "u2", "u3", "u4", "i4", "u5", "i7", "u8", "i8", "f3e1m1", "f4e2m1", "f6e3m2", "f8e4m3", "f8e5m2"]


def _statements(body):
    for s in body:
        yield s
        for field in ("body", "then", "orelse"):
            yield from _statements(getattr(s, field, ()))


def _patterns(rng, dt, shape):
    """Every bit pattern is fair game (NaN/inf included): the cast must match
    the interpreter bit for bit."""
    dt = tl.dtype(dt)
    bits = rng.integers(0, 2 ** dt.nbits, shape)
    return tl.ir.dtypes.pack_bits(bits, dt.nbits)


def _run(target, wt, dst, m, n, packed):
    mod = tl.compile(CAST, target=target, WT=wt, DT=dst)
    out = np.full((m, n), np.nan, np.float16 if dst == "f16" else ml_dtypes.bfloat16)
    arg = packed
    native = tl.ir.dtypes.numpy_dtype(tl.dtype(wt))
    if native is not None:
        arg = packed.view(native).reshape(m, n)
    mod.castk(m, n, arg, out)
    return out


def _bits(x):
    return x.view(np.uint16)


@pytest.mark.parametrize("wt", TYPES)
@pytest.mark.parametrize("dst", ["f16", "bf16"])
def test_cast_matches_interpreter_bit_for_bit(rng, wt, dst):
    m, n = 70, 256       # vector path in the first block row, masked rows in the second
    packed = _patterns(rng, wt, (m, n))
    want = _run("interp", wt, dst, m, n, packed)
    got = _run("cuda-emu:sm_80", wt, dst, m, n, packed)
    same = (_bits(got) == _bits(want)) | (np.isnan(got.astype(np.float32)) & np.isnan(want.astype(np.float32)))
    assert same.all(), np.argwhere(~same)[:4]


@pytest.mark.parametrize("wt", ["u4", "u3", "f4e2m1", "u8"])
def test_cast_byte_path_on_unaligned_base_and_ragged_rows(rng, wt):
    m, n = 5, 136        # n not a multiple of the 32-field run: the byte path
    dt = tl.dtype(wt)
    packed = _patterns(rng, wt, (m, n))
    # Shift the whole stream by one byte in a larger buffer: an unaligned base.
    buf = np.zeros(packed.size + 1, np.uint8)
    buf[1:] = packed
    unaligned = buf[1:]
    want = _run("interp", wt, "f16", m, n, packed)
    got = _run("cuda-emu:sm_90", wt, "f16", m, n, unaligned)
    same = (_bits(got) == _bits(want)) | (np.isnan(got.astype(np.float32)) & np.isnan(want.astype(np.float32)))
    assert same.all(), (dt.name, np.argwhere(~same)[:4])


@pytest.mark.parametrize("wt", ["u4", "u3", "i4", "f6e3m2", "u1"])
def test_cast_lowers_to_bit_tricks_on_words(wt):
    k = next(iter(tl.compile(CAST, target="interp", WT=wt))).vm
    stmts = list(_statements(lower_for_gpu(k, "cuda-emu:sm_80").body))
    int_to_float = [s for s in stmts if isinstance(s, T.Cvt) and isinstance(s.src, T.Reg)
                    and not s.src.type.is_float and s.dst.type.is_float]
    assert not int_to_float
    assert any(isinstance(s, (T.Lop3, T.Prmt)) for s in stmts)
    # The weight words come from 32-bit (or wider) global loads.
    assert any(isinstance(s, T.Load) and s.space is T.Space.GLOBAL and s.dsts[0].name.startswith("pw")
               for s in stmts)


SCALED = """\
@kernel(warps=4)
def scaled[WT: dtype = u4, DT: dtype = f16](m: i32, n: i32, w: WT[m, n], s: DT[1, n], o: DT[m, n]):
    grid(cdiv(m, 64), cdiv(n, 128))
    t = load(w, [block.x * 64, block.y * 128], [64, 128])
    r = load(s, [0, block.y * 128], [1, 128])
    store(o, cast(t, DT) * r, [block.x * 64, block.y * 128])
"""


@pytest.mark.parametrize("wt", ["u4", "i3", "f4e2m1"])
@pytest.mark.parametrize("dst", ["f16", "bf16"])
@pytest.mark.parametrize("target", ["cuda-emu:sm_80", "cuda-emu:sm_90"])
def test_scaled_cast_uses_pairs_and_matches_interpreter(rng, wt, dst, target):
    """cast(w, DT) * row: the product runs on f16x2/bf16x2 pairs (one rounding,
    as the interpreter) and agrees bit for bit; overflow to inf included."""
    m, n = 65, 256
    vdt = np.float16 if dst == "f16" else ml_dtypes.bfloat16
    packed = _patterns(rng, wt, (m, n))
    s = (rng.standard_normal((1, n)) * 2.0 ** rng.integers(-20, 14, (1, n))).astype(vdt)
    outs = []
    for tgt in ("interp", target):
        mod = tl.compile(SCALED, target=tgt, WT=wt, DT=dst)
        o = np.full((m, n), np.nan, vdt)
        mod.scaled(m, n, packed, s, o)
        outs.append(o)
    want, got = outs
    same = (_bits(got) == _bits(want)) | (np.isnan(got.astype(np.float32)) & np.isnan(want.astype(np.float32)))
    assert same.all(), np.argwhere(~same)[:4]
    k = next(iter(tl.compile(SCALED, target="interp", WT=wt, DT=dst))).vm
    pair_ops = [st for st in _statements(lower_for_gpu(k, target).body)
                if isinstance(st, (T.Binary, T.Fma)) and st.dst.type in (T.f16x2, T.bf16x2)]
    assert pair_ops


def test_cast_of_a_reassigned_tile_uses_its_latest_value(rng):
    """The load's words belong to the load: after `t = load(...)` is assigned
    again in a loop, the cast must see the new value."""
    src = """
@kernel(warps=4)
def re(m: i32, n: i32, w: u4[m, n], o: f16[m, n]):
    t = load(w, [0, 0], [64, 128])
    for i in range(2):
        t = load(w, [64, 0], [64, 128])
    store(o, cast(t, f16), [0, 0])
"""
    m, n = 128, 128
    vals = rng.integers(0, 16, (m, n)).astype(np.float64)
    o = np.zeros((m, n), np.float16)
    next(iter(tl.compile(src, target="cuda-emu:sm_80")))(m, n, tl.pack(vals, "u4"), o)
    np.testing.assert_array_equal(o[:64], vals[64:].astype(np.float16))


@pytest.mark.parametrize("wt", ["u4", "i4", "u3"])
def test_cast_of_a_computed_integer_tile_repacks_fields(rng, wt):
    """A tile that did not come straight from a load (here t ^ (t >> 1)) is
    repacked into words from its element registers, then dequantized."""
    src = """
@kernel(warps=4)
def rp[WT: dtype = u4](m: i32, n: i32, w: WT[m, n], o: f16[m, n]):
    t = load(w, [0, 0], [64, 128])
    store(o, cast(t ^ (t >> 1), f16), [0, 0])
"""
    m, n = 64, 128
    dt = tl.dtype(wt)
    vals = rng.integers(dt.min, dt.max + 1, (m, n)).astype(np.float64)
    outs = []
    for target in ("interp", "cuda-emu:sm_80"):
        o = np.full((m, n), np.nan, np.float16)
        next(iter(tl.compile(src, target=target, WT=wt)))(m, n, tl.pack(vals, wt), o)
        outs.append(o)
    np.testing.assert_array_equal(outs[1], outs[0])
    k = next(iter(tl.compile(src, target="interp", WT=wt))).vm
    stmts = list(_statements(lower_for_gpu(k, "cuda-emu:sm_80").body))
    assert not [s for s in stmts if isinstance(s, T.Cvt) and isinstance(s.src, T.Reg)
                and not s.src.type.is_float and s.dst.type.is_float]


OFFSET = """\
@kernel(warps=4)
def offset[WT: dtype = u4, DT: dtype = f16, MUL: int = 0](m: i32, n: i32, w: WT[m, n], o: DT[m, n]):
    grid(cdiv(m, 64), cdiv(n, 128))
    t = cast(load(w, [block.x * 64, block.y * 128], [64, 128]), DT)
    if MUL == 1:
        t = t * C
    else:
        t = t - C
    store(o, t, [block.x * 64, block.y * 128])
"""   # C: the constant, formatted in (compile-time parameters are int, dtype or bool)


def _pair_ops_and_checks(kernel_vm, target, op):
    """The packed `op` instructions (the dequant's own adds are not SUB or MUL)
    and the overflow redo branches."""
    stmts = list(_statements(lower_for_gpu(kernel_vm, target).body))
    pair_ops = [s for s in stmts if isinstance(s, T.Binary) and s.op is op and s.dst.type in (T.f16x2, T.bf16x2)]
    return pair_ops, _overflow_redos(stmts)


def _overflow_redos(stmts):
    """The branches that redo an overflowing pair element by element (their
    body repacks the pair with CvtPack)."""
    return [s for s in stmts if isinstance(s, T.If) and any(isinstance(x, T.CvtPack) for x in _statements(s.then))]


@pytest.mark.parametrize("wt, dst, c, mul, folded, bounded", [
    ("u4", "f16", 8.0, 0, True, True),        # the zero point of unsigned weights: into the dequant's fma
    ("i4", "bf16", -3.0, 0, True, True),
    ("u4", "f16", 0.5, 0, False, True),       # not an integer: a pair subtraction, |x - 0.5| <= 14.5
    ("u8", "bf16", 128.0, 0, False, True),    # u8 -> bf16 ends in two fmas: not folded
    ("f6e3m2", "f16", 0.75, 0, False, True),  # no inf/NaN in f6e3m2: bounded by its max, 28
    ("u8", "f16", 300.0, 1, False, False),    # 255 * 300 > 65504: may overflow, must saturate
    ("f8e5m2", "f16", 2.0, 0, False, False),  # inf and NaN codes: no bound
])
def test_tile_and_constant_on_pairs(rng, wt, dst, c, mul, folded, bounded):
    """cast(w) - c folds into the conversion when c is an integer the
    dequant's bias absorbs exactly; otherwise cast(w) - c and cast(w) * c run
    as f16x2/bf16x2 instructions with the constant in both halves, and the
    overflow test (and its element-wise redo) is left out exactly when
    magnitude bounds rule overflow out. Bit-exact against the interpreter,
    saturation included."""
    m, n = 65, 256
    vdt = np.float16 if dst == "f16" else ml_dtypes.bfloat16
    packed = _patterns(rng, wt, (m, n))
    native = tl.ir.dtypes.numpy_dtype(tl.dtype(wt))
    arg = packed.view(native).reshape(m, n) if native is not None else packed
    source = OFFSET.replace("C\n", f"{c}\n")
    outs = []
    for tgt in ("interp", "cuda-emu:sm_80"):
        mod = tl.compile(source, target=tgt, WT=wt, DT=dst, MUL=mul)
        o = np.full((m, n), np.nan, vdt)
        mod.offset(m, n, arg, o)
        outs.append(o)
    want, got = outs
    same = (_bits(got) == _bits(want)) | (np.isnan(got.astype(np.float32)) & np.isnan(want.astype(np.float32)))
    assert same.all(), np.argwhere(~same)[:4]
    if mul:
        assert np.nanmax(np.abs(want.astype(np.float64))) == 65504.0     # saturated, not inf
    k = next(iter(tl.compile(source, target="interp", WT=wt, DT=dst, MUL=mul))).vm
    pair_ops, checks = _pair_ops_and_checks(k, "cuda-emu:sm_80", T.BinOp.MUL if mul else T.BinOp.SUB)
    pairs_per_thread = 64 * 128 // 128 // 2
    assert len(pair_ops) == (0 if folded else pairs_per_thread)
    assert bool(checks) != bounded


IDENTITY = """\
@kernel(warps=4)
def ident(x: f16[16, 64], w: u4[64, 128], o: f32[16, 128]):
    a = cast(load(x, [0, 0], [16, 64]), f16)
    b = cast(load(w, [0, 0], [64, 128]), f16) - 8.0
    store(o, dot(a, b, zeros(f32, [16, 128])), [0, 0])
"""


def test_identity_cast_is_free_and_keeps_pairs(rng):
    """cast(x, f16) of an f16 tile rounds nothing: the lowering copies the
    registers (no f32 round trip with saturation) and the mma operand still
    comes from the load's f16x2 pairs."""
    x = rng.standard_normal((16, 64)).astype(np.float16)
    q = rng.integers(0, 16, (64, 128))
    w = tl.pack(q, tl.u4)
    got = np.full((16, 128), np.nan, np.float32)
    tl.compile(IDENTITY, target="cuda-emu:sm_90").ident(x, w, got)
    ref = x.astype(np.float64) @ (q - 8).astype(np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    k = next(iter(tl.compile(IDENTITY, target="interp"))).vm
    stmts = list(_statements(lower_for_gpu(k, "cuda-emu:sm_90").body))
    assert not [s for s in stmts if isinstance(s, T.Cvt) and s.dst.type == T.f16]   # no rounding to f16
    assert not _overflow_redos(stmts)


# ------------------------------------------------------------ loop-carried records
CARRIED = """\
@kernel(warps=4)
def carried[WT: dtype = u3](m: i32, n: i32, w: WT[m, n], o: f16[m, n]):
    grid(cdiv(n, 128))
    t = load(w, [0, block.x * 128], [64, 128])
    for i in range(cdiv(m, 64)):
        ahead = load(w, [(i + 1) * 64, block.x * 128], [64, 128])
        store(o, cast(t, f16), [i * 64, block.x * 128])
        t = ahead
"""


@pytest.mark.parametrize("wt", ["u1", "u3", "u4", "i4", "f4e2m1", "f6e3m2"])
def test_loop_carried_tile_casts_from_its_words(rng, wt, monkeypatch):
    """A tile loaded before a loop and re-assigned in it (a register
    prefetch: the next tile's load is issued before this one is used) keeps
    the packed words of its first load: the Assign moves the new load's words
    into them, and the cast dequantizes them directly, with no unpack and
    repack of element registers. Bit-exact against the interpreter over
    several iterations, the last load ahead past the end (zeros, unused), on
    the vector and the byte (ragged rows) paths."""
    from tvm_lite.passes import lower_cast
    seen, repacked = [], []
    real_dequant, real_repack = lower_cast.dequant_packed, lower_cast._repack

    def spy_dequant(namer, words, *args, **kwargs):
        seen.extend(words)
        return real_dequant(namer, words, *args, **kwargs)

    def spy_repack(*args):
        repacked.append(args)
        return real_repack(*args)
    monkeypatch.setattr(lower_cast, "dequant_packed", spy_dequant)
    monkeypatch.setattr(lower_cast, "_repack", spy_repack)
    k = next(iter(tl.compile(CARRIED, target="interp", WT=wt))).vm
    stmts = list(_statements(lower_for_gpu(k, "cuda-emu:sm_80").body))
    assert seen and not repacked
    words = {r for s in stmts if isinstance(s, T.Load) and s.space is T.Space.GLOBAL
             for r in s.dsts if r.name.startswith("pw")}
    assert set(seen) <= words           # the load's own words
    # the Assign: one mov per word, from the words of the load ahead
    moved = [s for s in stmts if isinstance(s, T.Mov) and s.dst in set(seen) and s.src in words - set(seen)]
    assert sorted(s.dst.name for s in moved) == sorted(r.name for r in set(seen))
    for m, n in ((200, 256), (130, 136)):       # vector path; byte path (ragged rows)
        packed = _patterns(rng, wt, (m, n))
        want = _run_carried("interp", wt, m, n, packed)
        got = _run_carried("cuda-emu:sm_90", wt, m, n, packed)
        same = (_bits(got) == _bits(want)) | (np.isnan(got.astype(np.float32)) & np.isnan(want.astype(np.float32)))
        assert same.all(), (m, n, np.argwhere(~same)[:4])


def _run_carried(target, wt, m, n, packed):
    o = np.full((m, n), np.nan, np.float16)
    tl.compile(CARRIED, target=target, WT=wt).carried(m, n, packed, o)
    return o


def test_carried_tile_from_a_computed_value_rebuilds_its_words(rng):
    """An Assign whose source has no words of its own (a computed tile)
    repacks the source's fields into the target's words: the cast after it
    still sees the new value."""
    src = """
@kernel(warps=4)
def cw(m: i32, n: i32, w: u4[m, n], o: f16[m, n]):
    t = load(w, [0, 0], [64, 128])
    for i in range(2):
        store(o, cast(t, f16), [i * 64, 0])
        t = t ^ load(w, [(i + 1) * 64, 0], [64, 128])
"""
    m, n = 192, 128
    vals = rng.integers(0, 16, (m, n))
    outs = []
    for target in ("interp", "cuda-emu:sm_80"):
        o = np.full((m, n), np.nan, np.float16)
        next(iter(tl.compile(src, target=target)))(m, n, tl.pack(vals, "u4"), o)
        outs.append(o)
    np.testing.assert_array_equal(outs[1][:128], outs[0][:128])
    np.testing.assert_array_equal(outs[0][64:128], (vals[:64] ^ vals[64:128]).astype(np.float16))


def test_identity_cast_keeps_its_value_when_the_source_is_reassigned(rng):
    """y = cast(t, f16) of an f16 tile copies t's pairs: the Assign to t
    after it updates t's pairs in place, and y * y (on pairs) must still
    see the old t."""
    src = """
@kernel(warps=4)
def idc(x: f16[192, 128], o: f16[128, 128]):
    t = load(x, [0, 0], [64, 128])
    for i in range(2):
        y = cast(t, f16)
        t = load(x, [(i + 1) * 64, 0], [64, 128])
        store(o, y * y, [i * 64, 0])
"""
    x = rng.standard_normal((192, 128)).astype(np.float16)
    outs = []
    for target in ("interp", "cuda-emu:sm_90"):
        o = np.full((128, 128), np.nan, np.float16)
        tl.compile(src, target=target).idc(x, o)
        outs.append(o)
    np.testing.assert_array_equal(_bits(outs[1]), _bits(outs[0]))
    np.testing.assert_array_equal(outs[0], x[:128] * x[:128])


def test_loop_carried_pairs_have_no_magnitude_bound(rng):
    """The bound a dequant records with its pairs (|cast(u4)| <= 15) holds
    for that value only: once the tile is re-assigned (here to arbitrary f16
    values) t * 4000 may overflow, and must saturate to 65504 as the
    interpreter does, not give inf."""
    src = """
@kernel(warps=4)
def bnd(w: u4[64, 128], x: f16[64, 128], o: f16[128, 128]):
    t = cast(load(w, [0, 0], [64, 128]), f16)
    for i in range(2):
        store(o, t * 4000.0, [i * 64, 0])
        t = load(x, [0, 0], [64, 128])
"""
    q = rng.integers(0, 16, (64, 128))
    x = (rng.standard_normal((64, 128)) * 100).astype(np.float16)
    outs = []
    for target in ("interp", "cuda-emu:sm_80"):
        o = np.full((128, 128), np.nan, np.float16)
        tl.compile(src, target=target).bnd(tl.pack(q, "u4"), x, o)
        outs.append(o)
    want, got = outs
    assert np.nanmax(np.abs(want[64:].astype(np.float64))) == 65504.0
    np.testing.assert_array_equal(_bits(got), _bits(want))


def test_carried_pairs_from_a_tile_without_pairs_are_rebuilt(rng):
    """An f16 tile with pairs (from its load) re-assigned from a tile that
    has none (an f32 -> f16 cast, element by element): the Assign packs the
    new elements into the target's pairs, which t * t then reads."""
    src = """
@kernel(warps=4)
def cp(x: f16[64, 128], y: f32[64, 128], o: f16[128, 128]):
    t = load(x, [0, 0], [64, 128])
    for i in range(2):
        store(o, t * t, [i * 64, 0])
        t = cast(load(y, [0, 0], [64, 128]), f16)
"""
    x = rng.standard_normal((64, 128)).astype(np.float16)
    y = rng.standard_normal((64, 128)).astype(np.float32)
    outs = []
    for target in ("interp", "cuda-emu:sm_90"):
        o = np.full((128, 128), np.nan, np.float16)
        tl.compile(src, target=target).cp(x, y, o)
        outs.append(o)
    np.testing.assert_array_equal(_bits(outs[1]), _bits(outs[0]))
    y16 = y.astype(np.float16)
    np.testing.assert_array_equal(outs[0][64:], y16 * y16)
