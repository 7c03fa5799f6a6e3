"""`python -m tvm_lite bench` and its library, on tiny shapes (no timing is asserted)."""
import importlib.util

import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.runtime.devices import has_cuda_gpu
from tvm_lite.__main__ import main
from tvm_lite.runtime import bench


@pytest.fixture(autouse=True)
def no_autotuning(monkeypatch):
    monkeypatch.setenv("TL_AUTOTUNE", "0")


def test_run_bench_rows_and_table():
    cfg = bench.BenchConfig(dtypes=("u4", "f4e2m1"), ms=(1, 17), k=96, n=40, group_size=32,
                            repeat=1, copy_mib=1)
    result = bench.run_bench(cfg, log=lambda line: None)
    assert [(r.dtype, r.m) for r in result.rows] == [("u4", 1), ("u4", 17), ("f4e2m1", 1), ("f4e2m1", 17)]
    assert result.ok and result.copy_gbps > 0 and result.read_gbps > 0
    for r in result.rows:
        assert r.seconds > 0 and r.numpy_seconds > 0 and r.max_rel_err < 1e-3
        qt = tl.quantize(np.ones((96, 40)), r.dtype, 32)
        assert r.weight_bytes == qt.nbytes           # packed weights + scales
    assert {r.kernel for r in result.rows} == {"quant_gemv", "quant_gemm"}
    table = bench.format_table(result)
    for column in ("dtype", "time ms", "GB/s", "% copy", "x numpy", "x torch", "max rel err"):
        assert column in table
    assert table.count(" ok") == 4


def test_max_rel_err_sees_a_wrong_result(rng):
    a = rng.standard_normal((2, 50)).astype(np.float32)
    w = rng.standard_normal((50, 30)).astype(np.float32)
    c = (a.astype(np.float64) @ w).astype(np.float32)
    assert bench._max_rel_err(a, w, c) < 1e-6
    c[1, 3] += 1.0
    assert bench._max_rel_err(a, w, c) > 1e-3


def test_cli_bench(capsys):
    code = main(["bench", "--dtypes", "u3,i4", "--m", "1,20", "--k", "64", "--n", "24",
                 "--group-size", "32", "--repeat", "1", "--act", "f16"])
    out = capsys.readouterr().out
    assert code == 0
    assert "u3" in out and "i4" in out and "WRONG" not in out and out.count(" ok") == 4


def test_cli_bench_errors(capsys):
    if not has_cuda_gpu():
        assert main(["bench", "--target", "cuda", "--k", "64", "--n", "16"]) == 2
        assert "no CUDA driver" in capsys.readouterr().err
    assert main(["bench", "--dtypes", "u4", "--k", "64", "--n", "16", "--act", "f64"]) == 2
    assert "--act must be one of" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed")
def test_plot_without_matplotlib_is_a_clear_error(capsys, tmp_path):
    assert main(["bench", "--dtypes", "u4", "--k", "64", "--n", "16", "--plot", str(tmp_path / "x.png")]) == 2
    assert "needs matplotlib" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed")
def test_plot_is_written(tmp_path):
    out = tmp_path / "speedup.png"
    assert main(["bench", "--dtypes", "u4,u2", "--m", "1", "--k", "64", "--n", "16", "--repeat", "1",
                 "--plot", str(out)]) == 0
    assert out.stat().st_size > 0
