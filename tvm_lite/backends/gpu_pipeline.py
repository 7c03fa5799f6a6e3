"""The GPU lowering pipeline: VM kernel -> thread-IR kernel for one CUDA target.

    lower_for_gpu(kernel: vm.Kernel, target) -> thread.ThreadKernel

Steps, in order: `infer_gpu_layouts` (passes/gpu_layouts.py), then
`plan_shared_memory` (passes/shared_plan.py), then `lower_to_threads`
(passes/lower_to_threads.py). Instruments, as in passes/manager.py:
* `TL_DUMP_IR=dir`   - writes `<kernel>.gpu.NN_<step>.vm|.thread` per step;
* `TL_TIME_PASSES=1` - prints the step times to stderr;
* `TL_VERIFY=1`      - verifies the VM kernel after layout inference.
Results are memoized per (kernel, target) (both immutable; the kernel by identity).
"""
from __future__ import annotations

import os
import sys
import threading
import time
import weakref

from ..errors import TLCompileError, TLError
from ..ir import vm
from ..passes.manager import env_flag, format_timings

_memo: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _target_key(target) -> str:
    return str(getattr(target, "name", None) or target)


def lower_for_gpu(kernel: vm.Kernel, target):
    """The thread kernel for `kernel` on `target` (memoized)."""
    key = _target_key(target)
    with _lock:
        hit = _memo.get(kernel, {}).get(key)
    if hit is not None:
        return hit
    result = _run(kernel, target)
    with _lock:
        _memo.setdefault(kernel, {})[key] = result
    return result


def _run(kernel: vm.Kernel, target):
    from ..passes.gpu_layouts import infer_gpu_layouts
    from ..passes.lower_to_threads import lower_to_threads
    from ..passes.shared_plan import plan_shared_memory

    dump_dir = os.environ.get("TL_DUMP_IR") or None
    timings: list[tuple[str, float]] = []

    def step(name, fn, *args):
        start = time.perf_counter()
        try:
            out = fn(*args)
        except TLError:
            raise
        except Exception as e:   # a compiler bug: never a raw traceback for the user
            raise TLCompileError(f"GPU lowering of kernel '{kernel.name}' failed in {name}: "
                                 f"{type(e).__name__}: {e}") from e
        timings.append((name, time.perf_counter() - start))
        return out

    if dump_dir:
        _dump(dump_dir, kernel.name, 0, "input", kernel)
    laid = step("infer_gpu_layouts", infer_gpu_layouts, kernel, target)
    if env_flag("TL_VERIFY"):
        from ..ir.verifier import verify_program
        step("verify", verify_program, vm.Program((laid,)))
    if dump_dir:
        _dump(dump_dir, kernel.name, 1, "infer_gpu_layouts", laid)
    plan = step("plan_shared_memory", plan_shared_memory, laid)
    tk = step("lower_to_threads", lower_to_threads, laid, plan, target)
    if dump_dir:
        _dump(dump_dir, kernel.name, 2, "lower_to_threads", tk)
    if env_flag("TL_TIME_PASSES"):
        print(format_timings("gpu pass", timings), file=sys.stderr)
    return tk


def _dump(directory: str, name: str, number: int, step: str, obj) -> None:
    os.makedirs(directory, exist_ok=True)
    if isinstance(obj, vm.Kernel):
        from ..ir.printer import format_kernel
        text, ext = format_kernel(obj), "vm"
    else:
        from ..ir.thread import format_thread_kernel
        text, ext = format_thread_kernel(obj), "thread"
    with open(os.path.join(directory, f"{name}.gpu.{number:02d}_{step}.{ext}"), "w") as f:
        f.write(text)
