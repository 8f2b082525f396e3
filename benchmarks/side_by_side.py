"""Side-by-side throughput of every fused kernel: a wrapper of ``fastmle.bench``.

    python benchmarks/side_by_side.py [--quick] [--more] [--repeat N] [--json FILE]

is the same as ``python -m fastmle.bench ...``, which the installed package
provides (see its docstring for what is timed). This file is also imported by
asv's benchmark discovery: importing it has no side effect, and it defines no
benchmark (the asv benchmarks are the ``bench_*`` modules beside it).
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    """Run ``fastmle.bench.main(argv)`` (imported here: older builds lack it)."""
    from fastmle.bench import main as bench_main

    return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
