"""Compilation targets: parsing and validating the `target=` string."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import TLTargetError

DEFAULT_SM = 80
_SUPPORTED_SM = (80, 86, 89, 90)
_SPELLINGS = '"cpu", "interp", "cuda", "cuda:sm_XX", "cuda-emu", "cuda-emu:sm_XX"'


@dataclass(frozen=True)
class Target:
    """kind is "cpu", "interp", "cuda" or "cuda-emu"; sm is set for the CUDA kinds."""
    kind: str
    sm: int | None = None

    def __str__(self) -> str:
        return self.kind if self.sm is None else f"{self.kind}:sm_{self.sm}"

    @property
    def is_cuda(self) -> bool:
        return self.kind in ("cuda", "cuda-emu")


def parse_target(spec: "str | Target") -> Target:
    if isinstance(spec, Target):
        return spec
    if not isinstance(spec, str):
        raise TLTargetError(f"target must be a string such as {_SPELLINGS}, got {type(spec).__name__}")
    m = re.fullmatch(r"(cpu|interp|cuda|cuda-emu)(?::sm_(\d+))?", spec.strip())
    if m is None:
        raise TLTargetError(f"unknown target {spec!r}; valid targets are {_SPELLINGS}")
    kind, sm = m.group(1), m.group(2)
    if sm is not None and kind in ("cpu", "interp"):
        raise TLTargetError(f"target {spec!r}: an sm_XX architecture only applies to cuda targets")
    if kind in ("cuda", "cuda-emu"):
        sm = int(sm) if sm is not None else DEFAULT_SM
        if sm not in _SUPPORTED_SM:
            raise TLTargetError(f"target {spec!r}: sm_{sm} is not supported; use one of "
                                + ", ".join(f"sm_{s}" for s in _SUPPORTED_SM))
        return Target(kind, sm)
    return Target(kind)
