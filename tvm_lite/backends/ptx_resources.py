"""Registers, shared memory and spills of the GPU kernels, per architecture,
from ptxas through nvJitLink (no GPU needed).

    python -m tvm_lite.backends.ptx_resources [--sms 80,89,90] [--dtypes u4,u3,...]
    python -m tvm_lite compile FILE.tl --target cuda:sm_90 --emit resources

The table covers tl.ops.quant_matmul's kernels as it compiles them for the
GPU (ops/matmul.py gpu_config: f16 activations and scales, group 128, for
M <= 16 and M > 16) for each weight type, and the examples/*.tl kernels with
their default constants.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

DEFAULT_SMS = (80, 89, 90)
DEFAULT_DTYPES = ("u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "i4", "f4e2m1", "f6e3m2", "f8e4m3")


def format_resources(figures: dict, sm: int) -> str:
    """One line: sm, registers, static/dynamic shared bytes, spills, threads."""
    return (f"sm_{sm}: {figures['registers']} registers, {figures.get('threads', '?')} threads, "
            f"{figures['shared_bytes']} B static + {figures.get('dynamic_shared_bytes', 0)} B dynamic shared, "
            f"{figures['spill_stores']} B spill stores, {figures['spill_loads']} B spill loads")


def op_kernel_rows(dtypes, sms) -> list[dict]:
    """One row per (quant_matmul kernel variant, weight type, sm)."""
    import tvm_lite as tl
    from ..ops.matmul import GEMV_MAX_M, gpu_config, kernel_source
    rows = []
    for m, label in ((GEMV_MAX_M, f"M <= {GEMV_MAX_M}"), (GEMV_MAX_M + 1, f"M > {GEMV_MAX_M}")):
        name, gpu = gpu_config(m, "f16")
        for wt in dtypes:
            for sm in sms:
                k = tl.compile(kernel_source(name), target=f"cuda:sm_{sm}", WT=wt, AT="f16", ST="f16", G=128,
                               ZERO=0, **gpu).kernels[name]
                r = k._backend().resources()   # frontend Kernel has no resources(): its backend does
                config = " ".join(f"{t}={v}" for t, v in gpu.items())
                rows.append(dict(kernel=f"{name} ({label})", variant=f"{wt} g128 f16, {config}", sm=sm, **r))
    return rows


def example_rows(sms) -> list[dict]:
    import tvm_lite as tl
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")
    rows = []
    for path in sorted(glob.glob(os.path.join(root, "*.tl"))):
        for sm in sms:
            mod = tl.compile(path, target=f"cuda:sm_{sm}")
            for name, k in mod.kernels.items():
                rows.append(dict(kernel=f"examples/{os.path.basename(path)}:{name}", variant="defaults", sm=sm,
                                 **k._backend().resources()))
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table: one line per kernel variant, registers/spills per sm."""
    sms = sorted({r["sm"] for r in rows})
    by_key: dict = {}
    for r in rows:
        by_key.setdefault((r["kernel"], r["variant"]), {})[r["sm"]] = r
    head = "| kernel | variant | threads | dyn. shared B | " + " | ".join(
        f"sm_{sm} regs / spill B" for sm in sms) + " |"
    lines = [head, "|" + "---|" * (4 + len(sms))]
    for (kernel, variant), per_sm in by_key.items():
        any_row = next(iter(per_sm.values()))
        cells = [f"{per_sm[sm]['registers']} / {per_sm[sm]['spill_stores'] + per_sm[sm]['spill_loads']}"
                 if sm in per_sm else "-" for sm in sms]
        lines.append(f"| {kernel} | {variant} | {any_row.get('threads', '-')} | "
                     f"{any_row.get('dynamic_shared_bytes', 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ..errors import TLError
    parser = argparse.ArgumentParser(prog="python -m tvm_lite.backends.ptx_resources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sms", default=",".join(map(str, DEFAULT_SMS)), help="comma-separated, e.g. 80,89,90")
    parser.add_argument("--dtypes", default=",".join(DEFAULT_DTYPES), help="weight types of the op kernels")
    parser.add_argument("--no-examples", action="store_true", help="only the quant_matmul kernels")
    args = parser.parse_args(argv)
    try:
        sms = tuple(int(x) for x in args.sms.split(",") if x.strip())
        dtypes = tuple(x.strip() for x in args.dtypes.split(",") if x.strip())
        rows = op_kernel_rows(dtypes, sms) + ([] if args.no_examples else example_rows(sms))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
