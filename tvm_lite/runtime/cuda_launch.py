"""Binding and checking a call's arguments for target="cuda", and marshalling
them for cuLaunchKernel.

The checks are the CPU backend's (runtime/args.py): names, counts, scalar
ranges, tensor dtype and shape from the kernel's signature. The difference is
where tensors live:
* device arrays (tl.cuda.DeviceArray, or any object with
  `__cuda_array_interface__` or `__dlpack__`, e.g. torch/cupy tensors) are
  checked from their metadata (dtype, shape, C-contiguity, 16-byte aligned
  address, writeable when the kernel stores to them) and passed by address;
* numpy arrays are accepted for convenience: checked exactly as on the CPU,
  copied to the device before the launch and, when the kernel writes them,
  copied back after it (synchronously). That costs two PCIe transfers per
  call: use device arrays for anything performance-sensitive.

Storage convention (as on the CPU): dtypes numpy has natively are passed with
exactly that dtype and shape; every other dtype (sub-byte, bf16, f8 ...) as
its packed bit stream of uint8 bytes, or as the identical ml_dtypes/DLPack
type (bf16) with the exact shape.
"""
from __future__ import annotations

import ctypes
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..errors import TLLaunchError
from ..ir import vm
from . import cuda as rt
from .args import (ArgumentPlan, check_element_type, check_scalar, check_tensor, eval_expr, eval_shape,
                   match_arguments, plan_arguments)

# Vector loads of up to 16 bytes assume tensor base addresses are 16-byte
# aligned (cuMemAlloc gives 256); a view at an odd offset would fault.
BASE_ALIGNMENT = 16

_GRID_LIMITS = (2**31 - 1, 65535, 65535)


@dataclass
class CudaBound:
    """A call's arguments, bound and resident on the device."""
    scalars: dict = field(default_factory=dict)      # vm.Var -> int | float
    addresses: dict = field(default_factory=dict)    # vm.GlobalTensor | vm.Pointer -> device address
    keep_alive: list = field(default_factory=list)   # views / temporary device copies
    copy_back: list = field(default_factory=list)    # (host np.ndarray, DeviceArray)


def _check_view(kname: str, g: vm.GlobalTensor, shape: tuple[int, ...], view: rt.DeviceView,
                written: bool) -> None:
    where = f"{kname}: argument '{g.name}'"
    check_element_type(where, g, shape, view.dtype, tuple(view.shape), view.nbytes,
                       lambda: f"{view.dtype} {tuple(view.shape)}")
    if not view.c_contiguous:
        raise TLLaunchError(f"{where} must be C-contiguous")
    if view.ptr % BASE_ALIGNMENT:
        raise TLLaunchError(f"{where} must start at a {BASE_ALIGNMENT}-byte aligned device address, "
                            f"got 0x{view.ptr:x}")
    if written and view.readonly:
        raise TLLaunchError(f"{where} is written by the kernel but the device array is read-only")


def bind_cuda_arguments(kernel: vm.Kernel, args: tuple, kwargs: dict | None = None,
                        stream=None, plan: ArgumentPlan | None = None) -> CudaBound:
    """Match, check and place every argument (module docstring). `plan` is
    plan_arguments(kernel), computed once by callers that launch often: the
    walk over the body for stored-to tensors costs more than all the checks."""
    plan = plan or plan_arguments(kernel)
    values = match_arguments(kernel, args, dict(kwargs or {}), plan.names)
    bound = CudaBound()
    for p in kernel.params:
        if isinstance(p, vm.Var):
            bound.scalars[p] = check_scalar(kernel.name, p, values[p.name])
    written = plan.written
    for p in kernel.params:
        value = values[p.name]
        if isinstance(p, vm.GlobalTensor):
            shape = eval_shape(kernel.name, p, bound.scalars)
            is_written = id(p) in written
            if isinstance(value, np.ndarray):
                host = check_tensor(kernel.name, p, shape, value, is_written)
                # On a stream, copy on that stream: a non-blocking stream is not
                # ordered after the legacy stream's (synchronous) copies.
                device = rt.to_device(host.reshape(-1).view(np.uint8), stream)
                bound.keep_alive.append(device)
                bound.addresses[p] = device.ptr
                if is_written:
                    bound.copy_back.append((host, device))
                continue
            view = rt.device_view(value, stream) if rt.is_device_array(value) else None
            if view is None:
                raise TLLaunchError(f"{kernel.name}: argument '{p.name}' must be a device array "
                                    f"(tl.cuda.to_device, or a torch/cupy CUDA tensor) or a numpy array "
                                    f"({p.dtype.name}{list(shape)}), got {type(value).__name__}")
            _check_view(kernel.name, p, shape, view, is_written)
            bound.keep_alive.append(view)
            bound.addresses[p] = view.ptr
        elif isinstance(p, vm.Pointer):
            if rt.is_device_array(value):
                view = rt.device_view(value, stream)
                bound.keep_alive.append(view)
                bound.addresses[p] = view.ptr
            elif isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) \
                    and int(value) >= 0:
                bound.addresses[p] = int(value)
            else:
                raise TLLaunchError(f"{kernel.name}: argument '{p.name}' must be a device array or a "
                                    f"device address, got {type(value).__name__}")
    return bound


def grid_dims(kernel: vm.Kernel, bound: CudaBound) -> tuple[int, int, int] | None:
    """The grid as (x, y, z), or None when some dimension is <= 0 (no blocks)."""
    dims = [int(eval_expr(g, bound.scalars)) for g in kernel.grid]
    if len(dims) > 3:
        raise TLLaunchError(f"{kernel.name}: a CUDA grid has at most 3 dimensions, got {len(dims)}")
    dims += [1] * (3 - len(dims))
    if any(d <= 0 for d in dims):
        return None
    for axis, (d, limit) in enumerate(zip(dims, _GRID_LIMITS)):
        if d > limit:
            raise TLLaunchError(f"{kernel.name}: grid dimension {'xyz'[axis]} = {d} exceeds the "
                                f"CUDA limit {limit}")
    return tuple(dims)


_CTYPES = {
    "s8": ctypes.c_int8, "u8": ctypes.c_uint8, "b8": ctypes.c_uint8,
    "s16": ctypes.c_int16, "u16": ctypes.c_uint16, "b16": ctypes.c_uint16,
    "s32": ctypes.c_int32, "u32": ctypes.c_uint32, "b32": ctypes.c_uint32,
    "s64": ctypes.c_int64, "u64": ctypes.c_uint64, "b64": ctypes.c_uint64,
    "f32": ctypes.c_float, "f64": ctypes.c_double,
}


def scalar_ctype(type_name: str, value) -> ctypes._SimpleCData:
    """A kernel scalar as the ctypes value cuLaunchKernel copies from."""
    if type_name in ("f16", "bf16"):
        if type_name == "f16":
            bits = int(np.array(value, np.float16).view(np.uint16))
        else:
            import ml_dtypes
            bits = int(np.array(value, ml_dtypes.bfloat16).view(np.uint16))
        return ctypes.c_uint16(bits)
    ctype = _CTYPES.get(type_name)
    if ctype is None:
        raise TLLaunchError(f"cannot pass a scalar of PTX type {type_name}")
    if type_name.startswith(("s", "u", "b")):
        bits = int(ctypes.sizeof(ctype) * 8)
        value = int(value) & ((1 << bits) - 1)
        if type_name.startswith("s") and value >> (bits - 1):
            value -= 1 << bits
    return ctype(value)


def marshal(kernel: vm.Kernel, thread_params: tuple, bound: CudaBound) -> list:
    """One ctypes value per thread-kernel parameter. A thread param is matched
    to the VM param of the same name, or by position when the lists align."""
    by_name = {p.name: p for p in kernel.params}
    positional = len(thread_params) == len(kernel.params)
    out = []
    for i, reg in enumerate(thread_params):
        p = by_name.get(reg.name) or (kernel.params[i] if positional else None)
        if p is None:
            raise TLLaunchError(f"{kernel.name}: the lowered kernel's parameter '{reg.name}' matches "
                                f"no parameter of the signature (a compiler bug)")
        if isinstance(p, vm.Var):
            out.append(scalar_ctype(reg.type.name, bound.scalars[p]))
        else:
            out.append(ctypes.c_uint64(bound.addresses[p]))
    return out


def finish(bound: CudaBound, stream=None) -> None:
    """After the launch: copy numpy outputs back (synchronizing first)."""
    if not bound.copy_back:
        return
    if stream is not None:
        rt.call("cuStreamSynchronize", rt._stream_handle(stream))
    for host, device in bound.copy_back:
        host.reshape(-1).view(np.uint8)[...] = device.numpy()


__all__ = ["CudaBound", "bind_cuda_arguments", "grid_dims", "marshal", "finish", "scalar_ctype"]
