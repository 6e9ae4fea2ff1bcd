"""Activation pairs (relu, gelu none/tanh, tanh, sigmoid): native forward and fused backward against
the float64 reference on every ISA and tail length, finite differences, PyTorch parity, bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import assert_close, gradcheck

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]
# name -> (forward kwargs, torch function name)
ACTS = {
    "relu": ({}, "relu"),
    "gelu": ({}, "gelu"),
    "gelu_tanh": ({"approximate": "tanh"}, "gelu"),
    "tanh": ({}, "tanh"),
    "sigmoid": ({}, "sigmoid"),
}


def pair(module, name):
    base = "gelu" if name.startswith("gelu") else name
    kwargs = ACTS[name][0]
    fwd = getattr(module, f"{base}_forward")
    bwd = getattr(module, f"{base}_backward")
    return (lambda x, needs_grad=True: fwd(x, needs_grad=needs_grad, **kwargs)), bwd


def inputs(rng, n, dtype):
    # Mostly moderate values, a few large ones (saturation), exact zero and tiny ones.
    x = rng.uniform(-6.0, 6.0, n)
    if n > 4:
        x[:4] = [0.0, 1e-30, -20.0, 12.0][: min(4, n)]
    return x.astype(dtype)


def reference64(name, x, dy):
    fwd, bwd = pair(reference, name)
    y, ws = fwd(x.astype(np.float64))
    (dx,) = bwd(dy.astype(np.float64), ws)
    return y, dx


# Error budget of the native kernels (relative to |result|, in units of eps(dtype)): forward = the
# vectorized math (a few ulp, cpp/math/); backward = a handful of rounded operations on top of it
# (gelu float: math::gelu_erf_grad, 2.65 ulp of its terms; double: exp and a division of gelu(x)
# by x), so 16 eps covers both with margin.
FORWARD_FACTOR = 8.0
BACKWARD_FACTOR = 16.0


def forward_magnitude(name, x, y):
    # gelu(x) for x << 0 is tiny and ill-conditioned (relative condition number ~ x^2); the math
    # kernels' error is bounded by a few eps * |x| there (cpp/math/), which is what we allow.
    return np.maximum(np.abs(y).astype(np.float64), np.abs(x)) if name.startswith("gelu") else None


MATH = {"relu": None, "gelu": lambda x: ops.gelu(x), "gelu_tanh": lambda x: ops.gelu(x, approximate="tanh"),
        "tanh": lambda x: ops.tanh(x), "sigmoid": lambda x: ops.sigmoid(x)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", TAILS + [1000])
@pytest.mark.parametrize("name", list(ACTS))
def test_native_matches_reference(isa, rng, name, n, dtype):
    x = inputs(rng, n, dtype)
    dy = rng.standard_normal(n).astype(dtype)
    fwd, bwd = pair(ops, name)
    y, ws = fwd(x)
    (dx,) = bwd(dy, ws)
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == x.shape and dx.shape == x.shape
    y64, dx64 = reference64(name, x, dy)
    if MATH[name] is not None:  # the forward is the math kernel, bit for bit
        np.testing.assert_array_equal(y, MATH[name](x))
    # derivative terms are O(1) at most (|gelu'| <= 1.13), so the magnitude of dx is |dy| (+|dx|)
    assert_close(y, y64, magnitude=forward_magnitude(name, x, y64), factor=FORWARD_FACTOR, what=f"{name} forward")
    assert_close(dx, dx64, magnitude=np.abs(dy) * 1.2, factor=BACKWARD_FACTOR, what=f"{name} backward")


@pytest.mark.parametrize("name", list(ACTS))
def test_multi_dimensional_and_strided(rng, name):
    x = rng.standard_normal((5, 7, 9)).astype(np.float32)[:, ::2, 1:]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    fwd, bwd = pair(ops, name)
    y, ws = fwd(x)
    (dx,) = bwd(dy, ws)
    y64, dx64 = reference64(name, x, dy)
    assert y.shape == x.shape and dx.shape == x.shape
    assert_close(y, y64, magnitude=forward_magnitude(name, x, y64), factor=FORWARD_FACTOR)
    assert_close(dx, dx64, magnitude=np.abs(dy) * 1.2, factor=BACKWARD_FACTOR)


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("name", list(ACTS))
def test_gradcheck(rng, backend, name):
    x = rng.uniform(-3, 3, (4, 5))
    if name == "relu":
        x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kink
    fwd, bwd = pair(ops, name)
    with seqblocks.backend(backend):
        gradcheck(fwd, bwd, [x], what=f"{name} ({backend})")


def test_needs_grad_false_returns_no_workspace(rng):
    x = rng.standard_normal(10).astype(np.float32)
    for name in ACTS:
        fwd, _ = pair(ops, name)
        y, ws = fwd(x, needs_grad=False)
        assert ws is None and y.shape == x.shape


def test_backward_does_not_modify_and_can_repeat(rng):
    x = rng.standard_normal(33).astype(np.float32)
    dy = rng.standard_normal(33).astype(np.float32)
    for name in ACTS:
        fwd, bwd = pair(ops, name)
        y, ws = fwd(x)
        dy_copy, x_copy = dy.copy(), x.copy()
        (a,) = bwd(dy, ws)
        (b,) = bwd(dy, ws)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(dy, dy_copy)
        np.testing.assert_array_equal(x, x_copy)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["gelu", "gelu_tanh"])
def test_gelu_derivative_at_nan_inf_and_zero(isa, name, dtype):
    # Specials at the start, in the middle and in the tail of the SIMD loop (40 elements).
    x = np.full(40, 0.25, dtype)
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    for start in (0, 17, 35):
        x[start:start + 5] = special
    fwd, bwd = pair(ops, name)
    y, ws = fwd(x)
    (dx,) = bwd(np.ones_like(x), ws)
    # (the double tanh form clamps x to -20, where its derivative is -3e-259, not 0)
    for start in (0, 17, 35):
        np.testing.assert_allclose(dx[start:start + 5], [np.nan, 1.0, 0.0, 0.5, 0.5], rtol=0, atol=1e-250,
                                   err_msg=f"{name} at {start}")


def test_relu_kink_nan_and_inf():
    x = np.array([-1.0, 0.0, -0.0, 2.0, np.nan, np.inf, -np.inf], np.float32)
    dy = np.ones_like(x)
    for backend in ("native", "numpy"):
        with seqblocks.backend(backend):
            y, ws = ops.relu_forward(x)
            (dx,) = ops.relu_backward(dy, ws)
        np.testing.assert_array_equal(y, [0, 0, 0, 2, np.nan, np.inf, 0])
        np.testing.assert_array_equal(dx, [0, 0, 0, 1, 1, 1, 0])  # PyTorch: NaN passes the gradient


def test_thread_count_invariance(rng):
    x = rng.standard_normal(100_003).astype(np.float32)
    dy = rng.standard_normal(100_003).astype(np.float32)
    for name in ACTS:
        fwd, bwd = pair(ops, name)
        results = []
        for threads in (1, 2, 3):
            seqblocks.set_num_threads(threads)
            y, ws = fwd(x)
            results.append((y, bwd(dy, ws)[0]))
        for y, dx in results[1:]:
            np.testing.assert_array_equal(y, results[0][0])
            np.testing.assert_array_equal(dx, results[0][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ACTS))
def test_torch_parity(rng, name, dtype):
    torch = pytest.importorskip("torch")
    x = inputs(rng, 257, dtype).reshape(1, 257)
    dy = rng.standard_normal(x.shape).astype(dtype)
    kwargs, torch_name = ACTS[name]
    tx = torch.tensor(x, requires_grad=True)
    fn = getattr(torch.nn.functional, torch_name) if torch_name != "tanh" and torch_name != "sigmoid" else getattr(torch, torch_name)
    ty = fn(tx, **kwargs)
    ty.backward(torch.tensor(dy))
    fwd, bwd = pair(ops, name)
    y, ws = fwd(x)
    (dx,) = bwd(dy, ws)
    # torch's kernels have their own few-ulp errors: compare with twice our budget; its gelu computes
    # 0.5 x (1 + erf(x / sqrt 2)), which cancels for x < 0, so its error scales with |x| there.
    magnitude = np.maximum(np.abs(y), np.abs(x)) if name.startswith("gelu") else None
    assert_close(y, ty.detach().numpy(), magnitude=magnitude, factor=2 * FORWARD_FACTOR, what=f"{name} vs torch")
    assert_close(dx, tx.grad.numpy(), magnitude=np.abs(dy) * 1.2, factor=2 * BACKWARD_FACTOR,
                 what=f"{name} grad vs torch")


def test_bad_input():
    with pytest.raises(TypeError, match="x: expected a float32 or float64 array, got dtype int64"):
        ops.relu_forward(np.arange(3))
    with pytest.raises(ValueError, match="approximate: expected 'none' or 'tanh', got 'fast'"):
        ops.gelu_forward(np.ones(3, np.float32), approximate="fast")
    y, ws = ops.tanh_forward(np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(3,\).*got \(4,\)"):
        ops.tanh_backward(np.ones(4, np.float32), ws)
    with pytest.raises(TypeError, match="grad_output: expected dtype float32.*got float64"):
        ops.tanh_backward(np.ones(3, np.float64), ws)


def test_empty():
    for name in ACTS:
        fwd, bwd = pair(ops, name)
        y, ws = fwd(np.zeros((0, 3), np.float32))
        assert y.shape == (0, 3) and bwd(np.zeros((0, 3), np.float32), ws)[0].shape == (0, 3)


def test_zero_dimensional(rng):
    x = np.array(0.7, np.float32)
    for name in ACTS:
        fwd, bwd = pair(ops, name)
        y, ws = fwd(x)
        (dx,) = bwd(np.array(1.0, np.float32), ws)
        assert y.shape == () and dx.shape == ()
