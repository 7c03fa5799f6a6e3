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

On the GPU targets ("cuda", and its emulator "cuda-emu") there is no
autotuner: `gpu_config` makes a fixed choice. f16/bf16 activations use
quant_gemv.tl for every M with the dot in the activation type (DT; every
decoded <= 8-bit weight is exact in f16 and bf16), which the GPU lowering
turns into mma.sync, with GPU_MMA_TILES; f32 activations use the CPU's kernel
choice with GPU_TILES (an f32 dot, which the lowering does with FMAs). Every
choice assembles with no register spills for sm_80, sm_89 and sm_90 (checked
by tests/test_ptx_kernels.py). On "cuda" the
weights are copied to the device once per QuantizedTensor and kept there;
the activations may be numpy (copied to the device, and the result back, on
each call) or a device array (tl.cuda.DeviceArray, or any object with
`__cuda_array_interface__` or `__dlpack__`, e.g. a torch/cupy tensor; neither
library is imported), and then the result is a tl.cuda.DeviceArray.
"""
from __future__ import annotations

import dataclasses
import functools
import threading
import weakref
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


# GPU tile constants: per kernel, (largest M served, tiles) rows in increasing M;
# the last row serves every larger M. Measured with ptxas (sm_80/89/90): the
# registers per thread grow with BK and BM (not BN); BK = 64 already spills in
# the GEMV, BM = 32 with BK = 32 in the GEMM. These are the largest tiles that
# assemble with 0 spill bytes for every weight type (tests/test_ptx_kernels.py).
GPU_TILES = {
    "quant_gemv": ((1, {"BM": 1, "BN": 256, "BK": 32}),
                   (GEMV_MAX_M, {"BM": 16, "BN": 64, "BK": 32})),
    "quant_gemm": ((None, {"BM": 32, "BN": 64, "BK": 16}),),
}


# f16/bf16 activations on the GPU: quant_gemv.tl with DT = AT (mma), by M.
# For M <= 16 the kernel streams weights: PREFETCH=1 loads the packed weight
# tile of a later k step before decoding the current one (quant_gemv.tl), to
# keep enough bytes in flight per SM to cover HBM latency; MINB=4 makes ptxas
# fit 4 blocks of 128 threads per SM (at most 128 registers a thread), so
# N = 57344 (448 column blocks) runs in one wave on 132 SMs.
GPU_MMA_TILES = ((GEMV_MAX_M, {"BM": 16, "BN": 128, "BK": 64, "PREFETCH": 1, "MINB": 4}),
                 (None, {"BM": 64, "BN": 64, "BK": 32}))


def _by_m(table, m: int) -> dict:
    for max_m, tiles in table:
        if max_m is None or m <= max_m:
            return dict(tiles)
    return dict(table[-1][1])


def gpu_tiles(name: str, m: int) -> dict:
    """The fixed GPU tile constants of kernel `name` for M activation rows
    with an f32 dot (f32 activations, or a kernel forced by the caller)."""
    return _by_m(GPU_TILES[name], m)


def gpu_config(m: int, at: str, kernel: str | None = None) -> tuple[str, dict]:
    """(kernel name, tile and dot-type constants) for M rows of activation
    type `at` on the GPU targets (module docstring)."""
    if at in ("f16", "bf16") and kernel in (None, "quant_gemv"):
        return "quant_gemv", {**_by_m(GPU_MMA_TILES, m), "DT": at}
    name = kernel or choose_kernel(m)
    return name, gpu_tiles(name, m) if name in GPU_TILES else {}


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
    tgt = parse_target(target)
    if tgt.kind == "cuda":
        if not isinstance(a, np.ndarray):
            return _quant_matmul_device(a, qt, str(tgt), kernel, tiles)
        host, _, vector = _activations(a, qt.shape[0])      # checked here: host-side messages
        from ..runtime import cuda as rt
        out = _quant_matmul_device(rt.to_device(host), qt, str(tgt), kernel, tiles).numpy()
        return out[0] if vector else out
    a, at, vector = _activations(a, qt.shape[0])
    m, (k, n) = a.shape[0], qt.shape
    if m == 0 or n == 0 or k == 0:
        out = np.zeros((m, n), a.dtype)
        return out[0] if vector else out
    name = kernel or choose_kernel(m)
    _check_kernel_name(name)
    constants = dict(WT=qt.dtype.name, AT=at, ST=qt.scale_dtype.name, G=qt.group,
                     ZERO=int(qt.zeros is not None))
    args = kernel_arguments(a, qt)
    if tgt.kind == "cuda-emu":
        name, gpu = gpu_config(m, at, kernel)
        tiles = {**gpu, **(tiles or {})}
    elif tiles is None:
        if tgt.kind == "cpu" and autotune.enabled():
            tiles = _tuned_tiles(name, str(tgt), constants, args)
        else:
            tiles = {}
    out = args[-1]
    compiled(name, str(tgt), _items({**constants, **tiles}))(*args)
    return out[0] if vector else out


def _quant_matmul_device(a, qt: QuantizedTensor, target: str, kernel: str | None,
                         tiles: dict | None):
    """quant_matmul on target cuda for a device-resident `a` (module docstring)."""
    from ..runtime import cuda as rt
    if not rt.is_device_array(a):
        raise TLLaunchError(f"quant_matmul: a must be a numpy array or a CUDA device array "
                            f"(tl.cuda.DeviceArray, __cuda_array_interface__ or __dlpack__), "
                            f"got {type(a).__name__}")
    view = rt.device_view(a)
    k, n = qt.shape
    at = _ACTIVATION_TYPES.get(view.dtype.name)
    if at is None:
        raise TLLaunchError(f"quant_matmul: a must be float32, float16 or bfloat16, got {view.dtype}")
    vector = len(view.shape) == 1
    m = 1 if vector else (view.shape[0] if len(view.shape) == 2 else -1)
    if m < 0 or view.shape[-1] != k:
        raise TLLaunchError(f"quant_matmul: a must be [M, {k}] to match the weights' K = {k}, "
                            f"got shape {list(view.shape)}")
    if not view.c_contiguous:
        raise TLLaunchError("quant_matmul: a device array a must be C-contiguous")
    out = rt.empty((n,) if vector else (m, n), view.dtype)
    if m == 0 or n == 0 or k == 0:
        return out.fill_zero()
    if kernel is not None:
        _check_kernel_name(kernel)
    name, gpu = gpu_config(m, at, kernel)
    constants = dict(WT=qt.dtype.name, AT=at, ST=qt.scale_dtype.name, G=qt.group,
                     ZERO=int(qt.zeros is not None), **gpu, **(tiles or {}))
    b, s, z = _device_weights(qt)
    # The kernel sees a as [M, K] and c as [M, N] (same memory, 2-D shapes).
    a2 = dataclasses.replace(view, shape=(m, k))
    c2 = dataclasses.replace(rt.device_view(out), shape=(m, n))
    compiled(name, target, _items(constants))(m, n, k, z.shape[0], z.shape[1], a2, b, s, z, c2)
    return out


def _check_kernel_name(name: str) -> None:
    if name not in TUNING_SPACE:
        raise TLError(f"quant_matmul: unknown kernel {name!r}; use one of {', '.join(TUNING_SPACE)}")


# Device copies of a QuantizedTensor's arrays (b, s, z), by id, dropped with it.
_device_copies: dict[int, tuple] = {}
_device_copies_lock = threading.Lock()


def _device_weights(qt: QuantizedTensor) -> tuple:
    """(b, s, z) of kernel_arguments as tl.cuda.DeviceArrays, copied once per qt."""
    from ..runtime import cuda as rt
    key = id(qt)
    with _device_copies_lock:
        hit = _device_copies.get(key)
    if hit is not None:
        return hit
    _, _, _, _, _, _, b, s, z, _ = kernel_arguments(np.zeros((0, qt.shape[0]), np.float32), qt)
    copies = tuple(rt.to_device(np.ascontiguousarray(x)) for x in (b, s, z))
    with _device_copies_lock:
        _device_copies[key] = copies
    weakref.finalize(qt, _forget_device_copies, key)
    return copies


def _forget_device_copies(key: int) -> None:
    with _device_copies_lock:
        _device_copies.pop(key, None)


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


__all__ = ["quant_matmul", "choose_kernel", "gpu_config", "gpu_tiles", "GEMV_MAX_M", "GPU_MMA_TILES", "GPU_TILES",
           "TUNING_SPACE"]
