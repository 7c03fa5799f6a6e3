"""`tl.ops.quant_matmul`: C[M, N] = A[M, K] @ dequantize(qt), by TL kernels.

Two kernels share one signature (see quant_gemv.tl and quant_gemm.tl):
* `quant_gemv` for M <= GEMV_MAX_M: shaped for the weight-bandwidth-bound case
  of few activation rows;
* `quant_gemm`, a blocked GEMM, for larger M (and for every M when the GEMV
  kernel file is absent).
Each is compiled per (weight type, activation type, scale type, group size,
zero-point mode, target, tile constants); compiled kernels are kept in memory
here, and their machine code is in the on-disk compile cache. On target "cpu"
the tile constants are autotuned at first use per shape class (see
runtime/autotune.py; TL_AUTOTUNE=0 uses the kernels' defaults).
"""
from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from ..errors import TLError, TLLaunchError
from ..frontend.compile import Kernel, compile as tl_compile
from ..runtime import autotune
from ..runtime.target import parse_target
from .quantize import QuantizedTensor

GEMV_MAX_M = 16
_KERNEL_DIR = Path(__file__).parent

# numpy dtype name -> TL activation type. bfloat16 is ml_dtypes' type, recognized
# by name so that ml_dtypes need not be imported.
_ACTIVATION_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}

# Tile constants searched by the autotuner, per kernel (coordinate descent, in
# this order). A value a kernel does not accept is skipped.
TUNING_SPACE = {
    "quant_gemv": {"BN": (64, 128, 256, 512, 1024, 2048, 4096), "BK": (32, 64, 128, 256), "BM": (1, 2, 4, 8, 16)},
    "quant_gemm": {"BM": (16, 32, 64), "BN": (32, 64, 128), "BK": (16, 32, 64, 128)},
}


def kernel_source(name: str) -> Path:
    return _KERNEL_DIR / f"{name}.tl"


def choose_kernel(m: int) -> str:
    """The kernel that serves M activation rows."""
    if m <= GEMV_MAX_M and kernel_source("quant_gemv").is_file():
        return "quant_gemv"
    return "quant_gemm"


def quant_matmul(a, qt: QuantizedTensor, target: str = "cpu", *, kernel: str | None = None,
                 tiles: dict | None = None) -> np.ndarray:
    """a @ dequantize(qt) with a [M, K] (or [K]) in float32, float16 or bfloat16.

    Returns [M, N] (or [N]) in a's dtype; the products accumulate in float32.
    `kernel` ("quant_gemv" or "quant_gemm") and `tiles` (tile constants)
    override the automatic choices, for tests and benchmarks.
    """
    if not isinstance(qt, QuantizedTensor):
        raise TLError(f"quant_matmul: qt must be a QuantizedTensor (from tl.quantize), got {type(qt).__name__}")
    a, at, vector = _activations(a, qt.shape[0])
    tgt = parse_target(target)
    m, (k, n) = a.shape[0], qt.shape
    if m == 0 or n == 0 or k == 0:
        out = np.zeros((m, n), a.dtype)
        return out[0] if vector else out
    name = kernel or choose_kernel(m)
    if name not in TUNING_SPACE:
        raise TLError(f"quant_matmul: unknown kernel {name!r}; use one of {', '.join(TUNING_SPACE)}")
    constants = dict(WT=qt.dtype.name, AT=at, ST=qt.scale_dtype.name, G=qt.group,
                     ZERO=int(qt.zeros is not None))
    args = kernel_arguments(a, qt)
    if tiles is None:
        tiles = _tuned_tiles(name, str(tgt), constants, args) if tgt.kind == "cpu" and autotune.enabled() else {}
    out = args[-1]
    compiled(name, str(tgt), _items({**constants, **tiles}))(*args)
    return out[0] if vector else out


def kernel_arguments(a: np.ndarray, qt: QuantizedTensor) -> tuple:
    """(m, n, k, zg, zn, a, b, s, z, c) for either kernel, with a fresh output c."""
    m, (k, n) = a.shape[0], qt.shape
    b = qt.data
    if qt.dtype.name == "u8":          # byte types numpy has are passed as typed arrays
        b = b.reshape(k, n)
    elif qt.dtype.name == "i8":
        b = b.view(np.int8).reshape(k, n)
    z = qt.zeros if qt.zeros is not None else np.zeros((1, 1), qt.scales.dtype)
    c = np.empty((m, n), a.dtype)
    return (m, n, k, z.shape[0], z.shape[1], a, b, qt.scales, z, c)


@functools.lru_cache(maxsize=512)
def compiled(name: str, target: str, constants: tuple) -> Kernel:
    """The kernel `name` compiled for `target` with `constants` (sorted items), built."""
    return tl_compile(kernel_source(name), target=target, **dict(constants))[name].build()


def _items(constants: dict) -> tuple:
    return tuple(sorted(constants.items()))


def _activations(a, k: int) -> tuple[np.ndarray, str, bool]:
    """(a as a contiguous [M, K] array, its TL type, whether a was a vector)."""
    if not isinstance(a, np.ndarray):
        raise TLLaunchError(f"quant_matmul: a must be a numpy array, got {type(a).__name__}")
    at = _ACTIVATION_TYPES.get(a.dtype.name)
    if at is None:
        raise TLLaunchError(f"quant_matmul: a must be float32, float16 or bfloat16 (ml_dtypes), got "
                            f"{a.dtype}; convert it with a.astype(np.float32)")
    vector = a.ndim == 1
    if vector:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[1] != k:
        raise TLLaunchError(f"quant_matmul: a must be [M, {k}] to match the weights' K = {k}, "
                            f"got shape {list(a.shape if not vector else a.shape[1:])}")
    return np.ascontiguousarray(a), at, vector


def shape_class(name: str, m: int, k: int, n: int) -> tuple[int, int, int]:
    """Problems that share tuned tiles: M, K and N rounded up to powers of two
    (M capped where the kernel's behaviour stops changing)."""
    def up(x: int) -> int:
        return 1 << max(0, (x - 1).bit_length())
    return (min(up(m), GEMV_MAX_M if name == "quant_gemv" else 256), up(k), up(n))


@functools.lru_cache(maxsize=None)
def _source_text(name: str) -> str:
    return kernel_source(name).read_text()


# Tuned tiles by (kernel, target, constants, shape class): saves the tuner's key
# hashing and disk lookup on every call after the first.
_tuned: dict[tuple, dict] = {}
_tuned_lock = threading.Lock()


def _tuned_tiles(name: str, target: str, constants: dict, args: tuple) -> dict:
    m, n, k = args[0], args[1], args[2]
    memo_key = (name, target, _items(constants), shape_class(name, m, k, n))
    with _tuned_lock:
        hit = _tuned.get(memo_key)
    if hit is None:
        hit = _search_tiles(name, target, constants, args)
        with _tuned_lock:
            _tuned[memo_key] = hit
    return hit


def clear_tuned_tiles() -> None:
    """Forget the in-process tile choices (the tuner's disk cache is kept)."""
    with _tuned_lock:
        _tuned.clear()


def _search_tiles(name: str, target: str, constants: dict, args: tuple) -> dict:
    m, n, k = args[0], args[1], args[2]
    key = dict(kernel=name, source=_source_text(name), constants=_items(constants), target=target,
               shape=shape_class(name, m, k, n))
    space = {t: [v for v in values if t != "BM" or v <= max(m, 1) or v == values[0]]
             for t, values in TUNING_SPACE[name].items()}

    def build(tiles: dict):
        kern = compiled(name, target, _items({**constants, **tiles}))
        call_args = args[:-1] + (np.empty_like(args[-1]),)
        def run():
            kern(*call_args)
            return call_args[-1]
        return run

    def agree(ref: np.ndarray, out: np.ndarray) -> bool:
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        tol = 1e-4 if constants["AT"] == "f32" else 2e-2
        return bool(np.all(np.abs(ref64 - out64) <= tol * (np.max(np.abs(ref64)) + 1e-30)))

    return autotune.tune(key, space, build, agree, desc=f"tuning {name} {constants['WT']}")


__all__ = ["quant_matmul", "choose_kernel", "GEMV_MAX_M", "TUNING_SPACE"]
