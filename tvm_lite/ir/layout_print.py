"""Draw small layouts as grids, for docs and debugging."""
from __future__ import annotations

import numpy as np


def format_layout(layout) -> str:
    """A grid of `t<thread>:<slot>` cells for a 1-D or 2-D register layout.

    A replicated element lists its owning threads, e.g. `t0|t4:1`.
    """
    shape = layout.shape
    if len(shape) > 2:
        return repr(layout)
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    cells = [[[] for _ in range(cols)] for _ in range(rows)]
    t, l = np.meshgrid(np.arange(layout.num_threads), np.arange(layout.local_size), indexing="ij")
    index = layout.map(t, l)
    r = index[0] * 0 if len(shape) == 1 else index[0]
    c = index[-1]
    for tt, ll, rr, cc in zip(t.ravel(), l.ravel(), np.ravel(r), np.ravel(c)):
        cells[rr][cc].append((int(tt), int(ll)))
    text = [["|".join(f"t{a}" for a, _ in sorted(cell)) + f":{cell[0][1]}" for cell in row] for row in cells]
    width = max(len(x) for row in text for x in row)
    return "\n".join(" ".join(x.rjust(width) for x in row) for row in text)


def format_shared(layout) -> str:
    """A grid of element offsets for a 1-D or 2-D shared layout."""
    shape = layout.shape
    if len(shape) > 2:
        return repr(layout)
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    idx = np.indices((rows, cols))
    offsets = layout.offset((idx[1],) if len(shape) == 1 else (idx[0], idx[1]))
    width = len(str(int(np.max(offsets))))
    return "\n".join(" ".join(str(int(o)).rjust(width) for o in row) for row in np.atleast_2d(offsets))
