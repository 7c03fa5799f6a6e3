"""The packing rule against a bit-by-bit reference packer (DESIGN.md section 4)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tvm_lite as tl
from tvm_lite.ir.dtypes import decode, encode, pack_bits, unpack_bits


def reference_pack(patterns, nbits):
    """Element i at bits [i*N, (i+1)*N) of the stream, least significant bit first."""
    out = bytearray(-(-len(patterns) * nbits // 8))
    for i, p in enumerate(patterns):
        for j in range(nbits):
            if int(p) >> j & 1:
                bit = i * nbits + j
                out[bit // 8] |= 1 << (bit % 8)
    return np.frombuffer(bytes(out), np.uint8)


WIDTHS = list(range(1, 33)) + [40, 57, 63, 64]
LENGTHS = [0, 1, 7, 13, 101]


@pytest.mark.parametrize("nbits", WIDTHS)
def test_pack_bits_matches_reference(nbits, rng):
    for n in LENGTHS:
        patterns = rng.integers(0, 2 ** min(nbits, 63), n, dtype=np.uint64)
        if nbits == 64:
            patterns |= np.uint64(1) << np.uint64(63)   # exercise the top bit too
        stream = pack_bits(patterns, nbits)
        np.testing.assert_array_equal(stream, reference_pack(patterns, nbits))
        np.testing.assert_array_equal(unpack_bits(stream, nbits, n), patterns)


@pytest.mark.parametrize("name", ["u1", "u3", "u5", "u7", "i2", "i3", "i5", "i7", "u12", "i13", "u32", "i32"])
def test_integer_pack_round_trip_nd(name, rng):
    dt = tl.dtype(name)
    values = rng.integers(dt.min, dt.max + 1, (3, 5, 7))
    stream = tl.pack(values, dt)
    assert stream.dtype == np.uint8 and stream.size == -(-values.size * dt.nbits // 8)
    patterns = values.reshape(-1).astype(np.int64) & dt.mask
    np.testing.assert_array_equal(stream, reference_pack(patterns, dt.nbits))
    back = tl.unpack(stream, dt, values.shape)
    assert back.dtype == np.int64 and back.shape == values.shape
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize("name", ["f3e1m1", "f4e2m1", "f5e2m2", "f6e3m2", "f7e3m3", "f8e4m3", "f8e5m2",
                                  "bf16", "f16", "f11e4m6"])
def test_float_pack_rounds_then_round_trips(name, rng):
    dt = tl.dtype(name)
    values = rng.uniform(-dt.max, dt.max, (4, 13)) * rng.choice([1e-2, 1.0], (4, 13))
    stream = tl.pack(values, dt)
    np.testing.assert_array_equal(stream, reference_pack(encode(values, dt).reshape(-1), dt.nbits))
    back = tl.unpack(stream, dt, (4, 13))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, decode(encode(values, dt), dt).astype(np.float32))


def test_rows_are_not_padded():
    # Two rows of three u3 values: 18 bits, 3 bytes; row 1 starts at bit 9.
    stream = tl.pack(np.array([[1, 2, 3], [4, 5, 6]]), tl.u3)
    assert stream.size == 3
    bits = sum(int(b) << (8 * i) for i, b in enumerate(stream))
    assert [(bits >> (3 * i)) & 7 for i in range(6)] == [1, 2, 3, 4, 5, 6]


def test_pack_rejects_out_of_range_and_fractional_integers():
    with pytest.raises(tl.TLDTypeError, match="out of range"):
        tl.pack([8], tl.u3)
    with pytest.raises(tl.TLDTypeError, match="out of range"):
        tl.pack([-5], tl.i3)
    with pytest.raises(tl.TLDTypeError, match="integers"):
        tl.pack([1.5], tl.u4)
    with pytest.raises(tl.TLDTypeError, match="need 2 bytes"):
        tl.unpack(np.zeros(1, np.uint8), tl.u3, 5)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 16).flatmap(lambda n: st.tuples(
    st.just(n), hnp.arrays(np.int64, st.integers(0, 40), elements=st.integers(0, 2 ** n - 1)))))
def test_unpack_inverts_pack(case):
    nbits, values = case
    dt = tl.dtype(f"u{nbits}")
    np.testing.assert_array_equal(tl.unpack(tl.pack(values, dt), dt, values.size), values)


@pytest.mark.parametrize("name", ["u33", "i40", "u57", "i63", "u64", "i64", "u16", "i8", "u24"])
def test_wide_integer_pack_matches_reference_nd(name, rng):
    dt = tl.dtype(name)
    lo, hi = max(dt.min, -2 ** 63), min(dt.max, 2 ** 63 - 1)
    for shape in [(0,), (1,), (7,), (13,), (3, 7), (2, 3, 5)]:
        values = rng.integers(lo, hi, shape, endpoint=True, dtype=np.int64)
        values.reshape(-1)[:2] = [lo, hi][: values.size]              # the extremes, when there is room
        stream = tl.pack(values, dt)
        assert stream.size == -(-values.size * dt.nbits // 8)
        np.testing.assert_array_equal(stream, reference_pack([int(v) & dt.mask for v in values.flat], dt.nbits))
        back = tl.unpack(stream, dt, shape)
        assert back.shape == shape
        np.testing.assert_array_equal(back, values)


def test_u64_keeps_values_above_2_63():
    values = np.array([2 ** 64 - 1, 2 ** 63, 5], np.uint64)
    back = tl.unpack(tl.pack(values, tl.u64), tl.u64, 3)
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize("name", ["f32", "f64", "f16", "bf16", "f2e1m0", "f13e6m6", "f9e4m4"])
def test_float_pack_matches_reference_nd(name, rng):
    dt = tl.dtype(name)
    for shape in [(0,), (1,), (7,), (13,), (101,), (3, 2, 5)]:
        values = rng.standard_normal(shape) * np.exp2(rng.integers(-8, 8, shape))
        patterns = encode(values, dt)
        stream = tl.pack(values, dt)
        np.testing.assert_array_equal(stream, reference_pack(patterns.reshape(-1), dt.nbits))
        back = tl.unpack(stream, dt, shape)
        assert back.dtype == (np.float64 if name == "f64" else np.float32) and back.shape == shape
        np.testing.assert_array_equal(back, decode(patterns, dt).astype(back.dtype))
    # f32 and f64 storage is the native little-endian encoding.
    x = rng.standard_normal(9)
    if name in ("f32", "f64"):
        native = x.astype("<f4" if name == "f32" else "<f8")
        np.testing.assert_array_equal(tl.pack(x, dt), native.view(np.uint8))


def test_float_pack_rounds_and_saturates():
    stream = tl.pack([0.3, -100.0, np.inf, 2.5], tl.f4e2m1)     # -> 0.5, -6, 6, 2 (tie to even)
    np.testing.assert_array_equal(tl.unpack(stream, tl.f4e2m1, 4), [0.5, -6.0, 6.0, 2.0])


def test_unpack_inputs_and_errors(rng):
    values = rng.integers(0, 8, 11)
    stream = tl.pack(values, tl.u3)
    np.testing.assert_array_equal(tl.unpack(stream.tobytes(), tl.u3, 11), values)   # bytes work too
    np.testing.assert_array_equal(tl.unpack(np.concatenate([stream, [255]]).astype(np.uint8), "u3", (11,)), values)
    np.testing.assert_array_equal(tl.unpack(stream, "u3", (0,)), np.zeros(0))
    with pytest.raises(tl.TLDTypeError, match="need"):
        tl.unpack(stream[:-1], tl.u3, 11)
    with pytest.raises(tl.TLDTypeError):
        tl.unpack(stream, tl.u3, (-1,))
    for width in (0, 65):
        with pytest.raises(tl.TLDTypeError):
            pack_bits([1], width)
        with pytest.raises(tl.TLDTypeError):
            unpack_bits(stream, width, 1)
    with pytest.raises(tl.TLDTypeError):
        tl.pack([1, 2], "q4")


def test_pack_bits_drops_high_bits():
    np.testing.assert_array_equal(pack_bits(np.array([0b1111_1101, 0b10], np.uint64), 3), [0b010101])


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 64).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.integers(-2 ** (n - 1), 2 ** (n - 1) - 1), max_size=30),
    st.integers(1, 3))))
def test_signed_unpack_inverts_pack(case):
    nbits, values, rows = case
    dt = tl.dtype(f"i{nbits}")
    values = np.array(values * rows, np.int64).reshape(rows, -1)
    stream = tl.pack(values, dt)
    np.testing.assert_array_equal(stream, reference_pack([int(v) & dt.mask for v in values.flat], nbits))
    np.testing.assert_array_equal(tl.unpack(stream, dt, values.shape), values)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["f3e1m1", "f5e2m2", "f6e3m2", "f7e3m3", "f8e4m3", "f8e5m2", "bf16", "f11e5m5"]),
       st.lists(st.floats(allow_nan=False, width=64), max_size=40))
def test_float_unpack_inverts_pack_up_to_rounding(name, values):
    dt = tl.dtype(name)
    x = np.array(values, np.float64)
    back = tl.unpack(tl.pack(x, dt), dt, x.size)
    np.testing.assert_array_equal(back, decode(encode(x, dt), dt).astype(np.float32))
    # Rounding is idempotent: packing the unpacked values gives the same stream.
    np.testing.assert_array_equal(tl.pack(back, dt), tl.pack(x, dt))
