"""Data types: properties, names, and float codecs against two oracles.

ml-dtypes is the oracle for every format it has with our exact semantics; an
independent pure-Python decoder is the oracle for the custom formats.
"""
import math

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


@pytest.mark.parametrize("name", [c for c in CUSTOM if tl.dtype(c).nbits <= 8])
def test_custom_rounding_is_nearest_even_by_brute_force(name, rng):
    dt = tl.dtype(name)
    bits = np.arange(2 ** dt.nbits, dtype=np.uint64)
    values = decode(bits, dt)
    reals = np.concatenate([rng.uniform(-dt.max, dt.max, 400),
                            (values[1:] + values[:-1]) / 2])  # includes exact ties
    got = decode(encode(reals, dt), dt)
    for x, g in zip(reals, got):
        dist = np.abs(values - x)
        best = values[dist == dist.min()]
        if len(set(best.tolist()) - {0.0, -0.0}) > 1:   # a tie: the even mantissa wins
            even = [v for v, b in zip(values, bits) if v in best and int(b) % 2 == 0]
            assert g in even
        else:
            assert g in best


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
