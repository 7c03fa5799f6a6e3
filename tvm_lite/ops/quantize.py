"""Group-wise weight quantization: `tl.quantize` and its exact inverse `tl.dequantize`.

This module defines the weight format that `tl.ops.quant_matmul` consumes, so it
lives next to the kernels that read it (`ops/`), not in the execution runtime.

A weight matrix W[K, N] is cut along K into groups of `group_size` rows (the
last group may be short; `group_size=-1` is one group of K rows, i.e. per output
channel). Each (group, column) pair has a scale, and optionally a zero point:

    W[k, n] ~ (value(q[k, n]) - zero[k // g, n]) * scale[k // g, n]

* Integer types round to nearest (ties to even). Without zero points, signed
  types use zero 0 and unsigned types the midpoint 2^(b-1) (GPTQ), so both cover
  the symmetric range [-2^(b-1), 2^(b-1) - 1]; the scale is the smallest one
  that maps the group's largest positive and largest negative weight into it.
* With `zero_point=True` (integer types only) each group gets an asymmetric
  min/max range. As in GPTQ the range is widened to include 0, which keeps the
  integer zero point inside the type's range (so it is exact in any scale type).
* Float types scale the group's absolute maximum to the format's maximum and
  round to nearest even (saturating).

Scales are rounded to `scale_dtype` first and q is computed from the rounded
scale, so the stored triple is exactly what `dequantize` (and the kernels) use.
Both directions work on row chunks with vectorized numpy, so an 8192x8192
matrix takes a few seconds and bounded memory.
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass

import numpy as np

from ..errors import TLDTypeError, TLError
from ..ir.dtypes import DataType, decode, dtype as as_dtype, encode, nbytes_for, pack_bits, unpack_bits

_SCALE_DTYPES = ("f16", "bf16", "f32")
_CHUNK_ELEMENTS = 1 << 22   # rows are processed ~4M elements at a time (32 MiB of float64)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A quantized [K, N] weight matrix (see the module doc for the mapping).

    data:       the packed bit stream of the K*N weight patterns, row-major
                (DESIGN.md section 4), a read-only uint8 array.
    scales:     [cdiv(K, group), N] in `scale_dtype` (numpy float16/float32,
                or ml_dtypes.bfloat16 for bf16).
    zeros:      like `scales` (integer values) with zero_point=True, else None.
    dtype:      the weight type.
    group_size: as requested: rows per group, or -1 for per channel.
    shape:      (K, N).
    """
    data: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    dtype: DataType
    group_size: int
    shape: tuple[int, int]
    scale_dtype: DataType

    def __post_init__(self):
        k, n = self.shape
        groups = _cdiv(k, self.group)
        if self.data.dtype != np.uint8 or self.data.ndim != 1 or self.data.size != nbytes_for(k * n, self.dtype):
            raise TLError(f"QuantizedTensor: data must be the {nbytes_for(k * n, self.dtype)}-byte packed "
                          f"stream of a {k}x{n} {self.dtype.name} matrix")
        for name, arr in (("scales", self.scales), ("zeros", self.zeros)):
            if arr is not None and (arr.shape != (groups, n) or arr.dtype != _storage_dtype(self.scale_dtype)):
                raise TLError(f"QuantizedTensor: {name} must be [{groups}, {n}] {self.scale_dtype.name}, "
                              f"got {list(arr.shape)} {arr.dtype}")
        for arr in (self.data, self.scales, self.zeros):
            if arr is not None:
                arr.flags.writeable = False

    @property
    def group(self) -> int:
        """Rows per group (K for per-channel quantization)."""
        return max(self.shape[0], 1) if self.group_size == -1 else self.group_size

    @property
    def nbytes(self) -> int:
        """Bytes a kernel reads: packed weights, scales and zero points."""
        return self.data.nbytes + self.scales.nbytes + (0 if self.zeros is None else self.zeros.nbytes)

    def __repr__(self) -> str:
        g = "per-channel" if self.group_size == -1 else f"group {self.group_size}"
        zp = ", zero points" if self.zeros is not None else ""
        return (f"QuantizedTensor({self.dtype.name}, shape {list(self.shape)}, {g}, "
                f"{self.scale_dtype.name} scales{zp})")


# ------------------------------------------------------------------ quantize


def quantize(w, dtype, group_size: int = 128, zero_point: bool = False,
             scale_dtype="f16") -> QuantizedTensor:
    """Quantize a [K, N] float matrix to `dtype` (any 1..8-bit type) group-wise along K."""
    wt = _weight_type(dtype)
    st = _scale_type(scale_dtype)
    w = _weights(w)
    k, n = w.shape
    group = _group(group_size, k)
    if zero_point and wt.is_float:
        raise TLError(f"zero_point=True applies to integer weight types; {wt.name} is a float type "
                      f"(its scale maps the group's absolute maximum to the format's maximum)")

    scale, low = _group_parameters(w, wt, group, bool(zero_point))
    if scale.size and scale.max() > st.max:
        raise TLError(f"tl.quantize: a group needs the scale {scale.max():.4g}, beyond {st.name}'s maximum "
                      f"{st.max:.4g}; use scale_dtype='f32'")
    scale_store, scale_values = _to_scale_type(scale, st, round_up=True)
    zero = zero_store = None
    if zero_point:
        # From the scale as stored; integers in the type's range are exact in any scale type.
        zero = np.clip(np.rint(wt.min - low / _safe(scale_values)), wt.min, wt.max)
        zero_store, zero = _to_scale_type(zero, st)

    rows = _chunk_rows(n)
    parts = []
    for r0 in range(0, k, rows):
        block = w[r0:r0 + rows].astype(np.float64)
        g_idx = np.arange(r0, r0 + block.shape[0]) // group
        s = scale_values[g_idx]
        parts.append(pack_bits(_patterns(block, s, None if zero is None else zero[g_idx], wt), wt.nbits))
    data = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return QuantizedTensor(data, scale_store, zero_store, wt, int(group_size), (k, n), st)


def _group_parameters(w: np.ndarray, wt: DataType, group: int, zero_point: bool):
    """Per group, float64 [groups, N]: the scale before rounding to the scale type, and with
    zero points the low end of the range (else None)."""
    hi, lo = _group_reduce(w, group, np.max), _group_reduce(w, group, np.min)
    if wt.is_float:
        return np.maximum(hi, -lo) / wt.max, None
    if zero_point:
        # GPTQ: widen the range to include 0 so the zero point is in range.
        hi, lo = np.maximum(hi, 0.0), np.minimum(lo, 0.0)
        return (hi - lo) / (wt.max - wt.min), lo
    # Symmetric range [-2^(b-1), 2^(b-1) - 1] around the (implicit) zero.
    q_hi, q_lo = (1 << (wt.nbits - 1)) - 1, -(1 << (wt.nbits - 1))
    scale = np.maximum(hi, 0.0) / q_hi if q_hi > 0 else np.zeros_like(hi)
    return np.maximum(scale, np.minimum(lo, 0.0) / q_lo), None


def _group_reduce(w: np.ndarray, group: int, reduce) -> np.ndarray:
    """reduce over each group of rows: float64 [cdiv(K, group), N] (the last group may be short)."""
    k, n = w.shape
    full = k // group * group
    parts = [reduce(w[:full].reshape(-1, group, n), axis=1)] if full else []
    if full < k:
        parts.append(reduce(w[full:], axis=0, keepdims=True))
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, n))


def _patterns(block: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, wt: DataType) -> np.ndarray:
    """Bit patterns of one row block, given each row's (rounded) scales and zero points."""
    x = block / _safe(scale)
    if wt.is_float:
        return _encode_small_float(x, wt)
    if zero is not None:
        return np.clip(np.rint(x) + zero, wt.min, wt.max).astype(np.int64)
    offset = 0 if wt.is_signed else 1 << (wt.nbits - 1)
    lo, hi = -(1 << (wt.nbits - 1)), (1 << (wt.nbits - 1)) - 1
    return (np.clip(np.rint(x), lo, hi) + offset).astype(np.int64)


def _safe(scale: np.ndarray) -> np.ndarray:
    """Scales with 0 replaced by 1: a zero scale means every weight of the group
    dequantizes to 0 whatever q is, so q only needs to be finite."""
    return np.where(scale == 0, 1.0, scale)


def _encode_small_float(x: np.ndarray, wt: DataType) -> np.ndarray:
    """encode(x, wt) for float64 x: round to nearest even, saturating to +-max.

    The bit-level form of rounding (a faster equivalent of the general codec
    for whole arrays): for values in wt's normal range, adding
    2^(s-1) - 1 + (bit s of the pattern) to a float64 pattern and dropping the
    low s = 52 - M bits rounds the mantissa to M bits, ties to even, and a
    carry moves into the exponent as it should. Below wt's smallest normal the
    step is a constant power of two, so np.rint (ties to even) does it.
    """
    m, shift = wt.mantissa_bits, 52 - wt.mantissa_bits
    mag = np.abs(x)
    bits = mag.view(np.int64)
    normal = (bits + ((1 << (shift - 1)) - 1) + ((bits >> shift) & 1)) >> shift
    normal -= (1023 - wt.bias) << m                   # rebias the exponent field
    subnormal = np.rint(np.minimum(mag, wt.smallest_normal) / wt.smallest_subnormal).astype(np.int64)
    pattern = np.where(mag < wt.smallest_normal, subnormal, np.minimum(normal, wt.max_bits))
    sign = np.where(x < 0, 1 << (wt.nbits - 1), 0)
    return pattern | sign


# ---------------------------------------------------------------- dequantize


def dequantize(qt: QuantizedTensor) -> np.ndarray:
    """W[k, n] = (value(q[k, n]) - zero) * scale as float32 [K, N] (computed in float64, rounded once)."""
    if not isinstance(qt, QuantizedTensor):
        raise TLError(f"tl.dequantize takes a QuantizedTensor (from tl.quantize), got {type(qt).__name__}")
    k, n = qt.shape
    wt, group = qt.dtype, qt.group
    scales = _scale_values(qt.scales, qt.scale_dtype)
    zeros = None if qt.zeros is None else _scale_values(qt.zeros, qt.scale_dtype)
    table = _value_table(wt)
    offset = 0.0 if (wt.is_signed or zeros is not None) else float(1 << (wt.nbits - 1))
    out = np.empty((k, n), np.float32)
    rows = _chunk_rows(n)
    for r0 in range(0, k, rows):
        r1 = min(k, r0 + rows)
        start, count = r0 * n * wt.nbits, (r1 - r0) * n
        # Chunks start on whole bytes: rows is a multiple of 8.
        q = unpack_bits(qt.data[start // 8:], wt.nbits, count).reshape(r1 - r0, n)
        g_idx = np.arange(r0, r1) // group
        zero = offset if zeros is None else zeros[g_idx]
        out[r0:r1] = (table[q] - zero) * scales[g_idx]
    return out


@functools.lru_cache(maxsize=None)
def _value_table(wt: DataType) -> np.ndarray:
    """value(pattern) for every pattern of wt, float64 (signed integers sign-extended)."""
    return decode(np.arange(1 << wt.nbits, dtype=np.uint64), wt).astype(np.float64)


# ------------------------------------------------------------------ helpers


def _chunk_rows(n: int) -> int:
    """Rows per chunk: a multiple of 8, so every chunk's bit stream starts on a byte."""
    return max(8, (_CHUNK_ELEMENTS // max(n, 1)) // 8 * 8)


def _weight_type(d) -> DataType:
    try:
        wt = as_dtype(d)
    except TLDTypeError as e:
        raise TLDTypeError(f"tl.quantize: {e.message}") from None
    if wt.nbits > 8:
        raise TLDTypeError(f"tl.quantize: weight types have 1 to 8 bits; {wt.name} has {wt.nbits}")
    return wt


def _scale_type(d) -> DataType:
    try:
        st = as_dtype(d)
    except TLDTypeError:
        st = None
    if st is None or st.name not in _SCALE_DTYPES:
        raise TLDTypeError(f"tl.quantize: scale_dtype must be one of {', '.join(_SCALE_DTYPES)}, got {d!r}")
    return st


def _weights(w) -> np.ndarray:
    try:
        arr = np.asarray(w)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the user's input
        raise TLError(f"tl.quantize: w must be a [K, N] float array ({e})") from None
    if arr.ndim != 2:
        raise TLError(f"tl.quantize: w must be a 2-D [K, N] array, got shape {list(arr.shape)}")
    if arr.dtype.kind not in "fiu" and arr.dtype.name != "bfloat16":
        raise TLError(f"tl.quantize: w must hold real numbers, got {arr.dtype}")
    if arr.dtype.kind != "f" or arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)     # also ml_dtypes' bfloat16
    if arr.size and not np.isfinite(arr).all():
        raise TLError("tl.quantize: w contains NaN or infinity")
    return arr


def _group(group_size, k: int) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or \
            (group_size < 1 and group_size != -1):
        raise TLError(f"tl.quantize: group_size must be a positive integer or -1 (per channel), "
                      f"got {group_size!r}")
    return max(k, 1) if group_size == -1 else int(group_size)


def _storage_dtype(st: DataType) -> np.dtype:
    if st.name == "bf16":
        return np.dtype(_ml_dtypes().bfloat16)
    return np.dtype(np.float16 if st.name == "f16" else np.float32)


def _ml_dtypes():
    try:
        import ml_dtypes
    except ImportError:
        raise TLError("bf16 scales are stored as ml_dtypes.bfloat16 arrays; install ml_dtypes "
                      "or use scale_dtype='f16' or 'f32'") from None
    return ml_dtypes


def _to_scale_type(values: np.ndarray, st: DataType, round_up: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(array in st's storage type, its values as float64): RNE, saturating to st's max.

    round_up (for non-negative scales) takes the next value up where RNE rounded
    down, so that w / scale never leaves the weight type's range: every weight
    then quantizes within half a step (no clipping), whatever the scale type.
    """
    bits = encode(values, st)
    if round_up:
        below = (decode(bits, st) < values) & (bits < st.max_bits)
        bits = bits + below.astype(np.uint64)   # the next pattern up: a positive float's successor
    stored = bits.astype(np.uint32 if st.name == "f32" else np.uint16).view(_storage_dtype(st))
    return stored, decode(bits, st)


def _scale_values(arr: np.ndarray, st: DataType) -> np.ndarray:
    return arr.astype(np.float32).astype(np.float64)   # f16, bf16 and f32 are exact in float32


__all__ = ["QuantizedTensor", "quantize", "dequantize"]
