"""The numpy reference interpreter: the semantic oracle for every backend.

It executes VM IR directly, one block at a time, one instruction at a time,
with whole tiles as numpy arrays. It favours clarity over speed; every rule
below is the language's rule, and other backends are tested against it.

Values
* Integer tiles are int64 arrays; float tiles are float64 arrays whose values
  are exactly representable in the tile's dtype. After every instruction a
  float result is rounded to its dtype (round to nearest even, saturating to
  ±max); an integer result wraps to the dtype's width (two's complement for
  iN, modulo 2^N for uN). Comparisons produce u1 (0 or 1).
* `cast` to a float rounds to nearest even and saturates; float -> int
  rounds toward zero and saturates to the integer range (NaN -> 0);
  int -> int wraps.
* `view` reinterprets the tile's bits in row-major order.
* `dot` computes acc + a @ b in float64 and rounds once to acc's dtype.
* `//` and `%` on integers follow Python's floor semantics; `/` is true
  division.

Memory
* Global tensors are decoded once per launch into value arrays (sub-byte
  tensors through the packing rule), and written back, re-encoded, at the end
  of the launch if a store touched them.
* `load` gives 0 where any coordinate is outside [0, dim); `store` and
  `atomic_add` drop out-of-range elements.
* Shared tensors live per block; out-of-range shared accesses are errors.
  `copy_async` copies at once (masked like `load`); commit, wait and barrier
  have nothing to do here.
* Grid blocks run in order, block.x fastest.
"""
from __future__ import annotations

import numpy as np

from ..errors import TLError
from ..ir import vm
from ..ir.dtypes import DataType, decode, encode, numpy_dtype, pack, pack_bits, unpack, unpack_bits
from ..runtime.args import BoundArguments, bind_arguments, eval_expr


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    pass


# ------------------------------------------------------------- value rounding


def round_to(values: np.ndarray, dt: DataType) -> np.ndarray:
    """Canonical value array of dtype dt: floats rounded (RNE, saturating),
    integers wrapped."""
    values = np.asarray(values)
    if dt.is_float:
        values = values.astype(np.float64)
        if dt.name == "f64":
            return values
        if dt.name == "f32":
            out = values.astype(np.float32).astype(np.float64)
            # numpy overflows to inf; TL saturates finite values.
            over = np.isinf(out) & np.isfinite(values)
            if over.any():
                out[over] = np.copysign(dt.max, values[over])
            return out
        return decode(encode(values, dt), dt).astype(np.float64)
    values = values.astype(np.int64) if values.dtype != np.int64 else values
    if dt.nbits >= 64:
        return values
    mask = np.int64((1 << dt.nbits) - 1)
    wrapped = values & mask
    if dt.is_signed:
        sign = np.int64(1 << (dt.nbits - 1))
        wrapped = np.where(wrapped & sign, wrapped - (sign << 1), wrapped)
    return wrapped


def convert(values: np.ndarray, src: DataType, dst: DataType) -> np.ndarray:
    """The `cast` rule (see module docstring)."""
    if dst.is_float or not src.is_float:
        return round_to(values, dst)
    v = np.nan_to_num(np.trunc(values.astype(np.float64)), nan=0.0)
    return np.clip(v, dst.min, dst.max).astype(np.int64)


def to_bits(values: np.ndarray, dt: DataType) -> np.ndarray:
    """Bit patterns (uint64) of a canonical value array."""
    if dt.is_float:
        return encode(values, dt).astype(np.uint64)
    return (values.astype(np.int64) & np.int64(dt.mask if dt.nbits < 64 else -1)).astype(np.uint64)


# --------------------------------------------------------------- global memory


class _GlobalMemory:
    """Decoded value arrays of the launch's global tensors."""

    def __init__(self, bound: BoundArguments):
        self.bound = bound
        self.values: dict = {}
        self.dirty: set = set()

    def get(self, g: vm.GlobalTensor) -> np.ndarray:
        if g not in self.values:
            storage = self.bound.tensors[g]
            shape = self.bound.shape_of(g)
            if numpy_dtype(g.dtype) is not None:
                v = storage.astype(np.float64 if g.dtype.is_float else np.int64)
            else:
                v = unpack(storage.view(np.uint8).reshape(-1), g.dtype, shape)
                v = v.astype(np.float64 if g.dtype.is_float else np.int64)
            self.values[g] = v.reshape(shape)
        return self.values[g]

    def mark_dirty(self, g: vm.GlobalTensor) -> None:
        self.dirty.add(g)

    def write_back(self) -> None:
        for g in self.dirty:
            storage = self.bound.tensors[g]
            v = self.values[g]
            native = numpy_dtype(g.dtype)
            if native is not None:
                storage[...] = v.astype(native)
            else:
                storage.view(np.uint8).reshape(-1)[...] = pack(v.reshape(-1), g.dtype)


def _window(offsets: list[int], shape: tuple[int, ...], full: tuple[int, ...]):
    """Slices of the in-range part of a tile window, in tensor and tile coords."""
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
    def __init__(self, kernel: vm.Kernel, bound: BoundArguments, memory: _GlobalMemory,
                 block: tuple[int, int, int]):
        self.kernel = kernel
        self.memory = memory
        self.block = block
        self.scalars = dict(bound.scalars)
        self.tiles: dict = {}   # RegisterTensor / SharedTensor -> np.ndarray

    def scalar(self, e: vm.Expr):
        return eval_expr(e, self.scalars, self.block)

    def operand(self, x):
        if isinstance(x, vm.RegisterTensor):
            return self.tiles[x]
        return np.float64(self.scalar(x)) if x.dtype.is_float else np.int64(self.scalar(x))

    def set(self, out: vm.RegisterTensor, values: np.ndarray) -> None:
        values = np.broadcast_to(values, out.shape)
        self.tiles[out] = round_to(values, out.dtype).reshape(out.shape)

    # ---- statements
    def run(self, body: tuple) -> None:
        for s in body:
            method = getattr(self, "exec_" + type(s).__name__, None)
            if method is None:
                raise TLError(f"interp: no rule for {type(s).__name__}")
            method(s)

    def exec_For(self, s: vm.For) -> None:
        start, stop, step = self.scalar(s.start), self.scalar(s.stop), self.scalar(s.step)
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

    def exec_Break(self, s) -> None:
        raise _Break

    def exec_Continue(self, s) -> None:
        raise _Continue

    def exec_Return(self, s) -> None:
        raise _Return

    def exec_SetScalar(self, s: vm.SetScalar) -> None:
        self.scalars[s.var] = self.scalar(s.value)

    # ---- global memory
    def exec_Load(self, s: vm.Load) -> None:
        full = self.memory.get(s.src)
        out = np.zeros(s.out.shape, dtype=full.dtype)
        win = _window([self.scalar(o) for o in s.offsets], s.out.shape, full.shape)
        if win is not None:
            out[win[1]] = full[win[0]]
        self.tiles[s.out] = out

    def _store(self, s, accumulate: bool) -> None:
        full = self.memory.get(s.dst)
        value = self.tiles[s.value]
        win = _window([self.scalar(o) for o in s.offsets], value.shape, full.shape)
        if win is None:
            return
        if accumulate:
            full[win[0]] = round_to(full[win[0]] + value[win[1]], s.dst.dtype)
        else:
            full[win[0]] = value[win[1]]
        self.memory.mark_dirty(s.dst)

    def exec_Store(self, s: vm.Store) -> None:
        self._store(s, accumulate=False)

    def exec_AtomicAdd(self, s: vm.AtomicAdd) -> None:
        self._store(s, accumulate=True)

    # ---- shared memory
    def exec_AllocShared(self, s: vm.AllocShared) -> None:
        self.tiles[s.out] = np.zeros(s.out.shape, np.float64 if s.out.dtype.is_float else np.int64)

    def _shared_window(self, t: vm.SharedTensor, offsets: tuple, shape: tuple[int, ...]):
        offs = [self.scalar(o) for o in offsets]
        if any(o < 0 or o + n > d for o, n, d in zip(offs, shape, t.shape)):
            raise TLError(f"interp: shared access out of range: %{t.name}{list(t.shape)} "
                          f"at offsets {offs} with shape {list(shape)}")
        return tuple(slice(o, o + n) for o, n in zip(offs, shape))

    def exec_LoadShared(self, s: vm.LoadShared) -> None:
        win = self._shared_window(s.src, s.offsets, s.out.shape)
        self.tiles[s.out] = self.tiles[s.src][win].copy()

    def exec_StoreShared(self, s: vm.StoreShared) -> None:
        win = self._shared_window(s.dst, s.offsets, s.value.shape)
        self.tiles[s.dst][win] = self.tiles[s.value]

    def exec_CopyAsync(self, s: vm.CopyAsync) -> None:
        full = self.memory.get(s.src)
        dst = self.tiles[s.dst]
        dst[...] = 0
        win = _window([self.scalar(o) for o in s.offsets], s.dst.shape, full.shape)
        if win is not None:
            dst[win[1]] = full[win[0]]

    def exec_CommitAsync(self, s) -> None:
        pass

    def exec_WaitAsync(self, s) -> None:
        pass

    def exec_Barrier(self, s) -> None:
        pass

    # ---- tile creation and conversion
    def exec_Full(self, s: vm.Full) -> None:
        self.set(s.out, self.operand(s.value))

    def exec_Arange(self, s: vm.Arange) -> None:
        self.set(s.out, self.scalar(s.start) + np.arange(s.out.shape[0], dtype=np.int64))

    def exec_Cast(self, s: vm.Cast) -> None:
        self.tiles[s.out] = convert(self.tiles[s.x], s.x.dtype, s.out.dtype)

    def exec_View(self, s: vm.View) -> None:
        stream = pack_bits(to_bits(self.tiles[s.x].reshape(-1), s.x.dtype), s.x.dtype.nbits)
        bits = unpack_bits(stream, s.out.dtype.nbits, s.out.size).astype(np.uint64)
        if s.out.dtype.is_float:
            values = decode(bits, s.out.dtype)
        else:
            values = round_to(bits.astype(np.int64), s.out.dtype)
        self.tiles[s.out] = values.reshape(s.out.shape)

    def exec_Annotate(self, s: vm.Annotate) -> None:
        self.tiles[s.out] = self.tiles[s.x]

    def exec_Assign(self, s: vm.Assign) -> None:
        self.tiles[s.out] = self.tiles[s.x].copy()

    # ---- compute
    def exec_Dot(self, s: vm.Dot) -> None:
        a, b, acc = self.tiles[s.a], self.tiles[s.b], self.tiles[s.acc]
        if s.acc.dtype.is_float:
            self.set(s.out, acc + a.astype(np.float64) @ b.astype(np.float64))
        else:
            self.set(s.out, acc + a.astype(np.int64) @ b.astype(np.int64))

    def exec_Elementwise(self, s: vm.Elementwise) -> None:
        args = [self.operand(a) for a in s.args]
        with np.errstate(all="ignore"):
            self.set(s.out, _ELEMENT_RULES[s.op](s, *args))

    def exec_Reduce(self, s: vm.Reduce) -> None:
        x = self.tiles[s.x]
        reducer = {vm.ReduceOp.SUM: np.sum, vm.ReduceOp.MAX: np.max, vm.ReduceOp.MIN: np.min}[s.op]
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


def _int_only(s: vm.Elementwise) -> None:
    if s.out.dtype.is_float:
        raise TLError(f"interp: '{s.op.value}' needs integer operands")


def _floor_div(s, a, b):
    if s.out.dtype.is_float:
        return np.floor(a / b)
    if np.any(np.asarray(b) == 0):
        raise TLError("interp: integer division by zero")
    return np.floor_divide(a, b)


def _mod(s, a, b):
    if not s.out.dtype.is_float and np.any(np.asarray(b) == 0):
        raise TLError("interp: integer modulo by zero")
    return np.mod(a, b)


def _shift(left: bool):
    """TL's shifts on int64 tiles: an amount outside [0, 64) gives 0 for <<
    and shifts by 63 for >>, as on every backend."""
    def rule(s, a, b):
        _int_only(s)
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        inside = (b >= 0) & (b < 64)
        amount = np.where(inside, b, 63)
        if left:
            return np.where(inside, np.left_shift(a, amount), 0)
        return np.right_shift(a, amount)
    return rule


def _integer_op(fn):
    def rule(s, a, b):
        _int_only(s)
        return fn(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return rule


def _rsqrt(s, a):
    return 1.0 / np.sqrt(a)


_ELEMENT_RULES = {
    vm.ElementOp.ADD: lambda s, a, b: a + b,
    vm.ElementOp.SUB: lambda s, a, b: a - b,
    vm.ElementOp.MUL: lambda s, a, b: a * b,
    vm.ElementOp.DIV: lambda s, a, b: np.true_divide(a, b),
    vm.ElementOp.FLOOR_DIV: _floor_div,
    vm.ElementOp.MOD: _mod,
    vm.ElementOp.BIT_AND: _integer_op(np.bitwise_and),
    vm.ElementOp.BIT_OR: _integer_op(np.bitwise_or),
    vm.ElementOp.BIT_XOR: _integer_op(np.bitwise_xor),
    vm.ElementOp.SHL: _shift(left=True),
    vm.ElementOp.SHR: _shift(left=False),
    vm.ElementOp.LT: lambda s, a, b: np.less(a, b),
    vm.ElementOp.LE: lambda s, a, b: np.less_equal(a, b),
    vm.ElementOp.GT: lambda s, a, b: np.greater(a, b),
    vm.ElementOp.GE: lambda s, a, b: np.greater_equal(a, b),
    vm.ElementOp.EQ: lambda s, a, b: np.equal(a, b),
    vm.ElementOp.NE: lambda s, a, b: np.not_equal(a, b),
    vm.ElementOp.AND: lambda s, a, b: np.logical_and(a, b),
    vm.ElementOp.OR: lambda s, a, b: np.logical_or(a, b),
    vm.ElementOp.MIN: lambda s, a, b: np.minimum(a, b),
    vm.ElementOp.MAX: lambda s, a, b: np.maximum(a, b),
    vm.ElementOp.NEG: lambda s, a: -a,
    vm.ElementOp.INVERT: lambda s, a: np.invert(np.asarray(a, dtype=np.int64)),
    vm.ElementOp.NOT: lambda s, a: np.logical_not(a),
    vm.ElementOp.ABS: lambda s, a: np.abs(a),
    vm.ElementOp.EXP: lambda s, a: np.exp(a),
    vm.ElementOp.LOG: lambda s, a: np.log(a),
    vm.ElementOp.SQRT: lambda s, a: np.sqrt(a),
    vm.ElementOp.RSQRT: _rsqrt,
    vm.ElementOp.WHERE: lambda s, c, a, b: np.where(np.asarray(c) != 0, a, b),
}


# ------------------------------------------------------------------- entry


def _grid(kernel: vm.Kernel, bound: BoundArguments) -> tuple[int, int, int]:
    dims = [int(eval_expr(g, bound.scalars)) for g in kernel.grid] or [1]
    if len(dims) > 3:
        raise TLError(f"{kernel.name}: grid has {len(dims)} dimensions, at most 3")
    return tuple(dims + [1] * (3 - len(dims)))


def run_kernel(kernel: vm.Kernel, bound: BoundArguments) -> None:
    """Run every block of the grid; outputs land in the bound arrays."""
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
    """A kernel compiled for target "interp": calling it runs `run_kernel`."""

    target = "interp"

    def __init__(self, kernel: vm.Kernel):
        self.kernel = kernel

    @property
    def name(self) -> str:
        return self.kernel.name

    def __call__(self, *args, **kwargs) -> None:
        run_kernel(self.kernel, bind_arguments(self.kernel, args, kwargs))

    def source(self, stage: str) -> str:
        raise TLError(f"target 'interp' produces no '{stage}' code; it runs the VM IR directly")
