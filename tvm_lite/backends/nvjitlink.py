"""Compile-only path for PTX: nvJitLink assembles PTX to a cubin with no GPU.

    compile_ptx(ptx, sm) -> CompiledCubin(cubin, registers, shared_bytes,
                                          spill_stores, spill_loads, log)

nvJitLink (`cuda.bindings.nvjitlink`, wheel `nvidia-nvjitlink`) runs ptxas
in-process for any sm_XX, in about 10 ms, without a driver. With `-verbose`
its info log carries ptxas's report:

    ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    ptxas info    : Used 8 registers, used 0 barriers, 364 bytes cmem[0]
    info    : used 8 registers, ..., 0 bytes smem, ..., 0 bytes lmem

The figures are read from those lines. PTX that our printer produced and that
ptxas rejects is a compiler bug: it raises TLCompileError holding ptxas's
message and the offending PTX line (ptxas numbers the lines of its input from
1). Results are cached per process by (PTX hash, sm).

The cubin is for inspection and resource figures; the runtime loads PTX text
through the driver JIT instead (runtime/cuda.py), because a cubin from a newer
nvJitLink may not load on an older driver.
"""
from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass

from ..errors import TLCompileError, TLTargetError


@dataclass(frozen=True)
class CompiledCubin:
    """A cubin and ptxas's resource report for its (single) entry function."""
    cubin: bytes
    registers: int
    shared_bytes: int     # static shared memory (dynamic shared is sized at launch)
    spill_stores: int     # bytes
    spill_loads: int      # bytes
    log: str              # ptxas's info log, verbatim

    def resources(self) -> dict:
        return {"registers": self.registers, "shared_bytes": self.shared_bytes,
                "spill_stores": self.spill_stores, "spill_loads": self.spill_loads}


_cache: dict[tuple[str, int], CompiledCubin] = {}
_cache_lock = threading.Lock()

_LINE = re.compile(r"ptx input, line (\d+)")
_REGISTERS = re.compile(r"[Uu]sed (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"(\d+) bytes smem")


def _nvjitlink():
    try:
        from cuda.bindings import nvjitlink
    except ImportError as e:
        raise TLTargetError("compiling PTX needs cuda-python and nvidia-nvjitlink "
                            "(pip install 'tvm_lite[cuda]')") from e
    return nvjitlink


def _log(nj, handle, which: str) -> str:
    size = getattr(nj, f"get_{which}_log_size")(handle)
    if size <= 1:
        return ""
    buf = bytearray(size)
    getattr(nj, f"get_{which}_log")(handle, buf)
    return bytes(buf).rstrip(b"\0").decode(errors="replace")


def quote_ptx_line(ptx: str, message: str) -> str:
    """The PTX lines ptxas's `message` names ("ptx input, line N"), numbered, or ''."""
    lines = ptx.splitlines()
    quoted = []
    for n in dict.fromkeys(int(m) for m in _LINE.findall(message)):
        if 1 <= n <= len(lines):
            quoted.append(f"  {n:5d} | {lines[n - 1].rstrip()}")
    return "\n".join(quoted)


def _parse_report(log: str) -> tuple[int, int, int, int]:
    regs = _REGISTERS.search(log)
    spills = _SPILLS.search(log)
    smem = _SMEM.search(log)
    return (int(regs.group(1)) if regs else 0,
            int(smem.group(1)) if smem else 0,
            int(spills.group(1)) if spills else 0,
            int(spills.group(2)) if spills else 0)


def _compile(ptx: str, sm: int) -> CompiledCubin:
    nj = _nvjitlink()
    options = [f"-arch=sm_{sm}", "-verbose"]
    try:
        handle = nj.create(len(options), options)
    except nj.nvJitLinkError as e:
        raise TLTargetError(f"nvJitLink cannot start for sm_{sm}: {e}") from None
    except RuntimeError as e:   # cuda.pathfinder: libnvJitLink.so not found
        raise TLTargetError(f"compiling PTX needs the nvJitLink library (pip install nvidia-nvjitlink, "
                            f"or 'tvm_lite[cuda]'): {e}") from None
    try:
        data = ptx.encode()
        try:
            nj.add_data(handle, nj.InputType.PTX, data, len(data), "kernel.ptx")
            nj.complete(handle)
        except nj.nvJitLinkError as e:
            message = (_log(nj, handle, "error") or str(e)).strip()
            quoted = quote_ptx_line(ptx, message)
            text = f"ptxas rejected the generated PTX for sm_{sm} (a compiler bug):\n{message}"
            if quoted:
                text += f"\noffending PTX line:\n{quoted}"
            error = TLCompileError(text)
            error.ptxas_message = message
            error.ptx_line = quoted
            raise error from None
        log = _log(nj, handle, "info")
        size = nj.get_linked_cubin_size(handle)
        cubin = bytearray(size)
        nj.get_linked_cubin(handle, cubin)
    finally:
        nj.destroy(handle)
    registers, shared, stores, loads = _parse_report(log)
    return CompiledCubin(bytes(cubin), registers, shared, stores, loads, log)


def compile_ptx(ptx: str, sm: int) -> CompiledCubin:
    """Assemble `ptx` for sm_`sm` (cached per process by the PTX's hash)."""
    key = (hashlib.sha256(ptx.encode()).hexdigest(), int(sm))
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    result = _compile(ptx, int(sm))
    with _cache_lock:
        _cache[key] = result
    return result


__all__ = ["CompiledCubin", "compile_ptx", "quote_ptx_line"]
