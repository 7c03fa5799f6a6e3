"""Shared-memory layouts: strides per dimension, then an optional XOR swizzle.

`offset(index) = swizzle(sum(index[d] * strides[d]))`, in elements. The
swizzle is CuTe's Swizzle<bits, base, shift>: the `bits` bits starting at
`base + shift` are XORed into the `bits` bits starting at `base`:

    o -> o ^ ((o >> shift) & (((1 << bits) - 1) << base))

With shift >= bits the two bit ranges are disjoint, so the map is its own
inverse and permutes every aligned block of 2^(base+shift+bits) offsets; a
row-major tile swizzled this way lets ldmatrix read rows without bank
conflicts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import TLLayoutError


@dataclass(frozen=True)
class Swizzle:
    bits: int
    base: int
    shift: int

    def __post_init__(self):
        if self.bits < 0 or self.base < 0 or self.shift < self.bits:
            raise TLLayoutError(f"swizzle needs bits >= 0, base >= 0 and shift >= bits, got {self}")

    @property
    def period(self) -> int:
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
        if len(self.shape) != len(self.strides) or any(s < 1 for s in self.shape):
            raise TLLayoutError(f"bad shared layout shape {self.shape} / strides {self.strides}")

    def offset(self, index):
        o = sum(np.asarray(i, dtype=np.int64) * s for i, s in zip(index, self.strides))
        return self.swizzle_fn(o) if self.swizzle_fn is not None else o

    @property
    def size(self) -> int:
        """Elements of storage the layout spans (its cosize)."""
        span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides))
        if self.swizzle_fn is None:
            return span
        period = self.swizzle_fn.period
        return -(-span // period) * period if span > period else span

    def swizzle(self, bits: int, base: int, shift: int) -> "SharedLayout":
        return SharedLayout(self.shape, self.strides, Swizzle(bits, base, shift))

    def __str__(self) -> str:
        from .layout_print import format_shared
        return format_shared(self)


def shared_row_major(*shape: int) -> SharedLayout:
    strides, s = [], 1
    for n in reversed(shape):
        strides.append(s)
        s *= n
    return SharedLayout(tuple(shape), tuple(reversed(strides)))


def shared_column_major(*shape: int) -> SharedLayout:
    strides, s = [], 1
    for n in shape:
        strides.append(s)
        s *= n
    return SharedLayout(tuple(shape), tuple(strides))
