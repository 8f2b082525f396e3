"""Docstrings of the L / L_grad / L_value_and_grad triples, from one template each."""

from __future__ import annotations

OUT = """    out : ndarray, optional
        C-contiguous buffer of the input's shape and computation dtype for the
        gradient (d_input); may be ``input`` itself (in place, no extra memory).
"""

LOSS = "loss : scalar of the computation dtype, or an array for reduction='none'"
GRAD = (
    "grad : ndarray of the input's shape (for reduction='none' the gradient of the "
    "summed element losses)"
)
BOTH = "(loss, grad) : as returned by the value and the gradient functions"


def compose(summary: str, template: str, returns: str, out: bool = False) -> str:
    """``template`` holds a Parameters and a Notes section; add ``out`` to the
    parameters and a Returns section before the notes."""
    params, notes = template.split("    Notes\n", 1)
    params = params.rstrip("\n") + "\n" + (OUT if out else "")
    returns_section = f"\n    Returns\n    -------\n    {returns}\n\n"
    return f"{summary}\n{params}{returns_section}    Notes\n{notes}"


def triple(value, grad, both, template: str, summary: str, grad_returns: str = GRAD) -> None:
    value.__doc__ = compose(summary, template, LOSS)
    grad.__doc__ = compose(
        f"Gradient of :func:`{value.__name__}` with respect to ``input``.", template, grad_returns
    )
    both.__doc__ = compose(
        f"Loss and gradient of :func:`{value.__name__}` in one pass over the data.",
        template,
        BOTH,
        out=True,
    )
