import os
import tempfile

import numpy as np
import pytest

# Tests always verify the IR after every pass, and never touch the user's
# compile cache.
os.environ.setdefault("TL_VERIFY", "1")
os.environ["TL_CACHE_DIR"] = tempfile.mkdtemp(prefix="tl-test-cache-")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")


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


@pytest.fixture(params=["interp", "cpu"])
def target(request):
    """Every kernel test runs on the reference interpreter and on the CPU backend."""
    return request.param
