"""_core.strided_copy: dst[...] = src for views with a contiguous last dimension (the head
split/merge copies around attention), against np.copyto, and its argument checks."""

import numpy as np
import pytest

import seqblocks
from seqblocks import _core


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,perm", [((7,), (0,)), ((3, 17), (0, 1)), ((2, 5, 3, 65), (0, 2, 1, 3)),
                                        ((4, 33, 6, 16), (0, 2, 1, 3)), ((3, 2, 9, 31), (2, 0, 1, 3)),
                                        ((64, 8, 64, 64), (0, 2, 1, 3))])
def test_matches_numpy(rng, threads, dtype, shape, perm):
    seqblocks.set_num_threads(threads)
    src = rng.standard_normal(shape).astype(dtype).transpose(perm)
    dst = np.empty(src.shape, dtype)
    _core.strided_copy(dst, src)
    np.testing.assert_array_equal(dst, src)


def test_slices_and_negative_strides(rng):
    base = rng.standard_normal((6, 10, 3, 8)).astype(np.float32)
    src = base[::-2, 1:9, 1]  # negative and step strides, a sliced middle axis
    out = np.zeros((3, 8, 3, 8), np.float32)
    _core.strided_copy(out[:, :, 2], src)  # into a strided view: other columns untouched
    np.testing.assert_array_equal(out[:, :, 2], src)
    assert not out[:, :, :2].any()


def test_bad_arguments():
    a = np.zeros((4, 8), np.float32)
    with pytest.raises(ValueError, match=r"src: expected the shape of dst \(4, 8\), got \(8, 4\)"):
        _core.strided_copy(a, np.zeros((8, 4), np.float32))
    with pytest.raises(TypeError, match="src: expected the dtype of dst"):
        _core.strided_copy(a, np.zeros((4, 8), np.float64))
    with pytest.raises(TypeError, match="dst: expected dtype float32 or float64"):
        _core.strided_copy(np.zeros((4, 8), np.int32), np.zeros((4, 8), np.int32))
    with pytest.raises(ValueError, match="src: expected a contiguous last dimension"):
        _core.strided_copy(a, np.zeros((8, 4), np.float32).T)
    with pytest.raises(ValueError, match="dst: expected 1 to 4 dimensions"):
        _core.strided_copy(np.zeros((1, 1, 1, 1, 2), np.float32), np.zeros((1, 1, 1, 1, 2), np.float32))
    with pytest.raises(ValueError, match="dst: expected memory apart from src's"):
        _core.strided_copy(a[:, 1:], a[:, :-1])
    ro = np.zeros((4, 8), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="dst: expected a writable array"):
        _core.strided_copy(ro, a)
