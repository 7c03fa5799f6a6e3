"""qmatmul on target="cpu" against numpy f32 on the dequantized weights.

    python benchmarks/qmatmul_cpu.py [--k 4096] [--n 4096] [--m 1,16] [--wt u4]

Both sides are timed in the same run, best of `--repeat` after a warm-up; the
ratio is numpy time / tvm_lite time (above 1 means tvm_lite is faster).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import tvm_lite as tl

KERNEL = Path(tl.__file__).parent / "ops" / "qmatmul.tl"


def best(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--m", default="1,16")
    p.add_argument("--wt", default="u4")
    p.add_argument("--group", type=int, default=128)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng()
    dt = tl.dtype(args.wt)
    k, n, g = args.k, args.n, args.group
    mod = tl.compile(KERNEL, target="cpu", WT=dt, G=g)
    w = rng.integers(dt.min, dt.max + 1, (k, n))
    s = (rng.random((-(-k // g), n)) * 0.05 + 0.01).astype(np.float16)
    packed = tl.pack(w, dt)
    w32 = (w * np.repeat(s.astype(np.float32), g, axis=0)[:k]).astype(np.float32)
    print(f"qmatmul cpu  K={k} N={n} WT={dt.name} G={g}")
    print(f"{'M':>5} {'tvm_lite ms':>12} {'numpy f32 ms':>13} {'speedup':>8}")
    for m in (int(x) for x in args.m.split(",")):
        a = rng.standard_normal((m, k)).astype(np.float16)
        c = np.empty((m, n), np.float16)
        a32 = a.astype(np.float32)
        t_tl = best(lambda: mod.qmatmul(m, n, k, a, packed, s, c), args.repeat)
        t_np = best(lambda: a32 @ w32, args.repeat)
        print(f"{m:>5} {t_tl * 1e3:>12.2f} {t_np * 1e3:>13.2f} {t_np / t_tl:>8.3f}")


if __name__ == "__main__":
    main()
