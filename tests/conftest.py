"""What the tests share: the tolerance of a kernel result against its float64
reference, and bitwise equality of results.

``TOL[dtype]``: relative to the size of the quantity (for a sum, the sum of its
terms' magnitudes): a few units in the last place of float32 (1.2e-7) and float64
(2.2e-16) with room for a chunked float64 sum and the reference's own rounding.
"""

from __future__ import annotations

import numpy as np

TOL = {np.float32: 1e-6, np.float64: 1e-12}


def same(a, b) -> bool:
    """Bitwise-equal results (NaN == NaN), with the same dtype and shape."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
