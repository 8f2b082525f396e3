"""``fastmle demo``: maximum likelihood behind the everyday losses, on millions of rows.

1. Each family is fitted to synthetic data drawn from known parameters; the table
   shows the truth, the estimate, its standard error and the z-score of the error.
2. Cross-entropy and KL(p_data || p_model) differ by the constant H(p_data): the same
   optimiser on either reaches the same optimum, p_model = p_data.
3. The Gaussian NLL with a fixed variance is MSE / (2 var) plus a constant, so its
   maximum-likelihood fit is least squares.
4. MSE on a sigmoid output: its gradient (y - p) p (1 - p) x vanishes when p saturates
   at the wrong answer; the BCE gradient (p - y) x does not.
5. The Poisson NLL on log-means, exp(eta) - y eta, is the negative log-likelihood of
   counts up to the constant log(y!): minimising it is maximum likelihood, and
   PoissonRegression's optimum is where its back-propagated gradient vanishes.
"""

from __future__ import annotations

import time

import numpy as np

import fastmle as fm


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


def _params_table(names, truth, model) -> str:
    lines = [
        f"    {'parameter':<18} {'true':>9} {'estimate':>10} {'std err':>9} {'(est-true)/se':>14}"
    ]
    for nm, t, e, s in zip(names, truth, model.params_, model.bse_):
        lines.append(f"    {nm:<18} {t:>9.4f} {e:>10.4f} {s:>9.4f} {(e - t) / s:>14.2f}")
    return "\n".join(lines)


def _fit(title: str, model, X, y, truth) -> str:
    model.fit(X[:1000], y[:1000])  # compile (or load the cache) outside the timed fit
    model.fit(X, y)
    n, d = X.shape
    head = (
        f"  {title}: {n:,} rows x {d} features, fitted in {model.fit_time_:.2f} s "
        f"({n / model.fit_time_ / 1e6:.1f} M rows/s), {model.solver_} iterations: "
        f"{model.n_iter_}, log-likelihood {model.loglik_:.1f}"
    )
    return head + "\n" + _params_table(model.param_names_, truth, model)


def fits(rng: np.random.Generator, rows: int) -> list[str]:
    """Section 1: every family on synthetic data with known parameters."""
    out = []
    X = rng.standard_normal((rows, 4))
    w = np.array([0.5, 1.0, -2.0, 0.25, 0.0])  # intercept, then coefficients
    y = (rng.random(rows) < _sigmoid(w[0] + X @ w[1:])).astype(np.float64)
    out.append(_fit("Bernoulli (logistic regression)", fm.LogisticRegression(), X, y, w))

    n = rows // 2
    X = rng.standard_normal((n, 3))
    W = np.array([[0.0, 0.0, 0.0, 0.0], [0.3, 1.0, -1.0, 0.0], [-0.5, 0.5, 0.5, 1.5]])
    logits = W[:, 0] + X @ W[:, 1:].T
    c = (rng.random(n)[:, None] > np.cumsum(fm.softmax(logits), axis=1)).sum(axis=1)
    truth = (W[1:] - W[0]).ravel()  # params_ are contrasts to class 0
    out.append(
        _fit("Categorical (softmax regression, 3 classes)", fm.SoftmaxRegression(), X, c, truth)
    )

    X = rng.standard_normal((rows, 4))
    b = np.array([1.0, 2.0, 0.0, -1.0, 0.5])
    y = b[0] + X @ b[1:] + 1.5 * rng.standard_normal(rows)
    m = fm.GaussianRegression()
    out.append(_fit("Gaussian (linear regression, sigma = 1.5)", m, X, y, b))
    out[-1] += f"\n    sigma^2: true 2.2500, estimate {m.sigma2_:.4f}"

    X = rng.standard_normal((n, 2))
    mean, logvar = np.array([0.0, 1.0, -1.0]), np.array([-0.5, 0.8, 0.0])
    y = mean[0] + X @ mean[1:] + np.exp(0.5 * (logvar[0] + X @ logvar[1:])) * rng.standard_normal(n)
    out.append(
        _fit(
            "Gaussian, heteroscedastic (log-linear variance)",
            fm.GaussianRegression(heteroscedastic=True),
            X,
            y,
            np.concatenate([mean, logvar]),
        )
    )
    return out


def kl_vs_cross_entropy(rng: np.random.Generator, rows: int) -> list[str]:
    """Section 2: Newton's method on cross-entropy and on KL(p_data || softmax(z))."""
    p_true = np.array([0.35, 0.25, 0.2, 0.15, 0.05])
    labels = rng.choice(p_true.size, size=rows, p=p_true)
    p_data = np.bincount(labels, minlength=p_true.size) / rows
    entropy = -float(p_data @ np.log(p_data))
    ones = np.ones((rows, 1))

    def cross_entropy(z):  # mean over the batch: every row has logits z
        loss, g = fm.cross_entropy_value_and_grad(ones * z, labels)
        return float(loss), g.sum(axis=0)

    def kl(z):
        logq = fm.log_softmax(z[None, :])
        loss, g = fm.kl_div_value_and_grad(logq, p_data[None, :], reduction="sum")
        g = g[0]
        return float(loss), g - np.exp(logq[0]) * g.sum()  # chain rule through log_softmax

    def newton(objective, log):
        z = np.zeros(p_true.size)
        for _ in range(12):
            f, g = objective(z)
            log.append(f)
            q = fm.softmax(z)
            H = np.diag(q) - np.outer(q, q)  # singular along z + const: least squares
            z = z - np.linalg.lstsq(H, g, rcond=None)[0]
            if np.abs(g).max() < 1e-14:
                break
        return fm.softmax(z)

    ce_log, kl_log = [], []
    q_ce, q_kl = newton(cross_entropy, ce_log), newton(kl, kl_log)
    out = [
        f"  {rows:,} labels from p_true; p_data = their frequencies, H(p_data) = {entropy:.12f}",
        "  Newton's method from z = 0 on each objective (loss and gradient from fastmle):",
        f"    {'iter':>4} {'cross-entropy':>16} {'KL(p_data||q)':>16} {'difference':>16}",
    ]
    for it, (a, b) in enumerate(zip(ce_log, kl_log)):
        out.append(f"    {it:>4} {a:>16.12f} {b:>16.12f} {a - b:>16.12f}")
    out.append(f"    {'class':>5} {'p_true':>9} {'p_data':>14} {'argmin CE':>14} {'argmin KL':>14}")
    for k in range(p_true.size):
        out.append(
            f"    {k:>5} {p_true[k]:>9.4f} {p_data[k]:>14.10f} {q_ce[k]:>14.10f} {q_kl[k]:>14.10f}"
        )
    out.append(
        f"  max |argmin CE - argmin KL| = {np.abs(q_ce - q_kl).max():.1e}: the same "
        "optimum, the maximum-likelihood estimate p_data"
    )
    return out


def nll_vs_mse(rng: np.random.Generator, rows: int) -> list[str]:
    """Section 3: Gaussian NLL at a fixed variance against MSE."""
    X = rng.standard_normal((rows, 3))
    y = 0.5 + X @ np.array([1.0, -1.0, 2.0]) + rng.standard_normal(rows)
    var = 2.0
    const = 0.5 * np.log(2 * np.pi * var)
    out = [
        f"  {rows:,} rows, variance fixed at {var}: NLL(mu) = MSE(mu) / (2 var) + "
        f"log(2 pi var) / 2 = MSE / 4 + {const:.6f}",
        f"    {'mu':<22} {'Gaussian NLL':>16} {'MSE/4 + const':>16} {'difference':>11}",
    ]
    for name, beta in [
        ("0", np.zeros(4)),
        ("the truth", np.array([0.5, 1.0, -1.0, 2.0])),
        ("random", rng.standard_normal(4)),
    ]:
        mu = beta[0] + X @ beta[1:]
        nll = float(fm.gaussian_nll_loss(mu, y, var, full=True))
        mse = float(fm.mse_loss(mu, y))
        out.append(
            f"    X beta, beta = {name:<10} {nll:>16.10f} {mse / (2 * var) + const:>16.10f} "
            f"{nll - mse / (2 * var) - const:>11.1e}"
        )
    m = fm.GaussianRegression().fit(X, y)
    A = np.column_stack([np.ones(rows), X])
    lsq = np.linalg.lstsq(A, y, rcond=None)[0]
    fitted = np.concatenate([[m.intercept_], m.coef_])
    out.append(
        f"  GaussianRegression (max likelihood) vs np.linalg.lstsq (least squares): "
        f"max |difference| = {np.abs(fitted - lsq).max():.1e}"
    )
    return out


def mse_on_sigmoid(rng: np.random.Generator, rows: int, steps: int = 200):
    """Section 4: gradient magnitudes, then gradient descent from a saturated start."""
    z = np.array([-12.0, -8.0, -4.0, -2.0, 0.0, 2.0, 4.0])
    y = np.ones_like(z)
    p = _sigmoid(z)
    # d(MSE/2)/dz = (p - y) p (1 - p): MSE's gradient in p times the sigmoid's slope
    g_mse = 0.5 * fm.mse_loss_grad(p, y, reduction="sum") * p * (1 - p)
    g_bce = fm.binary_cross_entropy_with_logits_grad(z, y, reduction="sum")
    out = [
        "  target y = 1, output p = sigmoid(z); gradients with respect to z:",
        f"    {'z':>6} {'p':>10} {'|MSE/2 grad|':>14} {'|BCE grad|':>12} {'ratio':>10}",
    ]
    for a, b, c, d in zip(z, p, np.abs(g_mse), np.abs(g_bce)):
        out.append(f"    {a:>6.0f} {b:>10.3e} {c:>14.3e} {d:>12.3e} {d / c:>10.3g}")

    X = rng.standard_normal((rows, 2))
    w_true = np.array([2.0, -1.0])
    t = (rng.random(rows) < _sigmoid(X @ w_true)).astype(np.float64)
    curves = {}
    for name in ("MSE", "BCE"):
        w, nll = -3.0 * w_true, []  # start saturated at the wrong answer
        for _ in range(steps + 1):
            zz = X @ w
            loss, g = fm.binary_cross_entropy_with_logits_value_and_grad(zz, t)
            nll.append(float(loss))
            if name == "MSE":
                q = _sigmoid(zz)
                g = 0.5 * fm.mse_loss_grad(q, t) * q * (1 - q)
            w = w - 1.0 * (X.T @ g)  # gradient descent, step 1, on the mean loss
        curves[name] = np.array(nll)
    best = float(fm.binary_cross_entropy_with_logits(X @ w_true, t))
    marks = [0, 10, 20, 50, steps]
    out.append(
        f"  gradient descent (step 1) on {rows:,} rows from w = -3 w_true (saturated at "
        f"the wrong answer): mean NLL (BCE) after"
    )
    out.append("    " + f"{'steps':<14}" + "".join(f"{s:>8}" for s in marks))
    for name, nll in curves.items():
        out.append("    " + f"{'on ' + name:<14}" + "".join(f"{nll[s]:>8.3f}" for s in marks))
    out.append(f"    (at w_true: {best:.3f})")
    return out, (z, np.abs(g_mse), np.abs(g_bce), curves, best)


def plot(path: str, data) -> None:
    """Save the MSE-vs-BCE gradient magnitudes and training curves as a figure."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'fastmle[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zs, g_mse, g_bce, curves, best = data
    z = np.linspace(-12, 6, 400)
    p = _sigmoid(z)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.semilogy(z, np.abs((p - 1) * p * (1 - p)), label="MSE/2: |(p - y) p (1 - p)|")
    a.semilogy(z, np.abs(p - 1), label="BCE: |p - y|")
    a.scatter(zs, g_mse, s=12)
    a.scatter(zs, g_bce, s=12)
    a.set(
        xlabel="logit z (target y = 1)",
        ylabel="|dloss/dz|",
        title="Gradient through a sigmoid output",
    )
    a.legend()
    for name, nll in curves.items():
        b.plot(nll, label=f"gradient descent on {name}")
    b.axhline(best, color="gray", linestyle=":", label="at the true parameters")
    b.set(xlabel="step", ylabel="mean NLL (BCE)", title="Training from a saturated wrong start")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def poisson_counts(rng: np.random.Generator, rows: int) -> list[str]:
    """Section 5: the Poisson NLL is the negative log-likelihood of counts."""
    from math import lgamma

    X = rng.standard_normal((rows, 3))
    exposure = rng.uniform(0.5, 2.0, rows)
    beta = np.array([0.3, 0.5, -0.25, 0.1])
    y = rng.poisson(exposure * np.exp(beta[0] + X @ beta[1:])).astype(float)
    log_fact = float(
        np.sum([lgamma(v + 1.0) for v in np.unique(y)] @ np.unique(y, return_counts=True)[1])
    )
    out = [
        f"  {rows:,} counts y ~ Poisson(exposure exp(x b)); eta = log(exposure) + x b:",
        "  sum of poisson_nll_loss(eta, y) = sum(exp(eta) - y eta) = -log L(b) - sum log(y!)",
        f"    {'coefficients':<16} {'-log L(b)':>20} {'NLL + sum log(y!)':>20} "
        f"{'relative diff':>14}",
    ]
    for name, b in [("zero", np.zeros(4)), ("true", beta), ("random", rng.normal(size=4) / 4)]:
        eta = np.log(exposure) + b[0] + X @ b[1:]
        mu = np.exp(eta)
        direct = -float(np.sum(y * np.log(mu) - mu)) + log_fact  # -sum log P(y | mu)
        nll = float(fm.poisson_nll_loss(eta, y, reduction="sum")) + log_fact
        out.append(
            f"    b = {name:<12} {direct:>20.6f} {nll:>20.6f} "
            f"{abs(nll - direct) / abs(direct):>14.1e}"
        )
    m = fm.PoissonRegression().fit(X, y, exposure=exposure)
    eta = np.log(exposure) + m.intercept_ + X @ m.coef_
    g = fm.poisson_nll_loss_grad(eta, y, reduction="sum")  # dNLL/deta = exp(eta) - y
    score = np.concatenate([[g.sum()], g @ X])
    out.append(
        f"  PoissonRegression: loglik_ = {m.loglik_:.6f} = -(sum NLL + sum log(y!)) "
        f"= {-(float(fm.poisson_nll_loss(eta, y, reduction='sum')) + log_fact):.6f}"
    )
    out.append(
        "  at its optimum the NLL's gradient, back-propagated to the coefficients, vanishes:"
    )
    out.append(f"    max |[1, X]^T (exp(eta) - y)| / n = {np.abs(score).max() / rows:.1e}")
    out.append(
        "  estimates (truth): "
        + ", ".join(f"{p:.4f} ({t:g}) +- {s:.4f}" for p, t, s in zip(m.params_, beta, m.bse_))
    )
    return out


def run(rows: int = 2_000_000, seed: int = 0, plot_path: str | None = None) -> int:
    """Print the five sections; ``plot_path``: also save the section-4 figure there."""
    if rows < 1000:
        raise ValueError(f"--rows must be at least 1000, got {rows}")
    if plot_path:  # fail before the work, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install 'fastmle[plot]'") from None
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    print(f"fastmle {fm.__version__} demo: maximum likelihood behind the everyday losses\n")
    print("1. Maximum-likelihood fits recover the parameters the data were drawn from")
    print("\n\n".join(fits(rng, rows)))
    print("\n2. Minimising cross-entropy = minimising KL(p_data || p_model)")
    print("\n".join(kl_vs_cross_entropy(rng, rows)))
    print("\n3. Gaussian NLL with a fixed variance = MSE up to constants")
    print("\n".join(nll_vs_mse(rng, rows)))
    print("\n4. Why MSE on a sigmoid output trains badly")
    lines, data = mse_on_sigmoid(rng, min(rows, 100_000))
    print("\n".join(lines))
    if plot_path:
        plot(plot_path, data)
        print(f"  plot saved to {plot_path}")
    print("\n5. Minimising the Poisson NLL = maximum likelihood for counts")
    print("\n".join(poisson_counts(rng, rows)))
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")
    return 0
