"""tl.ops.quant_matmul against numpy f32 (and torch int4): the same as `python -m tvm_lite bench`.

    python benchmarks/quant_matmul.py [--dtypes u4,u3,f6e3m2] [--m 1,16] [--k 8192 --n 8192] [--plot out.png]
"""
import sys

from tvm_lite.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
