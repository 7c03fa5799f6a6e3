"""Bit-trick dequantization (passes/select_dequant.py) against dtypes.decode.

For every 1..8-bit integer and float type and both destinations, the emitted
thread IR runs on random packed words (with every bit pattern of the type
present) and each result half must equal decode(pattern) rounded to f16
(numpy, round to nearest even) or bf16 (ml_dtypes), bit for bit (NaN: any NaN).

The statements are straight-line code; `_Eval` below runs them for many
lanes at once with numpy (register values are uint32 bit patterns).
"""
from __future__ import annotations

import itertools
import math

import ml_dtypes
import numpy as np
import pytest

from tvm_lite.ir import dtypes as D

T = pytest.importorskip("tvm_lite.ir.thread", reason="thread IR (B1) not in this tree yet")
SD = pytest.importorskip("tvm_lite.passes.select_dequant")

# ----------------------------------------------------------------- evaluator

_M32 = np.uint64(0xFFFFFFFF)


def _u32(x) -> np.ndarray:
    return (np.asarray(x).astype(np.uint64) & _M32).astype(np.uint32)


def _halves(bits: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Packed pair bits -> (lo, hi) as float64."""
    lo = (bits & np.uint32(0xFFFF)).astype(np.uint16)
    hi = (bits >> np.uint32(16)).astype(np.uint16)
    view = np.float16 if kind == "f16" else ml_dtypes.bfloat16
    with np.errstate(invalid="ignore"):          # signalling NaN patterns
        return lo.view(view).astype(np.float64), hi.view(view).astype(np.float64)


def _round_half(x: np.ndarray, kind: str) -> np.ndarray:
    view = np.float16 if kind == "f16" else ml_dtypes.bfloat16
    with np.errstate(over="ignore"):
        return x.astype(view).view(np.uint16).astype(np.uint32)


def _f32(bits: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):          # signalling NaN patterns
        return bits.view(np.float32).astype(np.float64)


class _Eval:
    """Runs straight-line thread IR for `lanes` threads; registers hold uint32
    bit patterns (predicates: bool). Float arithmetic is computed in float64
    and rounded once to the destination type, which is exact for the
    operations the dequantizer emits (products by powers of two and sums of
    small exact values)."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        self.regs: dict[T.Reg, np.ndarray] = {}

    def val(self, op) -> np.ndarray:
        if isinstance(op, T.Imm):
            t = op.type
            if t.name == "f32" and isinstance(op.value, float):
                bits = np.array(op.value, np.float32).view(np.uint32)
            else:
                bits = np.uint32(int(op.value) & 0xFFFFFFFF)
            return np.full(self.lanes, bits, np.uint32)
        return self.regs[op]

    def run(self, stmts) -> None:
        for s in stmts:
            getattr(self, "do_" + type(s).__name__)(s)

    def do_Mov(self, s):
        self.regs[s.dst] = self.val(s.src).copy()

    def do_Binary(self, s):
        op, t = s.op, s.dst.type
        if t.name in ("f16x2", "bf16x2"):         # packed halves, each rounded to nearest even
            kind = "f16" if t.name == "f16x2" else "bf16"
            (al, ah), (bl, bh) = (_halves(self.val(x), kind) for x in (s.a, s.b))
            f = {T.BinOp.ADD: np.add, T.BinOp.SUB: np.subtract, T.BinOp.MUL: np.multiply}[op]
            with np.errstate(invalid="ignore", over="ignore"):
                self.regs[s.dst] = _round_half(f(al, bl), kind) | _round_half(f(ah, bh), kind) << np.uint32(16)
            return
        a, b = self.val(s.a).astype(np.uint64), self.val(s.b).astype(np.uint64)
        if op is T.BinOp.AND:
            r = a & b
        elif op is T.BinOp.OR:
            r = a | b
        elif op is T.BinOp.XOR:
            r = a ^ b
        elif op is T.BinOp.ADD:
            r = a + b
        elif op is T.BinOp.SUB:
            r = a - b
        elif op is T.BinOp.MUL:
            r = a * b
        elif op is T.BinOp.SHL:
            r = np.where(b < 32, a << np.minimum(b, 31), 0)
        elif op is T.BinOp.SHR:
            if t.is_signed:
                r = (a.astype(np.uint32).view(np.int32).astype(np.int64) >> np.minimum(b, 31).astype(np.int64))
            else:
                r = np.where(b < 32, a >> np.minimum(b, 31), 0)
        else:
            raise NotImplementedError(op)
        self.regs[s.dst] = _u32(r)

    def do_Lop3(self, s):
        a, b, c = (self.val(x) for x in (s.a, s.b, s.c))
        out = np.zeros(self.lanes, np.uint32)
        for idx in range(8):
            if s.lut >> idx & 1:
                term = (a if idx & 4 else ~a) & (b if idx & 2 else ~b) & (c if idx & 1 else ~c)
                out |= term
        self.regs[s.dst] = out

    def do_Prmt(self, s):
        a, b = self.val(s.a).astype(np.uint64), self.val(s.b).astype(np.uint64)
        both = a | b << np.uint64(32)
        sel = int(self.val(s.selector)[0])
        out = np.zeros(self.lanes, np.uint64)
        for n in range(4):
            nib = sel >> 4 * n & 0xF
            byte = both >> np.uint64(8 * (nib & 7)) & np.uint64(0xFF)
            if nib & 8:
                byte = np.where(byte & np.uint64(0x80), np.uint64(0xFF), np.uint64(0))
            out |= byte << np.uint64(8 * n)
        self.regs[s.dst] = _u32(out)

    def do_Shf(self, s):
        lo, hi = self.val(s.lo).astype(np.uint64), self.val(s.hi).astype(np.uint64)
        n = self.val(s.shift).astype(np.uint64)
        n = np.minimum(n, 32) if s.clamp else n & np.uint64(31)
        both = lo | hi << np.uint64(32)
        self.regs[s.dst] = _u32(both << n >> np.uint64(32) if s.left else both >> n)

    def do_Bfe(self, s):
        a = self.val(s.a).astype(np.uint64)
        pos, length = int(self.val(s.pos)[0]), int(self.val(s.length)[0])
        field = a >> np.uint64(pos) & np.uint64((1 << length) - 1)
        if s.dst.type.is_signed and length < 32:
            sign = field >> np.uint64(length - 1) & np.uint64(1)
            field = field | (sign * np.uint64((0xFFFFFFFF << length) & 0xFFFFFFFF))
        self.regs[s.dst] = _u32(field)

    def do_Fma(self, s):
        t = s.dst.type
        a, b, c = (self.val(x) for x in (s.a, s.b, s.c))
        if not t.is_float:
            self.regs[s.dst] = _u32(a.astype(np.uint64) * b.astype(np.uint64) + c.astype(np.uint64))
        elif t.name == "f32":
            r = _f32(a) * _f32(b) + _f32(c)
            self.regs[s.dst] = r.astype(np.float32).view(np.uint32)
        else:
            kind = "f16" if t.name == "f16x2" else "bf16"
            (al, ah), (bl, bh), (cl, ch) = (_halves(x, kind) for x in (a, b, c))
            with np.errstate(invalid="ignore", over="ignore"):
                lo, hi = al * bl + cl, ah * bh + ch
            self.regs[s.dst] = _round_half(lo, kind) | _round_half(hi, kind) << np.uint32(16)

    def do_Cvt(self, s):
        src = self.val(s.src)
        if s.src.type.is_float or s.dst.type.name != "f32":
            raise NotImplementedError(f"cvt {s.src.type.name} -> {s.dst.type.name}")
        ints = src.view(np.int32).astype(np.float64) if s.src.type.is_signed else src.astype(np.float64)
        self.regs[s.dst] = ints.astype(np.float32).view(np.uint32)

    def do_CvtPack(self, s):
        kind = "f16" if s.dst.type.name == "f16x2" else "bf16"
        lo, hi = _f32(self.val(s.lo)), _f32(self.val(s.hi))
        self.regs[s.dst] = _round_half(lo, kind) | _round_half(hi, kind) << np.uint32(16)

    def do_Setp(self, s):
        a, b = self.val(s.a), self.val(s.b)
        ops = {T.Cmp.EQ: np.equal, T.Cmp.NE: np.not_equal}
        self.regs[s.dst] = ops[s.cmp](a, b)

    def do_Selp(self, s):
        self.regs[s.dst] = np.where(self.regs[s.pred], self.val(s.a), self.val(s.b)).astype(np.uint32)


# ----------------------------------------------------------------- helpers


class _Namer:
    def __init__(self):
        self.n = itertools.count()

    def __call__(self, hint, type_):
        return T.Reg(f"{hint}{next(self.n)}", type_)


def _all_types():
    names = [f"u{b}" for b in range(1, 9)] + [f"i{b}" for b in range(2, 9)]
    for n in range(2, 9):
        for e in range(1, n):
            m = n - 1 - e
            names.append(f"f{n}e{e}m{m}")
    return [D.dtype(x) for x in names]


TYPES = _all_types()


def _expected(patterns: np.ndarray, src, dst: str) -> np.ndarray:
    values = D.decode(patterns, src)
    return _round_half(values, dst)


def _make_words(rng, src, lanes: int, count: int, first_bit: int):
    """Random streams (lanes x words) with every pattern of src among the fields."""
    b = src.nbits
    nwords = -(-(first_bit + count * b) // 32)
    fields = rng.integers(0, 1 << b, size=(lanes, count), dtype=np.uint64)
    every = np.arange(1 << b, dtype=np.uint64)
    fields.reshape(-1)[: every.size] = every                     # lanes * count >= 2^b
    words = np.zeros((lanes, nwords), np.uint32)
    for lane in range(lanes):
        stream = int.from_bytes(rng.bytes(4 * nwords), "little")     # random bits around the fields
        for i, f in enumerate(fields[lane]):
            p = first_bit + i * b
            stream = (stream & ~(((1 << b) - 1) << p)) | int(f) << p
        for w in range(nwords):
            words[lane, w] = stream >> 32 * w & 0xFFFFFFFF
    return words, fields


def _run(fn, src, dst, words, count, first_bit):
    lanes, nwords = words.shape
    namer = _Namer()
    regs = [T.Reg(f"w{i}", T.b32) for i in range(nwords)]
    stmts, outs = fn(namer, regs, src, dst, count, first_bit)
    ev = _Eval(lanes)
    for i, r in enumerate(regs):
        ev.regs[r] = words[:, i].copy()
    ev.run(stmts)
    got = np.zeros((lanes, 2 * len(outs)), np.uint32)
    for j, r in enumerate(outs):
        assert r.type is (T.f16x2 if dst == "f16" else T.bf16x2) or r.type == (T.f16x2 if dst == "f16" else T.bf16x2)
        got[:, 2 * j] = ev.regs[r] & np.uint32(0xFFFF)
        got[:, 2 * j + 1] = ev.regs[r] >> np.uint32(16)
    return stmts, got


def _check(got: np.ndarray, want: np.ndarray, src, dst) -> None:
    view = np.float16 if dst == "f16" else ml_dtypes.bfloat16
    g_nan = np.isnan(got.astype(np.uint16).view(view).astype(np.float32))
    w_nan = np.isnan(want.astype(np.uint16).view(view).astype(np.float32))
    bad = (g_nan != w_nan) | (~w_nan & (got != want))
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise AssertionError(f"{src.name}->{dst}: {bad.sum()} wrong halves, first at {tuple(idx)}: "
                             f"got 0x{int(got[tuple(idx)]):04x}, want 0x{int(want[tuple(idx)]):04x}")


# ----------------------------------------------------------------- tests


@pytest.mark.parametrize("dst", ["f16", "bf16"])
@pytest.mark.parametrize("src", TYPES, ids=lambda t: t.name)
def test_fast_path_exact(rng, src, dst):
    assert SD.supports(src, dst)
    lanes = 32
    for count, first_bit in ((16, 0), (13, int(rng.integers(1, 32)))):
        words, fields = _make_words(rng, src, lanes, count, first_bit)
        stmts, got = _run(SD.dequant_packed, src, dst, words, count, first_bit)
        want = _expected(fields, src, dst)
        if count % 2:       # the last register's high half repeats the last field
            want = np.concatenate([want, want[:, -1:]], axis=1)
        _check(got, want, src, dst)
        mix = SD.instruction_mix(stmts)
        assert mix["Cvt(int->)"] == 0 and mix["Bfe"] == 0, mix
        assert mix["Cvt(float->)"] == 0, mix


INT_TYPES = [t for t in TYPES if t.is_integer]


@pytest.mark.parametrize("dst", ["f16", "bf16"])
@pytest.mark.parametrize("src", INT_TYPES, ids=lambda t: t.name)
def test_folded_offset_is_exact(rng, src, dst):
    """dequant_packed(..., offset=c) gives decode(q) - c exactly for every
    offset folds_offset accepts (the zero point 2^(b-1) of unsigned weights
    among them), and folds_offset refuses what the bias cannot absorb."""
    offsets = [int(c) for c in rng.integers(-300, 300, 6)] + [1 << (src.nbits - 1), -1, 1]
    accepted = [c for c in offsets if SD.folds_offset(src, dst, c)]
    if src.kind == "uint" and not (src.nbits == 8 and dst == "bf16"):
        assert 1 << (src.nbits - 1) in accepted
    assert not SD.folds_offset(src, dst, 0.5) and not SD.folds_offset(src, dst, 5000)
    for c in accepted:
        first_bit = int(rng.integers(0, 32))
        words, fields = _make_words(rng, src, 32, 16, first_bit)
        _, got = _run(lambda *a: SD.dequant_packed(*a, offset=c), src, dst, words, 16, first_bit)
        want = _round_half(D.decode(fields, src).astype(np.float64) - c, dst)
        _check(got, want, src, dst)
    with pytest.raises(SD.TLCompileError):
        SD.dequant_packed(_Namer(), [T.Reg("w", T.b32)], src, dst, 2, 0, offset=0.5)


@pytest.mark.parametrize("dst", ["f16", "bf16"])
@pytest.mark.parametrize("name", ["u3", "i5", "u12", "i16", "f8e4m3", "f8e5m2", "f16", "bf16",
                                  "f12e5m6", "f9e8m0", "f6e3m2"])
def test_generic_path_exact(rng, name, dst):
    src = D.dtype(name)
    lanes = 32
    count, first_bit = 11, int(rng.integers(0, 32))
    words, fields = _make_words(rng, src, lanes, count, first_bit) if (1 << src.nbits) <= lanes * count else \
        _random_words(rng, src, lanes, count, first_bit)
    stmts, got = _run(SD.dequant_generic, src, dst, words, count, first_bit)
    want = _expected(fields, src, dst)
    want = np.concatenate([want, want[:, -1:]], axis=1)
    _check(got, want, src, dst)


def _random_words(rng, src, lanes, count, first_bit):
    b = src.nbits
    nwords = -(-(first_bit + count * b) // 32)
    words = rng.integers(0, 1 << 32, size=(lanes, nwords), dtype=np.uint64).astype(np.uint32)
    fields = np.zeros((lanes, count), np.uint64)
    for lane in range(lanes):
        stream = sum(int(w) << 32 * i for i, w in enumerate(words[lane]))
        for i in range(count):
            fields[lane, i] = stream >> (first_bit + i * b) & ((1 << b) - 1)
    return words, fields


def test_wide_types_fall_back_to_generic(rng):
    src = D.dtype("u12")
    assert not SD.supports(src, "f16")
    words, fields = _random_words(rng, src, 8, 6, 5)
    stmts, got = _run(SD.dequant_packed, src, "f16", words, 6, 5)
    _check(got, _expected(fields, src, "f16"), src, "f16")
    assert SD.instruction_mix(stmts)["Cvt(int->)"] == 6


def test_rejects_bad_arguments():
    regs = [T.Reg("w0", T.b32)]
    with pytest.raises(SD.TLCompileError):
        SD.dequant_packed(_Namer(), regs, "u4", "f32", 4)
    with pytest.raises(SD.TLCompileError):
        SD.dequant_packed(_Namer(), regs, "u4", "f16", 9)       # 36 bits in one word
    with pytest.raises(SD.TLCompileError):
        SD.dequant_generic(_Namer(), regs, "i30", "bf16", 1)


@pytest.mark.parametrize("name", ["u4", "i3", "u8", "i8", "f4e2m1", "f6e3m2", "f7e6m0", "f8e4m3",
                                  "f8e5m2", "f7e5m1", "u12", "f9e8m0"])
def test_emitted_code_assembles(name):
    """The printer (B2) and ptxas accept the statements, for both destinations."""
    ptx = pytest.importorskip("tvm_lite.backends.ptx")
    pytest.importorskip("cuda.bindings.nvjitlink")
    from tvm_lite.backends.nvjitlink import compile_ptx
    src = D.dtype(name)
    count, first_bit = 10, 3
    nwords = -(-(first_bit + count * src.nbits) // 32)
    namer = _Namer()
    ptr = T.Reg("p", T.u64)
    words = tuple(T.Reg(f"w{i}", T.b32) for i in range(nwords))
    body = [T.Load((w,), T.Space.GLOBAL, ptr, 4 * i) for i, w in enumerate(words)]
    for dst in ("f16", "bf16"):
        stmts, outs = SD.dequant_packed(namer, words, src, dst, count, first_bit)
        body += stmts
        body += [T.Store(T.Space.GLOBAL, ptr, 4 * j, (r,)) for j, r in enumerate(outs)]
    kernel = T.ThreadKernel(f"dequant_{name}", (ptr,), 32, 0, tuple(body), ())
    for sm in (80, 90):
        compile_ptx(ptx.emit_ptx(kernel, sm), sm)


def instruction_table(count: int = 64) -> list[tuple[str, float, float]]:
    """(type, instructions per element to f16, to bf16) for `count` fields from bit 0."""
    rows = []
    for src in TYPES:
        per = []
        for dst in ("f16", "bf16"):
            nwords = -(-count * src.nbits // 32)
            regs = [T.Reg(f"w{i}", T.b32) for i in range(nwords)]
            stmts, _ = SD.dequant_packed(_Namer(), regs, src, dst, count)
            per.append(len(stmts) / count)
        rows.append((src.name, *per))
    return rows


def test_instruction_counts_are_small():
    # Per element, for 64 fields from bit 0 (the figures in the report).
    for name, f16, bf16 in instruction_table():
        limit = 2.5 if D.dtype(name).is_integer else 5.0
        assert f16 <= limit and bf16 <= limit, (name, f16, bf16)
    table = dict((n, (a, b)) for n, a, b in instruction_table())
    # u4 to f16: per pair one prmt, one lop3 and one add of an immediate, plus
    # one shifted window per word (both fields at offset 0: no multiplier
    # register, which SASS would rematerialize for every fma).
    assert table["u4"][0] == 1.625 and table["f8e5m2"][0] == 0.5


if __name__ == "__main__":
    for name, f16, bf16 in instruction_table():
        print(f"{name:8s} f16 {f16:5.3f}  bf16 {bf16:5.3f}")
