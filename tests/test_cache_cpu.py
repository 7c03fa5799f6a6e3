"""The CPU compile cache: the kernel key covers every input, and a bad entry
is rebuilt, never loaded."""
import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.backends import cpu
from tvm_lite.backends.cpu import CPUKernel, kernel_cache_key

SRC = """
@kernel(warps=1)
def k[C: int = 3](n: i32, x: f32[n], y: f32[n]):
    grid(cdiv(n, 64))
    store(y, load(x, [block.x * 64], [64]) * 2.0 + C, [block.x * 64])
"""


def vm_kernel(**constants):
    return tl.compile(SRC, target="interp", **constants).program.kernels[0]


class FakeHost:
    def __init__(self, real, key):
        self._real, self.key = real, key

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_every_input_changes_the_cpu_key(monkeypatch):
    base = kernel_cache_key(vm_kernel())
    assert kernel_cache_key(vm_kernel()) == base
    assert kernel_cache_key(vm_kernel(C=4)) != base                       # program text and constants
    real = cpu.host()
    monkeypatch.setattr(cpu, "host", lambda: FakeHost(real, real.key + ",-avx512f"))
    assert kernel_cache_key(vm_kernel()) != base                          # host CPU features
    monkeypatch.undo()
    monkeypatch.setattr(cpu, "compiler_digest", lambda: "another compiler")
    assert kernel_cache_key(vm_kernel()) != base                          # the compiler's sources
    monkeypatch.undo()
    monkeypatch.setattr(tl, "__version__", "999.0")
    assert kernel_cache_key(vm_kernel()) != base                          # package version


@pytest.mark.parametrize("bad", [b"not an object file" * 8, "other kernel"])
def test_a_bad_cache_entry_is_rebuilt_not_loaded(tmp_path, monkeypatch, rng, bad):
    monkeypatch.setattr(cpu, "_cache", cpu.CompileCache(tmp_path))
    monkeypatch.setattr(cpu, "_loaded", {})
    kernel = vm_kernel(C=int(rng.integers(5, 10**6)))     # a key no other test has loaded
    key = kernel_cache_key(kernel)
    if bad == "other kernel":                            # valid object code, wrong symbol
        other = vm_kernel(C=int(rng.integers(-10**6, -5)))
        CPUKernel(other)
        bad = cpu.CompileCache(tmp_path).get(kernel_cache_key(other))
        assert bad[:4] == b"\x7fELF"
    cpu._cache.put(key, bad)
    k = CPUKernel(kernel)
    x = rng.standard_normal(100).astype(np.float32)
    y = np.full(100, np.nan, np.float32)
    k(100, x, y)
    np.testing.assert_array_equal(y, x * 2 + np.float32(kernel.constants[0][1]))
    assert cpu.CompileCache(tmp_path).get(key) != bad    # the entry was replaced
