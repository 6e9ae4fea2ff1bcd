"""dropout_forward / dropout_backward: the counter-based mask of docs/ops.md is bit-identical on
both backends, every ISA and thread count; p = 0, p = 1, training=False; statistics; bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import gradcheck

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]


def splitmix64_scalar(z):
    m = (1 << 64) - 1
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & m
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_mask_formula_from_docs():
    """The mask written out with Python ints, exactly as docs/ops.md states it."""
    seed, p, n = 12345, 0.3, 200
    keep = [((splitmix64_scalar((seed + i * 0x9E3779B97F4A7C15) % (1 << 64)) >> 40) * 2.0**-24) >= p
            for i in range(n)]
    np.testing.assert_array_equal(reference.dropout.dropout_mask(n, p, seed), keep)
    x = np.ones(n, np.float32)
    for backend in ("native", "numpy"):
        with seqblocks.backend(backend):
            y, _ = ops.dropout_forward(x, p, seed=seed)
        np.testing.assert_array_equal(y != 0, keep)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", TAILS + [1000])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_native_bit_identical_to_reference(isa, rng, dtype, n, p):
    x = rng.standard_normal(n).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    seed = int(rng.integers(0, 2**63)) * 2 + 1
    y, ws = ops.dropout_forward(x, p, seed=seed)
    (dx,) = ops.dropout_backward(dy, ws)
    with seqblocks.backend("numpy"):
        y_ref, ws_ref = ops.dropout_forward(x, p, seed=seed)
        (dx_ref,) = ops.dropout_backward(dy, ws_ref)
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_array_equal(y != 0, dx != 0)


def test_thread_count_and_shape_invariance(rng):
    x = rng.standard_normal((301, 333)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        seqblocks.set_num_threads(threads)
        results.append(ops.dropout_forward(x, 0.25, seed=7)[0])
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    # the mask depends on the C-order index only, not on the shape
    np.testing.assert_array_equal(ops.dropout_forward(x.reshape(-1), 0.25, seed=7)[0], results[0].reshape(-1))


def test_strided_input_uses_c_order_index(rng):
    x = rng.standard_normal((20, 30)).astype(np.float32)
    view = x[::2, ::3]
    np.testing.assert_array_equal(ops.dropout_forward(view, 0.5, seed=3)[0],
                                  ops.dropout_forward(np.ascontiguousarray(view), 0.5, seed=3)[0])


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_edge_probabilities_and_eval(rng, backend):
    x = rng.standard_normal((4, 33)).astype(np.float32)
    x[0, 0] = np.nan
    dy = rng.standard_normal((4, 33)).astype(np.float32)
    with seqblocks.backend(backend):
        y, ws = ops.dropout_forward(x, 0.0, seed=1)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(ops.dropout_backward(dy, ws)[0], dy)
        y, ws = ops.dropout_forward(x, 1.0, seed=1)
        assert (y[np.isfinite(x)] == 0).all() and np.isnan(y[0, 0])  # x * 0, as PyTorch
        assert (ops.dropout_backward(dy, ws)[0] == 0).all()
        y, ws = ops.dropout_forward(x, 0.5, False, seed=1)
        np.testing.assert_array_equal(y, x)
        assert y is not x
        np.testing.assert_array_equal(ops.dropout_backward(dy, ws)[0], dy)
        y, ws = ops.dropout_forward(x, 0.5, seed=1, needs_grad=False)
        assert ws is None


def test_keep_rate_and_scale():
    n, p = 200_000, 0.3
    y, _ = ops.dropout_forward(np.ones(n, np.float32), p, seed=2024)
    kept = y != 0
    # binomial: 5 standard deviations
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    assert (y[kept] == np.float32(1 / (1 - p))).all()
    # different seeds give (nearly) independent masks
    y2, _ = ops.dropout_forward(np.ones(n, np.float32), p, seed=2025)
    agree = ((y2 != 0) == kept).mean()
    assert abs(agree - ((1 - p) ** 2 + p**2)) < 0.01


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_gradcheck(rng, backend):
    with seqblocks.backend(backend):
        gradcheck(lambda x: ops.dropout_forward(x, 0.4, seed=99), ops.dropout_backward,
                  [rng.standard_normal((3, 7))])


def test_torch_parity_given_the_mask(rng):
    """PyTorch's RNG differs; with our mask as its Bernoulli draw, outputs and gradients agree."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((8, 65)).astype(np.float32)
    dy = rng.standard_normal((8, 65)).astype(np.float32)
    p = 0.2
    y, ws = ops.dropout_forward(x, p, seed=5)
    (dx,) = ops.dropout_backward(dy, ws)
    mask = torch.tensor(reference.dropout.dropout_mask(x.size, p, 5).reshape(x.shape), dtype=torch.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = tx * mask * (1.0 / (1.0 - p))  # torch's _dropout_impl: input * noise.div_(1 - p)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=2 * np.finfo(np.float32).eps)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=2 * np.finfo(np.float32).eps)


def test_seeds_reduce_mod_2_64(rng):
    x = rng.standard_normal(50).astype(np.float32)
    np.testing.assert_array_equal(ops.dropout_forward(x, 0.5, seed=-1)[0],
                                  ops.dropout_forward(x, 0.5, seed=2**64 - 1)[0])


def test_bad_input():
    x = np.ones(4, np.float32)
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"p: expected a probability in \[0, 1\], got"):
            ops.dropout_forward(x, p, seed=0)
    with pytest.raises(TypeError, match="p: expected a float in"):
        ops.dropout_forward(x, "0.5", seed=0)
    with pytest.raises(TypeError, match="seed: expected an int, got float"):
        ops.dropout_forward(x, 0.5, seed=1.5)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'seed'"):
        ops.dropout_forward(x, 0.5)
    with pytest.raises(TypeError, match="x: expected a float32 or float64 array, got dtype int64"):
        ops.dropout_forward(np.ones(3, np.int64), 0.5, seed=0)
    _, ws = ops.dropout_forward(x, 0.5, seed=0)
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(4,\).*got \(5,\)"):
        ops.dropout_backward(np.ones(5, np.float32), ws)


def test_zero_dimensional():
    y, ws = ops.dropout_forward(np.array(2.0), 0.5, seed=4)
    assert y.shape == () and ops.dropout_backward(np.array(1.0), ws)[0].shape == ()
