"""The compile cache: in memory and on disk, keyed by every input.

A key hashes everything that can change the compiled artifact: the printed
program, the constants, the target, the host CPU (or SM architecture) and the
package version, so a codegen change never serves a stale kernel (Triton and
vLLM shipped wrong answers from stale entries).

Disk entries live in `TL_CACHE_DIR` (default `~/.cache/tvm_lite`). Each entry
is written to a temporary file and moved into place with `os.replace`, so a
reader sees a whole entry or none, and builds of one key take a file lock. An
entry carries a SHA-256 of its payload; a corrupt entry is deleted and rebuilt,
never trusted.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

_MAGIC = b"TLCACHE1"


def cache_dir() -> Path:
    return Path(os.environ.get("TL_CACHE_DIR") or Path.home() / ".cache" / "tvm_lite")


def cache_key(**inputs) -> str:
    """A hex digest of the named inputs and the package version."""
    from .. import __version__
    h = hashlib.sha256()
    for name in sorted(inputs) + ["__version__"]:
        value = __version__ if name == "__version__" else inputs[name]
        h.update(f"{name}={value!r};".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def compiler_digest() -> str:
    """A hash of the compiler's own sources: a codegen change is a new key even
    when the package version stays the same."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".lark"):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class CompileCache:
    """Bytes by key, in memory and on disk."""

    def __init__(self, directory: Path | None = None):
        self._directory = directory
        self._memory: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return self._directory or cache_dir()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.bin"

    def get(self, key: str) -> bytes | None:
        with self._lock:
            if key in self._memory:
                return self._memory[key]
        path = self._path(key)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        payload = _unwrap(blob)
        if payload is None:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with self._lock:
            self._memory[key] = payload
        return payload

    def put(self, key: str, payload: bytes) -> None:
        with self._lock:
            self._memory[key] = payload
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(_wrap(payload))
            os.replace(tmp, path)
        except OSError:
            # A read-only or full disk degrades to the in-memory cache.
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)

    def get_or_build(self, key: str, build: Callable[[], bytes]) -> bytes:
        """The cached payload, or build it once (under a file lock) and store it."""
        hit = self.get(key)
        if hit is not None:
            return hit
        with self._file_lock(key):
            hit = self.get(key)   # another process may have built it meanwhile
            if hit is None:
                hit = build()
                self.put(key, hit)
        return hit

    @contextlib.contextmanager
    def _file_lock(self, key: str):
        lock_path = self._path(key).with_suffix(".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            f = open(lock_path, "a")
        except OSError:
            yield
            return
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()


def _wrap(payload: bytes) -> bytes:
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def _unwrap(blob: bytes) -> bytes | None:
    if len(blob) < len(_MAGIC) + 32 or not blob.startswith(_MAGIC):
        return None
    digest, payload = blob[len(_MAGIC):len(_MAGIC) + 32], blob[len(_MAGIC) + 32:]
    return payload if hashlib.sha256(payload).digest() == digest else None
