"""The CPU backend: every Numba CPU kernel of fastmle lives in this folder (its
compiled cache is stamped by exactly these files, ``jit.py``), and ``backend.py``
holds the entry points that ``fastmle._dispatch`` calls."""
