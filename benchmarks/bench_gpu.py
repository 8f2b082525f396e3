"""asv benchmarks of fastmle on a GPU (the ``fastmle.cuda`` backend): the public
functions on device arrays (Numba device arrays here), returning device arrays.
``setup`` raises NotImplementedError, which asv reports as skipped, when Numba's
CUDA support is missing, no GPU is usable, or fastmle refuses the device array
(TypeError) or computes on the host (a NumPy result). CUDA is never touched at import time:
``numba.cuda`` is imported in ``setup``.

``time_`` benchmarks synchronise inside the timed function; ``track_`` benchmarks
time with CUDA events.
"""

from __future__ import annotations

import numpy as np

import fastmle

from . import data

SIZE = data.TRACK_SIZE  # logits, 1000 classes


def _cuda():
    try:
        from numba import cuda
    except ImportError:
        raise NotImplementedError("numba.cuda is not importable") from None
    if not cuda.is_available():
        raise NotImplementedError("no usable CUDA GPU")
    return cuda


class GPUCrossEntropy:
    """cross_entropy_value_and_grad on device logits and labels, float32."""

    params = (["float32"],)
    param_names = ("dtype",)
    timeout = 120

    def setup(self, dtype):
        self.cuda = _cuda()
        x, t = data.cross_entropy(SIZE, 1000, dtype)
        self.x = self.cuda.to_device(x)
        self.t = self.cuda.to_device(t)
        self.g = self.cuda.device_array_like(self.x)
        try:
            _, grad = fastmle.cross_entropy_value_and_grad(self.x, self.t, out=self.g)
        except TypeError as e:
            raise NotImplementedError(f"fastmle has no GPU path: {e}") from None
        if isinstance(grad, np.ndarray):
            raise NotImplementedError("fastmle computed on the host")
        self.cuda.synchronize()
        self.nbytes = x.nbytes * 2 + t.nbytes

    def _call(self):
        fastmle.cross_entropy_value_and_grad(self.x, self.t, out=self.g)

    def time_value_and_grad(self, dtype):
        self._call()
        self.cuda.synchronize()

    def track_gb_per_s(self, dtype):
        start, stop = self.cuda.event(), self.cuda.event()
        best = float("inf")
        for _ in range(5):
            start.record()
            self._call()
            stop.record()
            stop.synchronize()
            best = min(best, self.cuda.event_elapsed_time(start, stop) / 1e3)
        return self.nbytes / best / 1e9

    track_gb_per_s.unit = "GB/s"
