"""The GPU benchmark engine behind `python -m tvm_lite bench --target cuda`.

    run_cuda_bench(dtypes, ms, ns, k=8192, group_size=128, repeat=50) -> list[dict]

For every (weight type, N, M) it times `quant_matmul` (f16 activations, f16
scales, group-wise) with device-resident operands, and per (N, M) the
baselines:
* cuBLAS f16 GEMM through nvmath-python on cupy/torch device operands, else
  cupy.matmul, else torch.matmul (skipped with a note when none is importable);
* torch's int4 kernel `torch._weight_int4pack_mm` (bf16), for u4 rows, when
  torch is present.

Timing: CUDA events around each run on the legacy default stream; before
every run the L2 cache is flushed by writing a buffer of twice its size,
then a one-thread kernel holds the GPU for HOLD_US while the host enqueues
the start event, the run and the end event, so the host's launch cost
(Python argument checks, cuLaunchKernel) is never inside the timed span: a
M = 1 kernel takes tens of microseconds, as long as that host work. The
figure is the median of `repeat` (>= 50) runs after 3 warm-up runs.
Bandwidth: the bytes a run must move (packed weights + scales + A + C)
divided by the median time, and as a percentage of the device's copy
bandwidth measured in the same run (cuMemcpyDtoD of a 1 GiB buffer:
2 x size / time, read plus write).

Weights are random codes (not `tl.quantize` of a random matrix, which takes
tens of seconds at N = 57344); NaN/Inf codes of f8e4m3/f8e5m2 are remapped to
finite ones. Each weight type is checked once against numpy at the smallest
N with M = 1 before it is timed (`max_rel_err` in the rows).
"""
from __future__ import annotations

import statistics
from typing import Callable

import numpy as np

from ..errors import TLError
from . import cuda as rt

MIN_REPEAT = 50
WARMUP = 3
COPY_BYTES = 1 << 30

# The issue-7 benchmark: K = 8192, N in {8192, 28672, 57344}, M in {1, 16, 128,
# 4096}, every weight type of the CPU benchmark.
DEFAULT_K = 8192
DEFAULT_NS = (8192, 28672, 57344)
DEFAULT_MS = (1, 16, 128, 4096)
DEFAULT_DTYPES = ("u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "i4", "f4e2m1", "f6e3m2", "f8e4m3")


# --------------------------------------------------------------- timing


class L2Flusher:
    """Evicts the L2 cache by writing a buffer twice its size."""

    def __init__(self, l2_bytes: int):
        self.buffer = rt.empty(max(2 * l2_bytes, 1 << 20), np.uint8)

    def __call__(self) -> None:
        rt.memset_d8(self.buffer.ptr, 0, self.buffer.nbytes)


HOLD_US = 500

# A one-thread kernel that spins until `ns` nanoseconds of %globaltimer have
# passed (sleeping between reads). PTX for sm_80 runs on every newer GPU
# through the driver JIT.
_HOLD_PTX = """.version 8.0
.target sm_80
.address_size 64
.visible .entry tl_bench_hold(.param .u64 ns)
{
    .reg .u64 %limit, %t0, %t1, %dt;
    .reg .pred %p;
    ld.param.u64 %limit, [ns];
    mov.u64 %t0, %globaltimer;
WAIT:
    nanosleep.u32 2000;
    mov.u64 %t1, %globaltimer;
    sub.u64 %dt, %t1, %t0;
    setp.lt.u64 %p, %dt, %limit;
    @%p bra WAIT;
    ret;
}
"""


class DeviceHold:
    """Keeps the GPU busy for `us` microseconds (module docstring: the host's
    launch cost stays outside the timed span)."""

    def __init__(self, us: int = HOLD_US):
        import ctypes
        self.function = rt.load_module(_HOLD_PTX).function("tl_bench_hold")
        self.params = [ctypes.c_uint64(int(us) * 1000)]

    def __call__(self) -> None:
        self.function.launch((1, 1, 1), 1, 0, self.params)


def before_each_run(flush: L2Flusher, hold: DeviceHold) -> Callable[[], None]:
    def prepare() -> None:
        flush()
        hold()
    return prepare


def time_median_ms(fn: Callable[[], object], prepare: Callable[[], None], repeat: int) -> float:
    """Median device time of `fn()` in ms, `prepare()` (flush the L2, hold the
    GPU: before_each_run) enqueued before each run.

    Everything runs on the legacy default stream, so `prepare`'s work
    finishes before `start` is recorded and `end` after fn's work; fn's work
    on other streams is not timed (the baselines launch on the current
    torch/cupy stream, which is the legacy default one unless the caller
    changed it)."""
    for _ in range(WARMUP):
        fn()
    rt.synchronize()
    start, end = rt.Event(), rt.Event()
    times = []
    for _ in range(max(repeat, MIN_REPEAT)):
        prepare()
        start.record()
        fn()
        end.record()
        times.append(rt.Event.elapsed_ms(start, end))   # waits for `end`
    return statistics.median(times)


def copy_bandwidth_gbps(prepare: Callable[[], None], repeat: int) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written)."""
    src, dst = rt.empty(COPY_BYTES, np.uint8), rt.empty(COPY_BYTES, np.uint8)
    rt.memset_d8(src.ptr, 1, COPY_BYTES)
    ms = time_median_ms(lambda: rt.memcpy_dtod(dst.ptr, src.ptr, COPY_BYTES), prepare, repeat)
    return 2 * COPY_BYTES / (ms * 1e-3) / 1e9


# ------------------------------------------------------------- operands


def random_quantized(dtype_name: str, k: int, n: int, group_size: int, rng):
    """A QuantizedTensor of random finite codes with f16 scales in [0.005, 0.02)."""
    from ..ir.dtypes import dtype as as_dtype, nbytes_for
    from ..ops.quantize import QuantizedTensor
    wt = as_dtype(dtype_name)
    data = rng.integers(0, 256, nbytes_for(k * n, wt), dtype=np.uint8)
    if wt.name == "f8e4m3":        # S.1111.111 is NaN: make it S.1111.110
        data[(data & 0x7F) == 0x7F] ^= 0x01
    elif wt.name == "f8e5m2":      # exponent 11111 is Inf/NaN: clear its top bit
        special = (data & 0x7C) == 0x7C
        data[special] &= 0xBF
    groups = -(-k // (k if group_size == -1 else group_size))
    scales = rng.uniform(0.005, 0.02, (groups, n)).astype(np.float16)
    return QuantizedTensor(data, scales, None, wt, int(group_size), (k, n), as_dtype("f16"))


def device_target(device) -> str:
    """The compile target for `device`: its own sm when tvm_lite supports it,
    else the newest supported one below it (the driver JIT runs older PTX)."""
    from .target import _SUPPORTED_SM
    usable = [sm for sm in _SUPPORTED_SM if sm <= device.sm]
    if not usable:
        raise TLError(f"{device.name} is sm_{device.sm}; tvm_lite's CUDA target needs sm_{min(_SUPPORTED_SM)} "
                      f"or newer")
    return f"cuda:sm_{max(usable)}"


def _device_call(a: np.ndarray, qt, target: str) -> tuple[Callable[[], object], Callable[[], np.ndarray], str]:
    """(run, result, note): a zero-argument launch of the kernel
    tl.ops.quant_matmul(a, qt, target) runs (same kernel choice and GPU
    tiles) on device-resident operands, and a reader of its output."""
    from ..ops import matmul as qm
    name, gpu = qm.gpu_config(a.shape[0], "f16")
    constants = dict(WT=qt.dtype.name, AT="f16", ST=qt.scale_dtype.name, G=qt.group,
                     ZERO=int(qt.zeros is not None), **gpu)
    kern = qm.compiled(name, target, qm._items(constants))
    args = qm.kernel_arguments(a, qt)
    dev_args = [rt.to_device(x) if isinstance(x, np.ndarray) else x for x in args]
    c = dev_args[-1]
    config = " ".join(f"{t}={v}" for t, v in gpu.items())
    return (lambda: kern(*dev_args)), (lambda: c.numpy()), f"{name} {config}"


def _array_lib():
    """('cupy'|'torch', module) for device operands of the baselines, or (None, None)."""
    for name in ("cupy", "torch"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        if name == "torch" and not module.cuda.is_available():
            continue
        return name, module
    return None, None


def cublas_baseline(m: int, n: int, k: int, rng):
    """(run, note) for a cuBLAS f16 GEMM [m,k] @ [k,n], or (None, why)."""
    lib_name, lib = _array_lib()
    if lib is None:
        return None, "no cuBLAS baseline: needs cupy or torch (with nvmath-python optional)"
    if lib_name == "cupy":
        a = lib.random.standard_normal((m, k), dtype=lib.float32).astype(lib.float16)
        b = lib.random.standard_normal((k, n), dtype=lib.float32).astype(lib.float16)
    else:
        a = lib.randn(m, k, dtype=lib.float16, device="cuda")
        b = lib.randn(k, n, dtype=lib.float16, device="cuda")
    try:
        import nvmath
        mm = nvmath.linalg.advanced.Matmul(a, b)
        mm.plan()
        return mm.execute, f"cuBLAS via nvmath-python on {lib_name} operands"
    except Exception:   # nvmath absent or refuses these operands: the library's own matmul
        pass
    return (lambda: lib.matmul(a, b)), f"cuBLAS via {lib_name}.matmul"


def torch_int4_baseline(m: int, n: int, k: int, group_size: int):
    """(run, note) for torch._weight_int4pack_mm (bf16 activations), or (None, why)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None, "torch has no CUDA"
        g = k if group_size == -1 else group_size
        x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
        q = torch.randint(0, 16, (n, k), dtype=torch.int32, device="cuda")
        try:   # torch >= 2.5: uint8 [n, k/2], two nibbles per byte
            packed_in = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
            w = torch._convert_weight_to_int4pack(packed_in, 8)
        except (RuntimeError, TypeError):
            w = torch._convert_weight_to_int4pack(q, 8)
        sz = torch.rand(k // g, n, 2, dtype=torch.bfloat16, device="cuda")
        torch._weight_int4pack_mm(x, w, g, sz)
        return (lambda: torch._weight_int4pack_mm(x, w, g, sz)), "torch._weight_int4pack_mm (bf16)"
    except ImportError:
        return None, "torch not installed"
    except Exception as e:   # an API shape this torch does not have
        return None, f"torch int4 kernel unavailable: {type(e).__name__}: {e}"


# ------------------------------------------------------------------ driver


def _check(dtype_name: str, k: int, n: int, group_size: int, rng, target: str) -> float:
    """max |C - ref| / max |ref| for M = 1 (ref: float64 numpy on the dequantized weights)."""
    from ..ops.quantize import dequantize
    qt = random_quantized(dtype_name, k, n, group_size, rng)
    a = rng.standard_normal((1, k)).astype(np.float16)
    run, result, _ = _device_call(a, qt, target)
    run()
    rt.synchronize()
    ref = a.astype(np.float64) @ dequantize(qt).astype(np.float64)
    got = np.asarray(result(), np.float64)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


def run_cuda_bench(dtypes=DEFAULT_DTYPES, ms=DEFAULT_MS, ns=DEFAULT_NS, k: int = DEFAULT_K,
                   group_size: int = 128, repeat: int = MIN_REPEAT, seed: int | None = None,
                   log: Callable[[str], None] | None = None) -> list[dict]:
    """Time quant_matmul and the baselines; one dict per (dtype, N, M) (module docstring)."""
    from ..ops.quantize import quantize
    for name in dtypes:      # bad types and group sizes fail now, not after minutes
        quantize(np.zeros((1, 1), np.float32), name, group_size)
    device = rt.ensure_context()
    target = device_target(device)
    rng = np.random.default_rng(seed)
    repeat = max(int(repeat), MIN_REPEAT)
    prepare = before_each_run(L2Flusher(device.l2_bytes), DeviceHold())
    copy_gbps = copy_bandwidth_gbps(prepare, repeat)
    say = log or (lambda text: None)
    say(f"{device.name} (sm_{device.sm}): copy bandwidth {copy_gbps:.0f} GB/s")
    baselines: dict = {}
    errors: dict = {}
    rows = []
    for dtype_name in dtypes:
        try:
            errors[dtype_name] = _check(dtype_name, k, min(ns), group_size, rng, target)
        except TLError as e:
            errors[dtype_name] = f"check failed: {e.message}"
        for n in ns:
            qt = random_quantized(dtype_name, k, n, group_size, rng)
            for m in ms:
                row = {"dtype": dtype_name, "m": m, "n": n, "k": k, "group_size": group_size,
                       "device": device.name, "copy_gbps": round(copy_gbps, 1),
                       "max_rel_err": errors[dtype_name], "notes": []}
                a = rng.standard_normal((m, k)).astype(np.float16)
                try:
                    run, _, note = _device_call(a, qt, target)
                    t = time_median_ms(run, prepare, repeat)
                    moved = qt.nbytes + a.nbytes + m * n * 2
                    row.update(time_ms=t, gbps=moved / (t * 1e-3) / 1e9)
                    row["pct_copy_bw"] = 100.0 * row["gbps"] / copy_gbps
                    if note:
                        row["notes"].append(note)
                except TLError as e:
                    row.update(time_ms=None, gbps=None, pct_copy_bw=None)
                    row["notes"].append(f"tvm_lite failed: {e.message}")
                if (m, n) not in baselines:
                    baselines[(m, n)] = _time_baselines(m, n, k, group_size, prepare, repeat, rng)
                base = baselines[(m, n)]
                row["cublas_ms"] = base["cublas_ms"]
                row["notes"] += base["notes"]
                if dtype_name == "u4":
                    row["torch_int4_ms"] = base["torch_int4_ms"]
                if row.get("time_ms") and base["cublas_ms"]:
                    row["speedup_vs_cublas"] = base["cublas_ms"] / row["time_ms"]
                say(_describe(row))
                rows.append(row)
            del qt
    return rows


def _time_baselines(m, n, k, group_size, prepare, repeat, rng) -> dict:
    out = {"cublas_ms": None, "torch_int4_ms": None, "notes": []}
    try:
        run, note = cublas_baseline(m, n, k, rng)
        if run is not None:
            out["cublas_ms"] = time_median_ms(run, prepare, repeat)
        out["notes"].append(note)
    except Exception as e:   # a third-party library failing must not end the benchmark
        out["notes"].append(f"cuBLAS baseline failed: {type(e).__name__}: {e}")
    try:
        run, note = torch_int4_baseline(m, n, k, group_size)
        if run is not None:
            out["torch_int4_ms"] = time_median_ms(run, prepare, repeat)
        out["notes"].append(note)
    except Exception as e:
        out["notes"].append(f"torch int4 baseline failed: {type(e).__name__}: {e}")
    return out


def _describe(row: dict) -> str:
    def fmt(x, spec):
        return "-" if x is None else format(x, spec)
    return (f"{row['dtype']:>7} M={row['m']:<5} N={row['n']:<6} K={row['k']}: "
            f"{fmt(row.get('time_ms'), '.4f')} ms, {fmt(row.get('gbps'), '.0f')} GB/s "
            f"({fmt(row.get('pct_copy_bw'), '.1f')}% of copy), cuBLAS {fmt(row.get('cublas_ms'), '.4f')} ms, "
            f"speedup {fmt(row.get('speedup_vs_cublas'), '.2f')}x")


def format_rows(rows: list[dict]) -> str:
    """The rows of run_cuda_bench as a text table, one line each, then their notes."""
    lines = [_describe(r) for r in rows]
    notes = sorted({n for r in rows for n in r["notes"] if n})
    return "\n".join(lines + [""] + [f"note: {n}" for n in notes] if notes else lines)


__all__ = ["run_cuda_bench", "format_rows", "L2Flusher", "DeviceHold", "before_each_run", "time_median_ms", "copy_bandwidth_gbps", "random_quantized"]
