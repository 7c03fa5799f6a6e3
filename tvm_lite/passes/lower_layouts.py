"""Layout arithmetic for the GPU lowering: per-thread indices of a register
layout, default layouts for tiles the layout inference left open, and the
compile-time test of whether a data movement between two layouts is a pure
register relabeling.

A layout maps (thread t, slot l) to an index; its digits are independent,
so index_d(t, l) = index_d(t, 0) + index_d(0, l): a thread part computed
once from %tid (`thread_index`) plus a compile-time constant per slot.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import layout as L


def default_layout(shape: tuple[int, ...], threads: int, nbits: int) -> L.RegisterLayout:
    """A layout over `threads` threads: runs of up to 16 bytes along the last
    dimension per thread, threads over the rest (last dimensions first), any
    threads left over replicate the tile."""
    shape = tuple(int(s) for s in shape) or ()
    nd = len(shape)
    if nd == 0:
        return L.replicate(threads)
    vec = 1
    want = max(1, 128 // max(nbits, 1))
    while vec * 2 <= want and shape[-1] % (vec * 2) == 0:
        vec *= 2
    th = [1] * nd
    rem = threads
    for d in reversed(range(nd)):
        avail = shape[d] // vec if d == nd - 1 else shape[d]
        g = math.gcd(rem, avail)
        th[d] = g
        rem //= g
    loc = [s // t for s, t in zip(shape, th)]
    layout = L.spatial(*th).local(*loc)
    if rem > 1:
        layout = layout.replicate(rem)
    return layout


def slot_offsets(layout: L.RegisterLayout) -> np.ndarray:
    """[local_size, ndim] compile-time index part of every slot."""
    idx = layout.map(np.zeros(layout.local_size, np.int64), np.arange(layout.local_size))
    return np.stack([np.asarray(i, np.int64).reshape(-1) for i in idx], axis=1) if layout.ndim else \
        np.zeros((layout.local_size, 0), np.int64)


def thread_terms(layout: L.RegisterLayout, dim: int) -> list[tuple[int, int, int]]:
    """index_d(t, 0) as a sum of terms ((t // div) % size) * weight."""
    sizes = layout.mode_sizes
    weights = {}
    for d, modes in enumerate(layout.mode_shape):
        w = 1
        ids = [i for i in range(len(sizes)) if layout.mode_dims[i] == d]
        for i in reversed(ids):
            weights[i] = w
            w *= sizes[i]
    terms = []
    div = 1
    for e in reversed(layout.spatial_modes):
        size = -e if e < 0 else sizes[e]
        if e >= 0 and layout.mode_dims[e] == dim and size > 1:
            terms.append((div, size, weights[e]))
        div *= size
    return terms


def replica_terms(layout: L.RegisterLayout) -> list[tuple[int, int]]:
    """(div, size) of every replication digit of the thread id."""
    out, div = [], 1
    for e in reversed(layout.spatial_modes):
        size = -e if e < 0 else layout.mode_sizes[e]
        if e < 0 and size > 1:
            out.append((div, size))
        div *= size
    return out


def owner_table(layout: L.RegisterLayout, flat_of) -> np.ndarray:
    """[threads, space] slot of each thread holding each position, or -1.
    `flat_of(index arrays) -> flat position array` places the layout's elements."""
    T_ = layout.num_threads
    t, l = np.meshgrid(np.arange(T_), np.arange(layout.local_size), indexing="ij")
    flat = np.asarray(flat_of(layout.map(t, l)), np.int64)
    return t, l, flat


def relabel(sources, dst: L.RegisterLayout, dst_flat_of, space: int):
    """If every (thread, slot) of `dst` finds its element (dst_flat_of gives its
    position in a common space) in the same source slot on every thread,
    return [(source number, slot)] per dst slot; else None.
    sources: [(layout, flat_of)]."""
    T_ = dst.num_threads
    table_src = np.full((T_, space), -1, np.int64)
    table_slot = np.full((T_, space), -1, np.int64)
    for k, (layout, flat_of) in enumerate(sources):
        if layout.num_threads != T_:
            return None
        t, l, flat = owner_table(layout, flat_of)
        table_src[t, flat] = k
        table_slot[t, flat] = l
    t, l = np.meshgrid(np.arange(T_), np.arange(dst.local_size), indexing="ij")
    flat = np.asarray(dst_flat_of(dst.map(t, l)), np.int64)
    src = table_src[t, flat]
    slot = table_slot[t, flat]
    if (src < 0).any():
        return None
    if not ((src == src[:1]).all() and (slot == slot[:1]).all()):
        return None
    return [(int(a), int(b)) for a, b in zip(src[0], slot[0])]


def row_major_flat(shape):
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]

    def flat_of(index):
        f = 0
        for x, s in zip(index, strides):
            f = f + np.asarray(x, np.int64) * s
        return f
    return flat_of, strides
