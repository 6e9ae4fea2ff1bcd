"""seqblocks.ops.{lstm,gru,rnn}_layer_forward/_backward: native vs reference on every ISA (tails of
the hidden size, lengths, reverse, bias off, threads), float64 gradient checks of both backends,
PyTorch parity (PackedSequence numbers), truncated BPTT, inference mode and bad input."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import assert_close, gradcheck, sum_factor

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def make(rng, cell, T, B, I, H, dtype=np.float64, bias=True, states=True, lengths=None, proj=0):
    """Arguments of the cell's layer forward (PyTorch's U(+-1/sqrt(H)) weights, N(0,1) x and states);
    ``proj`` > 0: an LSTM with a projection to that size."""
    G = GATES[cell]
    k = 1 / np.sqrt(H)
    u = lambda *s: rng.uniform(-k, k, s).astype(dtype)  # noqa: E731
    Ho = proj or H
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, Ho)).astype(dtype) if states else None
    args = {"x": x, "h0": h0}
    if cell == "lstm":
        args["c0"] = rng.standard_normal((B, H)).astype(dtype) if states else None
    args.update(w_ih=u(G * H, I), w_hh=u(G * H, Ho), b_ih=u(G * H) if bias else None, b_hh=u(G * H) if bias else None)
    if cell == "lstm":
        args["w_hr"] = u(proj, H) if proj else None
    args["lengths"] = lengths
    return args


def run_forward(cell, args, reverse=False, needs_grad=True):
    if cell == "lstm":
        return ops.lstm_layer_forward(*args.values(), reverse, needs_grad=needs_grad)
    if cell == "gru":
        return ops.gru_layer_forward(*args.values(), reverse, needs_grad=needs_grad)
    return ops.rnn_layer_forward(*args.values(), reverse, cell[4:], needs_grad=needs_grad)


def run_backward(cell, grads, ws):
    bwd = {"lstm": ops.lstm_layer_backward, "gru": ops.gru_layer_backward}.get(cell, ops.rnn_layer_backward)
    return bwd(grads, ws)


def tolerance(T, I, H):
    """Recurrent results: every step is a sum of I + H + 2 rounded products, and a step's error is
    carried (not amplified: gates and tanh contract, weights are U(+-1/sqrt(H))) through up to T
    steps, so the per-step sum factor grows linearly with T."""
    return sum_factor(I + H + 2) * (T + 1)


def check_close(actual, expected, factor, what):
    e = np.asarray(expected, np.float64)
    rms = float(np.sqrt(np.mean(e * e))) if e.size else 0.0
    assert_close(actual, expected, magnitude=np.abs(e) + rms + 1e-3, factor=factor, what=what)


# --------------------------------------------------------------------------------- native parity


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H", [1, 7, 16, 17, 33])
@pytest.mark.parametrize("B", [3, 6])  # 6: past the few-rows kernel, the step weights are prepacked
def test_native_matches_reference(isa, rng, cell, dtype, H, B):
    T, I = 5, 6
    lengths = np.array([5, 1, 3, 5, 2, 4][:B])
    for reverse in (False, True):
        args = make(rng, cell, T, B, I, H, dtype, lengths=lengths)
        out, ws = run_forward(cell, args, reverse)
        with seqblocks.backend("numpy"):
            ref_out, ref_ws = run_forward(cell, args, reverse)
        f = tolerance(T, I, H)
        for name, a, e in zip(["y", "h_n", "c_n"], out, ref_out):
            assert a.dtype == dtype
            check_close(a, e, f, f"{cell} {name}")
        grads = tuple(rng.standard_normal(o.shape).astype(dtype) for o in out)
        g = run_backward(cell, grads, ws)
        with seqblocks.backend("numpy"):
            ref_g = run_backward(cell, grads, ref_ws)
        fg = tolerance(T, I, H) * sum_factor(T * B)
        assert len(g) == len(ref_g)
        for i, (a, e) in enumerate(zip(g, ref_g)):
            assert (a is None) == (e is None), i
            if a is not None:
                assert a.dtype == dtype
                check_close(a, e, fg, f"{cell} grad {i}")


@pytest.mark.parametrize("cell", CELLS)
def test_native_long_k(isa, rng, cell):
    """Hidden size above the GEMM's K block (384 float32 rows on avx512): the prepacked step
    weights hold several K blocks in forward and in backward."""
    T, B, I, H = 3, 5, 7, 400
    args = make(rng, cell, T, B, I, H, np.float32, lengths=np.array([3, 1, 2, 3, 3]))
    out, ws = run_forward(cell, args)
    with seqblocks.backend("numpy"):
        ref_out, ref_ws = run_forward(cell, args)
    grads = tuple(rng.standard_normal(o.shape).astype(np.float32) for o in out)
    g = run_backward(cell, grads, ws)
    with seqblocks.backend("numpy"):
        ref_g = run_backward(cell, grads, ref_ws)
    check_outputs_and_grads(out, g, ref_out, ref_g, tolerance(T, I, H), T * B, cell)


def check_outputs_and_grads(out, grads, ref_out, ref_grads, f, rows, what):
    """Outputs within f of the reference; gradients (None where the reference has None) within f
    scaled by sums over the rows = T B."""
    for a, e in zip(out, ref_out):
        check_close(a, e, f, what)
    for a, e in zip(grads, ref_grads):
        assert (a is None) == (e is None)
        if a is not None:
            check_close(a, e, f * sum_factor(rows), what)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [17, 9])
def test_native_bias_off_no_states_large(isa, rng, cell, dtype, B):
    """Bias off, zero initial states (None), a hidden size that splits over threads, 1 and 2 threads:
    results within rounding of the reference and of each other. B G H^2 >= 2^18 multiply-adds per
    step: at two threads B = 17 splits the batch rows (8 and 9 each), B = 9 the hidden units."""
    T, I, H = 4, 31, 129
    lengths = np.array([4, 2, 1, 4, 3, 4, 4, 1, 2, 4, 4, 3, 1, 1, 2, 4, 4])[:B]
    args = make(rng, cell, T, B, I, H, dtype, bias=False, states=False, lengths=lengths)
    results = []
    for nt in (1, 2):
        seqblocks.set_num_threads(nt)
        out, ws = run_forward(cell, args)
        grads = tuple(np.ones_like(o) for o in out)
        results.append((out, run_backward(cell, grads, ws)))
    with seqblocks.backend("numpy"):
        ref_out, ref_ws = run_forward(cell, args)
        ref_g = run_backward(cell, tuple(np.ones_like(o) for o in ref_out), ref_ws)
    f = tolerance(T, I, H)
    for out, g in results:
        check_outputs_and_grads(out, g, ref_out, ref_g, f, T * B, cell)
    for a, b in zip(results[0][0], results[1][0]):
        check_close(a, b, f, "threads")


def check_native_both_thread_counts(rng, cell, dtype, T, B, I, H, lengths, proj=0):
    """Forward and backward at 1 and 2 threads against the reference (both directions), the outputs
    bit-equal between the thread counts."""
    args = make(rng, cell, T, B, I, H, dtype, lengths=lengths, proj=proj)
    results = []
    for nt in (1, 2):
        seqblocks.set_num_threads(nt)
        for reverse in (False, True):
            out, ws = run_forward(cell, args, reverse)
            grads = tuple(np.ones_like(o) for o in out)
            results.append((out, run_backward(cell, grads, ws)))
    with seqblocks.backend("numpy"):
        for reverse in (False, True):
            ref_out, ref_ws = run_forward(cell, args, reverse)
            ref_g = run_backward(cell, tuple(np.ones_like(o) for o in ref_out), ref_ws)
            for out, g in results[int(reverse)::2]:
                check_outputs_and_grads(out, g, ref_out, ref_g, tolerance(T, I, H), T * B, cell)
    for one, two in zip(results[:2], results[2:]):
        for a, b in zip(one[0], two[0]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell,proj", [(c, 0) for c in CELLS] + [("lstm", 70)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 2, 3])
def test_native_few_rows_split_units(isa, rng, cell, proj, dtype, B):
    """Batch 1-3 with G H^2 >= 2^16 multiply-adds per step: at two threads each thread owns a slice of
    the hidden units (9 and 8 vectors of H = 260 on avx512 float32, a masked tail in the second),
    the step products run the few-rows kernel over a contiguous copy of the slice's weights (not
    with a projection), and it walks k backwards on odd steps. Results are within rounding of the
    reference, and every element is the same sum in the same order at one and two threads: the
    outputs are bit-equal."""
    check_native_both_thread_counts(rng, cell, dtype, 4, B, 5, 260, np.array([4, 2, 3][:B]), proj=proj)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T,B", [(1, 1), (2, 3), (1, 9), (2, 10)])
def test_native_direct_steps(isa, rng, cell, dtype, T, B):
    """One or two steps at up to 9 rows run forward and backward without the time loop (the
    recurrent products straight from W_hh by the GEMM driver, one step at a time); 10 rows take
    the loop. Both match the reference, with lengths, both directions, at 1 and 2 threads
    (outputs bit-equal)."""
    lengths = np.array([T, 1, T, 1, T, T, 1, T, T, 1][:B]) if T > 1 else None
    check_native_both_thread_counts(rng, cell, dtype, T, B, 6, 33, lengths)


@pytest.mark.parametrize("cell,H", [("lstm", 512), ("gru", 600)])
def test_native_direct_steps_large_weights(isa, rng, cell, H):
    """A few steps over a W_hh of at least 4 MiB run without the time loop too (3 steps here)."""
    check_native_both_thread_counts(rng, cell, np.float32, 3, 2, 5, H, np.array([3, 2]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T,B,H,P,threads", [(5, 3, 7, 1, 1), (5, 3, 17, 5, 1), (4, 1, 33, 16, 1),
                                             (4, 17, 129, 65, 2)])
def test_native_lstm_projection(isa, rng, dtype, T, B, H, P, threads):
    """LSTM with proj_size: native (two phases per step) vs reference, lengths and reverse."""
    seqblocks.set_num_threads(threads)
    I = 6
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    for reverse in (False, True):
        args = make(rng, "lstm", T, B, I, H, dtype, lengths=lengths, proj=P)
        out, ws = run_forward("lstm", args, reverse)
        assert ws["backend"] == "native" and out[0].shape == (T, B, P)
        with seqblocks.backend("numpy"):
            ref_out, ref_ws = run_forward("lstm", args, reverse)
        f = tolerance(T, I + P, H)
        for a, e in zip(out, ref_out):
            check_close(a, e, f, "lstm proj output")
        grads = tuple(rng.standard_normal(o.shape).astype(dtype) for o in out)
        g = run_backward("lstm", grads, ws)
        with seqblocks.backend("numpy"):
            ref_g = run_backward("lstm", grads, ref_ws)
        for i, (a, e) in enumerate(zip(g, ref_g)):
            check_close(a, e, f * sum_factor(T * B), f"lstm proj grad {i}")


@pytest.mark.parametrize("cell", CELLS)
def test_inference_mode(rng, cell):
    args = make(rng, cell, 4, 2, 3, 5, np.float32)
    out, ws = run_forward(cell, args, needs_grad=False)
    assert ws is None
    out2, _ = run_forward(cell, args)
    for a, b in zip(out, out2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_native_workspace_does_not_copy_states(rng, cell):
    # The states entering each step are read from y and h0 (cpp/ops/rnn.h), not copied: the
    # workspace holds only the gate slots (LSTM 4 + c_prev + tanh c', GRU 4, RNN none).
    T, B, H = 5, 3, 7
    args = make(rng, cell, T, B, 4, H, np.float32, lengths=np.array([5, 2, 4]))
    out, ws = run_forward(cell, args, reverse=True)
    assert ws["ws"].size == {"lstm": 6, "gru": 4}.get(cell, 0) * T * B * H
    assert ws["y"] is out[0]
    grads = (np.ones_like(out[0]), np.ones_like(out[1])) + ((np.ones_like(out[2]),) if cell == "lstm" else ())
    first = run_backward(cell, grads, ws)
    again = run_backward(cell, grads, ws)  # the workspace and y are only read
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("cell", CELLS + ["lstm_proj"])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck(backend, cell, reverse):
    rng = np.random.default_rng(7)
    proj = 2 if cell == "lstm_proj" else 0
    cell = "lstm" if proj else cell
    args = make(rng, cell, 3, 3, 2, 3, lengths=np.array([3, 1, 2]), proj=proj)
    if cell == "rnn_relu":  # keep pre-activations away from the kink
        args["b_ih"] = args["b_ih"] + 0.5
    names = [k for k, v in args.items() if v is not None and k != "lengths"]

    def fwd(*arrays):
        a = dict(args)
        a.update(zip(names, arrays))
        with seqblocks.backend(backend):
            return run_forward(cell, a, reverse)

    def bwd(g, ws):
        with seqblocks.backend(backend):
            grads = run_backward(cell, g, ws)
        full = dict(zip([k for k in args if k != "lengths"], grads))
        return [full[n] for n in names]

    gradcheck(fwd, bwd, [args[n] for n in names], what=f"{backend} {cell}")


# ------------------------------------------------------------------------------ truncated BPTT


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_truncated_bptt_chunks_compose(rng, cell):
    """Two chunks with the state passed between them give the full sequence's outputs, and feeding
    the second chunk's dh0 (dc0) back as the first chunk's dh_n (dc_n) gives its gradients."""
    T, B, I, H = 6, 2, 3, 5
    args = make(rng, cell, T, B, I, H)
    out, ws = run_forward(cell, args)
    g = tuple(rng.standard_normal(o.shape) for o in out)
    full = run_backward(cell, g, ws)
    a1, a2 = dict(args), dict(args)
    a1["x"], a2["x"] = args["x"][:3], args["x"][3:]
    o1, w1 = run_forward(cell, a1)
    a2["h0"] = o1[1]
    if cell == "lstm":
        a2["c0"] = o1[2]
    o2, w2 = run_forward(cell, a2)
    np.testing.assert_allclose(np.concatenate([o1[0], o2[0]]), out[0], rtol=1e-12, atol=1e-12)
    g2 = run_backward(cell, (g[0][3:],) + g[1:], w2)
    states = (g2[1], g2[2]) if cell == "lstm" else (g2[1],)
    g1 = run_backward(cell, (g[0][:3],) + states, w1)
    np.testing.assert_allclose(np.concatenate([g1[0], g2[0]]), full[0], rtol=1e-10, atol=1e-12)
    k = 3 if cell == "lstm" else 2  # first weight gradient
    for a, b, c in zip(g1[k:], g2[k:], full[k:]):
        if c is not None:
            np.testing.assert_allclose(a + b, c, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------- PyTorch parity


def torch_layer(torch, cell, I, H, proj):
    if cell == "lstm":
        return torch.nn.LSTM(I, H, proj_size=proj, bidirectional=True, dtype=torch.float64)
    if cell == "gru":
        return torch.nn.GRU(I, H, bidirectional=True, dtype=torch.float64)
    return torch.nn.RNN(I, H, nonlinearity=cell[4:], bidirectional=True, dtype=torch.float64)


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("cell,proj", [("lstm", 0), ("lstm", 3), ("gru", 0), ("rnn_tanh", 0), ("rnn_relu", 0)])
@pytest.mark.parametrize("reverse", [False, True])
def test_torch_parity_packed(backend, cell, proj, reverse):
    """One direction of a bidirectional PyTorch layer over a PackedSequence vs our padded layer with
    lengths: outputs, final states and every gradient."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    T, B, I, H = 5, 4, 4, 6
    Ho = proj or H
    lengths = np.array([5, 1, 3, 5])
    m = torch_layer(torch, cell, I, H, proj)
    sfx = "_l0_reverse" if reverse else "_l0"
    d = int(reverse)
    p = {k: v.detach().numpy() for k, v in m.named_parameters()}
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, Ho)), rng.standard_normal((B, H))
    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.zeros(2, B, Ho, dtype=torch.float64)
    th0[d] = torch.tensor(h0)
    th0.requires_grad_()
    tc0 = torch.zeros(2, B, H, dtype=torch.float64)
    tc0[d] = torch.tensor(c0)
    tc0.requires_grad_()
    packed = torch.nn.utils.rnn.pack_padded_sequence(tx, torch.tensor(lengths), enforce_sorted=False)
    out, hn = m(packed, (th0, tc0) if cell == "lstm" else th0)
    if cell == "lstm":
        hn, cn = hn
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    y_t = out[..., d * Ho:(d + 1) * Ho]
    dy, dh, dc = rng.standard_normal((T, B, Ho)), rng.standard_normal((B, Ho)), rng.standard_normal((B, H))
    loss = (y_t * torch.tensor(dy)).sum() + (hn[d] * torch.tensor(dh)).sum()
    if cell == "lstm":
        loss = loss + (cn[d] * torch.tensor(dc)).sum()
    loss.backward()
    w = lambda n: p.get(n + sfx)  # noqa: E731
    with seqblocks.backend(backend):
        if cell == "lstm":
            (y, h, c), ws = ops.lstm_layer_forward(x, h0, c0, w("weight_ih"), w("weight_hh"), w("bias_ih"),
                                                   w("bias_hh"), w("weight_hr"), lengths, reverse)
            grads = ops.lstm_layer_backward((dy, dh, dc), ws)
            np.testing.assert_allclose(c, cn[d].detach().numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(grads[2], tc0.grad[d].numpy(), rtol=1e-10, atol=1e-12)
            names, pgrads = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"], grads[3:]
        else:
            (y, h), ws = run_forward(cell, {"x": x, "h0": h0, "w_ih": w("weight_ih"), "w_hh": w("weight_hh"),
                                            "b_ih": w("bias_ih"), "b_hh": w("bias_hh"), "lengths": lengths}, reverse)
            grads = run_backward(cell, (dy, dh), ws)
            names, pgrads = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"], grads[2:]
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)  # noqa: E731
    close(y, y_t.detach().numpy())
    close(h, hn[d].detach().numpy())
    close(grads[0], tx.grad.numpy())
    close(grads[1], th0.grad[d].numpy())
    params = dict(m.named_parameters())
    for n, g in zip(names, pgrads):
        if n + sfx in params:
            close(g, params[n + sfx].grad.numpy())


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("cell", CELLS)
def test_bad_input(rng, backend, cell):
    T, B, I, H = 4, 3, 5, 6
    with seqblocks.backend(backend):
        for bad, exc, match in [
            ({"lengths": np.array([4, 5, 1])}, ValueError, "lengths"),
            ({"lengths": np.array([4, 0, 1])}, ValueError, "lengths"),
            ({"lengths": np.array([4, 1])}, ValueError, "lengths"),
            ({"lengths": np.array([4.0, 1.0, 1.0])}, TypeError, "lengths"),
            ({"h0": np.zeros((B, H + 1))}, ValueError, "h0"),
            ({"x": np.zeros((T, B, I + 1))}, ValueError, "x"),
            ({"x": np.zeros((T, B))}, ValueError, "x"),
            ({"w_hh": np.zeros((GATES[cell] * H, H), np.float32)}, TypeError, "dtype"),
        ]:
            args = make(rng, cell, T, B, I, H)
            args.update(bad)
            with pytest.raises(exc, match=match):
                run_forward(cell, args)
        if cell == "lstm":
            args = make(rng, cell, T, B, I, H)
            args["c0"] = np.zeros((B, H - 1))
            with pytest.raises(ValueError, match="c0"):
                run_forward(cell, args)
        args = make(rng, cell, T, B, I, H)
        out, ws = run_forward(cell, args)
        grads = tuple(np.zeros_like(o) for o in out)
        with pytest.raises(ValueError, match="dy"):
            run_backward(cell, (np.zeros((T, B, H + 1)),) + grads[1:], ws)
        with pytest.raises(TypeError, match="dh_n"):
            run_backward(cell, (grads[0], grads[1].astype(np.float32)) + grads[2:], ws)
        with pytest.raises(ValueError, match="workspace"):
            run_backward(cell, grads, {"op": "nope"})
    if backend == "native":  # the native workspace references y and h0: the binding checks them
        args = make(rng, cell, T, B, I, H)
        out, ws = run_forward(cell, args)
        grads = tuple(np.zeros_like(o) for o in out)
        for key, bad, exc, match in [("y", np.zeros((T, B, H + 1)), ValueError, r"y: expected shape \(4, 3, 6\)"),
                                     ("h0", np.zeros((B - 1, H)), ValueError, r"h0: expected shape \(3, 6\)"),
                                     ("y", np.zeros((T, B, H), np.float32), TypeError, "y")]:
            with pytest.raises(exc, match=match):
                run_backward(cell, grads, {**ws, key: bad})
    if cell == "rnn_tanh":
        with pytest.raises(ValueError, match="nonlinearity"):
            ops.rnn_layer_forward(args["x"], None, args["w_ih"], args["w_hh"], nonlinearity="sigmoid")


def test_reference_exported():
    for name in ["lstm_layer_forward", "lstm_layer_backward", "gru_layer_forward", "gru_layer_backward",
                 "rnn_layer_forward", "rnn_layer_backward"]:
        assert callable(getattr(reference, name)) and callable(getattr(ops, name))
