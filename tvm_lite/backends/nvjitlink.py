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

Where nvJitLink is missing, the `ptxas` executable of the `nvidia-cuda-nvcc`
wheel (or $TL_PTXAS, or one on PATH) does the same job in a subprocess, with
the same report and the same error handling.

The cubin is for inspection and resource figures; the runtime loads PTX text
through the driver JIT instead (runtime/cuda.py), because a cubin from a newer
nvJitLink may not load on an older driver.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
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


_cache: dict[tuple[str, int, str], CompiledCubin] = {}
_cache_lock = threading.Lock()

_LINE = re.compile(r"(?:ptx input|\.ptx), line (\d+)")
_REGISTERS = re.compile(r"[Uu]sed (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"(\d+) bytes smem")


def _nvjitlink():
    try:
        from cuda.bindings import nvjitlink
    except ImportError as e:
        raise TLTargetError("compiling PTX needs cuda-python and nvidia-nvjitlink, or ptxas from "
                            "nvidia-cuda-nvcc (pip install 'tvm_lite[cuda]')") from e
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


def find_ptxas() -> str | None:
    """$TL_PTXAS, else the ptxas of the nvidia-cuda-nvcc wheel, else one on PATH."""
    if os.environ.get("TL_PTXAS"):
        return os.environ["TL_PTXAS"]
    try:
        import nvidia
        roots = list(nvidia.__path__)
    except ImportError:
        roots = []
    for root in roots:
        for sub in ("cu13", "cu12", "cuda_nvcc"):
            exe = os.path.join(root, sub, "bin", "ptxas")
            if os.access(exe, os.X_OK):
                return exe
    return shutil.which("ptxas")


def _has_nvjitlink() -> bool:
    try:
        from cuda.bindings import nvjitlink  # noqa: F401
    except ImportError:
        return False
    return True


def _rejected(ptx: str, sm: int, message: str) -> TLCompileError:
    quoted = quote_ptx_line(ptx, message)
    text = f"ptxas rejected the generated PTX for sm_{sm} (a compiler bug):\n{message}"
    if quoted:
        text += f"\noffending PTX line:\n{quoted}"
    error = TLCompileError(text)
    error.ptxas_message = message
    error.ptx_line = quoted
    return error


def _compile_ptxas(ptx: str, sm: int, exe: str) -> CompiledCubin:
    with tempfile.TemporaryDirectory(prefix="tl-ptxas-") as tmp:
        src, out = os.path.join(tmp, "kernel.ptx"), os.path.join(tmp, "kernel.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        try:
            run = subprocess.run([exe, f"-arch=sm_{sm}", "-v", "-o", out, src],
                                 capture_output=True, text=True, timeout=300)
        except OSError as e:
            raise TLTargetError(f"cannot run ptxas ({exe}): {e}") from None
        log = (run.stdout + run.stderr).replace(src, "kernel.ptx")
        if run.returncode != 0:
            raise _rejected(ptx, sm, log.strip())
        with open(out, "rb") as f:
            cubin = f.read()
    registers, shared, stores, loads = _parse_report(log)
    return CompiledCubin(cubin, registers, shared, stores, loads, log)


def _compile(ptx: str, sm: int, assembler: str) -> CompiledCubin:
    if assembler == "ptxas" or (assembler == "auto" and not _has_nvjitlink()):
        exe = find_ptxas()
        if exe is not None:
            return _compile_ptxas(ptx, sm, exe)
        if assembler == "ptxas":
            raise TLTargetError("no ptxas found: pip install nvidia-cuda-nvcc, or set TL_PTXAS")
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
            raise _rejected(ptx, sm, (_log(nj, handle, "error") or str(e)).strip()) from None
        log = _log(nj, handle, "info")
        size = nj.get_linked_cubin_size(handle)
        cubin = bytearray(size)
        nj.get_linked_cubin(handle, cubin)
    finally:
        nj.destroy(handle)
    registers, shared, stores, loads = _parse_report(log)
    return CompiledCubin(bytes(cubin), registers, shared, stores, loads, log)


def compile_ptx(ptx: str, sm: int, assembler: str = "auto") -> CompiledCubin:
    """Assemble `ptx` for sm_`sm` (cached per process by the PTX's hash) with
    nvJitLink, or with ptxas where nvJitLink is missing; `assembler` =
    "nvjitlink" or "ptxas" forces one."""
    if assembler not in ("auto", "nvjitlink", "ptxas"):
        raise TLTargetError(f"unknown PTX assembler {assembler!r}: use auto, nvjitlink or ptxas")
    key = (hashlib.sha256(ptx.encode()).hexdigest(), int(sm), assembler)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    result = _compile(ptx, int(sm), assembler)
    with _cache_lock:
        _cache[key] = result
    return result


__all__ = ["CompiledCubin", "compile_ptx", "find_ptxas", "quote_ptx_line"]
