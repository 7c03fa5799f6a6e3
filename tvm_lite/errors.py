"""Every error tvm_lite raises derives from TLError.

Source errors (syntax and type) carry a location and render it as
``file:line:col``, the offending line and a caret under the column.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceLocation:
    """A position in TL source: 1-based line and column."""
    file: str
    line: int
    column: int
    source_line: str = ""

    def render(self) -> str:
        head = f"{self.file}:{self.line}:{self.column}"
        if not self.source_line:
            return head
        caret = " " * (self.column - 1) + "^"
        return f"{head}\n    {self.source_line.rstrip()}\n    {caret}"


class TLError(Exception):
    """Base class of every error raised by tvm_lite."""

    def __init__(self, message: str, location: SourceLocation | None = None):
        self.message = message
        self.location = location
        super().__init__(self._render())

    def _render(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location.render()}\n{self.message}"


class TLDTypeError(TLError, ValueError):
    """An unknown or invalid data type name, or a value the type cannot hold."""


class TLSyntaxError(TLError):
    """Malformed TL source."""


class TLTypeError(TLError):
    """Well-formed TL source whose types, shapes or names do not check."""


class TLLayoutError(TLError):
    """An invalid layout construction or an operation on incompatible layouts."""


class TLLaunchError(TLError):
    """A kernel was called with arguments that do not match its signature."""


class TLTargetError(TLError):
    """An unsupported target, or a target whose toolchain or driver is missing."""


class TLCompileError(TLError):
    """A compiler stage failed on input that passed the checks (a compiler bug)."""
