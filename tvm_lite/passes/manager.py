"""The pass manager: a flat list of named passes over the VM program.

Instruments, all off by default and switched on by the environment:
* `TL_DUMP_IR=dir`   - write the program before the first pass and after each
  pass as `dir/NN_<pass>.vm` (the directory is created if missing and never
  emptied: it may be the user's);
* `TL_TIME_PASSES=1` - print a table of pass times to stderr;
* `TL_VERIFY=1`      - run the VM verifier after every pass (tests set it).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ..ir import vm
from ..ir.printer import format_program
from ..ir.verifier import verify_program


@dataclass(frozen=True)
class Pass:
    """A named rewrite of the whole program."""
    name: str
    run: Callable[[vm.Program], vm.Program]


def env_flag(name: str) -> bool:
    """Whether an on/off environment variable (TL_VERIFY, TL_TIME_PASSES) is on."""
    return os.environ.get(name, "") not in ("", "0")


def format_timings(title: str, timings: list[tuple[str, float]]) -> str:
    """The TL_TIME_PASSES table: one row per (name, seconds), then the total."""
    width = max([len(n) for n, _ in timings] + [len(title)])
    lines = [f"{title.ljust(width)}  time (ms)"]
    lines += [f"{n.ljust(width)}  {t * 1e3:9.3f}" for n, t in timings]
    lines.append(f"{'total'.ljust(width)}  {sum(t for _, t in timings) * 1e3:9.3f}")
    return "\n".join(lines)


def run_passes(program: vm.Program, passes: list[Pass]) -> vm.Program:
    dump_dir = os.environ.get("TL_DUMP_IR") or None
    verify = env_flag("TL_VERIFY")
    timings: list[tuple[str, float]] = []
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        _dump(dump_dir, 0, "input", program)
    for number, p in enumerate(passes, 1):
        start = time.perf_counter()
        program = p.run(program)
        timings.append((p.name, time.perf_counter() - start))
        if verify:
            verify_program(program)
        if dump_dir:
            _dump(dump_dir, number, p.name, program)
    if env_flag("TL_TIME_PASSES"):
        print(format_timings("pass", timings), file=sys.stderr)
    return program


def _dump(directory: str, number: int, name: str, program: vm.Program) -> None:
    stem = os.path.splitext(os.path.basename(program.filename))[0].strip("<>") or "program"
    path = os.path.join(directory, f"{stem}.{number:02d}_{name}.vm")
    with open(path, "w") as f:
        f.write(format_program(program))


def default_vm_passes() -> list[Pass]:
    """The target-independent VM pipeline every compile runs."""
    from .dead_code import eliminate_dead_code
    from .hoist import hoist_loop_invariants
    from .simplify import simplify
    return [Pass("simplify", simplify), Pass("hoist_loop_invariants", hoist_loop_invariants),
            Pass("eliminate_dead_code", eliminate_dead_code)]
