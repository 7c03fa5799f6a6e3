import os
import re
import tempfile

import numpy as np
import pytest

# Tests always verify the IR after every pass, and never touch the user's
# compile cache.
os.environ.setdefault("TL_VERIFY", "1")
# Tuning searches are timed runs: tests use the kernels' defaults unless a
# test turns tuning on itself.
os.environ["TL_AUTOTUNE"] = "0"
os.environ["TL_CACHE_DIR"] = tempfile.mkdtemp(prefix="tl-test-cache-")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")

# The DESIGN.md section 7 kernel, verbatim: outside tests rely on it compiling as written.
QMATMUL = """\
@kernel(warps=4)
def qmatmul[WT: dtype = u4, BM: int = 16, BN: int = 128, BK: int = 64, G: int = 128](
        m: i32, n: i32, k: i32,
        a: f16[m, k], b: WT[k, n], s: f16[cdiv(k, G), n], c: f16[m, n]):
    grid(cdiv(m, BM), cdiv(n, BN))
    acc = zeros(f32, [BM, BN])
    for kt in range(cdiv(k, BK)):
        ta = load(a, [block.x * BM, kt * BK], [BM, BK])     # out-of-range reads give 0
        tb = load(b, [kt * BK, block.y * BN], [BK, BN])
        ts = load(s, [kt * BK // G, block.y * BN], [1, BN])
        acc = dot(ta, cast(tb, f16) * ts, acc)
    store(c, cast(acc, f16), [block.x * BM, block.y * BN])  # out-of-range writes dropped
"""


@pytest.fixture
def rng():
    """Fresh random data on every run (never a fixed seed of zeros or ones)."""
    return np.random.default_rng()


def pytest_collection_modifyitems(config, items):
    from tvm_lite.runtime.devices import has_cuda_gpu  # noqa: F401 - imported lazily below

    if has_cuda_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with a CUDA driver; none found")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def kernel_targets():
    """The targets every kernel test runs on: the reference interpreter, the CPU
    backend, the thread-IR emulator for sm_80 and sm_90, and, when this machine has
    an NVIDIA GPU, the real device (marked `gpu`, so `pytest -m gpu` runs them)."""
    from tvm_lite.runtime.devices import has_cuda_gpu

    params = [pytest.param("interp", id="interp"), pytest.param("cpu", id="cpu"),
              pytest.param("cuda-emu:sm_80", id="emu-sm80"), pytest.param("cuda-emu:sm_90", id="emu-sm90")]
    if has_cuda_gpu():
        params.append(pytest.param("cuda", id="cuda", marks=pytest.mark.gpu))
    return params


def is_gpu_target(target: str) -> bool:
    """cuda-emu and cuda: the targets that run the lowered thread IR."""
    return target.startswith("cuda")


def skip_on_gpu(target: str, reason: str) -> None:
    """Skip a test of interp/cpu semantics that GPUs do not have (language.md section 3).
    `reason` says which semantic difference it is."""
    if is_gpu_target(target):
        pytest.skip(f"{target}: {reason}")


@pytest.fixture(params=kernel_targets())
def target(request):
    """Every kernel test runs on every target of kernel_targets()."""
    return request.param


def mutate_source(path, edits) -> str:
    """The source at `path` with fuzz edits applied: (kind, position, token) where
    kind is insert, delete or swap, on a rough Python-like tokenization."""
    with open(path) as f:
        tokens = re.findall(r"\s+|\w+|//|<<|>>|[<>=!]=|.", f.read(), re.S)
    for kind, pos, tok in edits:
        pos %= len(tokens)
        if kind == "insert":
            tokens.insert(pos, tok)
        elif kind == "delete" and len(tokens) > 1:
            del tokens[pos]
        elif kind == "swap" and pos + 1 < len(tokens):
            tokens[pos], tokens[pos + 1] = tokens[pos + 1], tokens[pos]
    return "".join(tokens)
