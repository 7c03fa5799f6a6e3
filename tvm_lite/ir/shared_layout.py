"""Shared-memory layouts: strides per dimension, then an optional XOR swizzle.

    offset(index) = swizzle(sum(index[d] * strides[d]))      (in elements)

The swizzle is CuTe's Swizzle<bits, base, shift>: the `bits` bits of the
offset starting at bit `base + shift` are XORed into the `bits` bits starting
at bit `base`:

    o -> o ^ ((o >> shift) & (((1 << bits) - 1) << base))

It needs shift >= bits (the two bit ranges are disjoint), so it is its own
inverse, changes only bits [base, base + bits), and permutes every aligned
block of 2**(base + shift + bits) offsets. Example: 16-bit elements, rows of
64 elements (128 bytes), Swizzle(3, 3, 3) moves each 16-byte chunk of row r to
chunk (c ^ (r % 8)), so ldmatrix reads eight rows from eight different bank
groups.

SharedLayout is a frozen value (equality and hash by fields).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import TLLayoutError

__all__ = ["Swizzle", "SharedLayout", "shared_row_major", "shared_column_major"]


@dataclass(frozen=True)
class Swizzle:
    bits: int
    base: int
    shift: int

    def __post_init__(self):
        if self.bits < 0 or self.base < 0 or self.shift < self.bits:
            raise TLLayoutError(f"a swizzle needs bits >= 0, base >= 0 and shift >= bits, got "
                                f"Swizzle(bits={self.bits}, base={self.base}, shift={self.shift})")

    @property
    def period(self) -> int:
        """Every aligned block of this many offsets is permuted onto itself."""
        return 1 << (self.base + self.shift + self.bits)

    def __call__(self, offset):
        mask = ((1 << self.bits) - 1) << self.base
        return offset ^ ((offset >> self.shift) & mask)


@dataclass(frozen=True)
class SharedLayout:
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    swizzle_fn: Optional[Swizzle] = None

    def __post_init__(self):
        if (len(self.shape) != len(self.strides) or any(s < 1 for s in self.shape)
                or any(s < 0 for s in self.strides)):
            raise TLLayoutError(f"a shared layout needs positive sizes and non-negative strides, one per "
                                f"dimension; got shape {list(self.shape)}, strides {list(self.strides)}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def offset(self, index):
        """Element offset of `index` (ints or broadcastable arrays)."""
        if len(index) != self.ndim:
            raise TLLayoutError(f"a rank-{self.ndim} shared layout needs {self.ndim} indices, got {len(index)}")
        o = np.int64(0)
        for i, n, s in zip(index, self.shape, self.strides):
            i = np.asarray(i, dtype=np.int64)
            if np.any((i < 0) | (i >= n)):
                raise TLLayoutError(f"index {i} out of range for a dimension of size {n}")
            o = o + i * s
        if self.swizzle_fn is not None:
            o = self.swizzle_fn(o)
        return o if np.ndim(o) else int(o)

    @property
    def size(self) -> int:
        """Elements of storage the layout needs: 1 + its largest offset."""
        span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides))
        if self.swizzle_fn is None:
            return span
        return 1 + int(np.max(self.offset(tuple(np.indices(self.shape)))))

    def swizzle(self, bits: int, base: int, shift: int) -> "SharedLayout":
        """This layout with Swizzle(bits, base, shift) applied to its offsets."""
        if self.swizzle_fn is not None:
            raise TLLayoutError(f"{self} is already swizzled; swizzles do not compose")
        return SharedLayout(self.shape, self.strides, Swizzle(int(bits), int(base), int(shift)))

    def __repr__(self) -> str:
        sw = "" if self.swizzle_fn is None else \
            f", swizzle=({self.swizzle_fn.bits}, {self.swizzle_fn.base}, {self.swizzle_fn.shift})"
        return f"SharedLayout(shape={list(self.shape)}, strides={list(self.strides)}{sw})"

    def __str__(self) -> str:
        from .layout_print import format_shared   # late: layout_print is a leaf for both modules
        return format_shared(self)


def _strides(shape, column_major: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise TLLayoutError(f"shared layout sizes must be integers, got {shape!r}") from None
    strides, s = [], 1
    for n in (shape if column_major else reversed(shape)):
        strides.append(s)
        s *= n
    return shape, tuple(strides if column_major else reversed(strides))


def shared_row_major(*shape: int) -> SharedLayout:
    """Last dimension contiguous."""
    return SharedLayout(*_strides(shape, False))


def shared_column_major(*shape: int) -> SharedLayout:
    """First dimension contiguous."""
    return SharedLayout(*_strides(shape, True))
