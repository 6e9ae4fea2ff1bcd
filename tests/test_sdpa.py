"""Scaled dot-product attention: native tiled kernels vs the NumPy reference on every ISA (tail
shapes, every mask kind, dropout), float64 gradient checks of both backends, PyTorch parity of
``F.scaled_dot_product_attention`` (forward and autograd backward), fully masked rows, thread-count
invariance and bad input."""

import numpy as np
import pytest

import seqblocks
import seqblocks.nn.functional as F
from seqblocks import _core, ops, reference
from seqblocks.reference.attention import _flat, _probs, _scores
from seqblocks.testing import assert_close, gradcheck, sum_factor

DTYPES = [np.float32, np.float64]
# (L, S, E, Ev): tails of the query block (64), key blocks (64 / 128) and the SIMD widths; the
# forward packs a query block once for all its key blocks when E <= the GEMM's KC (256 scalar and
# double, 384 AVX2 float, 512 AVX-512 float) and S > 128, and per product otherwise (E = 400, 520).
SHAPES = [(1, 1, 1, 1), (3, 7, 15, 16), (17, 31, 33, 63), (65, 127, 16, 17), (129, 65, 64, 64),
          (64, 129, 7, 3), (33, 257, 31, 65), (9, 130, 400, 130), (5, 131, 520, 9)]
MASKS = ["none", "causal", "bool", "float"]


def make_inputs(rng, lead, L, S, E, Ev, dtype, mask_kind, mask_shape=None):
    q = rng.standard_normal(lead + (L, E)).astype(dtype)
    k = rng.standard_normal(lead + (S, E)).astype(dtype)
    v = rng.standard_normal(lead + (S, Ev)).astype(dtype)
    shape = mask_shape or (lead + (L, S))
    mask = None
    if mask_kind == "bool":
        mask = rng.random(shape) < 0.7
        mask[..., 0] = True  # no fully masked row here (tested separately)
    elif mask_kind == "float":
        mask = rng.standard_normal(shape).astype(dtype)
        mask[rng.random(shape) < 0.2] = -np.inf
        mask[..., 0] = 0.0
    return q, k, v, mask


def magnitudes(q, k, v, dout, mask, causal, scale):
    """What the rounding errors of out, dq, dk, dv scale with (float64): the error of p_ij is
    relative to the score magnitude C_i = 1 + |lse_i| + max_j scale |q_i| . |k_j|, and each output
    is a sum of such terms (so its magnitude is the same sum taken over absolute values)."""
    lead = q.shape[:-2]
    L, S = q.shape[-2], k.shape[-2]
    q64, k64, v64, d64 = (_flat(a.astype(np.float64), lead) for a in (q, k, v, dout))
    m = None if mask is None else _flat(np.broadcast_to(mask, lead + (L, S)), lead)
    if m is not None and m.dtype != np.bool_:
        m = m.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        s = _scores(q64, k64, m, causal, scale)
        mx = s.max(-1, initial=-np.inf)
        fin = np.isfinite(mx)
        lse = np.where(fin, mx + np.log(np.exp(s - np.where(fin, mx, 0)[..., None]).sum(-1)), -np.inf)
    p = _probs(s)
    a = scale * np.abs(q64) @ np.abs(np.swapaxes(k64, -1, -2))
    c = 1.0 + np.where(fin, np.abs(lse), 0) + a.max(-1)
    pc = p * c[..., None]
    out = pc @ np.abs(v64)
    g = np.abs(d64) @ np.abs(np.swapaxes(v64, -1, -2)) + np.sum(np.abs(d64) * (p @ np.abs(v64)), -1, keepdims=True)
    ds = pc * g
    r = lambda x, ref: x.reshape(ref.shape)  # noqa: E731
    return (r(out, np.empty(lead + (L, v.shape[-1]))), r(scale * ds @ np.abs(k64), q),
            r(scale * np.swapaxes(ds, -1, -2) @ np.abs(q64), k), r(np.swapaxes(pc, -1, -2) @ np.abs(d64), v))


def check_against_reference(actual, ref_fwd, q, k, v, mask, causal, dout, grads=None, ref_grads=None, dropout_p=0.0):
    E = q.shape[-1]
    scale = 1.0 / np.sqrt(E)
    # kept probabilities are scaled by 1/(1-p): so are the magnitudes of everything after them
    mags = [m / (1.0 - dropout_p) for m in magnitudes(q, k, v, dout, mask, causal, scale)]
    factor = sum_factor(max(q.shape[-2], k.shape[-2], E, v.shape[-1]))
    assert_close(actual, ref_fwd, magnitude=mags[0], factor=factor, what="out")
    if grads is not None:
        for name, g, rg, mag in zip(("dq", "dk", "dv"), grads, ref_grads, mags[1:]):
            assert_close(g, rg, magnitude=mag, factor=factor, what=name)


def reference64(q, k, v, mask, causal, dout, dropout_p=0.0, seed=None):
    """The reference in float64 (the exact answer the float32 kernels are compared with)."""
    up = lambda a: None if a is None else (a if a.dtype == np.bool_ else a.astype(np.float64))  # noqa: E731
    out, ws = reference.sdpa_forward(up(q), up(k), up(v), up(mask), causal, None, dropout_p, seed=seed)
    return out, reference.sdpa_backward(up(dout), ws)[:3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mask_kind", MASKS)
def test_native_matches_reference(isa, rng, dtype, shape, mask_kind):
    L, S, E, Ev = shape
    q, k, v, mask = make_inputs(rng, (2,), L, S, E, Ev, dtype, mask_kind)
    causal = mask_kind == "causal"
    out, ws = ops.sdpa_forward(q, k, v, mask, causal)
    assert out.dtype == dtype and out.shape == (2, L, Ev)
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = ops.sdpa_backward(dout, ws)
    assert grads[3] is None
    ref_out, ref_grads = reference64(q, k, v, mask, causal, dout)
    check_against_reference(out, ref_out, q, k, v, mask, causal, dout, grads[:3], ref_grads)


# Heads read in place: q from a packed (B, L, 3, H, E) projection, k and v from a (B, S, 2, H, Ev)
# one (as multi-head attention makes them), with the output merged to (B, L, H Ev) or not.
HEAD_SHAPES = [(1, 1, 1, 1, 1), (2, 3, 7, 5, 16), (2, 17, 31, 3, 33), (1, 65, 129, 2, 64), (1, 9, 130, 1, 400)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", HEAD_SHAPES)
@pytest.mark.parametrize("mask_kind", MASKS)
def test_heads_read_in_place_give_the_contiguous_bits(isa, rng, dtype, shape, mask_kind):
    """Without autograd 4-D views are read with their strides (no copy) and the merged output is
    written directly; every number equals the contiguous path's, and the reference agrees."""
    B, L, S, H, E = shape
    proj = rng.standard_normal((B, L, 3, H, E)).astype(dtype)
    mem = rng.standard_normal((B, S, 2, H, E)).astype(dtype)
    q = proj[:, :, 0].transpose(0, 2, 1, 3)
    k, v = (mem[:, :, i].transpose(0, 2, 1, 3) for i in range(2))
    _, _, _, mask = make_inputs(rng, (B, H), L, S, E, E, dtype, mask_kind)
    causal = mask_kind == "causal"
    contiguous, _ = ops.sdpa_forward(*map(np.ascontiguousarray, (q, k, v)), mask, causal, needs_grad=False)
    out, ws = ops.sdpa_forward(q, k, v, mask, causal, needs_grad=False)
    assert ws is None
    np.testing.assert_array_equal(out, contiguous)
    merged, _ = ops.sdpa_forward(q, k, v, mask, causal, needs_grad=False, merge_heads=True)
    assert merged.shape == (B, L, H * E)
    np.testing.assert_array_equal(merged, contiguous.transpose(0, 2, 1, 3).reshape(B, L, H * E))
    with seqblocks.backend("numpy"):
        ref, _ = ops.sdpa_forward(q, k, v, mask, causal, needs_grad=False, merge_heads=True)
    dout = np.zeros((B, H, L, E), dtype)
    ref_out, _ = reference64(q, k, v, mask, causal, dout)
    check_against_reference(merged.reshape(B, L, H, E).transpose(0, 2, 1, 3), ref_out, q, k, v, mask, causal, dout)
    np.testing.assert_allclose(ref, ref_out.transpose(0, 2, 1, 3).reshape(B, L, H * E),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", HEAD_SHAPES)
@pytest.mark.parametrize("mask_kind", MASKS + ["dropout"])
def test_training_heads_in_place_give_the_contiguous_bits(isa, rng, dtype, shape, mask_kind):
    """With autograd too, 4-D views of packed projections are read in place, and the backward
    writes dq, dk, dv in place into views of one packed gradient (``into``): every number equals
    that of contiguous (N, len, features) copies, forward and backward, with the merged output."""
    B, L, S, H, E = shape
    proj = rng.standard_normal((B, L, 3, H, E)).astype(dtype)
    mem = rng.standard_normal((B, S, 2, H, E)).astype(dtype)
    q = proj[:, :, 0].transpose(0, 2, 1, 3)
    k, v = (mem[:, :, i].transpose(0, 2, 1, 3) for i in range(2))
    _, _, _, mask = make_inputs(rng, (B, H), L, S, E, E, dtype, "none" if mask_kind == "dropout" else mask_kind)
    causal = mask_kind == "causal"
    p, seed = (0.3, 11) if mask_kind == "dropout" else (0.0, None)
    flat = [np.ascontiguousarray(a).reshape(B * H, a.shape[2], E) for a in (q, k, v)]
    flat_mask = None if mask is None else np.broadcast_to(mask, (B, H, L, S)).reshape(B * H, L, S)
    ref_out, ref_ws = ops.sdpa_forward(*flat, flat_mask, causal, dropout_p=p, seed=seed)
    merged, ws = ops.sdpa_forward(q, k, v, mask, causal, dropout_p=p, seed=seed, merge_heads=True)
    np.testing.assert_array_equal(merged, ref_out.reshape(B, H, L, E).transpose(0, 2, 1, 3).reshape(B, L, H * E))
    dout = rng.standard_normal((B, L, H * E)).astype(dtype)
    ref_grads = ops.sdpa_backward(np.ascontiguousarray(dout.reshape(B, L, H, E).transpose(0, 2, 1, 3))
                                  .reshape(B * H, L, E), ref_ws)[:3]
    g_proj = np.full((B, L, 3, H, E), np.nan, dtype)  # q's rows: every element must be written
    g_mem = np.full((B, S, 2, H, E), np.nan, dtype)
    into = (g_proj[:, :, 0].transpose(0, 2, 1, 3),) + tuple(g_mem[:, :, i].transpose(0, 2, 1, 3) for i in range(2))
    grads = ops.sdpa_backward(dout, ws, into=into)
    assert all(a is b for a, b in zip(grads[:3], into)) and grads[3] is None
    for got, want in zip(into, ref_grads):
        np.testing.assert_array_equal(got, want.reshape(got.shape))
    assert not np.isnan(g_mem).any() and not np.isnan(g_proj[:, :, 0]).any()
    assert np.isnan(g_proj[:, :, 1:]).all()  # nothing outside the views is touched


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_backward_into_checks_its_arrays(rng, backend):
    """``into`` must be three writable arrays shaped like q, k and v that share no memory with each
    other or with what the backward reads; the compiled backward checks what it writes too."""
    q, k, v, _ = make_inputs(rng, (2, 3), 4, 5, 6, 6, np.float32, "none")
    with seqblocks.backend(backend):
        out, ws = ops.sdpa_forward(q, k, v)
        dout = np.ones_like(out)
        fresh = [np.empty_like(a) for a in (q, k, v)]
        got = ops.sdpa_backward(dout, ws, into=fresh)
        want = ops.sdpa_backward(dout, ws)
        for a, b in zip(got[:3], want[:3]):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(TypeError, match=r"into: expected a tuple \(dq, dk, dv\)"):
            ops.sdpa_backward(dout, ws, into=fresh[:2])
        with pytest.raises(TypeError, match="into: expected dk as a NumPy array, got list"):
            ops.sdpa_backward(dout, ws, into=(fresh[0], fresh[1].tolist(), fresh[2]))
        with pytest.raises(ValueError, match=r"into: expected dv of shape \(2, 3, 5, 6\) and dtype float32, got "
                                             r"\(2, 3, 5, 5\) float32"):
            ops.sdpa_backward(dout, ws, into=(fresh[0], fresh[1], fresh[2][..., :5]))
        with pytest.raises(ValueError, match="into: expected dq of shape .* got .* float64"):
            ops.sdpa_backward(dout, ws, into=(fresh[0].astype(np.float64), fresh[1], fresh[2]))
        ro = fresh[0].copy()
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="into: expected dq writable"):
            ops.sdpa_backward(dout, ws, into=(ro, fresh[1], fresh[2]))
        with pytest.raises(ValueError, match="into: dk shares memory"):
            ops.sdpa_backward(dout, ws, into=(fresh[0], fresh[1], fresh[1]))
        with pytest.raises(ValueError, match="into: dq shares memory"):
            ops.sdpa_backward(dout, ws, into=(q, fresh[1], fresh[2]))
    if backend == "native":  # the binding's own checks on the arrays it writes
        out, ws = ops.sdpa_forward(q, k, v)
        q4, k4, v4, out4, mflat, moff, msl, mss = ws["native"]
        args = (ws["stats"], mflat, moff, msl, mss, False, 1.0, 0.0, 0)
        with pytest.raises(ValueError, match=r"grads: expected a tuple \(dq, dk, dv\)"):
            _core.sdpa_backward(out4, q4, k4, v4, out4, *args)
        with pytest.raises(TypeError, match="dk: expected a NumPy array, got list"):
            _core.sdpa_backward(out4, q4, k4, v4, out4, *args, (fresh[0], [1.0], fresh[2]))
        with pytest.raises(ValueError, match=r"dv: expected dim 2 = 5"):
            _core.sdpa_backward(out4, q4, k4, v4, out4, *args, (fresh[0], fresh[1], fresh[0]))
        ro = fresh[1].copy()
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="dk: expected a writable array"):
            _core.sdpa_backward(out4, q4, k4, v4, out4, *args, (fresh[0], ro, fresh[2]))
        with pytest.raises(ValueError, match="dq: expected contiguous rows"):
            _core.sdpa_backward(out4, q4, k4, v4, out4, *args,
                                (np.empty((2, 3, 4, 12), np.float32)[..., ::2], fresh[1], fresh[2]))


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_merge_heads_with_autograd_backward(rng, backend):
    """With needs_grad the merged output's gradient (B, L, H Ev) reaches q, k, v as if the merge
    were a separate transpose."""
    B, L, S, H, E = 2, 5, 7, 3, 4
    q, k, v, _ = make_inputs(rng, (B, H), L, S, E, E, np.float64, "none")
    with seqblocks.backend(backend):
        merged, ws = ops.sdpa_forward(q, k, v, merge_heads=True)
        out, ws_plain = ops.sdpa_forward(q, k, v)
        np.testing.assert_array_equal(merged, out.transpose(0, 2, 1, 3).reshape(B, L, H * E))
        g = rng.standard_normal(merged.shape)
        grads = ops.sdpa_backward(g, ws)
        plain = ops.sdpa_backward(g.reshape(B, L, H, E).transpose(0, 2, 1, 3), ws_plain)
        for a, b in zip(grads[:3], plain[:3]):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(ValueError, match="grad_output"):
            ops.sdpa_backward(np.zeros((B, H, L, E)), ws)


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_merge_heads_gradcheck(rng, backend):
    q, k, v, mask = make_inputs(rng, (2, 3), 4, 5, 3, 2, np.float64, "float")
    with seqblocks.backend(backend):
        gradcheck(lambda q, k, v: ops.sdpa_forward(q, k, v, mask, merge_heads=True),
                  lambda g, ws: ops.sdpa_backward(g, ws)[:3], [q, k, v], what=f"sdpa merge_heads {backend}")


def test_merge_heads_needs_four_dims(rng):
    q, k, v, _ = make_inputs(rng, (2,), 3, 4, 5, 5, np.float32, "none")
    with pytest.raises(ValueError, match="merge_heads: expected 4-D"):
        ops.sdpa_forward(q, k, v, merge_heads=True)


def test_heads_with_negative_strides_are_copied(rng):
    """A view the kernel cannot walk (a reversed axis) is copied first: the same numbers."""
    q, k, v, _ = make_inputs(rng, (2, 3), 6, 5, 8, 8, np.float32, "none")
    out, _ = ops.sdpa_forward(q[:, ::-1], k[:, ::-1], v[:, ::-1], needs_grad=False)
    ref, _ = ops.sdpa_forward(*map(np.ascontiguousarray, (q[:, ::-1], k[:, ::-1], v[:, ::-1])), needs_grad=False)
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(ValueError, match="q: expected non-negative strides"):
        _core.sdpa_forward(q[:, ::-1], k, v, None, None, 0, 0, False, 1.0, 0.0, 0, True)


@pytest.mark.parametrize("mask_shape", [(5, 9), (1, 9), (5, 1), (3, 1, 5, 9), (1, 2, 5, 9), (2, 1, 9)])
def test_broadcast_masks(rng, mask_shape):
    q, k, v, mask = make_inputs(rng, (3, 2), 5, 9, 8, 4, np.float64, "float", mask_shape)
    out, ws = ops.sdpa_forward(q, k, v, mask)
    dout = rng.standard_normal(out.shape)
    grads = ops.sdpa_backward(dout, ws)
    ref_out, ref_grads = reference64(q, k, v, mask, False, dout)
    check_against_reference(out, ref_out, q, k, v, mask, False, dout, grads[:3], ref_grads)


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("mask_kind", MASKS + ["dropout"])
def test_gradcheck(rng, backend, mask_kind):
    q, k, v, mask = make_inputs(rng, (2,), 4, 6, 3, 2, np.float64, "float" if mask_kind == "dropout" else mask_kind)
    causal = mask_kind == "causal"
    p = 0.3 if mask_kind == "dropout" else 0.0
    with seqblocks.backend(backend):
        gradcheck(lambda q, k, v: ops.sdpa_forward(q, k, v, mask, causal, None, p, seed=7),
                  lambda g, ws: ops.sdpa_backward(g, ws)[:3],
                  [q, k, v], what=f"sdpa {backend} {mask_kind}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_matches_reference(isa, rng, dtype):
    q, k, v, _ = make_inputs(rng, (2, 2), 70, 130, 16, 8, dtype, "none")
    out, ws = ops.sdpa_forward(q, k, v, None, False, None, 0.25, seed=123)
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = ops.sdpa_backward(dout, ws)
    ref_out, ref_grads = reference64(q, k, v, None, False, dout, 0.25, 123)
    check_against_reference(out, ref_out, q, k, v, None, False, dout, grads[:3], ref_grads, dropout_p=0.25)
    out1, _ = ops.sdpa_forward(q, k, v, None, False, None, 1.0, seed=1)
    assert not out1.any()


def check_float_mask_at_the_type_limit(rng, dtype):
    # finfo.min as a float mask ("padding" in much PyTorch code) is finite: the native kernel scales
    # the mask into its base-2 scores without overflowing it to -inf. Keys it masks get probability
    # 0 (as with a boolean mask), and a row masked with it everywhere averages v, as PyTorch's does.
    L, S, E = 9, 200, 16  # two key blocks
    q, k, v = (rng.standard_normal((2, n, E)).astype(dtype) for n in (L, S, S))
    mask = np.zeros((L, S), dtype)
    mask[:, 150:] = np.finfo(dtype).min
    mask[4, :] = np.finfo(dtype).min
    out, _ = ops.sdpa_forward(q, k, v, mask)
    keep = np.ones((L, S), bool)
    keep[:, 150:] = False
    rows = [r for r in range(L) if r != 4]
    out_bool, _ = ops.sdpa_forward(q, k, v, keep)
    np.testing.assert_array_equal(out[:, rows], out_bool[:, rows])  # masked keys: exactly 0 either way
    v64 = v.astype(np.float64)
    assert_close(out[:, 4], v64.mean(axis=1), magnitude=np.abs(v64).mean(axis=1), factor=sum_factor(S),
                 what="row masked everywhere with finfo.min")
    # Its gradient: p = 1/S on every key, so dv_j = dout_4 / S (PyTorch's backward, recomputing p
    # from m + log l, gets S times that).
    dout = np.zeros_like(out)
    dout[:, 4] = rng.standard_normal((2, E))
    _, ws = ops.sdpa_forward(q, k, v, mask)
    dv = ops.sdpa_backward(dout, ws)[2]
    expected = np.broadcast_to(dout[:, 4:5].astype(np.float64) / S, dv.shape)
    assert_close(dv, expected, magnitude=np.abs(expected), factor=sum_factor(S), what="dv of that row")


@pytest.mark.parametrize("dtype", DTYPES)
def test_float_mask_at_the_type_limit(isa, rng, dtype):
    check_float_mask_at_the_type_limit(rng, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_float_mask_at_the_type_limit_reference(rng, dtype):
    with seqblocks.backend("numpy"):
        check_float_mask_at_the_type_limit(rng, dtype)


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_rows_are_zero(rng, backend, dtype):
    q, k, v, _ = make_inputs(rng, (2,), 6, 70, 8, 5, dtype, "none")
    mask = rng.random((2, 6, 70)) < 0.5
    mask[0, 2] = False
    mask[1, 5] = False
    with seqblocks.backend(backend):
        out, ws = ops.sdpa_forward(q, k, v, mask)
        dq, dk, dv, _ = ops.sdpa_backward(np.ones_like(out), ws)
    for a in (out, dq, dk, dv):
        assert np.isfinite(a).all()
    assert not out[0, 2].any() and not out[1, 5].any()
    assert not dq[0, 2].any() and not dq[1, 5].any()
    # a float mask of -inf, and keys S = 0, behave the same
    fmask = np.where(mask, 0, -np.inf).astype(dtype)
    with seqblocks.backend(backend):
        out2, _ = ops.sdpa_forward(q, k, v, fmask)
        out3, _ = ops.sdpa_forward(q, k[:, :0], v[:, :0])
    assert np.array_equal(out2, out) and out3.shape == (2, 6, 5) and not out3.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_that_see_no_key_of_the_first_block(isa, rng, dtype):
    """The forward's first key block (128 keys) writes the output rows, later blocks add to them:
    rows whose first block is fully masked match the reference, and a row with nothing visible
    at all is zero, when the output's memory held other numbers before (a reused output block)."""
    L, S, E, Ev = 70, 300, 16, 33
    q, k, v, _ = make_inputs(rng, (2,), L, S, E, Ev, dtype, "none")
    mask = rng.random((2, L, S)) < 0.7
    mask[:, :40, :128] = False  # rows 0-39: nothing visible among the first 128 keys
    mask[:, :40, 250] = True
    dout = rng.standard_normal((2, L, Ev)).astype(dtype)
    for _ in range(2):  # the second forward gets an output block the first one filled
        out, ws = ops.sdpa_forward(q, k, v, mask)
        grads = ops.sdpa_backward(dout, ws)[:3]
    ref_out, ref_grads = reference64(q, k, v, mask, False, dout)
    check_against_reference(out, ref_out, q, k, v, mask, False, dout, grads, ref_grads)
    blind = mask.copy()
    blind[1, 7] = False
    out_blind, _ = ops.sdpa_forward(q, k, v, blind)
    assert not out_blind[1, 7].any()
    out_blind[1, 7] = out[1, 7]
    np.testing.assert_array_equal(out_blind, out)  # rows are independent of each other


def test_thread_count_invariance(rng):
    """The same bits for any thread count, whether the matrices are claimed one at a time from a
    counter (at least two per thread; which thread takes which varies between calls) or split in
    fixed runs of query blocks (fewer)."""
    q, k, v, mask = make_inputs(rng, (5,), 130, 200, 32, 16, np.float32, "float")
    proj = rng.standard_normal((2, 130, 3, 3, 32)).astype(np.float32)  # heads read in place
    heads = [proj[:, :, i].transpose(0, 2, 1, 3) for i in range(3)]
    results = []
    before = seqblocks.get_num_threads()
    for n in (1, 2, 3, 2, 2):
        seqblocks.set_num_threads(n)
        out, ws = ops.sdpa_forward(q, k, v, mask)
        merged, ws4 = ops.sdpa_forward(*heads, is_causal=True, merge_heads=True)
        g = np.empty_like(proj)
        ops.sdpa_backward(np.cos(merged), ws4, into=tuple(g[:, :, i].transpose(0, 2, 1, 3) for i in range(3)))
        results.append((out,) + ops.sdpa_backward(np.ones_like(out), ws)[:3] + (merged, g))
    seqblocks.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_bad_inputs(rng):
    q, k, v, _ = make_inputs(rng, (2,), 4, 6, 3, 2, np.float32, "none")
    with pytest.raises(ValueError, match=r"attn_mask: expected a shape broadcastable to \(2, 4, 6\)"):
        ops.sdpa_forward(q, k, v, np.ones((4, 5), bool))
    with pytest.raises(TypeError, match="attn_mask: expected a bool or float32 array, got dtype int64"):
        ops.sdpa_forward(q, k, v, np.ones((4, 6), np.int64))
    with pytest.raises(TypeError, match="attn_mask: expected dtype bool or float32"):
        ops.sdpa_forward(q, k, v, np.ones((4, 6), np.float64))
    with pytest.raises(ValueError, match="attn_mask: expected None when is_causal=True"):
        ops.sdpa_forward(q, k, v, np.ones((4, 6), bool), True)
    with pytest.raises(TypeError, match="expected arrays of one dtype"):
        ops.sdpa_forward(q, k.astype(np.float64), v)
    with pytest.raises(ValueError, match="key: expected last dim 3"):
        ops.sdpa_forward(q, k[..., :2], v)
    with pytest.raises(ValueError, match="value: expected 6 rows"):
        ops.sdpa_forward(q, k, v[:, :5])
    with pytest.raises(ValueError, match="key, value: expected leading dims"):
        ops.sdpa_forward(q, k[None], v[None])
    with pytest.raises(ValueError, match="query: expected an array of at least 2 dims"):
        ops.sdpa_forward(q[0, 0], k, v)
    with pytest.raises(TypeError, match="query: expected a float32 or float64 array"):
        ops.sdpa_forward(q.astype(np.int32), k, v)
    with pytest.raises(ValueError, match="dropout_p: expected a probability"):
        ops.sdpa_forward(q, k, v, dropout_p=1.5, seed=0)
    with pytest.raises(TypeError, match="seed: expected an int when dropout_p > 0"):
        ops.sdpa_forward(q, k, v, dropout_p=0.5)
    out, ws = ops.sdpa_forward(q, k, v)
    with pytest.raises(ValueError, match="grad_output: expected shape"):
        ops.sdpa_backward(out[:, :3], ws)
    with pytest.raises(ValueError, match="workspace: expected the workspace returned by sdpa_forward"):
        ops.sdpa_backward(out, None)
    # the compiled backward checks the row statistics it is handed (N, L, 2)
    q3, k3, v3, out3, mflat, moff, msl, mss = ws["native"]
    with pytest.raises(ValueError, match=r"stats: expected shape \(N, L, 2\)"):
        _core.sdpa_backward(out3, q3, k3, v3, out3, np.ascontiguousarray(ws["stats"][..., 0]), mflat, moff, msl,
                            mss, False, 1.0, 0.0, 0)


# ------------------------------------------------------------------------------ PyTorch parity


def torch_case(torch, q, k, v, mask, causal, scale=None):
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tm = None if mask is None else torch.tensor(mask)
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=causal, scale=scale)
    return out, (tq, tk, tv)


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("case", ["none", "causal", "bool", "float", "bool_bcast", "float_bcast", "scale", "L>S",
                                  "causal_L<S", "4d"])
def test_torch_parity(rng, backend, case):
    torch = pytest.importorskip("torch")
    lead, L, S, E, Ev = (2, 3), 33, 47, 16, 24
    mask_kind, mask_shape, causal, scale = "none", None, False, None
    if case in ("bool", "float"):
        mask_kind = case
    elif case == "bool_bcast":
        mask_kind, mask_shape = "bool", (L, S)
    elif case == "float_bcast":
        mask_kind, mask_shape = "float", (2, 1, L, S)
    elif case == "causal":
        causal = True
    elif case == "scale":
        scale = 0.37
    elif case == "L>S":
        L, S = 70, 20
    elif case == "causal_L<S":
        L, S, causal = 20, 70, True
    elif case == "4d":
        lead = (2, 2, 2)
    q, k, v, mask = make_inputs(rng, lead, L, S, E, Ev, np.float64, mask_kind, mask_shape)
    tout, tin = torch_case(torch, q, k, v, mask, causal, scale)
    dout = rng.standard_normal(tout.shape)
    tout.backward(torch.tensor(dout))
    with seqblocks.backend(backend):
        tq, tk, tv = (seqblocks.tensor(a, requires_grad=True) for a in (q, k, v))
        out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask, is_causal=causal, scale=scale)
        out.backward(dout)
    # float64 against float64: both are exact to a few eps of the magnitudes above
    mags = magnitudes(q, k, v, dout, mask, causal, 1 / np.sqrt(E) if scale is None else scale)
    factor = sum_factor(max(L, S, E, Ev))
    assert_close(out.numpy(), tout.detach().numpy(), magnitude=mags[0], factor=factor, what="out")
    for name, ours, theirs, mag in zip(("dq", "dk", "dv"), (tq, tk, tv), tin, mags[1:]):
        assert_close(ours.grad, theirs.grad.numpy(), magnitude=mag, factor=factor, what=name)


def test_torch_parity_float32_native(rng):
    torch = pytest.importorskip("torch")
    q, k, v, mask = make_inputs(rng, (2, 4), 130, 129, 64, 64, np.float32, "none")
    tout, tin = torch_case(torch, q, k, v, None, True)
    dout = rng.standard_normal(tout.shape).astype(np.float32)
    tout.backward(torch.tensor(dout))
    tq, tk, tv = (seqblocks.tensor(a, requires_grad=True) for a in (q, k, v))
    out = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    out.backward(dout)
    mags = magnitudes(q, k, v, dout, None, True, 1 / 8)
    # two float32 results, each within sum_factor of the exact one
    factor = 2 * sum_factor(130)
    assert_close(out.numpy(), tout.detach().numpy(), magnitude=mags[0], factor=factor, what="out")
    for name, ours, theirs, mag in zip(("dq", "dk", "dv"), (tq, tk, tv), tin, mags[1:]):
        assert_close(ours.grad, theirs.grad.numpy(), magnitude=mag, factor=factor, what=name)


def test_functional_dropout_same_on_both_backends(rng):
    q, k, v, _ = make_inputs(rng, (2,), 9, 11, 4, 3, np.float32, "none")
    outs = []
    for backend in ("numpy", "native"):
        seqblocks.manual_seed(5)
        with seqblocks.backend(backend):
            outs.append(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy())
    ref_out, _ = reference64(q, k, v, None, False, np.zeros_like(outs[0]))
    check_against_reference(outs[1], outs[0].astype(np.float64), q, k, v, None, False, np.zeros_like(outs[0]),
                            dropout_p=0.5)
    assert not np.allclose(outs[0], ref_out)  # dropout did something
