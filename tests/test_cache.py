"""The compile cache: keys cover every input; entries are atomic and checked."""
import threading

import pytest

from tvm_lite.runtime.cache import CompileCache, cache_key

BASE = dict(source="kernel text", constants=(("BN", 64),), target="cpu", host="znver4|+avx2")


@pytest.mark.parametrize("field, other", [("source", "kernel text 2"), ("constants", (("BN", 128),)),
                                          ("target", "cuda:sm_90"), ("host", "skylake|+avx2")])
def test_every_input_changes_the_key(field, other):
    assert cache_key(**BASE) == cache_key(**dict(BASE))
    assert cache_key(**{**BASE, field: other}) != cache_key(**BASE)


def test_package_version_is_part_of_the_key(monkeypatch):
    import tvm_lite
    before = cache_key(**BASE)
    monkeypatch.setattr(tvm_lite, "__version__", "999.0")
    assert cache_key(**BASE) != before


def test_round_trip_through_disk(tmp_path):
    key = cache_key(**BASE)
    CompileCache(tmp_path).put(key, b"object code \x00\xff")
    fresh = CompileCache(tmp_path)            # a new process: empty memory layer
    assert fresh.get(key) == b"object code \x00\xff"
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_corrupt_entry_is_rebuilt_not_trusted(tmp_path):
    key = cache_key(**BASE)
    CompileCache(tmp_path).put(key, b"good payload")
    entry = next(tmp_path.rglob(f"{key}.bin"))
    blob = bytearray(entry.read_bytes())
    blob[-1] ^= 0xFF
    entry.write_bytes(bytes(blob))
    fresh = CompileCache(tmp_path)
    assert fresh.get(key) is None and not entry.exists()
    builds = []
    assert fresh.get_or_build(key, lambda: builds.append(1) or b"rebuilt") == b"rebuilt"
    assert builds == [1] and CompileCache(tmp_path).get(key) == b"rebuilt"


def test_truncated_entry_is_ignored(tmp_path):
    key = cache_key(**BASE)
    path = tmp_path / key[:2] / f"{key}.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"TLCA")
    assert CompileCache(tmp_path).get(key) is None


def test_concurrent_builders_build_once(tmp_path):
    key = cache_key(**BASE)
    caches = [CompileCache(tmp_path) for _ in range(4)]
    builds = []
    lock = threading.Lock()

    def build():
        with lock:
            builds.append(1)
        return b"once"

    threads = [threading.Thread(target=c.get_or_build, args=(key, build)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(c.get(key) == b"once" for c in caches)
    assert len(builds) == 1
