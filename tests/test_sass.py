"""The machine code of tl.ops.quant_matmul's GPU kernel, through nvdisasm (no
GPU needed): instruction selection checked where it ends up, in SASS.

The bound on instructions per weight is a static property of the code, not a
timing: the weight-streaming loop must stay a few instructions per weight
element (it was 13.7 for u4 before the zero point folded into the dequant and
f16x2 pairs reached the mma unwidened), or an M = 1 kernel cannot keep up with
HBM on any GPU.
"""
from collections import Counter

import pytest

from tvm_lite.backends import sass

pytestmark = pytest.mark.skipif(sass.find_nvdisasm() is None, reason="needs nvdisasm (nvidia-cuda-nvdisasm)")
pytest.importorskip("cuda.bindings.nvjitlink")

LISTING = """\
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_1:
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/              @!P0 BRA `(.L_x_2) ;
        /*0030*/                   LDG.E.U8 R8, desc[UR4][R2.64] ;
.L_x_2:
        /*0040*/                   LOP3.LUT R5, R4, 0xf000f, R6, 0x6a, !PT ;
        /*0050*/                   HMMA.16816.F32 R8, R4, R6, R8 ;
        /*0060*/              @P1 BRA `(.L_x_1) ;
        /*0070*/                   EXIT ;
"""


def test_hot_loop_reads_the_control_flow():
    """The loop is the backward branch around the HMMA; the block with the
    byte load (a fallback path) is left out; modifiers and predicates are
    dropped from opcodes."""
    counts = sass.hot_loop(LISTING)
    assert counts == Counter({"LDG": 1, "BRA": 2, "LOP3": 1, "HMMA": 1})
    assert sass.hot_loop(LISTING.replace("@P1 BRA `(.L_x_1)", "EXIT")) == Counter()
    assert sass.mma_elements_per_thread(Counter({"HMMA": 16}), 16) == 64.0
    assert sass.mma_elements_per_thread(Counter({"HMMA": 16}), 64) == 16.0


@pytest.mark.parametrize("wt, limit", [("u4", 4.5), ("u1", 4.0), ("u3", 4.5), ("i4", 4.5), ("f6e3m2", 5.5)])
def test_weight_loop_is_a_few_instructions_per_weight(wt, limit):
    p = sass.quant_matmul_profile(wt, 1, 90)
    counts = p["counts"]
    assert counts["HMMA"] >= 16 and counts["LDSM"] > 0
    assert counts["I2F"] == 0 and counts["F2F"] == 0 and counts["I2FP"] == 0     # no per-element conversions
    assert counts["FMNMX"] == 0            # no f32 saturation of values that cannot overflow
    assert p["per_element"] <= limit, (p["per_element"], counts.most_common(8))


def test_module_source_sass(tmp_path):
    """`mod.source("sass")` on a cuda target: the kernel's machine code."""
    import os

    import tvm_lite as tl
    from conftest import EXAMPLES
    mod = tl.compile(os.path.join(EXAMPLES, "vector_add.tl"), target="cuda:sm_90")
    text = mod.source("sass")
    assert ".text.vector_add" in text and "EXIT" in text and "LDG" in text


def test_load_copies_counts_moves_of_loaded_registers():
    """A move that reads a register a wide load of the loop wrote counts; a
    move of any other register, or a load outside the loop, does not."""
    listing = LISTING.replace(
        "LOP3.LUT R5, R4, 0xf000f, R6, 0x6a, !PT ;",
        "IMAD.MOV.U32 R20, RZ, RZ, R7 ;\n        /*0048*/                   MOV R21, R9 ;")
    assert sass.load_copies(listing) == 1                    # R7 of LDG.E.128 R4 (R4-R7)
    assert sass.load_copies(listing.replace("LDG.E.128 R4", "LDG.E.64 R4")) == 0    # R4-R5 only
    assert sass.load_copies(LISTING) == 0


@pytest.mark.parametrize("sm", [80, 90])
@pytest.mark.parametrize("wt", ["u1", "u2", "u4"])
def test_prefetched_tiles_stay_in_flight(wt, sm):
    """quant_gemv's two register sets (PREFETCH, <= 4-bit weights) are loaded
    2 k tiles ahead and read only by the dequant: no register copy of a
    loaded tile, which would wait for the load within the iteration."""
    p = sass.quant_matmul_profile(wt, 1, sm)
    assert p["tiles"]["PREFETCH"] and p["counts"]["LDG"] > 0
    assert p["load_copies"] == 0, p["counts"].most_common(8)
