"""Outputs of at least 256 KiB come from blocks that are reused after NumPy frees them
(cpp/bindings/output_cache.h); seqblocks.empty_cache() frees the held blocks and the calling
thread's scratch buffers (cpp/gemm/workspace.h)."""

import pickle
import threading

import numpy as np
import pytest

import seqblocks
from seqblocks import _core, ops

BIG = _core.output_cache_min_bytes // 4  # float32 elements of the smallest cached output


def data_pointer(a):
    return a.__array_interface__["data"][0]


def test_big_outputs_are_ordinary_arrays_and_reuse_freed_blocks(rng):
    seqblocks.empty_cache()
    x = rng.standard_normal((BIG // 64, 64)).astype(np.float32)
    y = ops.relu_forward(x)[0]
    assert y.shape == x.shape and y.dtype == np.float32
    assert y.flags.c_contiguous and y.flags.writeable and not y.flags.owndata
    assert data_pointer(y) % 64 == 0
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    y[0, 0] = 7.0  # writable for real
    assert y[0, 0] == 7.0
    pointer = data_pointer(y)
    del y
    assert _core.output_cache_held() >= x.nbytes
    z = ops.tanh(x)  # same size: the freed block comes back
    assert data_pointer(z) == pointer
    np.testing.assert_allclose(z, np.tanh(x), rtol=1e-6, atol=1e-7)


def test_small_outputs_are_plain_numpy_arrays(rng):
    y = ops.relu_forward(rng.standard_normal(100).astype(np.float32))[0]
    assert y.flags.owndata


def test_empty_cache_releases_held_blocks_only(rng):
    x = rng.standard_normal(3 * BIG).astype(np.float32)
    keep = ops.relu_forward(x)[0]
    gone = ops.tanh(x)
    del gone
    released = seqblocks.empty_cache()
    assert released >= x.nbytes and _core.output_cache_held() == 0
    np.testing.assert_array_equal(keep, np.maximum(x, 0))  # a live output is untouched
    assert seqblocks.empty_cache() == 0


def test_empty_cache_frees_the_threads_scratch_and_kernels_regrow_it(rng):
    # A recurrent layer keeps its temporaries (here the input projection, T B 4H floats) and the
    # GEMM its packing buffers in blocks of the calling thread (gemm/workspace.h).
    T, B, I, H = 16, 8, 24, 40
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = np.zeros((B, H), np.float32)
    w_ih = rng.standard_normal((4 * H, I)).astype(np.float32) * 0.1
    w_hh = rng.standard_normal((4 * H, H)).astype(np.float32) * 0.1
    first, _ = ops.lstm_layer_forward(x, h0, h0, w_ih, w_hh, needs_grad=False)
    released = seqblocks.empty_cache()
    assert released >= T * B * 4 * H * 4
    assert _core.thread_buffers_release() == 0  # nothing left to free
    again, _ = ops.lstm_layer_forward(x, h0, h0, w_ih, w_hh, needs_grad=False)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert _core.thread_buffers_release() >= T * B * 4 * H * 4  # grown back by the call


def test_outputs_pickle_copy_and_outlive_their_producer(rng):
    x = rng.standard_normal((BIG // 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 32)).astype(np.float32)
    y = ops.linear(x, w)
    again = pickle.loads(pickle.dumps(y))
    np.testing.assert_array_equal(again, y)
    view = y[::2]
    del y
    seqblocks.empty_cache()
    np.testing.assert_array_equal(view, again[::2])  # the view keeps the block alive


def test_held_bytes_stay_within_the_limit(rng):
    x = rng.standard_normal(BIG).astype(np.float32)
    outs = [ops.relu_forward(x)[0] for _ in range(8)]
    del outs
    assert _core.output_cache_held() <= _core.output_cache_limit_bytes


def test_concurrent_python_threads(rng):
    x = rng.standard_normal((BIG // 16, 16)).astype(np.float32)
    expected = np.maximum(x, 0)
    errors = []

    def work():
        for _ in range(20):
            y = ops.relu_forward(x)[0]
            if not np.array_equal(y, expected):
                errors.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_empty_cache_while_another_thread_runs_kernels(rng):
    # Each thread frees only its own blocks: a kernel running on another Python thread keeps its.
    x = rng.standard_normal((12, 6, 32)).astype(np.float32)
    h0 = np.zeros((6, 48), np.float32)
    w_ih = rng.standard_normal((4 * 48, 32)).astype(np.float32) * 0.1
    w_hh = rng.standard_normal((4 * 48, 48)).astype(np.float32) * 0.1
    expected = ops.lstm_layer_forward(x, h0, h0, w_ih, w_hh, needs_grad=False)[0][0]
    errors = []
    stop = threading.Event()

    def work():
        while not stop.is_set():
            y = ops.lstm_layer_forward(x, h0, h0, w_ih, w_hh, needs_grad=False)[0][0]
            if not np.array_equal(y, expected):
                errors.append("mismatch")

    worker = threading.Thread(target=work)
    worker.start()
    try:
        for _ in range(200):
            seqblocks.empty_cache()
            np.testing.assert_array_equal(ops.lstm_layer_forward(x, h0, h0, w_ih, w_hh, needs_grad=False)[0][0],
                                          expected)
    finally:
        stop.set()
        worker.join()
    assert not errors


def test_core_empty():
    a = _core.empty((3, BIG), np.dtype(np.float32))
    assert a.shape == (3, BIG) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    assert _core.empty((2, 3), np.dtype(np.float64)).dtype == np.float64
    with pytest.raises(TypeError, match="dtype: expected float32 or float64, got int32"):
        _core.empty((2,), np.dtype(np.int32))
    with pytest.raises(ValueError, match="shape: expected sizes >= 0, got -1"):
        _core.empty((2, -1), np.dtype(np.float32))
