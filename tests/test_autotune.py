"""The autotuner: search, checking the pick, the disk cache, TL_AUTOTUNE."""
import json
import uuid

import numpy as np
import pytest

import tvm_lite as tl
from tvm_lite.errors import TLError
from tvm_lite.ops import matmul as qm
from tvm_lite.runtime import autotune
from tvm_lite.runtime.cache import cache_dir


@pytest.fixture(autouse=True)
def tuning_on(monkeypatch):
    # Entries go to the session's cache dir (conftest points TL_CACHE_DIR at a fresh
    # one); keys carry a uuid so that no earlier result can answer.
    monkeypatch.setenv("TL_AUTOTUNE", "1")
    autotune.clear_memory()
    qm.clear_tuned_tiles()
    yield
    autotune.clear_memory()
    qm.clear_tuned_tiles()


class FakeKernel:
    """build() for a fake kernel: X selects the work done; X=3 is invalid; X=4 is fast but wrong."""

    def __init__(self, work):
        self.work = work           # X -> busy-loop length
        self.builds = []

    def __call__(self, config):
        x = config.get("X", 0)
        self.builds.append(x)
        if x == 3:
            raise TLError("tile 3 is not supported")

        def run():
            total = 0
            for i in range(self.work[x]):
                total += i
            return np.array([1.0 if x != 4 else 2.0])
        return run


def agree(ref, out):
    return bool(np.allclose(ref, out))


def entries():
    return set((cache_dir() / "autotune").glob("*.json"))


def fresh_key(**kw):
    return {"test": uuid.uuid4().hex, **kw}


def test_search_picks_a_faster_config_and_caches_it():
    build = FakeKernel({0: 200_000, 1: 200_000, 2: 200, 4: 100})
    space = {"X": (1, 2, 3)}
    key, before = fresh_key(shape=1), entries()
    best = autotune.tune(key, space, build, agree)
    assert best == {"X": 2}                   # 1000x less work than the defaults
    assert 3 in build.builds                  # the invalid tile was tried and skipped
    new = entries() - before
    assert len(new) == 1 and json.loads(new.pop().read_text()) == {"config": {"X": 2}}
    # later calls, in memory and from disk, do not search again
    build.builds.clear()
    assert autotune.tune(key, space, build, agree) == {"X": 2}
    autotune.clear_memory()
    assert autotune.tune(key, space, build, agree) == {"X": 2}
    assert build.builds == []
    # another key searches again
    autotune.tune({**key, "shape": 2}, space, build, agree)
    assert build.builds


def test_a_fast_wrong_pick_is_dropped():
    build = FakeKernel({0: 100_000, 4: 10})
    assert autotune.tune(fresh_key(), {"X": (4,)}, build, agree) == {}


def test_corrupt_entry_is_searched_again():
    build = FakeKernel({0: 100_000, 2: 100})
    key, before = fresh_key(), entries()
    assert autotune.tune(key, {"X": (2,)}, build, agree) == {"X": 2}
    (entry,) = entries() - before
    entry.write_text("{not json")
    autotune.clear_memory()
    build.builds.clear()
    assert autotune.tune(key, {"X": (2,)}, build, agree) == {"X": 2}
    assert build.builds                       # it searched instead of trusting the file
    assert json.loads(entry.read_text()) == {"config": {"X": 2}}


def test_enabled_follows_the_environment(monkeypatch):
    monkeypatch.setenv("TL_AUTOTUNE", "0")
    assert not autotune.enabled()
    monkeypatch.setenv("TL_AUTOTUNE", "1")
    assert autotune.enabled()
    monkeypatch.delenv("TL_AUTOTUNE")
    assert autotune.enabled()


def test_quant_matmul_tunes_a_tiny_space(rng, monkeypatch):
    monkeypatch.setitem(qm.TUNING_SPACE, "quant_gemm", {"BN": (32,), "BK": (16,)})
    k, n, m = 96, 40, 20
    before = entries()
    qt = tl.quantize(rng.standard_normal((k, n)), "u4", 32)
    a = rng.standard_normal((m, k)).astype(np.float32)
    c = tl.ops.quant_matmul(a, qt)
    ref = a.astype(np.float64) @ tl.dequantize(qt).astype(np.float64)
    assert np.max(np.abs(c - ref)) <= 1e-4 * np.max(np.abs(ref))
    (entry,) = entries() - before
    config = json.loads(entry.read_text())["config"]
    assert set(config) <= {"BN", "BK"}
    # with tuning off, no new entry appears for another shape class
    monkeypatch.setenv("TL_AUTOTUNE", "0")
    tl.ops.quant_matmul(rng.standard_normal((m, 2 * k)).astype(np.float32),
                        tl.quantize(rng.standard_normal((2 * k, n)), "u4", 32))
    assert entries() - before == {entry}


def test_progress_bar_uses_tqdm_when_installed(monkeypatch):
    import sys
    import types
    made = []

    class FakeBar:
        def __init__(self, **kwargs):
            self.kwargs, self.updates = kwargs, 0
            made.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n=1):
            self.updates += n

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
    autotune.tune(fresh_key(), {"X": (1, 2)}, FakeKernel({0: 10_000, 1: 100, 2: 100}), agree, desc="t")
    (bar,) = made
    assert bar.kwargs["total"] == 2 and bar.kwargs["delay"] > 0 and bar.updates == 2
    monkeypatch.setitem(sys.modules, "tqdm", None)         # not installed: no bar, same search
    assert autotune.tune(fresh_key(), {"X": (1,)}, FakeKernel({0: 10_000, 1: 100}), agree) == {"X": 1}
