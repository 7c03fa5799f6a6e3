"""target="cuda": VM kernel -> thread IR -> PTX -> driver JIT -> cuLaunchKernel.

    k = CUDAKernel(vm_kernel, target)   # lowers and prints PTX (no GPU needed)
    k.source("thread" | "ptx")
    k.resources()                       # ptxas figures through nvJitLink (no GPU needed)
    k.source("resources")               # the same figures as one line of text
    k.source("sass")                    # the machine code, through nvdisasm (no GPU needed)
    k(*args, **kwargs)                  # binds, checks, launches (needs a GPU)
    k.launch(*args, stream=s, **kwargs) # the same on a given stream

Arguments: see runtime/cuda_launch.py. Device arrays (tl.cuda.DeviceArray,
torch/cupy tensors) are used in place. numpy arrays are copied to the device
and, when written, back after the launch: convenient, but two transfers per
call. A launch is asynchronous for device arrays (call tl.cuda.synchronize()
or read the result with .numpy(), which waits).

The module is loaded from PTX text through the driver JIT, once per process;
the block is `threads` = warps * 32 threads with the plan's dynamic shared
memory (above 48 KB opted in through the function attribute).
"""
from __future__ import annotations

from ..errors import TLError, TLTargetError
from ..ir import vm
from ..runtime.target import Target

STAGES = ("vm", "thread", "ptx", "resources", "sass")


class CUDAKernel:
    target_kind = "cuda"

    def __init__(self, kernel: vm.Kernel, target: Target):
        try:   # the GPU lowering pipeline and the printer (imported lazily)
            from .gpu_pipeline import lower_for_gpu
            from .ptx import emit_ptx
        except ImportError as e:
            raise TLTargetError(f"target '{target}': no backend for CUDA in this build "
                                f"(the GPU lowering is not available: {e})") from None
        self.kernel = kernel
        self.target = target
        self.thread_kernel = lower_for_gpu(kernel, target)
        self.ptx = emit_ptx(self.thread_kernel, target.sm)
        self._function = None
        self._plan = None       # the argument plan, made at the first launch

    @property
    def name(self) -> str:
        return self.kernel.name

    def source(self, stage: str) -> str:
        if stage == "ptx":
            return self.ptx
        if stage == "vm":
            from ..ir.printer import format_kernel
            return format_kernel(self.kernel)
        if stage == "thread":
            from ..ir.thread import format_thread_kernel
            return format_thread_kernel(self.thread_kernel)
        if stage == "resources":
            from .ptx_resources import format_resources
            return format_resources(self.resources(), self.target.sm)
        if stage == "sass":
            from .sass import disassemble
            return disassemble(self.compiled().cubin)
        raise TLError(f"target 'cuda' has stages {', '.join(repr(s) for s in STAGES)}, not {stage!r}")

    def compiled(self):
        """nvJitLink's cubin and ptxas report for this kernel (no GPU needed)."""
        from .nvjitlink import compile_ptx
        return compile_ptx(self.ptx, self.target.sm)

    def resources(self) -> dict:
        """registers per thread, static shared bytes, spill bytes (from ptxas
        through nvJitLink), plus the launch's dynamic shared bytes and threads."""
        figures = self.compiled().resources()
        figures["dynamic_shared_bytes"] = int(self.thread_kernel.shared_bytes)
        figures["threads"] = int(self.thread_kernel.threads)
        return figures

    def _get_function(self):
        if self._function is None:
            from ..runtime import cuda as rt
            device = rt.ensure_context()
            if device.sm < self.target.sm:
                raise TLTargetError(f"{self.name}: compiled for sm_{self.target.sm}, but {device.name} is "
                                    f"sm_{device.sm}; compile with target='cuda:sm_{device.sm}'")
            from .ptx import ENTRY_NAME
            self._function = rt.load_module(self.ptx).function(ENTRY_NAME(self.thread_kernel.name))
        return self._function

    def launch(self, *args, stream=None, **kwargs) -> None:
        from ..runtime import cuda_launch
        function = self._get_function()
        if self._plan is None:
            from ..runtime.args import plan_arguments
            self._plan = plan_arguments(self.kernel)
        bound = cuda_launch.bind_cuda_arguments(self.kernel, args, kwargs, stream, self._plan)
        grid = cuda_launch.grid_dims(self.kernel, bound)
        if grid is not None:
            params = cuda_launch.marshal(self.kernel, self.thread_kernel.params, bound)
            function.launch(grid, int(self.thread_kernel.threads), int(self.thread_kernel.shared_bytes),
                            params, stream)
        cuda_launch.finish(bound, stream)

    def __call__(self, *args, **kwargs) -> None:
        stream = None
        if "stream" in kwargs and all(p.name != "stream" for p in self.kernel.params):
            stream = kwargs.pop("stream")
        self.launch(*args, stream=stream, **kwargs)


__all__ = ["CUDAKernel", "STAGES"]
