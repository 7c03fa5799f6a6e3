"""The numpy reference interpreter: the semantic oracle for every backend.

It executes VM IR directly, one block at a time, one instruction at a time,
with whole tiles as numpy arrays. It favours clarity over speed; every rule
below is the language's rule, and other backends are tested against it.

Values (details in `interp_values`)
* Integer tiles are int64 arrays wrapped to their dtype's width after every
  instruction: two's complement for iN, modulo 2^N for uN (u64 keeps its bit
  pattern in the int64). Comparisons and logic produce u1 (0 or 1).
* Float tiles are float64 arrays holding values exactly representable in
  their dtype: every instruction computes in float64 and rounds its result
  once to the dtype, to nearest even, saturating finite overflow to ±max.
  NaN propagates (min/max and reductions included); a condition is true
  where it is nonzero, NaN included.
* Scalars are Python numbers evaluated by `runtime.args.eval_expr`, in their
  dtype: integers wrap, floats round, `//` and `%` floor, cdiv is ceiling
  division. Element-wise ops take scalar operands in their own dtype.
* `cast`: to a float, RNE + saturation; float -> int rounds toward zero and
  saturates to the integer range, NaN -> 0; int -> int wraps (low N bits).
* `view` reinterprets the tile's bits in row-major order.
* `dot` computes acc + a @ b in float64 (integers: exactly, in int64) and
  rounds once to acc's dtype. `sum` adds in float64 and rounds once.
* `//` and `%` on integers follow Python's floor semantics, and a zero
  divisor in any element is an error (TLError); `/` is true division.
  Shifts by an amount outside [0, 64) give 0 (<<) or shift by 63 (>>).

Memory
* Global tensors are decoded once per launch into value arrays (sub-byte and
  other packed types through the packing rule). At the end of the launch the
  elements a store touched are re-encoded and written back into the user's
  arrays; untouched elements (and the padding bits after a packed stream's
  last element) keep their exact bits. Every parameter is its own memory:
  an array passed for two parameters is read as it was before the launch.
* `load` gives 0 where any coordinate is outside [0, dim) (offsets may be
  negative); `store` and `atomic_add` drop out-of-range elements.
* Shared tensors live per block and start zeroed; a load_shared/store_shared
  outside the tensor is an error ("shared access out of range").
  `copy_async` copies at once, masked like `load`; commit_async, wait_async
  and barrier have nothing to do here.
* Grid blocks run one after another, block.x fastest, then y, then z; each
  runs the body from scratch. A grid dimension <= 0 means no blocks.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import TLError
from ..ir import vm
from ..ir.dtypes import DataType, numpy_dtype, pack_bits, unpack_bits
from ..ir.printer import format_kernel
from ..runtime.args import BoundArguments, bind_arguments, canonical_scalar, eval_expr
from .interp_values import (ELEMENT_RULES, canonical, compute_form, convert, empty_value, from_bits,
                            round_float, to_bits, wrap_int)


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    pass


# --------------------------------------------------------------- global memory


def decode_tensor(storage: np.ndarray, dt: DataType, shape: tuple[int, ...]) -> np.ndarray:
    """The canonical values of a bound global tensor."""
    if numpy_dtype(dt) is not None:
        with np.errstate(invalid="ignore"):   # signalling NaNs quietly become NaN
            return storage.astype(empty_value(dt)).reshape(shape)
    raw = storage.reshape(-1).view(np.uint8)
    return from_bits(unpack_bits(raw, dt.nbits, math.prod(shape)), dt).reshape(shape)


def encode_into(storage: np.ndarray, dt: DataType, values: np.ndarray, written: np.ndarray) -> None:
    """Write the `written` elements of `values` into the user's storage."""
    mask = written.reshape(-1)
    native = numpy_dtype(dt)
    if native is not None:
        storage.reshape(-1)[mask] = values.reshape(-1)[mask].astype(native)
        return
    raw = storage.reshape(-1).view(np.uint8)
    bits = np.array(unpack_bits(raw, dt.nbits, mask.size), dtype=np.uint64)   # a writeable copy
    bits[mask] = to_bits(values.reshape(-1)[mask], dt)
    stream = pack_bits(bits, dt.nbits)
    tail = (mask.size * dt.nbits) % 8
    if tail:   # keep the bits after the last element as they were
        keep = np.uint8((0xFF << tail) & 0xFF)
        stream[-1] = (stream[-1] & ~keep) | (raw[-1] & keep)
    raw[...] = stream


class _GlobalMemory:
    """Decoded value arrays of the launch's global tensors, decoded on first use."""

    def __init__(self, bound: BoundArguments):
        self.bound = bound
        self.values: dict = {}
        self.written: dict = {}   # GlobalTensor -> bool mask of stored elements

    def get(self, g: vm.GlobalTensor) -> np.ndarray:
        if g not in self.values:
            self.values[g] = decode_tensor(self.bound.tensors[g], g.dtype, self.bound.shape_of(g))
        return self.values[g]

    def mark_written(self, g: vm.GlobalTensor, window: tuple) -> None:
        mask = self.written.get(g)
        if mask is None:
            mask = self.written[g] = np.zeros(self.values[g].shape, bool)
        mask[window] = True

    def write_back(self) -> None:
        for g, mask in self.written.items():
            encode_into(self.bound.tensors[g], g.dtype, self.values[g], mask)


def _window(offsets: list[int], shape: tuple[int, ...], full: tuple[int, ...]):
    """(tensor slices, tile slices) of the in-range part of a tile window, or None."""
    src, dst = [], []
    for off, size, dim in zip(offsets, shape, full):
        lo, hi = max(off, 0), min(off + size, dim)
        if hi <= lo:
            return None
        src.append(slice(lo, hi))
        dst.append(slice(lo - off, hi - off))
    return tuple(src), tuple(dst)


# ----------------------------------------------------------------- execution


class _BlockInterpreter:
    """One block's run of the kernel body: its scalars, tiles and shared memory."""

    def __init__(self, kernel: vm.Kernel, bound: BoundArguments, memory: _GlobalMemory,
                 block: tuple[int, int, int]):
        self.kernel = kernel
        self.memory = memory
        self.block = block
        self.scalars = dict(bound.scalars)
        self.tiles: dict = {}   # RegisterTensor / SharedTensor -> np.ndarray

    def scalar(self, e: vm.Expr):
        return eval_expr(e, self.scalars, self.block)

    def offsets(self, offsets: tuple) -> list[int]:
        return [int(self.scalar(o)) for o in offsets]

    def operand(self, x) -> np.ndarray:
        """A tile, or a scalar as a canonical 0-d array of its dtype."""
        if isinstance(x, vm.RegisterTensor):
            return self.tiles[x]
        value = self.scalar(x)
        if x.dtype.is_float:
            return np.array(value, np.float64)
        return np.array(value & (2 ** 64 - 1), np.uint64).view(np.int64) if value >= 2 ** 63 \
            else np.array(value, np.int64)

    def set(self, out: vm.RegisterTensor, values) -> None:
        """Store an instruction's result, in out.dtype's canonical form."""
        self.tiles[out] = canonical(np.broadcast_to(values, out.shape), out.dtype)

    # ---- statements
    def run(self, body: tuple) -> None:
        for s in body:
            method = getattr(self, "exec_" + type(s).__name__, None)
            if method is None:
                raise TLError(f"interp: no rule for {type(s).__name__}")
            method(s)

    def exec_For(self, s: vm.For) -> None:
        start, stop, step = (int(self.scalar(e)) for e in (s.start, s.stop, s.step))
        if step == 0:
            raise TLError(f"interp: range step of loop '{s.var.name}' is 0")
        for i in range(start, stop, step):
            self.scalars[s.var] = i
            if not self.loop_body(s.body):
                break

    def exec_While(self, s: vm.While) -> None:
        while self.scalar(s.cond):
            if not self.loop_body(s.body):
                break

    def loop_body(self, body: tuple) -> bool:
        """Run one iteration; False when it ended with `break`."""
        try:
            self.run(body)
        except _Break:
            return False
        except _Continue:
            pass
        return True

    def exec_If(self, s: vm.If) -> None:
        self.run(s.then_body if self.scalar(s.cond) else s.else_body)

    def exec_Break(self, s: vm.Break) -> None:
        raise _Break

    def exec_Continue(self, s: vm.Continue) -> None:
        raise _Continue

    def exec_Return(self, s: vm.Return) -> None:
        raise _Return

    def exec_SetScalar(self, s: vm.SetScalar) -> None:
        self.scalars[s.var] = canonical_scalar(self.scalar(s.value), s.var.dtype)

    # ---- global memory
    def exec_Load(self, s: vm.Load) -> None:
        full = self.memory.get(s.src)
        out = np.zeros(s.out.shape, dtype=full.dtype)
        win = _window(self.offsets(s.offsets), s.out.shape, full.shape)
        if win is not None:
            out[win[1]] = full[win[0]]
        self.tiles[s.out] = out

    def _store(self, s, accumulate: bool) -> None:
        full = self.memory.get(s.dst)
        value = self.tiles[s.value]
        win = _window(self.offsets(s.offsets), value.shape, full.shape)
        if win is None:
            return
        if accumulate:
            full[win[0]] = canonical(full[win[0]] + value[win[1]], s.dst.dtype)
        else:
            full[win[0]] = value[win[1]]
        self.memory.mark_written(s.dst, win[0])

    def exec_Store(self, s: vm.Store) -> None:
        self._store(s, accumulate=False)

    def exec_AtomicAdd(self, s: vm.AtomicAdd) -> None:
        self._store(s, accumulate=True)

    # ---- shared memory
    def exec_AllocShared(self, s: vm.AllocShared) -> None:
        self.tiles[s.out] = np.zeros(s.out.shape, empty_value(s.out.dtype))

    def _shared_window(self, t: vm.SharedTensor, offsets: tuple, shape: tuple[int, ...]):
        offs = self.offsets(offsets)
        if any(o < 0 or o + n > d for o, n, d in zip(offs, shape, t.shape)):
            raise TLError(f"interp: kernel '{self.kernel.name}', block {self.block}: shared access out "
                          f"of range: %{t.name}{list(t.shape)} at offsets {offs} with shape {list(shape)}")
        return tuple(slice(o, o + n) for o, n in zip(offs, shape))

    def exec_LoadShared(self, s: vm.LoadShared) -> None:
        win = self._shared_window(s.src, s.offsets, s.out.shape)
        self.tiles[s.out] = self.tiles[s.src][win].copy()

    def exec_StoreShared(self, s: vm.StoreShared) -> None:
        win = self._shared_window(s.dst, s.offsets, s.value.shape)
        self.tiles[s.dst][win] = self.tiles[s.value]

    def exec_CopyAsync(self, s: vm.CopyAsync) -> None:
        """An immediate copy: the data is in shared memory before the next instruction."""
        full = self.memory.get(s.src)
        dst = self.tiles[s.dst]
        dst[...] = 0
        win = _window(self.offsets(s.offsets), s.dst.shape, full.shape)
        if win is not None:
            dst[win[1]] = full[win[0]]

    def exec_CommitAsync(self, s: vm.CommitAsync) -> None:
        pass   # copies complete at once

    def exec_WaitAsync(self, s: vm.WaitAsync) -> None:
        pass

    def exec_Barrier(self, s: vm.Barrier) -> None:
        pass   # one block runs at a time, as a whole

    # ---- tile creation and conversion
    def exec_Full(self, s: vm.Full) -> None:
        value = convert(self.operand(s.value), s.value.dtype, s.out.dtype)
        self.tiles[s.out] = np.broadcast_to(value, s.out.shape).copy()

    def exec_Arange(self, s: vm.Arange) -> None:
        self.set(s.out, int(self.scalar(s.start)) + np.arange(s.out.shape[0], dtype=np.int64))

    def exec_Cast(self, s: vm.Cast) -> None:
        self.tiles[s.out] = convert(self.tiles[s.x], s.x.dtype, s.out.dtype)

    def exec_View(self, s: vm.View) -> None:
        stream = pack_bits(to_bits(self.tiles[s.x].reshape(-1), s.x.dtype), s.x.dtype.nbits)
        bits = unpack_bits(stream, s.out.dtype.nbits, s.out.size)
        self.tiles[s.out] = from_bits(bits, s.out.dtype).reshape(s.out.shape)

    def exec_Annotate(self, s: vm.Annotate) -> None:
        self.tiles[s.out] = self.tiles[s.x]   # tiles are never modified in place

    def exec_ConvertLayout(self, s: vm.ConvertLayout) -> None:
        self.tiles[s.out] = self.tiles[s.x]   # the values do not depend on the layout

    def exec_Assign(self, s: vm.Assign) -> None:
        self.tiles[s.out] = self.tiles[s.x]

    # ---- compute
    def exec_Dot(self, s: vm.Dot) -> None:
        a, b, acc = self.tiles[s.a], self.tiles[s.b], self.tiles[s.acc]
        if s.acc.dtype.is_float:
            a = compute_form(a, s.a.dtype).astype(np.float64)
            b = compute_form(b, s.b.dtype).astype(np.float64)
            self.tiles[s.out] = round_float(acc + a @ b, s.out.dtype)
        elif s.a.dtype.is_float:
            raise TLError(f"interp: dot of {s.a.dtype.name} tiles into an integer accumulator "
                          f"({s.acc.dtype.name})")
        else:
            # int64 products and sums wrap modulo 2^64, which the final wrap keeps.
            with np.errstate(all="ignore"):
                self.tiles[s.out] = wrap_int(acc + a @ b, s.out.dtype)

    def exec_Elementwise(self, s: vm.Elementwise) -> None:
        args = [compute_form(self.operand(a), a.dtype) for a in s.args]
        with np.errstate(all="ignore"):
            self.set(s.out, ELEMENT_RULES[s.op](s, *args))

    def exec_Reduce(self, s: vm.Reduce) -> None:
        x = compute_form(self.tiles[s.x], s.x.dtype)
        reducer = {vm.ReduceOp.SUM: np.sum, vm.ReduceOp.MAX: np.max, vm.ReduceOp.MIN: np.min}[s.op]
        with np.errstate(all="ignore"):
            self.set(s.out, reducer(x, axis=s.dim, keepdims=s.keepdim))

    # ---- shapes
    def exec_Reshape(self, s: vm.Reshape) -> None:
        self.tiles[s.out] = self.tiles[s.x].reshape(s.out.shape)

    def exec_Transpose(self, s: vm.Transpose) -> None:
        self.tiles[s.out] = np.ascontiguousarray(self.tiles[s.x].transpose(s.perm))

    def exec_BroadcastTo(self, s: vm.BroadcastTo) -> None:
        self.tiles[s.out] = np.broadcast_to(self.tiles[s.x], s.out.shape).copy()

    def exec_Concat(self, s: vm.Concat) -> None:
        self.tiles[s.out] = np.concatenate([self.tiles[p] for p in s.parts], axis=s.dim)

    def exec_Slice(self, s: vm.Slice) -> None:
        win = tuple(slice(a, a + n) for a, n in zip(s.starts, s.out.shape))
        self.tiles[s.out] = self.tiles[s.x][win].copy()


# ------------------------------------------------------------------- entry


def _grid(kernel: vm.Kernel, bound: BoundArguments) -> tuple[int, int, int]:
    if len(kernel.grid) > 3:
        raise TLError(f"{kernel.name}: grid has {len(kernel.grid)} dimensions, at most 3")
    dims = [int(eval_expr(g, bound.scalars)) for g in kernel.grid]
    return tuple(dims + [1] * (3 - len(dims)))


def run_kernel(kernel: vm.Kernel, bound: BoundArguments) -> None:
    """Run every block of the grid; outputs land in place in the bound arrays."""
    gx, gy, gz = _grid(kernel, bound)
    memory = _GlobalMemory(bound)
    if min(gx, gy, gz) > 0:
        for z in range(gz):
            for y in range(gy):
                for x in range(gx):
                    block = _BlockInterpreter(kernel, bound, memory, (x, y, z))
                    try:
                        block.run(kernel.body)
                    except _Return:
                        pass
    memory.write_back()


class InterpKernel:
    """A kernel compiled for target "interp": calling it binds the arguments
    (`runtime.args.bind_arguments`) and runs `run_kernel`."""

    target = "interp"

    def __init__(self, kernel: vm.Kernel):
        self.kernel = kernel

    @property
    def name(self) -> str:
        return self.kernel.name

    def __call__(self, *args, **kwargs) -> None:
        run_kernel(self.kernel, bind_arguments(self.kernel, args, kwargs))

    def source(self, stage: str) -> str:
        """"vm" is the program the interpreter runs; it has no other stages."""
        if stage == "vm":
            return format_kernel(self.kernel)
        raise TLError(f"target 'interp' has only the stage 'vm' (it runs the VM IR directly), "
                      f"not '{stage}'")

    def __repr__(self) -> str:
        return f"<InterpKernel {self.kernel.name}>"
