"""`python -m tvm_lite bench`: tl.ops.quant_matmul against numpy (and torch) on this machine.

For each weight type and M, one row:
* time: median of `repeat` calls after warm-up (the first call compiles and,
  unless TL_AUTOTUNE=0, tunes; neither is timed);
* GB/s: the bytes the kernel must read from memory, packed weights + scales
  (+ zero points), over the time; activations and outputs are left out (they
  are tiny next to the weights at small M);
* % copy: that rate over this machine's copy bandwidth, measured in the same
  run as a large numpy copy on every core, counting bytes read + bytes
  written (the STREAM "copy" convention: both directions move data through
  memory, as the kernel's weight reads do);
* x numpy: numpy float32 `a @ w` on the dequantized weights (same M, K, N),
  timed the same way, over the kernel's time;
* x torch: torch's int4 CPU kernel (`_weight_int4pack_mm_for_cpu`, bf16) over
  the kernel's time, for u4 only, when torch is importable;
* max rel err: max |c - ref| / max |ref|, ref = float64 a @ dequantize(qt).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import TLError, TLTargetError
from ..ir.dtypes import dtype as as_dtype
from ..ops.matmul import choose_kernel, quant_matmul
from ..ops.quantize import dequantize, quantize
from .target import parse_target

DEFAULT_DTYPES = ("u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "i4", "f4e2m1", "f6e3m2", "f8e4m3")
_TOLERANCE = {"f32": 1e-3, "f16": 1e-2, "bf16": 5e-2}
_ACT_NUMPY = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


@dataclass
class BenchConfig:
    target: str = "cpu"
    dtypes: tuple = DEFAULT_DTYPES
    ms: tuple = (1, 16)
    k: int = 8192
    n: int = 8192
    group_size: int = 128
    activation: str = "f32"
    repeat: int = 10
    copy_mib: int = 256
    torch: bool = True


@dataclass
class BenchRow:
    dtype: str
    m: int
    kernel: str
    seconds: float
    weight_bytes: int
    numpy_seconds: float
    max_rel_err: float
    ok: bool
    torch_seconds: float | None = None

    @property
    def gbps(self) -> float:
        return self.weight_bytes / self.seconds / 1e9

    @property
    def speedup(self) -> float:
        return self.numpy_seconds / self.seconds


@dataclass
class BenchResult:
    config: BenchConfig
    copy_gbps: float
    read_gbps: float
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)


def sample_seconds(fn, repeat: int, warmup: int = 2) -> list[float]:
    """Seconds of each of `repeat` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def median_seconds(fn, repeat: int, warmup: int = 2) -> float:
    return statistics.median(sample_seconds(fn, repeat, warmup))


def memory_bandwidth(mib: int, repeat: int = 5) -> tuple[float, float]:
    """(copy, read) GB/s on a large array, the best of `repeat` runs each, split
    over every core or on one (whichever is faster). copy counts bytes read +
    written by np.copyto; read counts the bytes a reduction (np.max over int64)
    reads. numpy releases the GIL for both, so the threads run in parallel."""
    src = np.ones(mib << 20, np.uint8)      # touched, so the pages exist
    dst = np.zeros_like(src)
    words = src.view(np.int64)
    workers = os.cpu_count() or 1
    cuts = [(src.size * i // workers // 8 * 8, src.size * (i + 1) // workers // 8 * 8) for i in range(workers)]

    def copy_part(i):
        lo, hi = cuts[i]
        np.copyto(dst[lo:hi], src[lo:hi])

    def read_part(i):
        lo, hi = cuts[i]
        return words[lo // 8:hi // 8].max()

    def best(fn) -> float:
        return min(sample_seconds(fn, repeat, warmup=1))

    with ThreadPoolExecutor(workers) as pool:
        copy = min(best(lambda: list(pool.map(copy_part, range(workers)))), best(lambda: np.copyto(dst, src)))
        read = min(best(lambda: list(pool.map(read_part, range(workers)))), best(lambda: words.max()))
    return 2 * src.nbytes / copy / 1e9, src.nbytes / read / 1e9


def run_bench(cfg: BenchConfig, log=print) -> BenchResult:
    """Measure every (dtype, M) of `cfg`; `log` receives progress lines."""
    target = parse_target(cfg.target)
    if target.kind not in ("cpu", "interp"):
        raise TLTargetError(f"bench --target {cfg.target}: the {target.kind} backend is not in this "
                            f"version of tvm_lite yet; use --target cpu")
    act = _activation_type(cfg.activation)
    for name in cfg.dtypes:          # bad types and group sizes fail now, not after minutes
        quantize(np.zeros((1, 1), np.float32), name, cfg.group_size)
    rng = np.random.default_rng()
    k, n = cfg.k, cfg.n
    contention = _Contention()
    log(f"measuring memory bandwidth ({cfg.copy_mib} MiB)...")
    result = BenchResult(cfg, *memory_bandwidth(cfg.copy_mib))
    log(f"generating weights [{k}, {n}]...")
    w = rng.standard_normal((k, n), dtype=np.float32)
    acts = {m: rng.standard_normal((m, k), dtype=np.float32).astype(act) for m in cfg.ms}
    numpy_time: dict[int, float] = {}
    numpy_best: dict[int, float] = {}
    torch_time = _torch_int4(cfg, w, acts, result.notes) if cfg.torch and "u4" in cfg.dtypes else {}
    for name in cfg.dtypes:
        log(f"{name}: quantizing...")
        qt = quantize(w, name, cfg.group_size)
        w_deq = dequantize(qt)
        for m in cfg.ms:
            a = acts[m]
            if m not in numpy_time:      # the same for every weight type: measured once per M
                a32 = a.astype(np.float32)
                samples = sample_seconds(lambda: a32 @ w_deq, cfg.repeat)
                numpy_time[m], numpy_best[m] = statistics.median(samples), min(samples)
            log(f"{name}: M={m}: compiling, tuning and timing {choose_kernel(m)}...")
            c = quant_matmul(a, qt, target=cfg.target)
            seconds = median_seconds(lambda: quant_matmul(a, qt, target=cfg.target), cfg.repeat)
            err = _max_rel_err(a, w_deq, c)
            result.rows.append(BenchRow(name, m, choose_kernel(m), seconds, qt.nbytes, numpy_time[m],
                                        err, err <= _TOLERANCE[cfg.activation],
                                        torch_time.get(m) if name == "u4" else None))
    others = contention.others()
    if others is not None and others > 0.1:
        result.notes.append(f"warning: other processes used {100 * others:.0f}% of the CPUs during the run, "
                            f"so times are noisy (numpy's threaded BLAS suffers most); rerun on a quiet machine")
    if numpy_best:
        result.notes.insert(0, "numpy f32 best of the repeats: " + ", ".join(
            f"M={m} {t * 1e3:.3f} ms" for m, t in numpy_best.items()))
    return result


class _Contention:
    """How much CPU time other processes take while the bench runs (Linux /proc/stat)."""

    def __init__(self):
        self._start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            t = os.times()
            return sum(fields), fields[3] + fields[4], t.user + t.system   # all, idle + iowait, ours (s)
        except (OSError, ValueError, IndexError):
            return None

    def others(self) -> float | None:
        """Share of all CPUs' time since construction that went to other processes."""
        end = self._read()
        if self._start is None or end is None:
            return None
        total, idle = end[0] - self._start[0], end[1] - self._start[1]
        ours = (end[2] - self._start[2]) * os.sysconf("SC_CLK_TCK")
        return max(0.0, (total - idle - ours) / max(total, 1))


def _activation_type(name: str):
    if name not in _ACT_NUMPY:
        raise TLError(f"bench: --act must be one of {', '.join(_ACT_NUMPY)}, got {name!r}")
    if name == "bf16":
        try:
            import ml_dtypes
        except ImportError:
            raise TLError("bench --act bf16 needs ml_dtypes") from None
        return ml_dtypes.bfloat16
    return np.dtype(_ACT_NUMPY[name])


def _max_rel_err(a: np.ndarray, w: np.ndarray, c: np.ndarray) -> float:
    """max |c - a @ w| / max |a @ w|, the reference in float64 (K in slices, to bound memory)."""
    a64 = a.astype(np.float64)
    ref = np.zeros((a.shape[0], w.shape[1]))
    step = max(1, (1 << 23) // max(w.shape[1], 1))
    for k0 in range(0, w.shape[0], step):
        ref += a64[:, k0:k0 + step] @ w[k0:k0 + step].astype(np.float64)
    return float(np.max(np.abs(c.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


def _torch_int4(cfg: BenchConfig, w: np.ndarray, acts: dict, notes: list) -> dict:
    """Seconds per M of torch's int4 CPU GEMM (bf16 activations) on this shape, or {} with a note."""
    try:
        import torch
    except ImportError:
        notes.append("x torch: torch is not installed")
        return {}
    try:
        k, n, g = cfg.k, cfg.n, cfg.group_size if cfg.group_size > 0 else cfg.k
        codes = torch.from_numpy(np.random.default_rng().integers(0, 16, (n, k), dtype=np.int32))
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 8)
        scales = torch.rand((-(-k // g), n), dtype=torch.float32) * 0.01
        scales_and_zeros = torch.stack((scales, torch.zeros_like(scales)), dim=-1).to(torch.bfloat16).contiguous()
        out = {}
        for m, a in acts.items():
            x = torch.from_numpy(np.asarray(a, dtype=np.float32)).to(torch.bfloat16)
            with torch.no_grad():
                out[m] = median_seconds(
                    lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, g, scales_and_zeros), cfg.repeat)
        notes.append(f"x torch: torch {torch.__version__} _weight_int4pack_mm_for_cpu (u4, bf16 activations, "
                     f"{torch.get_num_threads()} threads)")
        return out
    except Exception as e:  # noqa: BLE001 - an optional comparison must never stop the bench
        notes.append(f"x torch: unavailable ({type(e).__name__}: {e})")
        return {}


# --------------------------------------------------------------- reporting


def format_table(result: BenchResult) -> str:
    cfg = result.config
    head = [f"tl.ops.quant_matmul  C[M,{cfg.n}] = A[M,{cfg.k}] ({cfg.activation}) @ dequant(W), "
            f"group {cfg.group_size}, target {cfg.target}",
            f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
            f"copy bandwidth {result.copy_gbps:.1f} GB/s (best numpy copy on all cores, read + write); "
            f"read bandwidth {result.read_gbps:.1f} GB/s (numpy max, read only)",
            f"time: median of {cfg.repeat}; GB/s: packed weights + scales (+ zeros) over time; "
            f"x numpy: numpy f32 a @ w (dequantized) time / ours", ""]
    cols = ["dtype", "M", "kernel", "time ms", "GB/s", "% copy", "x numpy", "x torch", "max rel err", "check"]
    body = []
    for r in result.rows:
        body.append([r.dtype, str(r.m), r.kernel.removeprefix("quant_"), f"{r.seconds * 1e3:.3f}",
                     f"{r.gbps:.1f}", f"{100 * r.gbps / result.copy_gbps:.0f}%", f"{r.speedup:.2f}",
                     "-" if r.torch_seconds is None else f"{r.torch_seconds / r.seconds:.2f}",
                     f"{r.max_rel_err:.1e}", "ok" if r.ok else "WRONG"])
    widths = [max(len(c), *(len(row[i]) for row in body)) if body else len(c) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(c.ljust(wd) if i < 3 else c.rjust(wd)   # noqa: E731
                                   for i, (c, wd) in enumerate(zip(cells, widths)))
    out = head + [line(cols), line(["-" * wd for wd in widths])] + [line(row) for row in body]
    numpy_ms = {r.m: r.numpy_seconds * 1e3 for r in result.rows}
    out.append("")
    out.append("numpy f32 median: " + ", ".join(f"M={m} {t:.3f} ms" for m, t in numpy_ms.items()))
    out.extend(result.notes)
    return "\n".join(out)


def plot(result: BenchResult, path: str) -> None:
    """Speedup over numpy f32 against bits per weight, one line per M."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in result.config.ms:
        rows = sorted((r for r in result.rows if r.m == m), key=lambda r: as_dtype(r.dtype).nbits)
        bits = [as_dtype(r.dtype).nbits for r in rows]
        ax.plot(bits, [r.speedup for r in rows], "o-", label=f"M={m}")
        for b, r in zip(bits, rows):
            ax.annotate(r.dtype, (b, r.speedup), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("speedup over numpy f32 a @ w")
    cfg = result.config
    ax.set_title(f"quant_matmul K={cfg.k} N={cfg.n} group {cfg.group_size} ({cfg.target})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def require_matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TLError("--plot needs matplotlib, an optional extra: pip install matplotlib") from None
    return plt


__all__ = ["BenchConfig", "BenchResult", "BenchRow", "run_bench", "format_table", "plot",
           "memory_bandwidth", "DEFAULT_DTYPES"]
