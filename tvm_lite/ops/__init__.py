"""tvm_lite.ops: library kernels written in TL, and their Python wrappers.

* `quantize` / `dequantize` / `QuantizedTensor`: the group-wise weight format.
* `quant_matmul(a, qt, target="cpu")`: a @ dequantize(qt) by TL kernels
  (quant_gemv.tl for small M, quant_gemm.tl otherwise).
"""
from .matmul import quant_matmul
from .quantize import QuantizedTensor, dequantize, quantize

__all__ = ["quant_matmul", "quantize", "dequantize", "QuantizedTensor"]
