"""Data types of any bit width, their value conversions and the packing rule.

Names (DESIGN.md section 4):
* ``u1``..``u64``: unsigned integers; ``i2``..``i64``: two's complement
  (``i1`` is refused: its only values would be -1 and 0).
* ``f16``, ``bf16``, ``f32``, ``f64`` and ``f8e5m2``: the "ieee" flavour,
  with infinities and NaN as in IEEE 754.
* ``f8e4m3``: the "fn" flavour (OCP e4m3fn): no infinity, NaN is S.1111.111.
* every other ``fNeEmM`` with N = 1+E+M <= 16, 1 <= E <= 10, M >= 0: the
  "finite" flavour: one sign bit, bias 2^(E-1)-1, subnormals, and every bit
  pattern is a finite number. ``f16e5m10`` is such a format, distinct from
  ``f16`` (it has no inf/NaN). E is capped at 10 so that every value of every
  type is exactly a float64, which the reference interpreter computes in.

Every property of a type (range, bias, mask, special patterns) is derived
from (kind, nbits, exponent bits, mantissa bits, flavour) in `DataType`, and
those fields come from the name in `_parse`; there are no per-width tables.

Conversions (`encode` / `decode`) map values to bit patterns (uint64) and
back. Floats round to nearest, ties to even, and saturate finite overflow to
±max; ±inf stays ±inf where the format has it, else ±max; NaN becomes the
format's canonical NaN, or +0 in a "finite" format, which has none; -0.0
keeps its sign (see `float_codec`). Integers are never wrapped: a value
outside the type's range, or a non-integral one, raises TLDTypeError.

Packing (DESIGN.md section 4): n elements of N bits form a little-endian bit
stream of ceil(n*N/8) bytes; element i sits in bits [i*N, (i+1)*N), least
significant bit first, in row-major order, with no padding between rows.
"""
from __future__ import annotations

import functools
import numbers
import re
from dataclasses import dataclass

import numpy as np

from ..errors import TLDTypeError
from . import float_codec

_ACCEPTED = ("accepted forms: u1..u64, i2..i64, f16, bf16, f32, f64, f8e4m3 (OCP e4m3fn), f8e5m2, "
             "or fNeEmM with N = 1+E+M <= 16, 1 <= E <= 10, M >= 0 (e.g. f6e3m2, f4e2m1)")

# The formats that are not the "finite" rule: name -> (E, M, flavour).
_NAMED_FLOATS = {
    "f16": (5, 10, "ieee"), "bf16": (8, 7, "ieee"), "f32": (8, 23, "ieee"), "f64": (11, 52, "ieee"),
    "f8e5m2": (5, 2, "ieee"), "f8e4m3": (4, 3, "fn"),
}
_INT_NAME = re.compile(r"([ui])([1-9][0-9]*)")                 # ASCII digits, no leading zeros
_FLOAT_NAME = re.compile(r"f([1-9][0-9]*)e([1-9][0-9]*)m(0|[1-9][0-9]*)")
_MAX_CUSTOM_EXPONENT = 10


def _bad(name, why: str) -> TLDTypeError:
    return TLDTypeError(f"invalid dtype {name!r}: {why}; {_ACCEPTED}")


def _parse(name: str) -> tuple[int, str, int, int, str]:
    """(nbits, kind, exponent_bits, mantissa_bits, flavour) of a valid name."""
    if name in _NAMED_FLOATS:
        e, m, flavour = _NAMED_FLOATS[name]
        return 1 + e + m, "float", e, m, flavour
    match = _INT_NAME.fullmatch(name)
    if match:
        kind, nbits = ("uint" if match[1] == "u" else "int"), int(match[2])
        low = 1 if kind == "uint" else 2
        if not low <= nbits <= 64:
            raise _bad(name, f"{match[1]}N needs {low} <= N <= 64")
        return nbits, kind, 0, 0, ""
    match = _FLOAT_NAME.fullmatch(name)
    if match:
        n, e, m = (int(g) for g in match.groups())
        if n != 1 + e + m or n > 16 or e > _MAX_CUSTOM_EXPONENT:
            raise _bad(name, f"fNeEmM needs N = 1+E+M <= 16 and E <= {_MAX_CUSTOM_EXPONENT}")
        return n, "float", e, m, "finite"
    raise _bad(name, "unknown name")


@dataclass(frozen=True)
class DataType:
    """A scalar data type. Value semantics: equal (and hashing equal) by fields.

    Build one with `dtype(name)`; constructing it directly checks that the
    fields are the ones the name implies. Integer types have exponent_bits =
    mantissa_bits = 0 and flavour "".
    """
    name: str
    nbits: int
    kind: str                 # "uint" | "int" | "float"
    exponent_bits: int = 0
    mantissa_bits: int = 0
    flavour: str = ""         # floats: "ieee" | "fn" | "finite"

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise _bad(self.name, "a dtype name is a string")
        fields = (self.nbits, self.kind, self.exponent_bits, self.mantissa_bits, self.flavour)
        if fields != _parse(self.name):
            raise TLDTypeError(f"DataType fields {fields} do not match the name {self.name!r} "
                               f"(expected {_parse(self.name)}); use tvm_lite.dtype(name)")

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return self.name

    # ----------------------------------------------------------- kind
    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_integer(self) -> bool:
        return self.kind != "float"

    @property
    def is_signed(self) -> bool:
        """Floats and iN are signed; uN is not."""
        return self.kind != "uint"

    @property
    def is_byte_aligned(self) -> bool:
        """True when elements start on byte boundaries (N a multiple of 8)."""
        return self.nbits % 8 == 0

    @property
    def storage_nbytes(self) -> int:
        """Bytes of the smallest 1/2/4/8-byte word that holds one element
        (the unpacked, per-element storage; packed streams use `nbytes_for`)."""
        return 1 << max(0, (self.nbits - 1).bit_length() - 3)

    @property
    def mask(self) -> int:
        """All N bits set: the valid bits of a pattern."""
        return (1 << self.nbits) - 1

    # ---------------------------------------------------- float fields
    @property
    def bias(self) -> int:
        """Exponent bias 2^(E-1)-1 for floats, 0 for integers."""
        return (1 << (self.exponent_bits - 1)) - 1 if self.is_float else 0

    @property
    def has_inf(self) -> bool:
        return self.flavour == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.flavour in ("ieee", "fn")

    @property
    def inf_bits(self) -> int | None:
        """Pattern of +inf (all-ones exponent, zero mantissa), None without inf."""
        return ((1 << self.exponent_bits) - 1) << self.mantissa_bits if self.has_inf else None

    @property
    def nan_bits(self) -> int | None:
        """Canonical (positive, quiet) NaN pattern, None without NaN."""
        e, m = self.exponent_bits, self.mantissa_bits
        if self.flavour == "fn":                  # S.1..1.1..1 is the only NaN
            return (1 << (e + m)) - 1
        if self.flavour == "ieee":                # quiet bit: the top mantissa bit
            return (((1 << e) - 1) << m) | (1 << (m - 1))
        return None

    @property
    def max_bits(self) -> int:
        """Pattern of the largest finite value (floats only)."""
        self._require_float("max_bits")
        e, m = self.exponent_bits, self.mantissa_bits
        if self.flavour == "ieee":                # the top exponent is inf/NaN
            return (((1 << e) - 2) << m) | ((1 << m) - 1)
        if self.flavour == "fn":                  # all ones is NaN: one below it
            return (1 << (e + m)) - 2
        return (1 << (e + m)) - 1                 # "finite": every pattern is a number

    # --------------------------------------------------------- ranges
    @functools.cached_property
    def max(self):
        """Largest value: a Python int for integers, the largest finite float for floats."""
        if self.kind == "uint":
            return (1 << self.nbits) - 1
        if self.kind == "int":
            return (1 << (self.nbits - 1)) - 1
        return float_codec.pattern_value(self.max_bits, self)

    @functools.cached_property
    def min(self):
        """Smallest value: 0 for uN, -2^(N-1) for iN, -max for floats."""
        if self.kind == "uint":
            return 0
        if self.kind == "int":
            return -(1 << (self.nbits - 1))
        return -self.max

    @property
    def smallest_normal(self) -> float:
        self._require_float("smallest_normal")
        return float_codec.pattern_value(1 << self.mantissa_bits, self)

    @property
    def smallest_subnormal(self) -> float:
        """The step between values below smallest_normal (floats only)."""
        self._require_float("smallest_subnormal")
        return float_codec.pattern_value(1, self)

    def _require_float(self, what: str) -> None:
        if not self.is_float:
            raise TLDTypeError(f"{what} is defined for float types only, not {self.name}")


@functools.lru_cache(maxsize=None)
def _dtype_by_name(name: str) -> DataType:
    # Only valid names are cached (lru_cache does not cache exceptions), so the
    # cache is bounded by the finite set of valid names.
    return DataType(name, *_parse(name))


def dtype(x) -> DataType:
    """The DataType for a name (cached: the same object each time) or a DataType (itself).

    Raises TLDTypeError naming the input and the accepted forms otherwise.
    """
    if isinstance(x, DataType):
        return x
    if not isinstance(x, str):
        raise _bad(x, f"a dtype is a name or a DataType, not {type(x).__name__}")
    return _dtype_by_name(str(x))


# ------------------------------------------------------------------ values


def encode(values, dt) -> np.ndarray:
    """Values -> bit patterns (uint64, same shape), the pattern in the low N bits.

    Floats: any reals, rounded to nearest even with saturation (module doc).
    Integers: integer values (integer, bool or integral-float arrays, or
    Python ints); each must lie in [dt.min, dt.max]. Raises TLDTypeError for a
    non-integral or out-of-range value, naming the first one; never wraps.
    """
    dt = dtype(dt)
    if dt.is_float:
        try:
            raw = np.asarray(values)
            # Strings would parse and None would become NaN: neither is a real.
            if raw.dtype.kind in "USc" or (raw.dtype == object and
                                           not all(isinstance(v, numbers.Real) for v in raw.flat)):
                raise TypeError(f"got {raw.dtype} values")
            reals = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TLDTypeError(f"{dt.name} values must be real numbers: {err}") from None
        return float_codec.encode_floats(reals, dt)
    v = _checked_integers(values, dt)
    # Integer casts wrap modulo 2^64, so negative values become their two's
    # complement; the range was checked above.
    patterns = v.astype(np.uint64)        # always a fresh array: safe to mask in place
    if dt.nbits < 64:
        patterns &= np.uint64(dt.mask)
    return patterns


def decode(bits, dt) -> np.ndarray:
    """Bit patterns -> values, same shape. Bits above the low N are ignored.

    Floats: float64, exact; NaN and inf per the flavour, keeping the pattern's
    sign. Integers: int64, sign-extended for iN; uint64 for u64, whose values
    do not fit in int64.
    """
    dt = dtype(dt)
    # A fresh array either way, never the caller's.
    b = _as_patterns(bits)
    b = b & np.uint64(dt.mask) if dt.nbits < 64 else b.copy()
    if dt.is_float:
        return float_codec.decode_floats(b, dt)
    if dt.kind == "uint":
        return b if dt.nbits == 64 else b.astype(np.int64)
    # Sign-extend: move the sign bit to bit 63, then shift back arithmetically.
    spare = np.uint64(64 - dt.nbits)
    return (b << spare).view(np.int64) >> spare.astype(np.int64)


def _as_patterns(bits) -> np.ndarray:
    b = np.asarray(bits)
    if b.dtype.kind not in "iub":
        raise TLDTypeError(f"bit patterns must be integers, got an array of {b.dtype}")
    return b.astype(np.uint64, copy=False)


def _checked_integers(values, dt: DataType) -> np.ndarray:
    """`values` as an integer array (int64, or uint64 for large u64 values),
    after checking that every value is integral and in dt's range."""
    v = np.asarray(values)
    if v.dtype.kind == "f" and dt.nbits > 53 and not isinstance(values, np.ndarray):
        # numpy turns a list such as [2**64 - 1, -1] into float64, which
        # rounds; keep the Python ints exact instead.
        v = np.asarray(values, dtype=object)
    if v.dtype.kind == "O":                        # Python ints beyond 64 bits, mixed objects
        v = _integers_from_objects(v, dt)
    elif v.dtype.kind == "f":
        bad = ~np.isfinite(v) | (v != np.trunc(v))
        if bad.any():
            raise TLDTypeError(f"{dt.name} values must be integers, got {v[bad].flat[0].item()!r}")
    elif v.dtype.kind == "b":
        v = v.astype(np.int64)
    elif v.dtype.kind not in "iu":
        raise TLDTypeError(f"{dt.name} values must be integers, got an array of {v.dtype}")
    if v.size:
        lo, hi = v.min(), v.max()
        if v.dtype.kind == "f":
            # min and max + 1 are powers of two, exact as floats; max itself
            # (2^k - 1) may round up to 2^k.
            low_bad, high_bad = lo < float(dt.min), hi >= float(dt.max + 1)
        else:
            # Integers compare exactly with Python ints of any size (NEP 50).
            low_bad, high_bad = lo < dt.min, hi > dt.max
        if low_bad or high_bad:
            raise TLDTypeError(f"value {(lo if low_bad else hi).item()!r} out of range for {dt.name} "
                               f"[{dt.min}, {dt.max}]")
    if v.dtype.kind == "f":
        # Floats >= 2^63 only fit u64; every other checked value fits int64.
        return v.astype(np.uint64) if dt.kind == "uint" and dt.nbits == 64 else v.astype(np.int64)
    return v


def _integers_from_objects(v: np.ndarray, dt: DataType) -> np.ndarray:
    flat = v.reshape(-1).tolist()
    for x in flat:
        if not (isinstance(x, numbers.Integral)
                or (isinstance(x, float) and x.is_integer())):
            raise TLDTypeError(f"{dt.name} values must be integers, got {x!r}")
        if not dt.min <= x <= dt.max:
            raise TLDTypeError(f"value {x!r} out of range for {dt.name} [{dt.min}, {dt.max}]")
    wide = np.uint64 if dt.kind == "uint" and dt.nbits == 64 else np.int64
    return np.array([int(x) for x in flat], dtype=wide).reshape(v.shape)


# ------------------------------------------------------------------ packing


@functools.lru_cache(maxsize=None)
def _group_plan(nbits: int) -> tuple[tuple[int, int, int], ...]:
    """How a group of 8 elements maps onto its nbits bytes.

    8 elements of N bits are exactly N bytes, so the stream is a sequence of
    such groups. Returns (element j, byte k, shift) for every byte k that
    element j touches, where shift = 8k - jN: byte k holds element j shifted
    right by `shift` (left by -shift when negative).
    """
    plan = []
    for j in range(8):
        start = j * nbits
        for k in range(start // 8, (start + nbits - 1) // 8 + 1):
            plan.append((j, k, 8 * k - start))
    return tuple(plan)


def _word_type(nbits: int):
    """The narrowest unsigned numpy type that holds nbits bits."""
    return np.dtype(f"<u{1 << max(0, (nbits - 1).bit_length() - 3)}")


def _check_width(nbits) -> int:
    if isinstance(nbits, bool) or not isinstance(nbits, numbers.Integral) or not 1 <= nbits <= 64:
        raise TLDTypeError(f"bit width must be an integer in 1..64, got {nbits!r}")
    return int(nbits)


def pack_bits(bits, nbits: int) -> np.ndarray:
    """Raw nbits-wide patterns -> their little-endian bit stream (uint8, 1-D).

    `bits` is any integer array (row-major order); only its low `nbits` bits
    are used, so two's-complement negative values pack as their patterns.
    The result has ceil(n*nbits/8) bytes; unused high bits of the last byte
    are zero.
    """
    nbits = _check_width(nbits)
    b = _as_patterns(bits).reshape(-1)
    n = b.size
    if nbits in (8, 16, 32, 64):           # whole machine words: a cast and a view
        return b.astype(f"<u{nbits // 8}").view(np.uint8)
    # Work in the narrowest word that holds an element: left shifts that spill
    # past it only lose bits that fall outside the byte being assembled.
    word = _word_type(nbits)
    groups = -(-n // 8)
    padded = np.zeros(groups * 8, word)
    np.bitwise_and(b, np.uint64((1 << nbits) - 1), out=padded[:n], casting="unsafe")
    columns = padded.reshape(groups, 8).T.copy()         # element j of every group, contiguous
    out = np.zeros((nbits, groups), np.uint8)
    for j, k, shift in _group_plan(nbits):
        part = columns[j] >> word.type(shift) if shift >= 0 else columns[j] << word.type(-shift)
        out[k] |= part.astype(np.uint8)                  # the low byte: truncating cast
    return out.T.reshape(-1)[: -(-n * nbits // 8)]


def unpack_bits(data, nbits: int, count: int) -> np.ndarray:
    """The first `count` nbits-wide patterns of a little-endian bit stream (uint64, 1-D).

    `data` is bytes-like or an array of uint8 (or of integers in 0..255);
    bytes past the first ceil(count*nbits/8) are ignored. Raises TLDTypeError
    when `data` is too short.
    """
    nbits = _check_width(nbits)
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise TLDTypeError(f"element count must be a non-negative integer, got {count!r}")
    d = _as_bytes(data)
    need = -(-count * nbits // 8)
    if d.size < need:
        raise TLDTypeError(f"{count} elements of {nbits} bits need {need} bytes, got {d.size}")
    if nbits in (8, 16, 32, 64):
        return d[:need].view(f"<u{nbits // 8}").astype(np.uint64)
    word = _word_type(nbits)
    groups = -(-count // 8)
    stream = np.zeros(groups * nbits, np.uint8)
    stream[:need] = d[:need]
    rows = stream.reshape(groups, nbits).T.copy()       # byte k of every group, contiguous
    columns = np.zeros((8, groups), word)
    row, row_k = None, -1
    for j, k, shift in sorted(_group_plan(nbits), key=lambda entry: entry[1]):
        if k != row_k:     # widen each byte row once, and hold one wide row at a time
            row, row_k = rows[k].astype(word), k
        columns[j] |= row << word.type(shift) if shift >= 0 else row >> word.type(-shift)
    columns &= word.type((1 << nbits) - 1)               # drop the next element's bits
    return columns.T.reshape(-1)[:count].astype(np.uint64)


def _as_bytes(data) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    d = np.ascontiguousarray(data).reshape(-1)          # contiguous: word views below need it
    if d.dtype == np.uint8:
        return d
    if d.dtype.kind in "iu" and (d.size == 0 or (d.min() >= 0 and d.max() <= 255)):
        return d.astype(np.uint8)
    raise TLDTypeError(f"a bit stream is an array of bytes (uint8), got an array of {d.dtype}")


def pack(values, dt) -> np.ndarray:
    """Values of type dt -> the packed bit stream (uint8, 1-D; module doc).

    N-D input is taken in row-major order. Integer types take integer values
    (range-checked, TLDTypeError otherwise); float types take reals, rounded
    to nearest even and saturated.
    """
    dt = dtype(dt)
    return pack_bits(encode(np.asarray(values).reshape(-1), dt), dt.nbits)


def unpack(data, dt, shape) -> np.ndarray:
    """The inverse of `pack`: an array of `shape` (an int or a tuple).

    Integer types give int64 (sign-extended for iN; uint64 for u64). Float
    types give float32 (float64 for f64); float32 holds every value exactly
    except for "finite" formats with 8..10 exponent bits, whose extreme
    values round (use `decode(unpack_bits(...))` for float64).
    Raises TLDTypeError when `data` holds fewer than ceil(n*N/8) bytes.
    """
    dt = dtype(dt)
    shape = _check_shape(shape)
    count = 1
    for s in shape:
        count *= s
    values = decode(unpack_bits(data, dt.nbits, count), dt)
    if dt.is_float and dt.name != "f64":
        with np.errstate(over="ignore"):    # only the wide "finite" formats overflow
            values = values.astype(np.float32)
    return values.reshape(shape)


def _check_shape(shape) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
    for s in dims:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise TLDTypeError(f"shape must be non-negative integers, got {shape!r}")
    return tuple(int(s) for s in dims)


# ------------------------------------------------------------------ storage

_NUMPY_NATIVE = {"u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f16", "f32", "f64"}


def numpy_dtype(dt) -> np.dtype | None:
    """The numpy dtype that stores dt natively, or None (then dt is stored packed)."""
    dt = dtype(dt)
    if dt.name not in _NUMPY_NATIVE:
        return None
    letter = {"uint": "u", "int": "i", "float": "f"}[dt.kind]
    return np.dtype(f"{letter}{dt.nbits // 8}")


def is_byte_aligned(dt) -> bool:
    """True when dt's elements start on byte boundaries (N a multiple of 8)."""
    return dtype(dt).is_byte_aligned


def nbytes_for(count: int, dt) -> int:
    """Bytes of the packed bit stream of `count` elements of dt: ceil(count*N/8)."""
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise TLDTypeError(f"element count must be a non-negative integer, got {count!r}")
    return -(-int(count) * dtype(dt).nbits // 8)
