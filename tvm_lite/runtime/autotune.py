"""A small autotuner for the tile constants of library kernels.

`tune` searches a space of compile-time constants (tile sizes) one constant at
a time, starting from the kernel's defaults: for each constant in turn it times
every candidate value with the others fixed at the best found so far, and keeps
the fastest (coordinate descent: a few times the number of values per constant,
not their product). Each candidate is timed on the caller's real problem, the
fastest of a few runs after a warm-up. The winner's output is checked once
against the starting configuration's, and its speed once more head to head
with the defaults; a pick that disagrees, or that does not win again, is dropped.

Results are remembered in memory and on disk, as small JSON files under
`<compile cache>/autotune/` (see runtime/cache.py for TL_CACHE_DIR), keyed by
whatever the caller puts in `key` (kernel, constants, shape class, target)
plus the host CPU, the thread count and the package version.

`TL_AUTOTUNE=0` turns tuning off: `enabled()` is False and callers use the
kernel's defaults. A progress bar (tqdm, when installed) appears when a search
takes more than a second.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from ..errors import TLError
from .cache import cache_dir, cache_key

Config = dict   # compile-time constant name -> value
# Part of every key: bump it when the search changes, so old picks are not reused.
_SEARCH_VERSION = 2
# build(config) returns a function that runs the kernel once on the real problem and
# returns its output (a numpy array), or raises TLError when the config is invalid.
Build = Callable[[Config], Callable[[], object]]

_memory: dict[str, Config] = {}
_lock = threading.Lock()


def enabled() -> bool:
    """False when the environment says TL_AUTOTUNE=0."""
    return os.environ.get("TL_AUTOTUNE", "1").strip() not in ("0", "false", "no", "off")


def tune(key: dict, space: dict[str, Iterable], build: Build, agree: Callable[[object, object], bool],
         *, desc: str = "autotune", repeat: int = 3) -> Config:
    """The best config in `space` (name -> candidate values), cached by `key`.

    `space` holds only the constants being tuned; the start point is the
    kernel's defaults (the empty config), so `build({})` must work. `agree(ref,
    out)` says whether two outputs match (the winner's output against the
    defaults'). Returns the constants to pass to the kernel ({} = defaults).
    """
    path = _entry_path(key)
    with _lock:
        hit = _memory.get(path.name)
    if hit is None:
        hit = _read(path)
    if hit is not None:
        with _lock:
            _memory[path.name] = hit
        return dict(hit)
    best = _search(space, build, agree, desc, repeat)
    with _lock:
        _memory[path.name] = best
    _write(path, best)
    return dict(best)


def _search(space: dict[str, Iterable], build: Build, agree, desc: str, repeat: int) -> Config:
    axes = {name: list(dict.fromkeys(values)) for name, values in space.items()}
    total = sum(len(v) for v in axes.values())
    reference_run = build({})
    reference = reference_run()
    best, best_time = {}, _time(reference_run, repeat)
    timed = {(): best_time}
    with _progress(total, desc) as bar:
        for name, values in axes.items():
            for value in values:
                bar.update(1)
                config = {**best, name: value}
                signature = tuple(sorted(config.items()))
                if signature in timed:
                    continue
                try:
                    run = build(config)
                    seconds = _time(run, repeat, give_up=3 * best_time)
                except TLError:          # e.g. a tile the kernel cannot take
                    seconds = float("inf")
                timed[signature] = seconds
                if seconds < best_time:
                    best, best_time = config, seconds
    if not best:
        return best
    best_run = build(best)
    if not agree(reference, best_run()):
        return {}    # a fast wrong answer is no answer: keep the defaults
    # Confirm the win head to head (alternating runs), so that a burst of
    # noise during the search cannot crown a slower config.
    default_time, best_time = _time_pair(reference_run, best_run, repeat)
    return best if best_time < 0.97 * default_time else {}


def _time(run: Callable[[], object], repeat: int, give_up: float = float("inf")) -> float:
    """The fastest of `repeat` timed runs after one warm-up run (on a shared
    machine, interference only ever adds time, so the minimum is the steadiest
    estimate). Runs are repeated in a batch while one takes under a
    millisecond, so the clock's grain is small. A config whose warm-up run
    takes over `give_up` seconds is not timed further: it has lost already,
    and a pathological one could take minutes."""
    start = time.perf_counter()
    run()
    once = time.perf_counter() - start
    if once > give_up:
        return once
    batch = _batch(once)
    return min(_sample(run, batch) for _ in range(repeat))


def _time_pair(first: Callable[[], object], second: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(fastest of first, fastest of second) over `repeat` alternating samples."""
    first()
    second()
    start = time.perf_counter()
    first()
    batch = _batch(time.perf_counter() - start)
    a, b = [], []
    for _ in range(repeat):
        a.append(_sample(first, batch))
        b.append(_sample(second, batch))
    return min(a), min(b)


def _batch(once: float) -> int:
    return max(1, min(1000, int(1e-3 / max(once, 1e-9))))


def _sample(run: Callable[[], object], batch: int) -> float:
    start = time.perf_counter()
    for _ in range(batch):
        run()
    return (time.perf_counter() - start) / batch


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        yield _NoBar()
        return
    # delay: the bar appears only when the search runs longer than a second.
    with tqdm(total=total, desc=desc, unit="config", delay=1.0, leave=False) as bar:
        yield bar


# ------------------------------------------------------------------ storage


def _host() -> str:
    try:
        from ..backends.llvm import host
        return host().key
    except Exception:  # noqa: BLE001 - no LLVM: key by the platform only
        import platform
        return platform.processor() or platform.machine()


def _entry_path(key: dict) -> Path:
    digest = cache_key(kind="autotune", search=_SEARCH_VERSION, host=_host(), threads=os.cpu_count(), **key)
    return cache_dir() / "autotune" / f"{digest}.json"


def _read(path: Path) -> Config | None:
    """The stored config, or None when absent or unreadable (a corrupt entry is ignored and replaced)."""
    try:
        entry = json.loads(path.read_text())
        config = entry["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(config, dict) or not all(isinstance(v, (int, str)) for v in config.values()):
        return None
    return config


def _write(path: Path, config: Config) -> None:
    """Atomically (temporary file, then os.replace); a read-only disk keeps the result in memory only."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump({"config": config}, f)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def clear_memory() -> None:
    """Forget in-memory results (tests use it to exercise the disk cache)."""
    with _lock:
        _memory.clear()


__all__ = ["enabled", "tune", "clear_memory"]
