"""Memories of the thread-IR emulator and the hazard checks on them.

Global memory: every pointer argument gets a fake base address (256-byte
aligned, 2^36 bytes apart, so an access running off one array lands in a gap
and never in another array); an address maps back to (array, byte offset)
and reads/writes go straight to the caller's arrays' bytes.

Shared memory: one byte array per block, filled with random garbage at block
start so that a read of never-written shared memory shows up as wrong
numbers. Shared addresses are SHARED_BASE + offset (SharedBase gives
SHARED_BASE, a nonzero, 1024-aligned window address, so a lowering that
forgets SharedBase faults instead of silently working). Per byte it tracks:
* the last writer thread and the barrier epoch of that write: a read by
  another thread in the same epoch is a race (no bar.sync in between);
* the reader(s) in the current epoch: a write by another thread in the same
  epoch is a write-after-read race;
* whether a cp.async into it is still in flight: reading (or writing) it
  before the matching cp.async.wait_group is a race. The data lands only at
  the wait, stamped as written by the issuing thread at that moment.
"""
from __future__ import annotations

import numpy as np

from ..errors import TLCompileError

GLOBAL_BASE = 1 << 40
GLOBAL_STRIDE = 1 << 36
SHARED_BASE = 1024


class EmulatorError(TLCompileError):
    """The emulated thread kernel did something a GPU would fault on or that has
    no defined result (a compiler bug when the kernel came from the lowering)."""


class HazardError(EmulatorError):
    """A memory access a GPU would punish: out of bounds, misaligned, a shared
    memory race (missing bar.sync), a cp.async result used before its wait, or
    a divergent barrier / warp-collective instruction."""


def hazard(where: str, thread: int, message: str) -> HazardError:
    return HazardError(f"emulator: {message} (thread {thread}, in `{where}`)")


class GlobalMemory:
    """The launch's global arrays as byte buffers at fake base addresses."""

    def __init__(self, arrays):
        self.names: list[str] = []
        self.buffers: list[np.ndarray] = []
        for name, arr in arrays:
            self.names.append(name)
            self.buffers.append(_byte_view(arr))
        self.bases = np.array([GLOBAL_BASE + i * GLOBAL_STRIDE for i in range(len(self.buffers))], np.int64)
        self.sizes = np.array([b.size for b in self.buffers], np.int64)

    def base(self, i: int) -> int:
        return int(self.bases[i])

    def locate(self, addr: np.ndarray, width, tids: np.ndarray, where: str):
        """(buffer index, byte offset) per address; raises on out-of-bounds.
        `width` is an int or a per-address array of access sizes."""
        addr = addr.astype(np.int64)
        if len(self.bases) == 0:
            raise hazard(where, int(tids[0]), f"global access at 0x{int(addr[0]):x}: the kernel has no global arrays")
        idx = np.searchsorted(self.bases, addr, side="right") - 1
        safe = np.maximum(idx, 0)
        off = addr - self.bases[safe]
        bad = (idx < 0) | (off + width > self.sizes[safe])
        if bad.any():
            k = int(np.argmax(bad))
            w = int(width if np.isscalar(width) else width[k])
            if idx[k] < 0:
                what = "below every array"
            else:
                what = (f"bytes [{int(off[k])}, {int(off[k]) + w}) of '{self.names[idx[k]]}' "
                        f"({int(self.sizes[idx[k]])} bytes)")
            raise hazard(where, int(tids[k]), f"out-of-bounds global access of {w} bytes at "
                                               f"0x{int(addr[k]):x}: {what}")
        return safe, off

    def read(self, addr, width: int, tids, where: str) -> np.ndarray:
        """(n, width) uint8."""
        bi, off = self.locate(addr, width, tids, where)
        cols = np.arange(width, dtype=np.int64)
        out = np.empty((len(off), width), np.uint8)
        for b in np.unique(bi):
            sel = bi == b
            out[sel] = self.buffers[b][off[sel, None] + cols]
        return out

    def write(self, addr, data: np.ndarray, tids, where: str) -> None:
        width = data.shape[1]
        bi, off = self.locate(addr, width, tids, where)
        cols = np.arange(width, dtype=np.int64)
        for b in np.unique(bi):
            sel = bi == b
            if not self.buffers[b].flags.writeable:
                k = int(np.argmax(sel))
                raise hazard(where, int(tids[k]), f"store into '{self.names[b]}', whose array is read-only")
            self.buffers[b][off[sel, None] + cols] = data[sel]

    def typed_view(self, b: int, dtype) -> np.ndarray:
        buf = self.buffers[b]
        n = buf.size // np.dtype(dtype).itemsize
        return buf[: n * np.dtype(dtype).itemsize].view(dtype)


def _byte_view(arr: np.ndarray) -> np.ndarray:
    """A writable-through uint8 view of a C-contiguous array's bytes."""
    if arr.size == 0:
        return np.zeros(0, np.uint8)
    return arr.reshape(-1).view(np.uint8)


class SharedMemory:
    """One block's shared memory with race tracking (module docstring)."""

    def __init__(self, nbytes: int, rng: np.random.Generator):
        self.nbytes = nbytes
        self.data = rng.integers(0, 256, nbytes, dtype=np.uint8)
        self.last_writer = np.full(nbytes, -1, np.int32)
        self.write_epoch = np.full(nbytes, -1, np.int64)
        # The smallest and largest reader thread of each byte in its read epoch: one
        # reader when they agree; a write by any other thread is a race.
        self.reader_min = np.zeros(nbytes, np.int32)
        self.reader_max = np.zeros(nbytes, np.int32)
        self.read_epoch = np.full(nbytes, -1, np.int64)
        self.pending = np.zeros(nbytes, bool)
        self.any_pending = False        # some cp.async in flight (else no byte is pending)
        self.epoch = 0
        self.written_in_epoch = False   # else no read can race with a write

    # -- addressing
    def offsets(self, addr: np.ndarray, width: int, tids, where: str, what: str = "shared access") -> np.ndarray:
        """(n, width) byte indices of the accesses; raises when out of bounds."""
        off = addr.astype(np.int64) - SHARED_BASE
        bad = (off < 0) | (off + width > self.nbytes)
        if bad.any():
            k = int(np.argmax(bad))
            raise hazard(where, int(tids[k]),
                         f"out-of-bounds {what} of {width} bytes at shared address 0x{int(addr[k]):x} "
                         f"(offset {int(off[k])}; the block has {self.nbytes} bytes of shared memory "
                         f"at 0x{SHARED_BASE:x})")
        return off[:, None] + np.arange(width, dtype=np.int64)

    # -- checks
    def _check_pending(self, idx, tids, where, verb: str) -> None:
        if not self.any_pending:
            return
        p = self.pending[idx]
        if p.any():
            k = int(np.argmax(p.any(axis=1)))
            byte = int(idx[k][np.argmax(p[k])])
            raise hazard(where, int(tids[k]),
                         f"{verb} shared address 0x{SHARED_BASE + byte:x} while a cp.async into it is "
                         f"still in flight (no cp.async.wait_group covering it yet)")

    def _check_raw(self, idx, tids, where) -> None:
        if not self.written_in_epoch:
            return
        lw = self.last_writer[idx]
        bad = (self.write_epoch[idx] == self.epoch) & (lw >= 0) & (lw != tids[:, None])
        if bad.any():
            k = int(np.argmax(bad.any(axis=1)))
            j = int(np.argmax(bad[k]))
            byte = int(idx[k, j])
            raise hazard(where, int(tids[k]),
                         f"read of shared address 0x{SHARED_BASE + byte:x} last written by thread "
                         f"{int(lw[k, j])} with no bar.sync in between (missing barrier)")

    def _check_war(self, idx, tids, where) -> None:
        lo, hi = self.reader_min[idx], self.reader_max[idx]
        t = tids[:, None]
        bad = (self.read_epoch[idx] == self.epoch) & ((lo != t) | (hi != t))
        if bad.any():
            k = int(np.argmax(bad.any(axis=1)))
            j = int(np.argmax(bad[k]))
            byte = int(idx[k, j])
            who = "several threads" if lo[k, j] != hi[k, j] else f"thread {int(lo[k, j])}"
            raise hazard(where, int(tids[k]),
                         f"write of shared address 0x{SHARED_BASE + byte:x} that {who} read with no "
                         f"bar.sync in between (missing barrier: write after read)")

    def _note_readers(self, idx, tids) -> None:
        flat = idx.reshape(-1)
        who = np.broadcast_to(tids[:, None], idx.shape).reshape(-1).astype(np.int32)
        stale = flat[self.read_epoch[flat] != self.epoch]     # first read in this epoch
        self.reader_min[stale] = np.iinfo(np.int32).max
        self.reader_max[stale] = -1
        np.minimum.at(self.reader_min, flat, who)
        np.maximum.at(self.reader_max, flat, who)
        self.read_epoch[flat] = self.epoch

    # -- accesses
    def read(self, addr, width: int, tids, where: str, check: bool = True) -> np.ndarray:
        idx = self.offsets(addr, width, tids, where)
        if check:
            self._check_pending(idx, tids, where, "read of")
            self._check_raw(idx, tids, where)
            self._note_readers(idx, tids)
        return self.data[idx]

    def write(self, addr, data: np.ndarray, tids, where: str) -> None:
        idx = self.offsets(addr, data.shape[1], tids, where)
        self._check_pending(idx, tids, where, "write of")
        self._check_war(idx, tids, where)
        self.data[idx] = data
        self.last_writer[idx] = np.broadcast_to(tids[:, None], idx.shape)
        self.write_epoch[idx] = self.epoch
        self.written_in_epoch = True

    def atomic_indices(self, addr, width: int, tids, where: str) -> np.ndarray:
        idx = self.offsets(addr, width, tids, where, "shared atomic")
        self._check_pending(idx, tids, where, "atomic on")
        return idx

    def atomic_done(self, idx, tids) -> None:
        self.last_writer[idx] = np.broadcast_to(tids[:, None], idx.shape)
        self.write_epoch[idx] = self.epoch
        self.written_in_epoch = True

    def barrier(self) -> None:
        self.epoch += 1
        self.written_in_epoch = False


class AsyncCopies:
    """In-flight cp.async operations of one block, per thread in commit groups."""

    def __init__(self, threads: int):
        self.committed = np.zeros(threads, np.int64)   # groups committed so far, per thread
        self.records: list[tuple] = []                 # (tids, byte idx (n, size), data, group)

    def issue(self, shared: SharedMemory, tids, idx, data) -> None:
        shared.pending[idx] = True
        shared.any_pending = True
        self.records.append((tids, idx, data, self.committed[tids].copy()))

    def commit(self, tids) -> None:
        self.committed[tids] += 1

    def wait(self, shared: SharedMemory, tids_active: np.ndarray, n: int) -> None:
        """cp.async.wait_group n by the active threads (bool mask over the block)."""
        keep = []
        for tids, idx, data, group in self.records:
            done = tids_active[tids] & (group < self.committed[tids] - n)
            if done.any():
                d_idx = idx[done]
                shared.data[d_idx] = data[done]
                shared.pending[d_idx] = False
                shared.last_writer[d_idx] = np.broadcast_to(tids[done][:, None], d_idx.shape)
                shared.write_epoch[d_idx] = shared.epoch
                shared.written_in_epoch = True
            if not done.all():
                rest = ~done
                keep.append((tids[rest], idx[rest], data[rest], group[rest]))
        self.records = keep
        shared.any_pending = bool(keep)
