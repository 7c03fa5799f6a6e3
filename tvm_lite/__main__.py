"""Command line: `python -m tvm_lite compile|demo|bench`."""
from __future__ import annotations

import argparse
import os
import sys
from . import compile as tl_compile
from .errors import TLError
from .ops.matmul import choose_kernel, kernel_source
from .runtime.bench import BenchConfig, format_table, plot, require_matplotlib, run_bench


def _cmd_compile(args: argparse.Namespace) -> int:
    constants = {}
    for item in args.const or []:
        name, _, value = item.partition("=")
        constants[name] = int(value) if value.lstrip("-").isdigit() else value
    mod = tl_compile(args.file, target=args.target, **constants)
    print(mod.source(args.emit))
    return 0


def _names(text: str) -> tuple[str, ...]:
    """An argparse type: 'u4,u3' -> ('u4', 'u3')."""
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as u4,u3")
    return names


def _ints(text: str) -> tuple[int, ...]:
    """An argparse type: '1,16' -> (1, 16), each a positive integer."""
    try:
        values = tuple(int(x) for x in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,16, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"M values must be positive, got {text!r}")
    return values


def _bench_config(args: argparse.Namespace) -> BenchConfig:
    quick = BenchConfig(dtypes=("u4", "u3", "u8", "i4", "f6e3m2", "f4e2m1"), k=2048, n=2048,
                        repeat=5, copy_mib=128)
    base = quick if args.quick else BenchConfig()
    k, n = args.k or base.k, args.n or base.n
    return BenchConfig(
        target=args.target,
        dtypes=args.dtypes or base.dtypes,
        ms=args.m or base.ms,
        k=k, n=n, group_size=args.group_size, activation=args.act or "f32",
        repeat=args.repeat or base.repeat,
        # the copy must be far larger than the caches; small problems need less to compare with
        copy_mib=base.copy_mib if k * n * 4 >= 64 << 20 else 64)


def _cmd_bench(args: argparse.Namespace) -> int:
    """Time tl.ops.quant_matmul against numpy f32 (and torch int4) and print a table."""
    if args.target.split(":")[0] == "cuda":
        return _cmd_bench_cuda(args)
    cfg = _bench_config(args)
    if args.plot:
        require_matplotlib()          # fail before the long run, not after it
    quiet = lambda line: print(f"  {line}", file=sys.stderr, flush=True)   # noqa: E731
    result = run_bench(cfg, log=quiet)
    print(format_table(result))
    if args.plot:
        plot(result, args.plot)
        print(f"\nplot written to {args.plot}")
    return 0 if result.ok else 1


def _cmd_bench_cuda(args: argparse.Namespace) -> int:
    """The GPU benchmark: quant_matmul against cuBLAS f16 (and torch int4) on the device."""
    from .runtime import bench_cuda as bc
    if args.act not in (None, "f16"):
        raise TLError("bench --target cuda times f16 activations (cuBLAS f16 is the baseline); "
                      "drop --act or pass --act f16")
    rows = bc.run_cuda_bench(dtypes=args.dtypes or bc.DEFAULT_DTYPES, ms=args.m or bc.DEFAULT_MS,
                             ns=(args.n,) if args.n else bc.DEFAULT_NS, k=args.k or bc.DEFAULT_K,
                             group_size=args.group_size, repeat=args.repeat or bc.MIN_REPEAT,
                             log=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    print(bc.format_rows(rows))
    return 0 if all(r.get("time_ms") for r in rows) else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    """Quantize, run tl.ops.quant_matmul for several weight types, check it, show the IR."""
    cfg = BenchConfig(target=args.target, dtypes=("u4", "u3", "i5", "f6e3m2", "f4e2m1"), ms=(1, 16),
                      k=4096, n=4096, group_size=128, repeat=5, copy_mib=128, torch=False)
    print(f"tl.ops.quant_matmul on target {args.target}: C[M,{cfg.n}] = A[M,{cfg.k}] @ dequant(W), "
          f"W = tl.quantize(w, dtype, group_size={cfg.group_size})\n", flush=True)
    result = run_bench(cfg, log=lambda line: None)
    print(format_table(result))
    print(f"\ncorrectness: {'every result matches numpy float64' if result.ok else 'WRONG RESULTS (see check)'}")
    name = choose_kernel(1)
    print(f"\nVM IR of {name} (tvm_lite/ops/{name}.tl) for u3 weights, the kernel used at M=1:\n")
    print(tl_compile(kernel_source(name), target=args.target, WT="u3").source("vm"))
    return 0 if result.ok else 1


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
    b = sub.add_parser("bench", help="benchmark tl.ops.quant_matmul against numpy f32",
                       description="Time tl.ops.quant_matmul per weight type and M against numpy f32 "
                                   "a @ w on the dequantized weights (and torch's int4 kernel when "
                                   "torch is installed), with this machine's copy bandwidth.")
    b.add_argument("--target", default="cpu", help="cpu (default) | cuda")
    b.add_argument("--dtypes", type=_names, help="comma-separated weight types (default: u1..u8, i4, f4e2m1, "
                                    "f6e3m2, f8e4m3)")
    b.add_argument("--m", type=_ints, help="comma-separated activation rows M (default: 1,16)")
    b.add_argument("--k", type=int, help="K (default 8192)")
    b.add_argument("--n", type=int, help="N (default 8192)")
    b.add_argument("--group-size", type=int, default=128, help="rows per scale group, -1 per channel")
    b.add_argument("--act", help="activation type: f32 (cpu default) | f16 (cuda, the only choice there) | bf16")
    b.add_argument("--repeat", type=int, help="timed calls per measurement (default 10)")
    b.add_argument("--plot", metavar="OUT.png", help="draw speedup against bit width (needs matplotlib)")
    b.add_argument("--quick", action="store_true", help="a short run: K=N=2048, six weight types")
    b.set_defaults(run=_cmd_bench)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except TLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, and keep Python's
        # own flush at exit from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
