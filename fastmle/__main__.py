"""``python -m fastmle``: a short tour of the losses on a large synthetic batch."""

from __future__ import annotations

import time

import numpy as np

import fastmle as fm


def _timed(fn):
    fn()  # compile (or load from the cache) before timing
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    rng = np.random.default_rng(0)
    n, c = 65536, 1000
    logits = rng.standard_normal((n, c), dtype=np.float32)
    labels = rng.integers(0, c, n)
    print(f"fastmle {fm.__version__}: fused loss + gradient, one pass over the data\n")

    (loss, grad), dt = _timed(lambda: fm.cross_entropy_value_and_grad(logits, labels))
    print(f"cross_entropy          {n} x {c} float32  loss {loss:.6f}  "
          f"|grad| {np.linalg.norm(grad):.3e}  {logits.nbytes / dt / 1e9:6.1f} GB/s")

    x = rng.standard_normal(2 * 10**7, dtype=np.float32)
    y = (rng.random(x.size) < 1 / (1 + np.exp(-x))).astype(np.float32)
    (loss, _), dt = _timed(lambda: fm.binary_cross_entropy_with_logits_value_and_grad(x, y))
    print(f"bce_with_logits        {x.size:.0e} float32     loss {loss:.6f}  "
          f"{x.nbytes / dt / 1e9:6.1f} GB/s")
    var = rng.uniform(0.5, 2.0, x.size).astype(np.float32)
    (loss, _), dt = _timed(lambda: fm.gaussian_nll_loss_value_and_grad(x, y, var))
    print(f"gaussian_nll_loss      {x.size:.0e} float32     loss {loss:.6f}  "
          f"{x.nbytes / dt / 1e9:6.1f} GB/s")

    print("\nThe maximum-likelihood identities, checked numerically (float64):")
    z = rng.standard_normal((1000, 10))
    p_data = fm.softmax(rng.standard_normal((1000, 10)))
    ce = fm.cross_entropy(z, p_data, reduction="sum")
    entropy = -np.sum(p_data * np.log(p_data))
    kl = fm.kl_div(fm.log_softmax(z), p_data, reduction="sum")
    print(f"  cross-entropy - H(p_data) = {ce - entropy:.10f}")
    print(f"  KL(p_data || p_model)     = {kl:.10f}")
    mu, t = rng.standard_normal(1000), rng.standard_normal(1000)
    nll = fm.gaussian_nll_loss(mu, t, 1.0, full=True)
    mse = fm.mse_loss(mu, t)
    print(f"  Gaussian NLL (var=1)      = {nll:.10f}")
    print(f"  MSE / 2 + log(2 pi) / 2   = {mse / 2 + 0.5 * np.log(2 * np.pi):.10f}")
    print(f"  BCE(target 0, logit -20, float32) = "
          f"{fm.binary_cross_entropy_with_logits(np.float32([-20.0]), np.float32([0.0])):.6e}"
          "  (torch: 0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
