"""Shared-memory planning: one byte offset per shared buffer, reused by liveness.

Entry point: `plan_shared_memory(kernel) -> SharedPlan`, for a kernel after
`infer_gpu_layouts`. Buffers:

* every `AllocShared` tensor, keyed by its `SharedTensor`, sized by its
  SharedLayout (`layout.size`, swizzles included) or row-major shape;
* every `ConvertLayout` scratch, keyed by the conversion's **dst tensor**
  (`plan.offset(x)` also takes the ConvertLayout instruction itself). Its
  physical layout is `plan.layouts[dst]`: the swizzled `ldmatrix_shared_layout`
  when the conversion produces an mma A/B fragment of a 16-bit type (so the
  lowering can read it with ldmatrix, bank-conflict free), else row-major.

Lifetimes are intervals of program positions (instructions numbered in
program order, loop bodies in place). A user buffer lives from its
allocation to its last use; a conversion scratch lives from its
instruction to the last read of its dst (so the lowering may also read the
fragments from the scratch lazily, e.g. ldmatrix at the mma). A lifetime that overlaps a loop without being contained in it
is widened to the whole loop (it may be read again in the next iteration).
Placement is first-fit: buffers in order of decreasing size (then start),
each at the lowest 128-byte-aligned offset whose bytes no already placed
buffer with an overlapping lifetime uses.

Reuse assumes the lowering orders reuse with barriers: a conversion is
`bar.sync; store; bar.sync; load` (the leading barrier retires the previous
user of those bytes) and a user buffer that takes over bytes after a
conversion is written only after a barrier - the lowering emits a bar.sync
after a conversion's loads when the plan's `reused_after(dst)` says another
buffer uses any of its bytes later.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from ..ir import vm
from ..ir.layout import divide, mma_m16n8k16_a, mma_m16n8k16_b
from ..ir.shared_layout import SharedLayout, Swizzle, shared_row_major

__all__ = ["SharedPlan", "plan_shared_memory", "ldmatrix_shared_layout", "first_fit", "ALIGNMENT"]

ALIGNMENT = 128


@dataclass(frozen=True)
class SharedPlan:
    """offsets/sizes/lifetimes are keyed by SharedTensor or ConvertLayout dst
    tensor (identity); layouts gives each buffer's physical SharedLayout."""
    offsets: Mapping[Any, int]
    sizes: Mapping[Any, int]
    lifetimes: Mapping[Any, tuple[int, int]]
    layouts: Mapping[Any, SharedLayout]
    total_bytes: int
    alignment: int = ALIGNMENT

    def _key(self, x):
        return x.dst if isinstance(x, vm.ConvertLayout) else x

    def offset(self, x) -> int:
        return self.offsets[self._key(x)]

    def layout(self, x) -> SharedLayout:
        return self.layouts[self._key(x)]

    def reused_after(self, x) -> bool:
        """Whether a buffer whose lifetime starts after x's shares bytes with x."""
        k = self._key(x)
        lo, hi = self.offsets[k], self.offsets[k] + self.sizes[k]
        end = self.lifetimes[k][1]
        return any(o < hi and lo < o + self.sizes[j] and self.lifetimes[j][0] > end
                   for j, o in self.offsets.items() if j is not k)


def ldmatrix_shared_layout(shape, dtype) -> SharedLayout:
    """A row-major [rows, cols] layout swizzled so that ldmatrix (8 rows x 16
    bytes per 8x8 matrix) and 16-byte row stores are bank-conflict free.

    With e = elements per 16-byte chunk (base = log2 e) and rows of C
    elements: a row of >= 128 bytes XORs the row's low 3 bits into the chunk
    index (Swizzle(3, base, log2(C) - base)); a shorter row of 2^k chunks XORs
    the 128-byte-line index's bits into its k chunk bits (Swizzle(k, base, 3)),
    so 8 consecutive rows at one chunk column hit 8 different 16-byte bank
    groups. Shapes that are not 2-D with a power-of-two row of whole chunks
    stay unswizzled row-major."""
    shape = tuple(int(s) for s in shape)
    plain = shared_row_major(*shape)
    if len(shape) != 2 or 128 % dtype.nbits:
        return plain
    e = 128 // dtype.nbits
    cols = shape[1]
    if cols % e or cols & (cols - 1) or e & (e - 1):
        return plain
    base = e.bit_length() - 1
    chunks = cols // e
    if chunks == 1:
        return plain
    if chunks >= 8:
        sw = Swizzle(3, base, (cols.bit_length() - 1) - base)
    else:
        sw = Swizzle(chunks.bit_length() - 1, base, 3)
    layout = SharedLayout(plain.shape, plain.strides, sw)
    return layout if layout.size == plain.size else plain


def _scratch_layout(cvt: vm.ConvertLayout) -> SharedLayout:
    dst = cvt.dst
    if (dst.ndim == 2 and dst.dtype.nbits == 16 and dst.layout is not None
            and (divide(dst.layout, mma_m16n8k16_a()) is not None
                 or divide(dst.layout, mma_m16n8k16_b()) is not None)):
        return ldmatrix_shared_layout(dst.shape, dst.dtype)
    return shared_row_major(*dst.shape)


def _bytes(n_elems: int, dtype) -> int:
    return -(-n_elems * dtype.nbits // 8)


class _Liveness:
    def __init__(self):
        self.pos = 0
        self.loops: list[tuple[int, int]] = []
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.key: dict[int, Any] = {}
        self.layout: dict[int, SharedLayout] = {}
        self.size: dict[int, int] = {}

    def touch(self, k, at: int) -> None:
        self.first.setdefault(id(k), at)
        self.last[id(k)] = at
        self.key[id(k)] = k

    def body(self, stmts) -> None:
        for s in stmts:
            if isinstance(s, (vm.For, vm.While)):
                start = self.pos
                self.body(s.body)
                self.loops.append((start, self.pos))
            elif isinstance(s, vm.If):
                self.body(s.then_body)
                self.body(s.else_body)
            elif isinstance(s, vm.Instr):
                self.pos += 1
                self.instr(s, self.pos)

    def instr(self, s, at: int) -> None:
        if isinstance(s, vm.AllocShared):
            t = s.out
            lay = t.layout if isinstance(t.layout, SharedLayout) else shared_row_major(*t.shape)
            self.layout[id(t)] = lay
            self.size[id(t)] = _bytes(lay.size, t.dtype)
            self.touch(t, at)
        elif isinstance(s, vm.ConvertLayout):
            lay = _scratch_layout(s)
            self.layout[id(s.dst)] = lay
            self.size[id(s.dst)] = _bytes(lay.size, s.dst.dtype)
            self.touch(s.dst, at)
        else:
            for v in (getattr(s, f.name) for f in dataclasses.fields(s)):
                for item in v if isinstance(v, tuple) else (v,):
                    if isinstance(item, (vm.SharedTensor, vm.RegisterTensor)) and id(item) in self.layout:
                        self.touch(item, at)

    def intervals(self) -> dict[int, tuple[int, int]]:
        out = {}
        for k in self.first:
            lo, hi = self.first[k], self.last[k]
            changed = True
            while changed:
                changed = False
                for ls, le in self.loops:   # the loop body occupies positions (ls, le]
                    inside = ls < lo and hi <= le
                    overlaps = lo <= le and hi > ls
                    if overlaps and not inside and (lo > ls + 1 or hi < le):
                        lo, hi = min(lo, ls + 1), max(hi, le)
                        changed = True
            out[k] = (lo, hi)
        return out


def first_fit(items, alignment: int = ALIGNMENT) -> tuple[dict, int]:
    """items: (key, size, (start, end)) with inclusive lifetimes. Returns
    ({key: offset}, total bytes): decreasing size first, each at the lowest
    aligned offset free of every placed buffer whose lifetime overlaps."""
    order = sorted(items, key=lambda it: (-it[1], it[2][0], it[2][1]))
    placed: list[tuple[int, int, tuple[int, int]]] = []   # (offset, size, lifetime)
    offsets, total = {}, 0
    for key, size, (s, e) in order:
        busy = sorted((o, o + n) for o, n, (s2, e2) in placed if s2 <= e and s <= e2 and n > 0)
        off = 0
        for lo, hi in busy:
            if off + size <= lo or size == 0:
                break
            off = max(off, -(-hi // alignment) * alignment)
        offsets[key] = off
        placed.append((off, size, (s, e)))
        total = max(total, off + size)
    return offsets, total


def plan_shared_memory(kernel: vm.Kernel) -> SharedPlan:
    """Plan the kernel's shared memory (module docstring)."""
    live = _Liveness()
    live.body(kernel.body)
    spans = live.intervals()
    items = [(k, live.size[k], spans[k]) for k in spans]
    offsets, total = first_fit(items)
    key = live.key
    total = -(-total // ALIGNMENT) * ALIGNMENT if total else 0
    return SharedPlan(offsets=MappingProxyType({key[k]: offsets[k] for k in spans}),
                      sizes=MappingProxyType({key[k]: live.size[k] for k in spans}),
                      lifetimes=MappingProxyType({key[k]: spans[k] for k in spans}),
                      layouts=MappingProxyType({key[k]: live.layout[k] for k in spans}),
                      total_bytes=total)
