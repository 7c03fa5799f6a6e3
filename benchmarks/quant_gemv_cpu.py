"""ops/quant_gemv.tl on target="cpu": the issue 5 figures in one run.

    python benchmarks/quant_gemv_cpu.py [--k 8192] [--n 8192] [--m 1,16]
        [--wt u4,u3,u5,u6,f6e3m2] [--group 128] [--repeat 20] [--rounds 3]

For each weight type and M: best time of `--repeat` calls after a warm-up,
effective GB/s (packed weights + f16 scales over the time), that as a % of
the machine's copy bandwidth measured in the same run, the speedup over
numpy f32 `a @ w` (w the dequantized weights as float32 [K, N]), and the
bytes-per-second efficiency relative to u4 at the same M.

Copy bandwidth: numpy copies and sums of a 512 MB array, split over all
cores (numpy releases the GIL in both), best of 5. "copy" counts the bytes
read plus the bytes written, STREAM's convention.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import tvm_lite as tl

KERNEL = Path(tl.__file__).parent / "ops" / "quant_gemv.tl"


def best(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bandwidth(nbytes: int = 512 << 20) -> tuple[float, float]:
    """(read GB/s, copy GB/s counting read + write bytes), all cores."""
    cores = os.cpu_count() or 1
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(src.size), cores)
    bounds = [(p[0], p[-1] + 1) for p in parts]
    with ThreadPoolExecutor(cores) as pool:
        def copy():
            list(pool.map(lambda b: np.copyto(dst[b[0]:b[1]], src[b[0]:b[1]]), bounds))

        def read():
            list(pool.map(lambda b: src[b[0]:b[1]].sum(), bounds))
        t_copy = best(copy, 5)
        t_read = best(read, 5)
    return nbytes / t_read / 1e9, 2 * nbytes / t_copy / 1e9


def tiles(m: int, n: int) -> dict:
    """Tile constants: all rows in one block. One row: wide column blocks
    (long contiguous row segments), at least one per core. More rows: 512
    columns, so that the accumulators (M x 512 floats) stay in L1."""
    cores = os.cpu_count() or 1
    bn = 4096 if m <= 2 else 512
    while bn > 256 and -(-n // bn) < cores:
        bn //= 2
    return {"BM": m, "BN": bn}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=8192)
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--m", default="1,16")
    p.add_argument("--wt", default="u4,u3,u5,u6,f6e3m2")
    p.add_argument("--group", type=int, default=128)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3,
                   help="measure everything this many times, interleaved, and keep each best "
                        "(the machine is shared: a burst of other work spoils one round, not all)")
    args = p.parse_args()
    rng = np.random.default_rng()
    k, n, g = args.k, args.n, args.group
    groups = -(-k // g)
    ms = [int(x) for x in args.m.split(",")]
    wts = args.wt.split(",")
    w32 = rng.standard_normal((k, n), dtype=np.float32)    # numpy's side: the same shape in f32
    acts = {m: rng.standard_normal((m, k)).astype(np.float32) for m in ms}
    data = {}
    for wt in wts:
        dt = tl.dtype(wt)
        patterns = rng.integers(0, 1 << dt.nbits, (k, n), dtype=np.uint8)
        bits = tl.pack(patterns, tl.dtype(f"u{dt.nbits}"))
        if dt.nbits == 8 and dt.is_integer:
            bits = bits.view(np.int8 if dt.is_signed else np.uint8).reshape(k, n)
        s = (rng.random((groups, n)) * 0.05 + 0.01).astype(np.float16)
        data[wt] = bits, s
    mods = {(m, wt): tl.compile(KERNEL, target="cpu", WT=wt, G=g, **tiles(m, n)) for m in ms for wt in wts}
    z = np.zeros((1, 1), np.float16)
    t_np = {m: float("inf") for m in ms}
    t_tl = {key: float("inf") for key in mods}
    read_bw = copy_bw = 0.0
    for _ in range(args.rounds):
        r, c = bandwidth()
        read_bw, copy_bw = max(read_bw, r), max(copy_bw, c)
        for m in ms:
            a = acts[m]
            t_np[m] = min(t_np[m], best(lambda: a @ w32, max(3, args.repeat // 4)))
            time.sleep(0.5)     # OpenBLAS's threads spin for a while after a call: let them sleep
            out = np.empty((m, n), np.float32)
            for wt in wts:
                bits, s = data[wt]
                mod = mods[(m, wt)]
                t = best(lambda: mod.quant_gemv(m, n, k, 1, 1, a, bits, s, z, out), args.repeat)
                t_tl[(m, wt)] = min(t_tl[(m, wt)], t)
    print(f"quant_gemv cpu  K={k} N={n} G={g}  f32 activations, f16 scales, best of {args.rounds} rounds")
    print(f"bandwidth: read {read_bw:.1f} GB/s, copy {copy_bw:.1f} GB/s (read + write bytes)")
    print(f"{'type':>7} {'M':>3} {'ms':>8} {'GB/s':>7} {'%copy':>6} {'numpy ms':>9} {'speedup':>8} {'eff/u4':>7}")
    for m in ms:
        u4_rate = None
        for wt in wts:
            bits, s = data[wt]
            t = t_tl[(m, wt)]
            rate = (bits.nbytes + s.nbytes) / t / 1e9
            u4_rate = rate if wt == "u4" else u4_rate
            eff = f"{rate / u4_rate:.2f}" if u4_rate else "-"
            print(f"{wt:>7} {m:>3} {t * 1e3:>8.3f} {rate:>7.1f} {100 * rate / copy_bw:>5.0f}% "
                  f"{t_np[m] * 1e3:>9.3f} {t_np[m] / t:>7.2f}x {eff:>7}")


if __name__ == "__main__":
    main()
