"""Data types of any bit width, their value conversions and the packing rule.

Every property of a type (range, bias, mask) is derived from (kind, nbits,
exponent bits, mantissa bits) in one place, `DataType`; there are no per-width
tables to get wrong.

Floats come in three flavours:
* "ieee"   f16, bf16, f32, f64, f8e5m2: infinities and NaN as in IEEE 754;
* "fn"     f8e4m3 (OCP e4m3fn): no infinity, NaN is S.1111.111;
* "finite" every other fNeEmM: one sign bit, bias 2^(E-1)-1, subnormals,
           and every bit pattern is a finite number.

Conversion of a real to a float type rounds to nearest, ties to even, and
saturates: finite values beyond ±max become ±max in every format. ±inf
becomes ±inf where the format has it, else ±max. NaN becomes the format's
NaN, or +0 in a "finite" format, which has none.

Packing (DESIGN.md section 4): n elements of N bits form a little-endian bit
stream of ceil(n*N/8) bytes; element i sits in bits [i*N, (i+1)*N), least
significant bit first, in row-major order, with no padding between rows.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from ..errors import TLDTypeError

_ACCEPTED = ("u1..u64, i2..i64, f16, bf16, f32, f64, f8e4m3, f8e5m2, "
             "or fNeEmM with N = 1+E+M <= 16, E >= 1 (e.g. f6e3m2, f4e2m1)")

_IEEE = {"f16": (5, 10), "bf16": (8, 7), "f32": (8, 23), "f64": (11, 52), "f8e5m2": (5, 2)}


@dataclass(frozen=True)
class DataType:
    name: str
    nbits: int
    kind: str                 # "uint" | "int" | "float"
    exponent_bits: int = 0
    mantissa_bits: int = 0
    flavour: str = ""         # floats: "ieee" | "fn" | "finite"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return self.name

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_integer(self) -> bool:
        return self.kind != "float"

    @property
    def is_signed(self) -> bool:
        return self.kind != "uint"

    @property
    def mask(self) -> int:
        return (1 << self.nbits) - 1

    @property
    def bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1 if self.is_float else 0

    @property
    def has_inf(self) -> bool:
        return self.flavour == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.flavour in ("ieee", "fn")

    @property
    def max_bits(self) -> int:
        """Bit pattern of the largest finite value."""
        e, m = self.exponent_bits, self.mantissa_bits
        if self.flavour == "ieee":
            return (((1 << e) - 2) << m) | ((1 << m) - 1)
        if self.flavour == "fn":    # all-ones exponent and mantissa is NaN
            return (((1 << e) - 1) << m) | ((1 << m) - 2)
        return (((1 << e) - 1) << m) | ((1 << m) - 1)

    @property
    def max(self):
        if self.kind == "uint":
            return (1 << self.nbits) - 1
        if self.kind == "int":
            return (1 << (self.nbits - 1)) - 1
        return float(_decode_finite(np.array([self.max_bits], np.uint64), self)[0])

    @property
    def min(self):
        if self.kind == "uint":
            return 0
        if self.kind == "int":
            return -(1 << (self.nbits - 1))
        return -self.max


def _validate_name(name: str) -> DataType:
    m = re.fullmatch(r"([ui])(\d+)", name)
    if m:
        kind, bits = ("uint" if m.group(1) == "u" else "int"), int(m.group(2))
        low = 1 if kind == "uint" else 2
        if not low <= bits <= 64 or m.group(2).startswith("0"):
            raise TLDTypeError(f"invalid dtype {name!r}: {m.group(1)}N needs {low} <= N <= 64; "
                               f"accepted: {_ACCEPTED}")
        return DataType(name, bits, kind)
    if name in _IEEE:
        e, mbits = _IEEE[name]
        return DataType(name, 1 + e + mbits, "float", e, mbits, "ieee")
    if name == "f8e4m3":
        return DataType(name, 8, "float", 4, 3, "fn")
    m = re.fullmatch(r"f(\d+)e(\d+)m(\d+)", name)
    if m:
        n, e, mbits = (int(g) for g in m.groups())
        if n != 1 + e + mbits or e < 1 or n > 16:
            raise TLDTypeError(f"invalid dtype {name!r}: fNeEmM needs N = 1+E+M, E >= 1 and N <= 16; "
                               f"accepted: {_ACCEPTED}")
        return DataType(name, n, "float", e, mbits, "finite")
    raise TLDTypeError(f"unknown dtype {name!r}; accepted: {_ACCEPTED}")


@functools.lru_cache(maxsize=None)
def _dtype_by_name(name: str) -> DataType:
    return _validate_name(name)


def dtype(x) -> DataType:
    """The DataType named `x` (a name or a DataType)."""
    if isinstance(x, DataType):
        return x
    if not isinstance(x, str):
        raise TLDTypeError(f"a dtype must be a name or a DataType, got {type(x).__name__}; "
                           f"accepted: {_ACCEPTED}")
    return _dtype_by_name(x)


# ------------------------------------------------------------ float codecs


def _decode_finite(bits: np.ndarray, dt: DataType) -> np.ndarray:
    """Value of each pattern, treating every exponent as finite (float64)."""
    e, m = dt.exponent_bits, dt.mantissa_bits
    bits = bits.astype(np.uint64)
    sign = (bits >> np.uint64(e + m)) & np.uint64(1)
    exp = ((bits >> np.uint64(m)) & np.uint64((1 << e) - 1)).astype(np.int64)
    man = (bits & np.uint64((1 << m) - 1)).astype(np.float64)
    normal = exp > 0
    scale = np.where(normal, exp - dt.bias - m, 1 - dt.bias - m).astype(np.float64)
    mag = np.ldexp(np.where(normal, man + float(1 << m), man), scale.astype(np.int64))
    return np.where(sign == 1, -mag, mag)


def decode(bits, dt) -> np.ndarray:
    """Bit patterns -> values: float64 for floats, int64 (sign-extended) for ints."""
    dt = dtype(dt)
    bits = np.asarray(bits).astype(np.uint64) & np.uint64(dt.mask if dt.nbits < 64 else 2**64 - 1)
    if dt.is_integer:
        v = bits.astype(np.int64)
        if dt.is_signed and dt.nbits < 64:
            v = np.where(v >= (1 << (dt.nbits - 1)), v - (1 << dt.nbits), v)
        return v
    if dt.name == "f64":
        return bits.view(np.float64).copy()
    values = _decode_finite(bits, dt)
    e, m = dt.exponent_bits, dt.mantissa_bits
    mag = bits & np.uint64((1 << (e + m)) - 1)
    # NaN and inf keep the pattern's sign bit, as hardware conversions do.
    negative = ((bits >> np.uint64(e + m)) & np.uint64(1)) == 1
    nan = np.where(negative, -np.nan, np.nan)
    if dt.flavour == "ieee":
        exp_all_ones = (mag >> np.uint64(m)) == np.uint64((1 << e) - 1)
        is_inf = exp_all_ones & ((mag & np.uint64((1 << m) - 1)) == 0)
        values = np.where(exp_all_ones, nan, values)
        values = np.where(is_inf, np.where(negative, -np.inf, np.inf), values)
    elif dt.flavour == "fn":
        values = np.where(mag == np.uint64((1 << (e + m)) - 1), nan, values)
    return values


def _encode_magnitude(a: np.ndarray, dt: DataType) -> np.ndarray:
    """Round |x| (finite, >= 0, float64) to the nearest pattern, ties to even,
    saturating at max_bits. Works on the float64 bit pattern with integers."""
    e, m = dt.exponent_bits, dt.mantissa_bits
    raw = a.view(np.uint64)
    exp64 = ((raw >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64)
    man64 = (raw & np.uint64((1 << 52) - 1)) | np.where(exp64 > 0, np.uint64(1 << 52), np.uint64(0))
    unbiased = np.where(exp64 > 0, exp64 - 1023, -1022)
    # Target exponent field and the right shift that leaves m mantissa bits.
    target_exp = np.maximum(unbiased + dt.bias, 0)                  # 0 means subnormal
    shift = 52 - m + np.where(target_exp > 0, 0, 1 - dt.bias - unbiased)
    shift = np.clip(shift, 0, 63).astype(np.uint64)
    q = man64 >> shift
    rem = man64 - (q << shift)
    half = np.where(shift > 0, np.uint64(1) << (shift - np.uint64(1)), np.uint64(0))
    # q includes the implicit bit for normals: pattern = (exp << m) + (q - 2^m),
    # which also carries correctly when rounding overflows the mantissa.
    pattern = np.where(target_exp > 0,
                       (target_exp.astype(np.uint64) << np.uint64(m)) + q - np.uint64(1 << m),
                       q)
    # Ties go to the even *pattern* (the mantissa's last bit, or the exponent's
    # when there are no mantissa bits).
    round_up = (rem > half) | ((rem == half) & (shift > 0) & ((pattern & np.uint64(1)) == 1))
    pattern = pattern + round_up.astype(np.uint64)
    pattern = np.where(a == 0, np.uint64(0), pattern)
    return np.minimum(pattern, np.uint64(dt.max_bits))


def _nan_bits(dt: DataType) -> int:
    e, m = dt.exponent_bits, dt.mantissa_bits
    if dt.flavour == "fn":
        return (1 << (e + m)) - 1
    return (((1 << e) - 1) << m) | (1 << (m - 1) if m else 1)


def encode(values, dt) -> np.ndarray:
    """Values -> bit patterns (uint64). Floats: RNE + saturation (module doc).
    Integers: exact integer values in range, else TLDTypeError."""
    dt = dtype(dt)
    if dt.is_integer:
        v = np.asarray(values)
        if v.dtype.kind == "f":
            if not np.all(np.isfinite(v)) or np.any(v != np.trunc(v)):
                raise TLDTypeError(f"{dt.name} values must be integers")
        elif v.dtype.kind not in "iub":
            raise TLDTypeError(f"{dt.name} values must be integers, got {v.dtype}")
        if v.size and (v.min() < dt.min or v.max() > dt.max):
            raise TLDTypeError(f"value out of range for {dt.name} [{dt.min}, {dt.max}]")
        if dt.nbits == 64 and v.dtype.kind == "u":
            return v.astype(np.uint64)
        patterns = v.astype(np.int64, copy=False).view(np.uint64)
        return patterns & np.uint64(dt.mask) if dt.nbits < 64 else patterns.copy()
    x = np.asarray(values, dtype=np.float64)
    if dt.name == "f64":
        return x.view(np.uint64).copy()
    sign = np.signbit(x)
    mag = np.abs(x)
    finite = np.isfinite(mag)
    bits = _encode_magnitude(np.where(finite, mag, 0.0), dt)
    top = np.uint64(((1 << dt.exponent_bits) - 1) << dt.mantissa_bits)
    bits = np.where(np.isinf(mag), top if dt.has_inf else np.uint64(dt.max_bits), bits)
    bits = bits | (sign.astype(np.uint64) << np.uint64(dt.nbits - 1))
    nan = np.isnan(x)
    if nan.any():
        bits = np.where(nan, np.uint64(_nan_bits(dt) if dt.has_nan else 0), bits)
    return bits


# ------------------------------------------------------------------ packing


def pack_bits(bits, nbits: int) -> np.ndarray:
    """Raw nbits-wide patterns -> little-endian bit stream (uint8, 1-D)."""
    if not 1 <= nbits <= 64:
        raise TLDTypeError(f"bit width must be in 1..64, got {nbits}")
    b = np.asarray(bits).reshape(-1).astype(np.uint64, copy=False)
    n = b.size
    if nbits in (8, 16, 32, 64):
        return b.astype(f"<u{nbits // 8}").view(np.uint8).copy()
    b = b & np.uint64((1 << nbits) - 1)
    if nbits < 8:
        # Eight elements of N bits are exactly N bytes: build each group as one
        # 64-bit word and keep its low N bytes.
        groups = np.zeros(-(-n // 8) * 8, np.uint64)
        groups[:n] = b
        groups = groups.reshape(-1, 8)
        words = groups[:, 0].copy()
        for j in range(1, 8):
            words |= groups[:, j] << np.uint64(j * nbits)
        words = words.astype("<u8", copy=False)
        stream = words.view(np.uint8).reshape(-1, 8)[:, :nbits].reshape(-1)
    else:
        # Wider fields: through a bit matrix of each value's little-endian bytes.
        matrix = np.unpackbits(b.astype("<u8").view(np.uint8).reshape(n, 8), axis=1, bitorder="little")
        stream = np.packbits(matrix[:, :nbits].reshape(-1), bitorder="little")
    return np.ascontiguousarray(stream[: -(-n * nbits // 8)])


def unpack_bits(data, nbits: int, count: int) -> np.ndarray:
    """Little-endian bit stream -> `count` raw patterns (uint64)."""
    if not 1 <= nbits <= 64:
        raise TLDTypeError(f"bit width must be in 1..64, got {nbits}")
    d = np.asarray(data, dtype=np.uint8).reshape(-1)
    need = -(-count * nbits // 8)
    if d.size < need:
        raise TLDTypeError(f"{count} elements of {nbits} bits need {need} bytes, got {d.size}")
    d = np.ascontiguousarray(d[:need])
    if nbits in (8, 16, 32, 64):
        return d.view(f"<u{nbits // 8}").astype(np.uint64)
    if nbits < 8:
        groups = -(-count // 8)
        padded = np.zeros((groups, 8), np.uint8)
        flat = np.zeros(groups * nbits, np.uint8)
        flat[:need] = d
        padded[:, :nbits] = flat.reshape(groups, nbits)
        words = padded.view("<u8").reshape(groups, 1)
        fields = (words >> (np.arange(8, dtype=np.uint64) * np.uint64(nbits))) & np.uint64((1 << nbits) - 1)
        return fields.reshape(-1)[:count]
    matrix = np.unpackbits(d, bitorder="little")[: count * nbits].reshape(count, nbits)
    wide = np.zeros((count, 64), np.uint8)
    wide[:, :nbits] = matrix
    return np.packbits(wide, axis=1, bitorder="little").view("<u8").reshape(-1).astype(np.uint64)


def pack(values, dt) -> np.ndarray:
    """Pack values of dtype dt into its bit stream (see module doc)."""
    dt = dtype(dt)
    return pack_bits(encode(np.asarray(values).reshape(-1), dt), dt.nbits)


def unpack(data, dt, shape) -> np.ndarray:
    """The inverse of pack: int64 for integer types, float32 for floats (f64 for f64)."""
    dt = dtype(dt)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    count = int(np.prod(shape, dtype=np.int64))
    values = decode(unpack_bits(data, dt.nbits, count), dt)
    if dt.is_float:
        values = values.astype(np.float64 if dt.name == "f64" else np.float32)
    return values.reshape(shape)


# ------------------------------------------------------------------ storage

_NATIVE = {"u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64,
           "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
           "f16": np.float16, "f32": np.float32, "f64": np.float64}


def numpy_dtype(dt):
    """The numpy dtype that stores dt natively, or None (then it is packed)."""
    native = _NATIVE.get(dtype(dt).name)
    return None if native is None else np.dtype(native)


def nbytes_for(count: int, dt) -> int:
    """Bytes of the bit stream of `count` elements of dt."""
    return -(-count * dtype(dt).nbits // 8)
