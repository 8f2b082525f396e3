"""Dask path of fastmle's losses and softmax functions.

``fastmle.cross_entropy(x, t)`` and its siblings run here, lazily, when any
argument is a ``dask.array.Array`` (``fastmle._dispatch``). This module imports
nothing: ``dask`` is imported by the first call that receives a Dask array (a check
against ``sys.modules``, ``fastmle._kinds.is_dask``, tells whether one can exist),
and the work is done by ``fastmle.dask._backend``: generic runners that map the CPU
kernels over row chunks, one for every element-wise loss, one for cross-entropy,
one for the softmax family.

Chunking
    The input is chunked along its first axis (the batch): every task runs the
    NumPy path's kernel on whole rows. Other axes of the input (the class axis of
    cross-entropy) are rechunked into one chunk. An operand that spans the batch
    (a target, a per-row weight or variance) is rechunked to the input's row
    chunks; one that is broadcast along the batch (class weights, ``pos_weight``,
    a scalar variance) goes whole to every task. NumPy operands are accepted;
    a NumPy ``input`` with a Dask operand raises TypeError. Chunk sizes must be
    known (else ValueError: ``compute_chunk_sizes()``), chunks must be NumPy
    arrays, the input needs a batch axis (not 0-d), and cross-entropy needs 2-D
    input (N, C). softmax, log_softmax and logsumexp take an int ``axis`` (not
    None), which is rechunked into one chunk, and map over any chunking of the
    other axes.

Results
    Losses with ``reduction='none'`` and gradients are Dask arrays with the
    input's row chunks (one chunk along other axes; a derivative with respect to
    an operand, as a Gaussian NLL's d_var, has the row chunks where that operand
    spans the batch, else one chunk), in the NumPy path's dtype. Reduced losses
    are 0-d Dask arrays that compute to NumPy scalars, as on the NumPy path.
    ``L_value_and_grad`` returns both from one graph: computing them together
    (``dask.compute(loss, grad)``) runs the kernel once per chunk. ``out=`` is not
    supported (TypeError). Values are checked inside the tasks (class indices and
    each loss's ``_calls.ValueRule``: probabilities in [0, 1], variances >= 0; a
    NumPy operand's values when the function is called), so a bad chunk raises the
    NumPy path's ValueError at compute time (with counts of bad entries within that
    chunk; a bad class index is reported at its index in the batch).

Numerics
    Each task returns its float64 partial sums; they are added exactly
    (``math.fsum``) at the end, and the mean's denominator (for cross-entropy with
    class indices, the summed weights of the kept rows, computed in a first pass
    over the targets) is known before the gradient tasks run, which scale by it as
    the NumPy path does. So, per element or row, gradients, ``reduction='none'``
    losses and softmax/logsumexp outputs are bitwise equal to the NumPy path's,
    except the gradient of a cross-entropy 'mean' with class weights: its
    denominator (a float sum of weights) may differ in the last bit, and so may
    the gradient.
    Reduced losses (and a d_var summed over the batch) are not bitwise equal: the
    NumPy path groups its float64 sums differently, so they agree to float64
    rounding of the sum before the cast to the input's dtype. They are
    deterministic: the same chunks give the same bits on any scheduler and any
    number of threads or workers.
"""

from __future__ import annotations
