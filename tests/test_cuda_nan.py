"""The GPU point formulas keep NaN where a zero coefficient hid it (issue 17 item 12), as
the CPU formulas do since 729e810: kl_div with a zero target and a NaN input, BCE with
logits at y = 1, pos_weight = 0 and a NaN logit. Under the CUDA simulator without a GPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed"
)
def test_cuda_nan_behind_a_zero_coefficient_matches_the_cpu():
    code = textwrap.dedent("""
        import numpy as np
        from numba import cuda
        import fastmle as fm

        h = lambda a: a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)
        for dt in (np.float32, np.float64):
            d = lambda v: cuda.to_device(np.array(v, dt))
            c = lambda v: np.array(v, dt)
            cases = [
                (fm.kl_div_value_and_grad, [np.nan, -1.0, np.nan], [0.0, 0.5, 0.3], {}),
                (fm.binary_cross_entropy_with_logits_value_and_grad,
                 [np.nan, 0.5, np.nan, -2.0], [1.0, 1.0, 0.0, 1.0],
                 {"pos_weight": [0.0, 0.0, 0.0, 0.0]}),
            ]
            for fn, x, t, kw in cases:
                for r in ("none", "sum", "mean"):
                    cpu = fn(c(x), c(t), reduction=r, **{k: c(v) for k, v in kw.items()})
                    gpu = fn(d(x), d(t), reduction=r, **{k: d(v) for k, v in kw.items()})
                    for a, b in zip(cpu, gpu):
                        a, b = np.asarray(a, np.float64), h(b).astype(np.float64)
                        assert (np.isnan(a) == np.isnan(b)).all(), (fn.__name__, r, a, b)
                        ok = np.isfinite(a)
                        assert np.allclose(a[ok], b[ok], rtol=1e-5), (fn.__name__, r, a, b)
            # the issue's examples
            assert np.isnan(h(fm.kl_div(d([np.nan, -1]), d([0, 0.5]), reduction="sum")))
            assert np.isnan(h(fm.binary_cross_entropy_with_logits(
                d([np.nan]), d([1.0]), pos_weight=d([0.0]))))
        print("ok")
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [env.get("PYTHONPATH", "")])
    env.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr[-3000:]
