"""Command line: `python -m tvm_lite compile|demo`."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import compile as tl_compile
from . import pack
from .errors import TLError
from .ir.dtypes import dtype, numpy_dtype

def _demo_kernel() -> str:
    """The library's quantized-matmul kernel, shipped as package data."""
    return (Path(__file__).parent / "ops" / "qmatmul.tl").read_text()


def _cmd_compile(args: argparse.Namespace) -> int:
    constants = {}
    for item in args.const or []:
        name, _, value = item.partition("=")
        constants[name] = int(value) if value.lstrip("-").isdigit() else value
    mod = tl_compile(args.file, target=args.target, **constants)
    print(mod.source(args.emit))
    return 0


def _random_weights(rng: np.random.Generator, dt, shape):
    if dt.is_float:
        return rng.uniform(dt.min, dt.max, shape)
    return rng.integers(dt.min, dt.max + 1, shape).astype(np.float64)


def _cmd_demo(args: argparse.Namespace) -> int:
    """Compile the flagship kernel for several weight types and check it."""
    rng = np.random.default_rng()
    m, n, k, group = 16, 256, 512, 128
    print(f"qmatmul  C[{m},{n}] = A[{m},{k}] @ dequant(B[{k},{n}]), group {group}, target {args.target}\n")
    ok = True
    for name in ("u4", "u3", "i5", "f6e3m2", "f4e2m1"):
        dt = dtype(name)
        t0 = time.perf_counter()
        mod = tl_compile(_demo_kernel(), target=args.target, WT=name)
        mod.qmatmul.build()
        compile_ms = (time.perf_counter() - t0) * 1e3
        a = rng.standard_normal((m, k)).astype(np.float16)
        w = _random_weights(rng, dt, (k, n))
        w = w if dt.is_float else w.astype(np.int64)
        s = (rng.random((-(-k // group), n)) * 0.05 + 0.01).astype(np.float16)
        b = w.astype(numpy_dtype(dt)) if numpy_dtype(dt) is not None else pack(w, dt)
        c = np.full((m, n), np.nan, np.float16)
        t0 = time.perf_counter()
        mod.qmatmul(m, n, k, a, b, s, c)
        run_ms = (time.perf_counter() - t0) * 1e3
        wq = (np.asarray(pack_values(w, dt)) * np.repeat(s.astype(np.float64), group, axis=0)[:k])
        ref = a.astype(np.float64) @ wq.astype(np.float16).astype(np.float64)
        err = float(np.max(np.abs(c.astype(np.float64) - ref)) / np.max(np.abs(ref)))
        good = err < 2e-3
        ok &= good
        print(f"  {name:7s} {b.nbytes:8d} weight bytes  compile {compile_ms:6.1f} ms  run {run_ms:7.1f} ms  "
              f"max rel err {err:.1e}  {'ok' if good else 'WRONG'}")
    print("\nVM IR for WT=u3:\n")
    print(tl_compile(_demo_kernel(), target=args.target, WT="u3").source("vm"))
    return 0 if ok else 1


def pack_values(w, dt):
    """The values the kernel sees: floats rounded to the weight type."""
    from .ir.dtypes import decode, encode
    return decode(encode(w, dt), dt) if dt.is_float else w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tvm_lite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="compile a .tl file and print one stage")
    c.add_argument("file")
    c.add_argument("--target", default="interp")
    c.add_argument("--emit", default="vm", help="ast | vm | (backend stages)")
    c.add_argument("--const", action="append", metavar="NAME=VALUE", help="a compile-time constant")
    c.set_defaults(run=_cmd_compile)
    d = sub.add_parser("demo", help="run the quantized-matmul demo with a correctness check")
    d.add_argument("--target", default="cpu")
    d.set_defaults(run=_cmd_demo)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except TLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
