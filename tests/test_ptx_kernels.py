"""Every TL example and every op kernel prints to PTX that ptxas (through
nvJitLink: no GPU, no driver needed) assembles for sm_80, sm_89 and sm_90.

The op kernels (tvm_lite/ops/*.tl) are compiled with the kernel choice and
constants `tl.ops.quant_matmul` uses on the GPU (ops/matmul.py gpu_config:
the mma path for f16/bf16 activations, the f32 path, and the kernels a caller
may force) and representative weight, activation and scale types, group
sizes and zero points; every one must assemble with 0 spill bytes (the
flagship u4/g128/f16 kernels are also checked by name). The examples and the DESIGN.md kernel of
tests/conftest.py are compiled with their own default constants.

Compiled kernels are shared across tests (lowering is per target, ptxas
results are cached per PTX text), so each (kernel, constants, sm) is lowered
and assembled once per session.
"""
from __future__ import annotations

import functools
import glob
import os

import pytest

pytest.importorskip("cuda.bindings.nvjitlink")

import tvm_lite as tl  # noqa: E402
from tvm_lite.backends.nvjitlink import compile_ptx  # noqa: E402
from tvm_lite.backends.ptx_resources import DEFAULT_DTYPES  # noqa: E402
from tvm_lite.ops.matmul import GEMV_MAX_M, gpu_config, kernel_source  # noqa: E402

from conftest import EXAMPLES, QMATMUL  # noqa: E402

SMS = (80, 89, 90)
WEIGHT_TYPES = ("u1", "u3", "u4", "u8", "i4", "f4e2m1", "f6e3m2", "f8e4m3")
# The weight types of the register table in docs/benchmarks.md: the M <= 16 kernel
# (register prefetch of the weight tile) is checked for each.
ALL_WEIGHT_TYPES = DEFAULT_DTYPES


@functools.lru_cache(maxsize=None)
def _module(source: str, sm: int, constants: tuple):
    return tl.compile(source, target=f"cuda:sm_{sm}", **dict(constants))


def _assemble(source: str, sm: int, constants: tuple = ()) -> dict:
    """{kernel name: (ptx, ptxas figures)} for every kernel of `source`."""
    mod = _module(source, sm, constants)
    out = {}
    for name, kernel in mod.kernels.items():
        ptx = kernel.source("ptx")
        out[name] = (ptx, compile_ptx(ptx, sm))
    return out


# ------------------------------------------------------------------ examples


EXAMPLE_FILES = sorted(glob.glob(os.path.join(EXAMPLES, "*.tl")))


def test_examples_are_found():
    assert {os.path.basename(p) for p in EXAMPLE_FILES} >= {"vector_add.tl", "matmul.tl", "softmax.tl",
                                                             "qmatmul.tl"}


@pytest.mark.parametrize("sm", SMS)
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=os.path.basename)
def test_example_assembles(path, sm):
    kernels = _assemble(path, sm)
    assert kernels
    for name, (ptx, cubin) in kernels.items():
        assert f".target sm_{sm}" in ptx
        assert 0 < cubin.registers <= 255, (name, cubin.log)
        assert cubin.cubin[:4] == b"\x7fELF"


@pytest.mark.parametrize("sm", SMS)
def test_design_qmatmul_has_no_spills(sm):
    """The DESIGN.md section 7 kernel (tests/conftest.py QMATMUL), default constants."""
    (_, cubin), = _assemble(QMATMUL, sm).values()
    assert (cubin.spill_stores, cubin.spill_loads) == (0, 0), cubin.log


# ---------------------------------------------------------------- op kernels


def _op_case(m: int, wt: str, at: str = "f16", g: int = 128, st: str = "f16", zero: int = 0,
             kernel: str | None = None):
    name, gpu = gpu_config(m, at, kernel)
    constants = dict(WT=wt, AT=at, ST=st, G=g, ZERO=zero, **gpu)
    ident = f"{name}-m{m}-{wt}-{at}-g{g}" + (f"-{st}" if st != "f16" else "") + ("-zero" if zero else "")
    return pytest.param(name, tuple(sorted(constants.items())), id=ident)


OP_CASES = (
    # every weight type, f16 activations, group 128 (the mma path, M <= 16 and M > 16 tiles)
    [_op_case(1, wt) for wt in ALL_WEIGHT_TYPES] + [_op_case(128, wt) for wt in WEIGHT_TYPES]
    # bf16 activations
    + [_op_case(m, wt, "bf16") for m in (1, 128) for wt in ("u4", "i4", "f4e2m1", "f8e4m3")]
    # f32 activations: the CPU's kernel choice with an f32 dot
    + [_op_case(m, wt, "f32") for m in (1, GEMV_MAX_M, 128) for wt in ("u4", "u3")]
    # kernels a caller may force with f16 activations
    + [_op_case(m, "u4", kernel="quant_gemm") for m in (1, 128)]
    # group sizes (4096: per channel at K = 4096), zero points, other scale types
    + [_op_case(m, "u4", g=g) for m in (1, 128) for g in (32, 4096)]
    + [_op_case(m, "u4", at, zero=1) for m in (1, 128) for at in ("f16", "bf16")]
    + [_op_case(1, "u8", st="f32"), _op_case(128, "i4", "bf16", st="bf16")]
)


@pytest.mark.parametrize("sm", SMS)
@pytest.mark.parametrize("kernel, constants", OP_CASES)
def test_op_kernel_assembles_without_spills(kernel, constants, sm):
    (ptx, cubin), = _assemble(str(kernel_source(kernel)), sm, constants).values()
    assert f".target sm_{sm}" in ptx
    # MINB blocks of 128 threads must fit the SM's 64K registers (then with no spills either)
    assert 0 < cubin.registers <= min(255, 65536 // (128 * dict(constants).get("MINB", 1))), cubin.log
    assert (cubin.spill_stores, cubin.spill_loads) == (0, 0), cubin.log


@pytest.mark.parametrize("sm", SMS)
@pytest.mark.parametrize("m", [1, GEMV_MAX_M, 128])
def test_flagship_quant_matmul_has_no_spills(m, sm):
    """The kernels tl.ops.quant_matmul(a, qt, target="cuda") runs for u4,
    group 128, f16 activations and scales: mma.sync, and no spills."""
    name, gpu = gpu_config(m, "f16")
    # weight tiles loaded ahead; 4 blocks per SM (128 registers)
    assert (gpu.get("PREFETCH", 0), gpu.get("MINB", 1)) == ((1, 4) if m <= GEMV_MAX_M else (0, 1))
    constants = tuple(sorted(dict(WT="u4", AT="f16", ST="f16", G=128, ZERO=0, **gpu).items()))
    (ptx, cubin), = _assemble(str(kernel_source(name)), sm, constants).values()
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in ptx
    assert (".minnctapersm 4" in ptx) == (m <= GEMV_MAX_M)
    assert 0 < cubin.registers <= (128 if m <= GEMV_MAX_M else 255)
    assert (cubin.spill_stores, cubin.spill_loads) == (0, 0), cubin.log


def test_every_op_kernel_file_is_covered():
    """A new ops/*.tl kernel must be added to OP_CASES (or be the DESIGN.md kernel)."""
    covered = {p.values[0] for p in OP_CASES} | {"qmatmul"}
    assert {"quant_gemv", "quant_gemm"} <= covered
    files = {os.path.splitext(os.path.basename(p))[0]
             for p in glob.glob(os.path.join(os.path.dirname(kernel_source("quant_gemv")), "*.tl"))}
    assert files <= covered, sorted(files - covered)


@pytest.mark.parametrize("sm", SMS)
def test_ops_qmatmul_assembles(sm):
    (_, cubin), = _assemble(str(kernel_source("qmatmul")), sm).values()
    assert (cubin.spill_stores, cubin.spill_loads) == (0, 0), cubin.log
