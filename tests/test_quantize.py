"""tl.quantize / tl.dequantize: the mapping, its error bounds and its errors."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tvm_lite as tl

INT_TYPES = [f"u{b}" for b in range(1, 9)] + [f"i{b}" for b in range(2, 9)]
FLOAT_TYPES = ["f3e1m1", "f4e2m1", "f5e2m2", "f6e2m3", "f6e3m2", "f7e3m3", "f8e4m3", "f8e5m2"]
ML_DTYPES = {"f4e2m1": ml_dtypes.float4_e2m1fn, "f6e3m2": ml_dtypes.float6_e3m2fn,
             "f6e2m3": ml_dtypes.float6_e2m3fn, "f8e4m3": ml_dtypes.float8_e4m3fn,
             "f8e5m2": ml_dtypes.float8_e5m2}


def cdiv(a, b):
    return -(-a // b)


def row_params(qt):
    """Per-row scales and zeros (float64 [K, N]) the mapping uses."""
    k = qt.shape[0]
    idx = np.arange(k) // qt.group
    s = qt.scales.astype(np.float64)[idx]
    if qt.zeros is not None:
        z = qt.zeros.astype(np.float64)[idx]
    else:
        z = np.full_like(s, 0.0 if qt.dtype.is_signed else 2.0 ** (qt.dtype.nbits - 1))
    return s, z


def reference_dequantize(qt):
    """(q - zero) * scale from the public pieces, through tl.unpack (an independent path)."""
    q = tl.unpack(qt.data, qt.dtype, qt.shape).astype(np.float64)
    s, z = row_params(qt)
    return ((q - z) * s).astype(np.float32)


def weights(rng, k, n, spread):
    return (rng.standard_normal((k, n)) * 10.0 ** rng.uniform(-spread, spread, (1, n))).astype(np.float32)


# --------------------------------------------------------------- structure


@pytest.mark.parametrize("group, k", [(32, 100), (128, 300), (-1, 77), (256, 64), (1, 5)])
def test_layout_of_the_parts(rng, group, k):
    n = 13
    qt = tl.quantize(weights(rng, k, n, 1), "u3", group)
    g = k if group == -1 else group
    assert qt.shape == (k, n) and qt.group_size == group and qt.group == g
    assert qt.data.dtype == np.uint8 and qt.data.size == cdiv(k * n * 3, 8)
    assert qt.scales.shape == (cdiv(k, g), n) and qt.scales.dtype == np.float16
    assert qt.zeros is None and qt.dtype == tl.u3
    assert qt.nbytes == qt.data.nbytes + qt.scales.nbytes
    with pytest.raises(ValueError):
        qt.data[0] = 1                  # the parts are read-only
    with pytest.raises(AttributeError):
        qt.group_size = 64              # and the tensor is frozen


@pytest.mark.parametrize("sdt, np_type", [("f16", np.float16), ("f32", np.float32), ("bf16", ml_dtypes.bfloat16)])
def test_scale_dtypes(rng, sdt, np_type):
    w = weights(rng, 96, 10, 2)
    qt = tl.quantize(w, "i4", 32, zero_point=True, scale_dtype=sdt)
    assert qt.scales.dtype == np_type and qt.zeros.dtype == np_type and qt.scale_dtype == tl.dtype(sdt)
    np.testing.assert_array_equal(tl.dequantize(qt), reference_dequantize(qt))
    s, _ = row_params(qt)
    assert np.all(np.abs(tl.dequantize(qt) - w) <= s / 2 * (1 + 1e-6))


# ------------------------------------------------------------------ laws


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(INT_TYPES + FLOAT_TYPES), k=st.integers(1, 70), n=st.integers(1, 9),
       group=st.sampled_from([1, 3, 8, 32, -1]), zero_point=st.booleans(),
       seed=st.integers(0, 2**32 - 1), spread=st.floats(0, 3))
def test_roundtrip_error_bounds(name, k, n, group, zero_point, seed, spread):
    rng = np.random.default_rng(seed)
    w = weights(rng, k, n, spread)
    dt = tl.dtype(name)
    zero_point = zero_point and not dt.is_float
    qt = tl.quantize(w, name, group, zero_point=zero_point)
    d = tl.dequantize(qt)
    assert d.dtype == np.float32 and d.shape == (k, n)
    # dequantize is exactly (q - zero) * scale, rounded once to float32
    np.testing.assert_array_equal(d, reference_dequantize(qt))
    s, z = row_params(qt)
    w64, err = w.astype(np.float64), np.abs(d.astype(np.float64) - w)
    slack = 1e-6 * np.abs(w64) + 1e-30
    if dt.is_float:
        # round to nearest in the format: half an ulp (relative), or half the subnormal step
        bound = np.maximum(np.abs(w64) * 2.0 ** -(dt.mantissa_bits + 1), s * dt.smallest_subnormal / 2)
        assert np.all(err <= bound + slack)
        assert np.all(np.abs(w64) <= dt.max * s + slack)        # the scale covers the group
    elif zero_point:
        assert np.all(err <= s / 2 + slack)
        assert np.all((qt.zeros.astype(np.float64) == np.rint(qt.zeros.astype(np.float64))))
        assert np.all((dt.min <= z) & (z <= dt.max))
    else:
        # symmetric: the range [-2^(b-1), 2^(b-1) - 1] * scale around zero
        half = 2.0 ** (dt.nbits - 1)
        clipped = np.clip(w64, -half * s, (half - 1) * s)
        assert np.all(np.abs(d - clipped) <= s / 2 + slack)
        if dt.nbits >= 2:
            assert np.all(err <= s / 2 + slack)


@pytest.mark.parametrize("name", sorted(ML_DTYPES))
def test_float_rounding_matches_ml_dtypes(rng, name):
    w = weights(rng, 64, 32, 3)
    qt = tl.quantize(w, name, 32)
    s, _ = row_params(qt)
    expected = (w.astype(np.float64) / s).astype(ML_DTYPES[name]).astype(np.float64)
    got = tl.unpack(qt.data, name, qt.shape).astype(np.float64)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", FLOAT_TYPES)
def test_float_rounding_matches_encode_on_ties(name):
    """Values on the midpoints between representable numbers round to even, like tl.pack."""
    dt = tl.dtype(name)
    values = tl.unpack(tl.pack(np.arange(dt.max_bits + 1), f"u{dt.nbits}"), dt, dt.max_bits + 1)
    values = np.sort(values.astype(np.float64))
    mids = (values[1:] + values[:-1]) / 2
    col = np.concatenate([mids, -mids, values, [dt.max]])   # dt.max makes the scale exactly 1
    qt = tl.quantize(col[:, None], name, group_size=-1, scale_dtype="f32")
    assert qt.scales[0, 0] == 1.0
    got = tl.unpack(qt.data, name, qt.shape)[:, 0]
    np.testing.assert_array_equal(got, tl.unpack(tl.pack(col, name), name, col.size))


@pytest.mark.parametrize("name", ["u4", "i4", "f6e3m2"])
def test_integers_and_grid_values_roundtrip_exactly(rng, name):
    """Weights already on the quantization grid of their group come back unchanged."""
    dt = tl.dtype(name)
    k, n, g = 64, 8, 32
    if dt.is_float:      # any pattern's value
        q = tl.unpack(rng.integers(0, 256, k * n * dt.nbits // 8, dtype=np.uint8), dt, (k, n))
    else:                # the symmetric range around the (implicit) zero
        q = rng.integers(-(2 ** (dt.nbits - 1)), 2 ** (dt.nbits - 1), (k, n))
    q = q.astype(np.float64)
    # each group holds the extreme value, so its scale is a power of two exactly
    q[::g] = dt.max if dt.is_float else -(2 ** (dt.nbits - 1))
    scales = 2.0 ** rng.integers(-4, 4, (k // g, n))
    w = q * np.repeat(scales, g, axis=0)
    qt = tl.quantize(w, name, g)
    np.testing.assert_array_equal(tl.dequantize(qt), w.astype(np.float32))


def test_unsigned_midpoint_and_signed_zero(rng):
    w = weights(rng, 64, 8, 1)
    for name, zero in (("u4", 8), ("i4", 0)):
        qt = tl.quantize(w, name, 64)
        q = tl.unpack(qt.data, name, qt.shape)
        # the scale is set by the largest or the smallest weight, which maps to its end of the range
        cols = np.arange(8)
        top, bottom = q[w.argmax(axis=0), cols] - zero, q[w.argmin(axis=0), cols] - zero
        assert np.all((top == 7) | (bottom == -8))
        assert np.all((q - zero >= -8) & (q - zero <= 7))


def test_zero_groups_and_tiny_values(rng):
    w = weights(rng, 96, 6, 1)
    w[32:64] = 0.0                 # a whole zero group
    w[64:96, 0] = 1e-12            # a group whose scale underflows f16
    for name, zp in (("u4", False), ("u4", True), ("i3", False), ("f4e2m1", False)):
        qt = tl.quantize(w, name, 32, zero_point=zp)
        d = tl.dequantize(qt)
        assert np.all(np.isfinite(d))
        assert np.all(d[32:64] == 0.0)
        assert np.all(np.abs(d[64:96, 0]) <= 1e-12)


def test_bfloat16_and_float16_inputs(rng):
    w = weights(rng, 40, 8, 1)
    for arr in (w.astype(np.float16), w.astype(ml_dtypes.bfloat16), w.astype(np.float64)):
        qt = tl.quantize(arr, "u5", 32)
        expect = tl.quantize(arr.astype(np.float32), "u5", 32)
        np.testing.assert_array_equal(qt.data, expect.data)


def test_large_matrix_in_chunks(rng):
    """More rows than one processing chunk, with a group straddling chunk borders."""
    w = weights(rng, 4099, 1030, 1)
    qt = tl.quantize(w, "u3", 96)
    np.testing.assert_array_equal(tl.dequantize(qt), reference_dequantize(qt))
    s, _ = row_params(qt)
    assert np.all(np.abs(tl.dequantize(qt) - w) <= s / 2 * (1 + 1e-6))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype="f4e2m1", zero_point=True), "zero_point=True applies to integer"),
    (dict(dtype="u4", group_size=0), "group_size must be"),
    (dict(dtype="u4", group_size=-2), "group_size must be"),
    (dict(dtype="u4", group_size=32.0), "group_size must be"),
    (dict(dtype="u9"), "1 to 8 bits"),
    (dict(dtype="f16"), "1 to 8 bits"),
    (dict(dtype="q4"), "q4"),
    (dict(dtype="u4", scale_dtype="f8e4m3"), "scale_dtype must be"),
])
def test_bad_arguments(rng, kwargs, message):
    with pytest.raises(tl.TLError, match=message):
        tl.quantize(weights(rng, 32, 4, 0), **kwargs)


def test_bad_weights(rng):
    with pytest.raises(tl.TLError, match="2-D"):
        tl.quantize(rng.standard_normal(16), "u4")
    w = weights(rng, 8, 4, 0)
    w[3, 1] = np.nan
    with pytest.raises(tl.TLError, match="NaN"):
        tl.quantize(w, "u4")
    with pytest.raises(tl.TLError, match="real numbers"):
        tl.quantize(np.array([["a", "b"]]), "u4")
    with pytest.raises(tl.TLError, match="QuantizedTensor"):
        tl.dequantize(w)
    with pytest.raises(tl.TLError, match="scale_dtype='f32'"):
        tl.quantize(np.full((8, 4), 1e6), "f4e2m1")          # 1e6 / 6 is beyond f16
    qt = tl.quantize(np.full((8, 4), 1e6), "f4e2m1", scale_dtype="f32")
    assert np.all(tl.dequantize(qt) == 1e6)


def test_dtype_objects_are_accepted(rng):
    w = weights(rng, 32, 4, 0)
    qt = tl.quantize(w, tl.u4, 32, scale_dtype=tl.f32)
    assert qt.dtype == tl.u4 and qt.scales.dtype == np.float32


def test_inconsistent_parts_are_refused(rng):
    from tvm_lite.ops.quantize import QuantizedTensor
    qt = tl.quantize(weights(rng, 64, 8, 0), "u4", 32)
    with pytest.raises(tl.TLError, match="packed"):
        QuantizedTensor(qt.data[:-1].copy(), qt.scales, None, qt.dtype, 32, (64, 8), qt.scale_dtype)
    with pytest.raises(tl.TLError, match="scales must be"):
        QuantizedTensor(qt.data, qt.scales[:1].copy(), None, qt.dtype, 32, (64, 8), qt.scale_dtype)
    with pytest.raises(tl.TLError, match="zeros must be"):
        QuantizedTensor(qt.data, qt.scales, qt.scales.astype(np.float32), qt.dtype, 32, (64, 8), qt.scale_dtype)
