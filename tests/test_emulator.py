"""The thread-IR emulator end to end on hand-written kernels: a vector add with
a predicated tail, divergent control flow, cp.async, atomics, and the planted
hazards it must catch (missing barrier, out of bounds, misaligned vector
access, cp.async read before wait, divergent barrier)."""
import numpy as np
import pytest

from test_emulator_util import KernelBuilder
from tvm_lite.backends.emulator import EmulatedKernel, HazardError, run_thread_kernel
from tvm_lite.errors import TLError, TLLaunchError
from tvm_lite.ir import thread as T


def _vector_add(threads=128, vec=4):
    """c[i] = a[i] + b[i]; each thread handles `vec` consecutive f32 with one
    ld.v4 when the whole vector is in range, else element by element (tail)."""
    kb = KernelBuilder("vadd", threads)
    pa, pb, pc = kb.param("a"), kb.param("b"), kb.param("c")
    pn = kb.param("n", T.s32)
    cta, first, full, p = kb.reg("cta", T.u32), kb.reg("i", T.s32), kb.reg("full", T.pred), kb.reg("p", T.pred)
    last = kb.reg("last", T.s32)
    kb.emit(T.SpecialReg(cta, T.SReg.CTAID_X),
            T.Fma(first, cta, T.Imm(threads * vec, T.u32), T.Imm(0, T.u32)),
            T.Fma(first, kb.tid, T.Imm(vec, T.u32), first),
            T.Binary(T.BinOp.ADD, last, first, T.Imm(vec - 1, T.s32)),
            T.Setp(T.Cmp.LT, full, last, pn))
    xs = [kb.reg("x", T.f32) for _ in range(vec)]
    ys = [kb.reg("y", T.f32) for _ in range(vec)]
    aa, ab, ac = kb.addr(pa, first, 4), kb.addr(pb, first, 4), kb.addr(pc, first, 4)
    vector_path = [T.Load(tuple(xs), T.Space.GLOBAL, aa), T.Load(tuple(ys), T.Space.GLOBAL, ab)]
    vector_path += [T.Binary(T.BinOp.ADD, x, x, y) for x, y in zip(xs, ys)]
    vector_path += [T.Store(T.Space.GLOBAL, ac, 0, tuple(xs))]
    tail = []
    for k in range(vec):
        idx = kb.reg("k", T.s32)
        tail += [T.Binary(T.BinOp.ADD, idx, first, T.Imm(k, T.s32)), T.Setp(T.Cmp.LT, p, idx, pn),
                 T.Mov(xs[k], T.Imm(0.0, T.f32)),
                 T.Load((xs[k],), T.Space.GLOBAL, aa, 4 * k, pred=p),
                 T.Load((ys[k],), T.Space.GLOBAL, ab, 4 * k, pred=p),
                 T.Binary(T.BinOp.ADD, xs[k], xs[k], ys[k]),
                 T.Store(T.Space.GLOBAL, ac, 4 * k, (xs[k],), pred=p)]
    kb.emit(T.If(full, tuple(vector_path), tuple(tail)))
    return kb.kernel()


@pytest.mark.parametrize("n", [1, 511, 512, 1000, 1027])
def test_vector_add_with_predicated_tail(n, rng):
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    c = np.full(n + 8, 7.0, np.float32)          # 8 guard elements past the end
    kernel = _vector_add()
    run_thread_kernel(kernel, -(-n // 512), dict(a=a, b=b, c=c), dict(n=n))
    np.testing.assert_array_equal(c[:n], a + b)
    assert (c[n:] == 7.0).all()
    text = T.format_thread_kernel(kernel)
    assert "ld.global.v4.f32" in text


def test_out_of_bounds_global_load_is_caught(rng):
    a = rng.standard_normal(100).astype(np.float32)
    b = rng.standard_normal(100).astype(np.float32)
    c = np.zeros(100, np.float32)
    kb = KernelBuilder("oob", 128)
    pa, pc = kb.param("a"), kb.param("c")
    x = kb.load_lane(pa, T.f32)[0]          # no bounds check: threads 100..127 run off the end
    kb.store_lane(pc, [x])
    with pytest.raises(HazardError, match=r"out-of-bounds global access of 4 bytes .*'a' \(400 bytes\).*thread 100"):
        run_thread_kernel(kb.kernel(), 1, dict(a=a, c=c))
    del b


def test_out_of_bounds_shared_store_is_caught():
    kb = KernelBuilder("oob_shared", 32, shared_bytes=64)
    base, addr = kb.reg("s", T.u32), kb.reg("a", T.u32)
    kb.emit(T.SharedBase(base), T.Fma(addr, kb.tid, T.Imm(4, T.u32), base),
            T.Store(T.Space.SHARED, addr, 0, (T.Imm(1, T.b32),)))
    with pytest.raises(HazardError, match="out-of-bounds shared access.*thread 16"):
        run_thread_kernel(kb.kernel(), 1)


def test_misaligned_v4_load_is_caught(rng):
    a = rng.standard_normal(1024).astype(np.float32)
    kb = KernelBuilder("misaligned", 32)
    pa = kb.param("a")
    addr = kb.addr(pa, kb.tid, 16)
    regs = [kb.reg("x", T.f32) for _ in range(4)]
    kb.emit(T.Load(tuple(regs), T.Space.GLOBAL, addr, 4))        # +4 bytes: not 16-aligned
    with pytest.raises(HazardError, match=r"misaligned 16-byte access .*% 16 = 4.*thread 0.*ld.global.v4"):
        run_thread_kernel(kb.kernel(), 1, dict(a=a))


def _neighbour_exchange(barrier: bool, threads=64):
    """Each thread writes shared[tid], then reads shared[(tid + 1) % threads]."""
    kb = KernelBuilder("exchange", threads, shared_bytes=4 * threads)
    pin, pout = kb.param("x"), kb.param("out")
    x = kb.load_lane(pin, T.b32)[0]
    base, mine, nxt, other, y = (kb.reg("s", T.u32), kb.reg("m", T.u32), kb.reg("n", T.u32),
                                 kb.reg("o", T.u32), kb.reg("y", T.b32))
    kb.emit(T.SharedBase(base), T.Fma(mine, kb.tid, T.Imm(4, T.u32), base),
            T.Store(T.Space.SHARED, mine, 0, (x,)))
    if barrier:
        kb.emit(T.Barrier())
    kb.emit(T.Binary(T.BinOp.ADD, nxt, kb.tid, T.Imm(1, T.u32)),
            T.Binary(T.BinOp.REM, nxt, nxt, T.Imm(threads, T.u32)),
            T.Fma(other, nxt, T.Imm(4, T.u32), base),
            T.Load((y,), T.Space.SHARED, other))
    kb.store_lane(pout, [y])
    return kb.kernel()


def test_missing_barrier_is_caught(rng):
    x = rng.integers(0, 1 << 32, 64, dtype=np.uint64).astype(np.uint32)
    out = np.zeros(64, np.uint32)
    run_thread_kernel(_neighbour_exchange(True), 1, dict(x=x, out=out))
    np.testing.assert_array_equal(out, np.roll(x, -1))
    with pytest.raises(HazardError, match=r"last written by thread 1 with no bar.sync.*thread 0"):
        run_thread_kernel(_neighbour_exchange(False), 1, dict(x=x, out=out))


def test_write_after_read_without_barrier_is_caught():
    """Thread t reads shared[t+1], then (no barrier) thread t+1 overwrites it."""
    kb = KernelBuilder("war", 32, shared_bytes=256)
    base, a, b, y = kb.reg("s", T.u32), kb.reg("a", T.u32), kb.reg("b", T.u32), kb.reg("y", T.b32)
    kb.emit(T.SharedBase(base), T.Fma(a, kb.tid, T.Imm(4, T.u32), base),
            T.Store(T.Space.SHARED, a, 0, (T.Imm(0, T.b32),)), T.Barrier(),
            T.Load((y,), T.Space.SHARED, a, 4),
            T.Store(T.Space.SHARED, a, 0, (T.Imm(5, T.b32),)))
    with pytest.raises(HazardError, match="write after read"):
        run_thread_kernel(kb.kernel(), 1)
    del b


def _cp_async_kernel(wait: bool, barrier: bool, threads=32):
    """Each thread cp.asyncs 16 bytes of `src` into shared, commits, (waits),
    (bar.sync), then reads its neighbour's 16 bytes and stores them."""
    kb = KernelBuilder("cp_async", threads, shared_bytes=16 * threads)
    psrc, pout = kb.param("src"), kb.param("out")
    base, dst, nxt, other = kb.reg("s", T.u32), kb.reg("d", T.u32), kb.reg("n", T.u32), kb.reg("o", T.u32)
    src = kb.addr(psrc, kb.tid, 16)
    kb.emit(T.SharedBase(base), T.Fma(dst, kb.tid, T.Imm(16, T.u32), base),
            T.CpAsync(dst, src, 16), T.CpAsyncCommit())
    if wait:
        kb.emit(T.CpAsyncWait(0))
    if barrier:
        kb.emit(T.Barrier())
    words = [kb.reg("w", T.b32) for _ in range(4)]
    kb.emit(T.Binary(T.BinOp.XOR, nxt, kb.tid, T.Imm(1, T.u32)),
            T.Fma(other, nxt, T.Imm(16, T.u32), base),
            T.Load(tuple(words), T.Space.SHARED, other))
    kb.store_lane(pout, words)
    return kb.kernel()


def test_cp_async_read_before_wait_is_caught(rng):
    src = rng.integers(0, 1 << 32, 128, dtype=np.uint64).astype(np.uint32)
    out = np.zeros(128, np.uint32)
    run_thread_kernel(_cp_async_kernel(True, True), 1, dict(src=src, out=out))
    np.testing.assert_array_equal(out.reshape(32, 4), src.reshape(32, 4)[np.arange(32) ^ 1])
    with pytest.raises(HazardError, match="cp.async into it is still in flight"):
        run_thread_kernel(_cp_async_kernel(False, True), 1, dict(src=src, out=out))
    # waited, but another thread's copy needs a barrier before it is visible
    with pytest.raises(HazardError, match="missing barrier"):
        run_thread_kernel(_cp_async_kernel(True, False), 1, dict(src=src, out=out))


def test_cp_async_groups_and_zero_fill(rng):
    """Two commit groups; wait_group 1 lands only the first; src-size zero-fills."""
    kb = KernelBuilder("groups", 32, shared_bytes=32 * 32)
    psrc, pout = kb.param("src"), kb.param("out")
    base, d0, d1 = kb.reg("s", T.u32), kb.reg("d0", T.u32), kb.reg("d1", T.u32)
    src = kb.addr(psrc, kb.tid, 16)
    kb.emit(T.SharedBase(base), T.Fma(d0, kb.tid, T.Imm(32, T.u32), base),
            T.Binary(T.BinOp.ADD, d1, d0, T.Imm(16, T.u32)),
            T.CpAsync(d0, src, 16, T.Imm(8, T.u32)), T.CpAsyncCommit(),
            T.CpAsync(d1, src, 16), T.CpAsyncCommit(),
            T.CpAsyncWait(1))
    w0 = [kb.reg("w", T.b32) for _ in range(4)]
    w1 = [kb.reg("w", T.b32) for _ in range(4)]
    kb.emit(T.Load(tuple(w0), T.Space.SHARED, d0))            # first group landed: fine
    kb.store_lane(pout, w0)
    good = kb.kernel()
    src_data = rng.integers(1, 1 << 32, 128, dtype=np.uint64).astype(np.uint32)
    out = np.zeros(128, np.uint32)
    run_thread_kernel(good, 1, dict(src=src_data, out=out))
    want = src_data.reshape(32, 4).copy()
    want[:, 2:] = 0                                           # bytes 8..15 zero-filled
    np.testing.assert_array_equal(out.reshape(32, 4), want)
    kb.body.insert(len(kb.body) - 3, T.Load(tuple(w1), T.Space.SHARED, d1))   # second group: not yet
    with pytest.raises(HazardError, match="still in flight"):
        run_thread_kernel(kb.kernel(), 1, dict(src=src_data, out=out))


def test_divergent_barrier_is_caught():
    kb = KernelBuilder("div_bar", 64)
    p = kb.reg("p", T.pred)
    kb.emit(T.Setp(T.Cmp.LT, p, kb.tid, T.Imm(40, T.u32)), T.If(p, (T.Barrier(),)))
    with pytest.raises(HazardError, match=r"divergent barrier: bar.sync reached by 40 of 64.*thread 40"):
        run_thread_kernel(kb.kernel(), 1)


def test_divergent_loops_break_continue_return(rng):
    """Per thread: s = sum of i in [0, tid) with i % 3 != 0, stopping once s > limit;
    threads with tid % 5 == 4 return before storing."""
    kb = KernelBuilder("loops", 64)
    pout, plim = kb.param("out"), kb.param("limit", T.s32)
    s, i, j, r, p, q = (kb.reg("s", T.s32), kb.reg("i", T.s32), kb.reg("j", T.s32), kb.reg("r", T.s32),
                        kb.reg("p", T.pred), kb.reg("q", T.pred))
    kb.emit(T.Mov(s, T.Imm(0, T.s32)),
            T.For(i, T.Imm(0, T.s32), T.Reg(kb.tid.name, T.u32), 1, (
                T.Binary(T.BinOp.REM, r, i, T.Imm(3, T.s32)),
                T.Setp(T.Cmp.EQ, p, r, T.Imm(0, T.s32)),
                T.Continue(p),
                T.Binary(T.BinOp.ADD, s, s, i),
                T.Setp(T.Cmp.GT, q, s, plim),
                T.Break(q),
            )),
            # the same with Loop: count down j from tid to 0, skipping multiples of 4
            T.Mov(j, T.Reg(kb.tid.name, T.u32)),
            T.Loop((
                T.Setp(T.Cmp.LE, p, j, T.Imm(0, T.s32)), T.Break(p),
                T.Binary(T.BinOp.SUB, j, j, T.Imm(1, T.s32)),
                T.Binary(T.BinOp.AND, r, j, T.Imm(3, T.s32)),
                T.Setp(T.Cmp.EQ, q, r, T.Imm(0, T.s32)),
                T.If(q, (T.Continue(),)),
                T.Binary(T.BinOp.ADD, s, s, T.Imm(1000, T.s32)),
            )),
            T.Binary(T.BinOp.REM, r, kb.tid, T.Imm(5, T.u32)),
            T.Setp(T.Cmp.EQ, p, r, T.Imm(4, T.s32)),
            T.If(p, (T.Return(),)))
    kb.store_lane(pout, [s])
    limit = int(rng.integers(50, 500))
    out = np.full(64, -1, np.int32)
    run_thread_kernel(kb.kernel(), 1, dict(out=out), dict(limit=limit))
    for t in range(64):
        want = 0
        for i in range(t):
            if i % 3 == 0:
                continue
            want += i
            if want > limit:
                break
        want += 1000 * sum(1 for j in range(t - 1, -1, -1) if j & 3)
        assert out[t] == (-1 if t % 5 == 4 else want), t


def test_atomics_and_multiple_blocks(rng):
    """red.add of f32 into one cell per block and atom.add returning distinct old values."""
    n = 256
    x = rng.standard_normal(n).astype(np.float32)
    kb = KernelBuilder("atomics", 64)
    px, psum, pcount, pold = kb.param("x"), kb.param("sums"), kb.param("count"), kb.param("old")
    cta, g = kb.reg("cta", T.u32), kb.reg("g", T.u32)
    kb.emit(T.SpecialReg(cta, T.SReg.CTAID_X), T.Fma(g, cta, T.Imm(64, T.u32), kb.tid))
    v = kb.reg("v", T.f32)
    kb.emit(T.Load((v,), T.Space.GLOBAL, kb.addr(px, g, 4)),
            T.AtomicAdd(T.Space.GLOBAL, kb.addr(psum, cta, 4), 0, v))
    old = kb.reg("old", T.u32)
    kb.emit(T.AtomicAdd(T.Space.GLOBAL, pcount, 0, T.Imm(1, T.u32), dst=old),
            T.Store(T.Space.GLOBAL, kb.addr(pold, g, 4), 0, (old,)))
    sums, count, olds = np.zeros(4, np.float32), np.zeros(1, np.uint32), np.zeros(n, np.uint32)
    run_thread_kernel(kb.kernel(), 4, dict(x=x, sums=sums, count=count, old=olds))
    np.testing.assert_allclose(sums, x.reshape(4, 64).astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-5)
    assert count[0] == n and sorted(olds.tolist()) == list(range(n))


def test_uninitialized_shared_is_garbage():
    """Shared memory starts as random bytes (a read of unwritten data is not zeros)."""
    kb = KernelBuilder("garbage", 32, shared_bytes=128)
    pout = kb.param("out")
    base, a, y = kb.reg("s", T.u32), kb.reg("a", T.u32), kb.reg("y", T.b32)
    kb.emit(T.SharedBase(base), T.Fma(a, kb.tid, T.Imm(4, T.u32), base), T.Load((y,), T.Space.SHARED, a))
    kb.store_lane(pout, [y])
    out = np.zeros(32, np.uint32)
    run_thread_kernel(kb.kernel(), 1, dict(out=out))
    assert np.count_nonzero(out) > 16


def test_launch_errors():
    k = _vector_add()
    with pytest.raises(TLLaunchError, match="missing argument 'n'"):
        run_thread_kernel(k, 1, dict(a=np.zeros(4, np.float32), b=np.zeros(4, np.float32),
                                     c=np.zeros(4, np.float32)))
    with pytest.raises(TLLaunchError, match="no parameter named 'zz'"):
        run_thread_kernel(k, 1, dict(zz=np.zeros(4)))
    bad = T.ThreadKernel("bad", (), 48, 0, ())
    with pytest.raises(TLError, match="multiple of 32"):
        run_thread_kernel(bad, 1)


def test_emulated_kernel_source_stages():
    """EmulatedKernel.source: "thread" and "vm"; others raise TLError (built without
    the lowering: the thread kernel is set by hand)."""
    obj = EmulatedKernel.__new__(EmulatedKernel)
    obj.thread_kernel = _vector_add()
    obj.target = "cuda-emu:sm_80"
    assert obj.source("thread").startswith(".entry vadd(")
    with pytest.raises(TLError, match="stages"):
        obj.source("llvm")


# ------------------------------------------------- through the GPU pipeline

def _compile_example(name, target="cuda-emu:sm_80", **constants):
    import os

    import tvm_lite as tl
    from conftest import EXAMPLES
    pytest.importorskip("tvm_lite.backends.gpu_pipeline", reason="the GPU lowering is not in the tree yet")
    return tl.compile(os.path.join(EXAMPLES, name), target=target, **constants)


@pytest.mark.parametrize("target", ["cuda-emu:sm_80", "cuda-emu:sm_90"])
def test_emulated_vector_add_example(target, rng):
    mod = _compile_example("vector_add.tl", target)
    n = 1000
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    c = np.zeros(n, np.float32)
    mod.vector_add(n, a, b, c)
    np.testing.assert_array_equal(c, a + b)
    kernel = next(iter(mod))
    text = kernel.source("thread")
    assert text.startswith(".entry vector_add(") and "ld.global" in text
    assert "vector_add" in kernel.source("vm")
    assert ".entry vector_add" in kernel.source("ptx")
    with pytest.raises(TLError, match="stages"):
        kernel.source("asm")
    with pytest.raises(TLLaunchError):          # same launch checks as the CPU backend
        mod.vector_add(n, a, b, np.zeros(n - 1, np.float32))


def test_emulated_softmax_example(rng):
    mod = _compile_example("softmax.tl")
    m, n = 9, 100
    x = rng.standard_normal((m, n)).astype(np.float32)
    y = np.zeros((m, n), np.float32)
    mod.softmax(m, n, x, y)
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
