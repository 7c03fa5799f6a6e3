"""The machine code (SASS) of a compiled GPU kernel, and the instruction
profile of its hot loop: what a kernel costs per element, read without a GPU.

    find_nvdisasm() -> str | None     $TL_NVDISASM, the nvidia-cuda-nvdisasm wheel, or PATH
    disassemble(cubin) -> str         nvdisasm's text (TLTargetError without nvdisasm)
    hot_loop(sass) -> Counter         opcodes of the hot loop (below)
    load_copies(sass) -> int          its moves that read a wide load's destination

The hot loop is the innermost loop that holds the kernel's matrix
instructions (HMMA), or its largest loop when it has none, read off the
control flow: a backward branch to a label at or before the loop's first
HMMA. Basic blocks that hold 8- or 16-bit global loads are left out: those
are the byte-wise fallback paths of the vector loads (unaligned base or
ragged edge), which the fast path skips. Opcodes are counted without their
modifiers (`LOP3.LUT` counts as `LOP3`); predicated instructions count once.

    python -m tvm_lite.backends.sass [--sm 90] [--dtypes u4,u3,...]

prints the profile of tl.ops.quant_matmul's GPU kernels (f16 activations,
group 128) per weight type: the hot loop's instructions per weight element
each thread feeds to the mma, and its most frequent opcodes.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter

from ..errors import TLTargetError

_ADDRESS = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;?\s*$")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_BRANCH = re.compile(r"\bBRA\b.*?`\((\.L_x_\d+)\)")
_NARROW_GLOBAL_LOAD = re.compile(r"\bLDG\.E\.(U8|S8|U16|S16)\b")
_WIDE_GLOBAL_LOAD = re.compile(r"\bLDG\.E\.(64|128)\s+R(\d+)")
_REGISTER_MOVE = re.compile(r"(?:IMAD\.MOV(?:\.U32)? R\d+, RZ, RZ, |\bMOV R\d+, )R(\d+)\b")


def find_nvdisasm() -> str | None:
    if os.environ.get("TL_NVDISASM"):
        return os.environ["TL_NVDISASM"]
    try:
        import nvidia
        roots = list(nvidia.__path__)
    except ImportError:
        roots = []
    for root in roots:
        for sub in ("cu13", "cu12", "cuda_nvdisasm"):
            exe = os.path.join(root, sub, "bin", "nvdisasm")
            if os.access(exe, os.X_OK):
                return exe
    return shutil.which("nvdisasm")


def disassemble(cubin: bytes) -> str:
    """nvdisasm's listing of `cubin` (one kernel), with control-flow labels."""
    exe = find_nvdisasm()
    if exe is None:
        raise TLTargetError("no nvdisasm found: pip install nvidia-cuda-nvdisasm (or set TL_NVDISASM)")
    with tempfile.TemporaryDirectory(prefix="tl-sass-") as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        done = subprocess.run([exe, "-c", path], capture_output=True, text=True)
    if done.returncode:
        raise TLTargetError(f"nvdisasm failed: {done.stderr.strip()}")
    return done.stdout


def _instructions(sass: str) -> tuple[list[tuple[int, str]], dict[str, int]]:
    """([(basic block number, instruction)], {label: index of its first
    instruction}). A block starts at a label and after every branch."""
    out: list[tuple[int, str]] = []
    labels: dict[str, int] = {}
    block = 0
    for line in sass.splitlines():
        label = _LABEL.match(line)
        if label:
            labels[label.group(1)] = len(out)
            block += 1
            continue
        ins = _ADDRESS.search(line)
        if ins and ins.group(2):
            out.append((block, ins.group(2)))
            if _opcode(ins.group(2)) == "BRA":
                block += 1
    return out, labels


def _opcode(instruction: str) -> str:
    body = re.sub(r"^@!?U?P\w+\s+", "", instruction.strip())
    return body.split()[0].split(".")[0] if body else ""


def _hot_loop_body(sass: str) -> list[tuple[int, str]]:
    """The hot loop's (basic block, instruction) pairs (module docstring)."""
    code, labels = _instructions(sass)
    loops = []            # [first, last] instruction of each backward branch's loop
    for i, (_, x) in enumerate(code):
        target = _BRANCH.search(x)
        if target and labels.get(target.group(1), len(code)) <= i:
            loops.append((labels[target.group(1)], i))
    if not loops:
        return []
    mma = [i for i, (_, x) in enumerate(code) if _opcode(x) == "HMMA"]
    holding = [(a, b) for a, b in loops if any(a <= i <= b for i in mma)]
    first, last = min(holding, key=lambda ab: ab[1] - ab[0]) if holding else \
        max(loops, key=lambda ab: ab[1] - ab[0])
    return code[first:last + 1]


def hot_loop(sass: str) -> Counter:
    """Opcode counts of the hot loop (module docstring); empty without loops."""
    body = _hot_loop_body(sass)
    fallback = {blk for blk, x in body if _NARROW_GLOBAL_LOAD.search(x)}
    return Counter(_opcode(x) for blk, x in body if blk not in fallback)


def load_copies(sass: str) -> int:
    """Register moves in the hot loop that read a register an earlier 64- or
    128-bit global load of the loop wrote. A move waits for its load, so a
    loop that copies the tile it just loaded (a loop-carried `w0 = ahead`)
    has that load in flight only until the copy, not across iterations."""
    loaded: set[int] = set()
    copies = 0
    for _, x in _hot_loop_body(sass):
        load = _WIDE_GLOBAL_LOAD.search(x)
        if load:
            width = int(load.group(1)) // 32
            loaded.update(range(int(load.group(2)), int(load.group(2)) + width))
            continue
        move = _REGISTER_MOVE.search(x)
        if move and int(move.group(1)) in loaded:
            copies += 1
    return copies


def mma_elements_per_thread(counts: Counter, block_m: int) -> float:
    """k x n elements of the B operand one thread's loop iteration feeds to
    m16n8k16 HMMAs: each covers a 16 x 8 B fragment per warp (4 per thread),
    shared by the block_m / 16 row tiles of A."""
    return counts["HMMA"] * 4 * 16 / block_m


def quant_matmul_profile(wt: str, m: int, sm: int) -> dict:
    """The hot-loop profile of the kernel tl.ops.quant_matmul runs for M rows
    of f16 activations and `wt` weights (group 128) on sm_`sm`."""
    import tvm_lite as tl
    from ..ops.matmul import gpu_config, kernel_source
    from .nvjitlink import compile_ptx
    name, gpu = gpu_config(m, "f16")
    mod = tl.compile(kernel_source(name), target=f"cuda:sm_{sm}", WT=wt, AT="f16", ST="f16", G=128, ZERO=0, **gpu)
    compiled = compile_ptx(mod.source("ptx"), sm)
    text = disassemble(compiled.cubin)
    counts = hot_loop(text)
    elements = mma_elements_per_thread(counts, gpu["BM"]) if gpu.get("BM") else 0
    total = sum(counts.values())
    return dict(kernel=name, tiles=gpu, registers=compiled.registers, loop=total, counts=counts,
                per_element=total / elements if elements else None, load_copies=load_copies(text))


def main(argv=None) -> int:
    import argparse
    import sys
    from ..errors import TLError
    from .ptx_resources import DEFAULT_DTYPES
    parser = argparse.ArgumentParser(prog="python -m tvm_lite.backends.sass", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sm", type=int, default=90)
    parser.add_argument("--dtypes", default=",".join(DEFAULT_DTYPES))
    parser.add_argument("--m", default="1,17", help="activation rows: one per kernel variant")
    args = parser.parse_args(argv)
    print("| M | weights | kernel | registers | loop SASS | per weight | load copies | top opcodes |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for m in (int(x) for x in args.m.split(",")):
            for wt in (x.strip() for x in args.dtypes.split(",") if x.strip()):
                p = quant_matmul_profile(wt, m, args.sm)
                tiles = " ".join(f"{k}={v}" for k, v in p["tiles"].items() if k != "DT")
                per = "-" if p["per_element"] is None else f"{p['per_element']:.2f}"
                top = " ".join(f"{op} {n}" for op, n in p["counts"].most_common(6))
                print(f"| {m} | {wt} | {p['kernel']} {tiles} | {p['registers']} | {p['loop']} | {per} | "
                      f"{p['load_copies']} | {top} |")
    except TLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())


__all__ = ["find_nvdisasm", "disassemble", "hot_loop", "load_copies", "mma_elements_per_thread",
           "quant_matmul_profile"]
