"""Draw small layouts as grids, for docs and debugging."""
from __future__ import annotations

import numpy as np


def _threads(ts: list[int]) -> str:
    """Compact thread list: runs of consecutive ids as `t4-7`, joined by `|`."""
    runs: list[list[int]] = []
    for t in sorted(ts):
        if runs and t == runs[-1][1] + 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    return "|".join(f"t{a}" if a == b else f"t{a}-{b}" for a, b in runs)


def format_layout(layout) -> str:
    """A grid of `t<thread>:<slot>` cells for a 1-D or 2-D register layout
    (a 1-D layout is one row); other ranks print repr.

    A replicated element lists its owners compactly, e.g. `t0|t4:1` or
    `t8-11:0` (every owner holds it in the same slot).
    """
    shape = layout.shape
    if len(shape) not in (1, 2):
        return repr(layout)
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    cells = [[[] for _ in range(cols)] for _ in range(rows)]
    t, l = np.meshgrid(np.arange(layout.num_threads), np.arange(layout.local_size), indexing="ij")
    index = layout.map(t, l)
    r = np.zeros_like(t) if len(shape) == 1 else index[0]
    for tt, ll, rr, cc in zip(t.ravel(), l.ravel(), r.ravel(), index[-1].ravel()):
        cells[rr][cc].append((int(tt), int(ll)))
    text = [[_threads([a for a, _ in cell]) + f":{cell[0][1]}" for cell in row] for row in cells]
    width = max(len(x) for row in text for x in row)
    return "\n".join(" ".join(x.rjust(width) for x in row) for row in text)


def format_shared(layout) -> str:
    """A grid of element offsets for a 1-D or 2-D shared layout; other ranks print repr."""
    shape = layout.shape
    if len(shape) not in (1, 2):
        return repr(layout)
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    idx = np.indices((rows, cols))
    offsets = layout.offset((idx[1],) if len(shape) == 1 else (idx[0], idx[1]))
    width = len(str(int(np.max(offsets))))
    return "\n".join(" ".join(str(int(o)).rjust(width) for o in row) for row in np.atleast_2d(offsets))
