"""fastmle's own threads (``fastmle/_cpu/threads.py``): pieces, order, nesting, errors."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmle as fm
from fastmle._cpu import threads


@settings(deadline=None, max_examples=60)
@given(n=st.integers(0, 300), t=st.integers(1, 6))
def test_pieces_cover_each_index_once(n, t):
    seen = np.zeros(n, np.int64)
    pieces = []
    lock = threading.Lock()

    def fn(i0, i1):
        with lock:
            pieces.append((i0, i1))
        seen[i0:i1] += 1

    threads.run_pieces(fn, n, threads=t)
    assert (seen == 1).all()
    assert all(i0 < i1 for i0, i1 in pieces)
    assert len(pieces) <= max(1, threads.PIECES_PER_THREAD * min(n, t))


def test_pieces_run_on_several_threads():
    names = set()
    barrier = threading.Barrier(2, timeout=10)

    def fn(i0, i1):
        names.add(threading.current_thread().name)
        barrier.wait()  # returns only once another thread holds the other piece

    threads.run_pieces(fn, 2, threads=2)
    assert len(names) == 2


def test_a_call_from_a_pool_thread_runs_inline():
    inner = []

    def outer(i0, i1):
        me = threading.current_thread().name
        threads.run_pieces(lambda a, b: inner.append((me, threading.current_thread().name)), 8)

    threads.run_pieces(outer, 2, threads=2)
    assert inner and all(a == b for a, b in inner)


def test_errors_reach_the_caller():
    def fn(i0, i1):
        if i0 <= 5 < i1:
            raise ValueError("piece 5")

    with pytest.raises(ValueError, match="piece 5"):
        threads.run_pieces(fn, 16, threads=2)


def test_map_threads_keeps_the_order():
    squares = threads.map_threads(lambda a, b: a * b, range(10), range(10))
    assert squares == [i * i for i in range(10)]


def test_thread_count_follows_numba():
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert threads.n_threads() == 1
    finally:
        numba.set_num_threads(saved)
    assert threads.n_threads() == saved


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_results_are_the_same_bits_on_one_and_two_threads():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 300)).astype(np.float32)  # many chunks
    t = rng.integers(0, 300, 3000)
    saved = numba.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            loss, g = fm.cross_entropy_value_and_grad(x, t)
            bl, bg = fm.binary_cross_entropy_with_logits_value_and_grad(x, (x > 0) * 1.0)
            out.append((float(loss), g.tobytes(), float(bl), bg.tobytes()))
    finally:
        numba.set_num_threads(saved)
    assert out[0] == out[1]
