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
