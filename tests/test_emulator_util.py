"""Helpers (no tests) for the emulator tests: build small thread kernels by hand.

Other test files may import them: `from test_emulator_util import KernelBuilder, run_lanes`."""
import numpy as np

from tvm_lite.backends.emulator import run_thread_kernel
from tvm_lite.ir import thread as T


class KernelBuilder:
    """Collects statements and registers for a hand-written thread kernel."""

    def __init__(self, name="k", threads=32, shared_bytes=0):
        self.name, self.threads, self.shared_bytes = name, threads, shared_bytes
        self.params: list[T.Reg] = []
        self.ra = T.RegAllocator()
        self.body: list = []
        self.tid = self.reg("tid", T.u32)
        self.emit(T.SpecialReg(self.tid, T.SReg.TID_X))

    def param(self, name, type_=T.u64) -> T.Reg:
        r = T.Reg(name, type_)
        self.ra.reserve(name)
        self.params.append(r)
        return r

    def reg(self, hint, type_) -> T.Reg:
        return self.ra(hint, type_)

    def emit(self, *stmts):
        self.body.extend(stmts)

    def addr(self, base: T.Reg, index: T.Operand, scale: int) -> T.Reg:
        """base + index * scale as a u64 address (index: a u32/s32 register)."""
        off, out = self.reg("off", T.u64), self.reg("addr", T.u64)
        self.emit(T.Binary(T.BinOp.MUL_WIDE, off, index, T.Imm(scale, index.type)),
                  T.Binary(T.BinOp.ADD, out, base, off))
        return out

    def load_lane(self, base: T.Reg, type_: T.HWType, count=1) -> list:
        """Load `count` consecutive values of type_ for this thread (element tid*count ...)."""
        regs = [self.reg("v", type_) for _ in range(count)]
        a = self.addr(base, self.tid, type_.nbits // 8 * count)
        self.emit(T.Load(tuple(regs), T.Space.GLOBAL, a))
        return regs

    def store_lane(self, base: T.Reg, regs, type_=None):
        regs = list(regs)
        t = type_ or regs[0].type
        a = self.addr(base, self.tid, t.nbits // 8 * len(regs))
        self.emit(T.Store(T.Space.GLOBAL, a, 0, tuple(regs)))

    def kernel(self) -> T.ThreadKernel:
        return T.ThreadKernel(self.name, tuple(self.params), self.threads, self.shared_bytes, tuple(self.body))


def run_lanes(build, inputs, out_type: T.HWType, threads=128, out_count=1, grid=1):
    """Run a one-statement-group kernel per lane: `inputs` is a list of (array,
    HWType) with one element per thread; `build(kb, in_regs) -> out_regs`
    emits the statements. Returns the output array (threads * out_count values
    of out_type's raw bits, as the typed numpy dtype)."""
    from tvm_lite.backends.emulator_values import typed_dtype
    kb = KernelBuilder("lanes", threads)
    arrays = {}
    regs = []
    for i, (arr, t) in enumerate(inputs):
        p = kb.param(f"in{i}")
        arrays[p.name] = np.ascontiguousarray(arr)
        regs.append(kb.load_lane(p, t)[0])
    out_p = kb.param("out")
    outs = build(kb, regs)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    kb.store_lane(out_p, outs, out_type)
    out = np.zeros(threads * out_count, typed_dtype(out_type))
    arrays["out"] = out
    run_thread_kernel(kb.kernel(), grid, arrays)
    return out
