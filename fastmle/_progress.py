"""A one-line progress bar on stderr, drawn only on a terminal and only for slow work."""

from __future__ import annotations

import sys
import time


class Bar:
    """``bar(fraction)`` redraws ``label [####   ]  42.0%`` once ``after`` seconds have
    passed; nothing is written when stderr is not a terminal (piped, redirected)."""

    def __init__(self, label: str, after: float = 0.5, stream=None):
        self.label, self.after = label, after
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.t0 = time.perf_counter()
        self.drawn = False

    def __call__(self, fraction: float) -> None:
        if not self.on or time.perf_counter() - self.t0 < self.after:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        self.stream.write(f"\r{self.label} [{'#' * int(30 * fraction):<30}] {100 * fraction:5.1f}%")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
