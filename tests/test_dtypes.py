"""Data types: properties, names, and float codecs against two oracles.

ml-dtypes is the oracle for every format it has with our exact semantics; an
independent pure-Python decoder is the oracle for the custom formats.
"""
import bisect
import functools
import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tvm_lite as tl
from tvm_lite.ir.dtypes import decode, encode

# ml-dtypes formats whose semantics are ours exactly. float8_e4m3 (IEEE-like
# with inf), float8_e3m4, the *fnuz and *b11 variants and e8m0 have different
# NaN/inf/bias rules, so they are no oracle for any of our types.
ML_FORMATS = {
    "bf16": ml_dtypes.bfloat16,
    "f16": np.float16,
    "f8e4m3": ml_dtypes.float8_e4m3fn,
    "f8e5m2": ml_dtypes.float8_e5m2,
    "f6e2m3": ml_dtypes.float6_e2m3fn,
    "f6e3m2": ml_dtypes.float6_e3m2fn,
    "f4e2m1": ml_dtypes.float4_e2m1fn,
}

CUSTOM = ["f3e1m1", "f5e2m2", "f7e3m3", "f6e3m2", "f6e2m3", "f4e2m1", "f5e3m1", "f8e3m4", "f2e1m0",
          "f4e3m0", "f9e4m4", "f12e5m6"]


def ml_decode(name, bits):
    ml = ML_FORMATS[name]
    storage = np.uint16 if tl.dtype(name).nbits > 8 else np.uint8
    with np.errstate(invalid="ignore"):   # NaN patterns warn when widened
        return bits.astype(storage).view(ml).astype(np.float64)


def ml_encode(name, values):
    ml = ML_FORMATS[name]
    storage = np.uint16 if tl.dtype(name).nbits > 8 else np.uint8
    return values.astype(ml).view(storage).astype(np.uint64)


def same_floats(a, b):
    """Equal as floats, NaN equal to NaN, and the sign of zero checked."""
    both_nan = np.isnan(a) & np.isnan(b)
    return bool(np.all(both_nan | ((a == b) & (np.signbit(a) == np.signbit(b)))))


@pytest.mark.parametrize("name", sorted(ML_FORMATS))
def test_decode_every_pattern_matches_ml_dtypes(name):
    bits = np.arange(2 ** tl.dtype(name).nbits, dtype=np.uint64)
    assert same_floats(decode(bits, name), ml_decode(name, bits))


def representable(name):
    values = decode(np.arange(2 ** tl.dtype(name).nbits, dtype=np.uint64), name)
    return np.unique(values[np.isfinite(values)])


@pytest.mark.parametrize("name", sorted(ML_FORMATS))
def test_encode_random_exact_and_ties_match_ml_dtypes(name, rng):
    dt = tl.dtype(name)
    exact = representable(name)
    ties = (exact[1:] + exact[:-1]) / 2
    spread = rng.standard_normal(20000) * rng.choice([1e-3, 1.0, dt.max / 8], 20000)
    # float32 inputs: ml-dtypes converts wider floats through float32, which
    # would round twice; every float32 is exact in float64, so we round once.
    spread = np.clip(spread, -dt.max, dt.max).astype(np.float32).astype(np.float64)
    values = np.concatenate([exact, ties, spread])
    ours = encode(values, name)
    theirs = ml_encode(name, values)
    # Compare as values: ml-dtypes and we may pick different NaN/zero patterns
    # only where the values are equal.
    assert same_floats(decode(ours, name), decode(theirs, name))


@pytest.mark.parametrize("name", sorted(ML_FORMATS) + CUSTOM)
def test_overflow_saturates_to_max(name):
    dt = tl.dtype(name)
    values = np.array([dt.max * 1.5, -dt.max * 4, 1e300, -1e300])
    np.testing.assert_array_equal(decode(encode(values, dt), dt), [dt.max, -dt.max, dt.max, -dt.max])


@pytest.mark.parametrize("name, inf", [("f16", True), ("bf16", True), ("f8e5m2", True),
                                       ("f8e4m3", False), ("f6e3m2", False), ("f4e2m1", False)])
def test_infinities_and_nan(name, inf):
    dt = tl.dtype(name)
    got = decode(encode([np.inf, -np.inf, np.nan], dt), dt)
    if inf:
        assert got[0] == np.inf and got[1] == -np.inf
    else:
        assert got[0] == dt.max and got[1] == -dt.max
    if dt.has_nan:
        assert np.isnan(got[2])
    else:
        assert got[2] == 0.0


def reference_decode(bits, e, m):
    """An independent decoder: sign, exponent field, mantissa field, bias."""
    sign = -1.0 if bits >> (e + m) & 1 else 1.0
    exp = bits >> m & ((1 << e) - 1)
    man = bits & ((1 << m) - 1)
    bias = (1 << (e - 1)) - 1
    if exp == 0:
        return sign * math.ldexp(man, 1 - bias - m)
    return sign * math.ldexp((1 << m) + man, exp - bias - m)


@pytest.mark.parametrize("name", CUSTOM)
def test_custom_formats_against_reference_decoder(name):
    dt = tl.dtype(name)
    bits = np.arange(2 ** dt.nbits, dtype=np.uint64)
    ref = np.array([reference_decode(int(b), dt.exponent_bits, dt.mantissa_bits) for b in bits])
    assert same_floats(decode(bits, dt), ref)
    # Every pattern is finite and re-encodes to a pattern of the same value.
    assert same_floats(decode(encode(ref, dt), dt), ref)
    assert dt.max == ref.max()


def reference_round(x, dt):
    """Brute-force RNE + saturate in exact rational arithmetic: the nearest of
    the format's non-negative finite values (ties: the even pattern), then the sign."""
    table = _positive_table(dt.name)
    mag = Fraction(abs(x))
    i = bisect.bisect_left(table, (mag, -1))
    if i == len(table):                       # beyond max: saturate
        bits = table[-1][1]
    elif table[i][0] == mag or i == 0:
        bits = table[i][1]
    else:
        (lo, lo_bits), (hi, hi_bits) = table[i - 1], table[i]
        if mag - lo != hi - mag:
            bits = lo_bits if mag - lo < hi - mag else hi_bits
        else:
            bits = lo_bits if lo_bits % 2 == 0 else hi_bits
    return bits | (int(math.copysign(1, x) < 0) << (dt.nbits - 1))


@functools.lru_cache(maxsize=None)
def _positive_table(name):
    dt = tl.dtype(name)
    table = []
    for b in range(2 ** (dt.nbits - 1)):
        v = reference_decode(b, dt.exponent_bits, dt.mantissa_bits)
        if dt.flavour == "ieee" and b >> dt.mantissa_bits == 2 ** dt.exponent_bits - 1:
            continue                          # inf and NaN
        if dt.flavour == "fn" and b == 2 ** (dt.nbits - 1) - 1:
            continue                          # NaN
        table.append((Fraction(v), b))
    return table


def interesting_reals(dt, rng, n):
    """Random reals of every scale of dt (subnormal to beyond max), exact
    values, exact midpoints (ties) and points just beside them."""
    exact = representable(dt.name)
    exact = exact[exact >= 0]
    if exact.size > 300:
        exact = rng.choice(exact, 300, replace=False)
    exact = np.sort(exact)
    ties = (exact[1:] + exact[:-1]) / 2
    lo = math.log2(float(exact[exact > 0].min())) - 2
    hi = math.log2(dt.max) + 1.5
    scale = np.exp2(rng.uniform(lo, hi, n))
    beside = np.concatenate([np.nextafter(ties, 0), np.nextafter(ties, np.inf)])
    mags = np.concatenate([exact, ties, beside, scale * rng.uniform(1, 2, n)])
    return mags * rng.choice([-1.0, 1.0], mags.size)


BRUTE = CUSTOM + sorted(ML_FORMATS) + ["f16e5m10", "f13e8m4"]


@pytest.mark.parametrize("name", BRUTE)
def test_rounding_is_nearest_even_by_brute_force(name, rng):
    dt = tl.dtype(name)
    reals = interesting_reals(dt, rng, 300)
    got = encode(reals, dt)
    want = np.array([reference_round(float(x), dt) for x in reals], np.uint64)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(reals[i], int(got[i]), int(want[i])) for i in bad[:5]]


@pytest.mark.parametrize("name", CUSTOM)
def test_custom_patterns_round_trip_bit_for_bit(name):
    dt = tl.dtype(name)
    bits = np.arange(2 ** dt.nbits, dtype=np.uint64)
    np.testing.assert_array_equal(encode(decode(bits, dt), dt), bits)


def test_integer_ranges_derive_from_width():
    for n in range(1, 33):
        assert tl.dtype(f"u{n}").max == 2 ** n - 1 and tl.dtype(f"u{n}").min == 0
    for n in range(2, 33):
        assert tl.dtype(f"i{n}").min == -(2 ** (n - 1)) and tl.dtype(f"i{n}").max == 2 ** (n - 1) - 1
    assert (tl.u2.max, tl.u3.max, tl.u4.max, tl.i4.min, tl.i4.max) == (3, 7, 15, -8, 7)


def test_float_properties():
    assert (tl.f8e4m3.max, tl.f8e5m2.max, tl.f4e2m1.max, tl.f6e3m2.max, tl.f6e2m3.max, tl.f16.max) == \
        (448.0, 57344.0, 6.0, 28.0, 7.5, 65504.0)
    assert tl.bf16.max == float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    assert tl.f6e3m2.exponent_bits == 3 and tl.f6e3m2.mantissa_bits == 2 and tl.f6e3m2.is_float
    assert tl.f6e3m2.is_signed and not tl.u3.is_signed and tl.i3.is_signed and not tl.i3.is_float
    assert tl.f6e3m2.min == -28.0 and tl.f6e3m2.nbits == 6 and tl.f6e3m2.name == "f6e3m2"


def test_names_attributes_and_value_semantics():
    assert tl.u3 == tl.dtype("u3") and tl.dtype(tl.u3) is tl.u3
    assert hash(tl.dtype("f6e3m2")) == hash(tl.f6e3m2)
    assert {tl.u3: 1}[tl.dtype("u3")] == 1
    assert str(tl.f4e2m1) == "f4e2m1" and repr(tl.i7) == "i7"


@pytest.mark.parametrize("bad", ["u0", "i1", "f6e3m3", "q4", "f17e5m11", "", "u", "f4e0m3", "u65", 3, None])
def test_invalid_names_raise_tl_errors(bad):
    with pytest.raises(tl.TLDTypeError) as info:
        tl.dtype(bad)
    assert isinstance(info.value, tl.TLError)
    assert "accepted" in str(info.value)


def test_unknown_module_attribute_is_attribute_error():
    with pytest.raises(AttributeError):
        tl.q4  # noqa: B018


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_f32_encoding_matches_numpy(x):
    got = decode(encode([x], "f32"), "f32")[0]
    assert got == np.float32(x) or (np.isinf(np.float32(x)) and abs(got) == tl.f32.max)


@pytest.mark.parametrize("name, np_type", [("f32", np.float32), ("f16", np.float16)])
def test_float64_inputs_round_like_numpy(name, np_type, rng):
    # numpy converts float64 -> float32/float16 once, with RNE: an oracle for
    # double inputs. Its overflow to inf is where we saturate instead.
    dt = tl.dtype(name)
    x = rng.standard_normal(50000) * np.exp2(rng.uniform(-160, 140, 50000))
    with np.errstate(over="ignore"):
        ref = x.astype(np_type).astype(np.float64)
    ref = np.where(np.isinf(ref), np.copysign(dt.max, x), ref)
    assert same_floats(decode(encode(x, dt), dt), ref)


@pytest.mark.parametrize("name", ["f32", "f16", "bf16", "f8e5m2", "f8e4m3", "f9e4m4", "f3e1m1"])
def test_saturation_inf_and_nan_per_flavour(name):
    dt = tl.dtype(name)
    x = np.array([dt.max * 2, -dt.max * 2, np.inf, -np.inf, np.nan, -np.nan, 1e308, -1e308])
    got = decode(encode(x, dt), dt)
    big = np.inf if dt.has_inf else dt.max
    np.testing.assert_array_equal(got[[0, 1, 6, 7]], [dt.max, -dt.max, dt.max, -dt.max])
    np.testing.assert_array_equal(got[2:4], [big, -big])
    if dt.has_nan:
        assert np.isnan(got[4:6]).all()
        assert (encode(x[4:6], dt) == dt.nan_bits).all()       # canonical NaN
    else:
        assert (encode(x[4:6], dt) == 0).all()                 # NaN -> +0 where no NaN exists


@pytest.mark.parametrize("name", ["f32", "f16", "bf16", "f8e4m3", "f6e2m3", "f4e2m1", "f2e1m0"])
def test_negative_zero_and_underflow_keep_the_sign(name):
    dt = tl.dtype(name)
    tiny = 2.0 ** (-dt.bias - dt.mantissa_bits - 3)           # below half the smallest subnormal
    bits = encode([-0.0, 0.0, -tiny, tiny], dt)
    sign = np.uint64(1 << (dt.nbits - 1))
    np.testing.assert_array_equal(bits, [sign, 0, sign, 0])
    assert np.signbit(decode(bits, dt)).tolist() == [True, False, True, False]


def test_f64_is_the_identity_except_nan_is_canonical():
    x = np.array([1.0, -0.0, 5e-324, -np.inf, np.pi])
    np.testing.assert_array_equal(encode(x, "f64"), x.view(np.uint64))
    assert same_floats(decode(encode(x, "f64"), "f64"), x)
    payload = np.array([0x7FF0000000000001], np.uint64).view(np.float64)
    assert encode(payload, "f64")[0] == tl.f64.nan_bits


def test_scalars_and_float32_inputs():
    assert encode(1.5, "f4e2m1").shape == () and int(encode(1.5, "f4e2m1")) == 0b0011
    assert float(decode(np.uint64(0b0011), "f4e2m1")) == 1.5
    x = np.array([0.1, -3.7, 1e-3], np.float32)
    np.testing.assert_array_equal(encode(x, "f32"), x.view(np.uint32).astype(np.uint64))


def test_integer_encode_decode_edges():
    np.testing.assert_array_equal(encode([-8, -1, 0, 7], "i4"), [8, 15, 0, 7])
    np.testing.assert_array_equal(decode([8, 15, 0, 7, 0x17], "i4"), [-8, -1, 0, 7, 7])  # high bits ignored
    assert decode([2 ** 64 - 1], "u64").dtype == np.uint64 and decode([2 ** 64 - 1], "u64")[0] == 2 ** 64 - 1
    assert decode(encode([-2 ** 63, 2 ** 63 - 1], "i64"), "i64").tolist() == [-2 ** 63, 2 ** 63 - 1]
    assert encode(np.array([2 ** 64 - 1], np.uint64), "u64")[0] == 2 ** 64 - 1
    assert encode([2 ** 63], "u64")[0] == 2 ** 63                           # object / big ints
    assert encode(np.array([3.0, 2.0 ** 63]), "u64").tolist() == [3, 2 ** 63]
    assert encode(np.array([True, False]), "u1").tolist() == [1, 0]
    for values, name in [([2 ** 64], "u64"), ([2 ** 63], "i64"), ([-1], "u64"), ([16], "u4"),
                         (np.array([2 ** 63], np.uint64), "i64"), ([-3], "i2"), ([2], "i2")]:
        with pytest.raises(tl.TLDTypeError):
            encode(values, name)
    for values in ([np.nan], [np.inf], [0.5], ["3"], [1j]):
        with pytest.raises(tl.TLDTypeError):
            encode(values, "i8")


def test_non_numeric_float_values_are_dtype_errors():
    for values in (["x"], [1j], [None]):
        with pytest.raises(tl.TLDTypeError):
            encode(values, "f6e3m2")


@pytest.mark.parametrize("name, flavour, e, m, bias", [
    ("f16", "ieee", 5, 10, 15), ("bf16", "ieee", 8, 7, 127), ("f32", "ieee", 8, 23, 127),
    ("f64", "ieee", 11, 52, 1023), ("f8e5m2", "ieee", 5, 2, 15), ("f8e4m3", "fn", 4, 3, 7),
    ("f6e3m2", "finite", 3, 2, 3), ("f2e1m0", "finite", 1, 0, 0), ("f16e5m10", "finite", 5, 10, 15)])
def test_float_layouts_and_flavours(name, flavour, e, m, bias):
    dt = tl.dtype(name)
    assert (dt.flavour, dt.exponent_bits, dt.mantissa_bits, dt.bias, dt.nbits) == (flavour, e, m, bias, 1 + e + m)
    assert dt.kind == "float" and dt.is_signed and not dt.is_integer and dt.min == -dt.max
    assert dt.mask == 2 ** dt.nbits - 1 and dt.max == decode([dt.max_bits], dt)[0]


def test_f64_and_f32_max_match_numpy():
    assert tl.f32.max == float(np.finfo(np.float32).max) and tl.f64.max == float(np.finfo(np.float64).max)
    assert tl.f16e5m10.max == 131008.0 and tl.f16e5m10 != tl.f16        # no inf: the top binade is finite


def test_integer_kinds_and_masks():
    assert tl.u64.max == 2 ** 64 - 1 and tl.i64.min == -2 ** 63 and tl.u1.max == 1 and tl.i2.min == -2
    assert tl.u3.mask == 7 and tl.i5.mask == 31 and tl.u3.kind == "uint" and tl.i5.kind == "int"
    assert tl.u3.is_integer and not tl.u3.is_float and tl.u3.bias == 0 and tl.u3.mantissa_bits == 0
    assert isinstance(tl.u7.max, int) and isinstance(tl.f4e2m1.max, float)


@pytest.mark.parametrize("bad", ["u03", "f06e3m2", "f6e03m2", "u\u0663", "i65", "f16e6m10", "f1e1m0",
                                 "f8e0m7", "F16", " u3", "u3 ", "bf8", 3.0, b"u3", ["u3"]])
def test_more_invalid_names(bad):
    with pytest.raises(tl.TLDTypeError, match="accepted") as info:
        tl.dtype(bad)
    assert repr(bad) in str(info.value)


def test_dtype_is_cached_and_normalises_names():
    assert tl.dtype("f6e3m2") is tl.dtype("f6e3m2")
    assert tl.dtype(np.str_("u3")) == tl.u3 and type(tl.dtype(np.str_("u5")).name) is str


def test_numpy_storage_and_byte_counts():
    from tvm_lite.ir.dtypes import nbytes_for, numpy_dtype
    native = {"u8": "u1", "u16": "u2", "u32": "u4", "u64": "u8", "i8": "i1", "i16": "i2",
              "i32": "i4", "i64": "i8", "f16": "f2", "f32": "f4", "f64": "f8"}
    for name, code in native.items():
        assert numpy_dtype(name) == np.dtype(code)
    for name in ["u3", "i7", "u12", "bf16", "f8e4m3", "f8e5m2", "f16e5m10", "f4e2m1", "i2", "u1"]:
        assert numpy_dtype(name) is None
    assert [nbytes_for(n, "u3") for n in (0, 1, 2, 3, 8, 9)] == [0, 1, 1, 2, 3, 4]
    assert nbytes_for(5, tl.f6e3m2) == 4 and nbytes_for(3, "u64") == 24


def test_exponent_field_is_capped_so_values_stay_float64():
    # E >= 11 with a finite top binade would exceed float64 (f12e11m0 max = 2^1024),
    # which every conversion and the interpreter compute in; E <= 10 always fits.
    dt = tl.dtype("f16e10m5")
    assert dt.bias == 511 and dt.max == (2 - 2 ** -5) * 2.0 ** 512
    bits = np.arange(0, 2 ** 16, 37, dtype=np.uint64)
    ref = np.array([reference_decode(int(b), 10, 5) for b in bits])
    assert same_floats(decode(bits, dt), ref)
    np.testing.assert_array_equal(encode(ref, dt), bits)
    for bad in ["f12e11m0", "f16e15m0", "f14e11m2"]:
        with pytest.raises(tl.TLDTypeError, match="accepted"):
            tl.dtype(bad)
