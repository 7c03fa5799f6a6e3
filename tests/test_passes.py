"""The pass manager and its instruments, and dead-code elimination."""
import numpy as np

import tvm_lite as tl
from tvm_lite.ir import vm
from tvm_lite.ir.functor import collect
from tvm_lite.passes.dead_code import eliminate_dead_code

SRC = """
@kernel(warps=1)
def k(n: i32, x: f32[n], y: f32[n]):
    unused = load(x, [1], [8]) * 2.0
    acc = zeros(f32, [8])
    dead_acc = zeros(f32, [8])
    for i in range(3):
        acc = acc + load(x, [i], [8])
        dead_acc = dead_acc + 1.0
    store(y, acc, [0])
"""


def test_dead_code_is_removed_and_live_code_kept(rng):
    mod = tl.compile(SRC, target="interp")
    kernel = mod.program.kernels[0]
    names = {s.out.name for s in collect(kernel, vm.Instr) if getattr(s, "out", None) is not None}
    assert not any(n.startswith("unused") or n.startswith("dead_acc") for n in names), names
    assert len(collect(kernel, vm.Assign)) == 1 and len(collect(kernel, vm.Store)) == 1
    x = rng.standard_normal(10).astype(np.float32)
    y = np.full(10, np.nan, np.float32)
    mod.k(10, x, y)
    ref = sum(x[i:i + 8].astype(np.float64) for i in range(3))
    np.testing.assert_allclose(y[:8], ref, rtol=1e-6)


def test_dead_code_returns_the_same_program_when_nothing_is_dead():
    program = tl.compile(SRC, target="interp").program
    assert eliminate_dead_code(program) is program


def test_dump_and_timing_instruments(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TL_DUMP_IR", str(tmp_path / "dumps"))
    monkeypatch.setenv("TL_TIME_PASSES", "1")
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "keep.txt").write_text("the user's file")
    tl.compile(SRC, target="interp")
    files = sorted(p.name for p in (tmp_path / "dumps").iterdir())
    assert files == ["keep.txt", "string.00_input.vm", "string.01_eliminate_dead_code.vm"]
    before = (tmp_path / "dumps" / "string.00_input.vm").read_text()
    after = (tmp_path / "dumps" / "string.01_eliminate_dead_code.vm").read_text()
    assert "%unused" in before and "%unused" not in after
    err = capsys.readouterr().err
    assert "eliminate_dead_code" in err and "total" in err
