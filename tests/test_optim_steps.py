"""sgd_step_ / adam_step_: fused in-place updates against the float64 reference on every ISA and
tail length, PyTorch's torch.optim (single-tensor) over several steps, and the strict in-place
contract (bad arrays raise before anything is written)."""

import numpy as np
import pytest

import seqblocks
from seqblocks import ops, reference
from seqblocks.testing import assert_close

DTYPES = [np.float32, np.float64]
TAILS = [1, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129]
STEPS = 3
SGD_CONFIGS = [dict(momentum=0.0), dict(momentum=0.9), dict(momentum=0.9, dampening=0.3, weight_decay=0.01),
               dict(momentum=0.8, nesterov=True, weight_decay=0.05), dict(momentum=0.5, maximize=True)]
ADAM_CONFIGS = [dict(), dict(amsgrad=True), dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled_weight_decay=True),
                dict(maximize=True, amsgrad=True, weight_decay=0.01), dict(beta1=0.0, beta2=0.5)]
ADAM_DEFAULTS = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)
# One step changes a value by at most |lr * update|, rounded a few times: the error of STEPS
# steps is bounded by a few eps per step times (|value| + the largest update). For Adam the
# normalized update |m_hat / (sqrt(v_hat) + eps)| <= (1 - beta1) / sqrt(1 - beta2) / bias terms,
# below 10 for the configurations here.
FACTOR = 8.0 * STEPS


def run_sgd(module, dtype, p0, grads, cfg, lr=0.1):
    p = p0.astype(dtype)
    buf = np.zeros_like(p)
    for i, g in enumerate(grads):
        module.sgd_step_(p, g.astype(dtype), buf, lr=lr, first_step=i == 0, **cfg)
    return p, buf


def run_adam(module, dtype, p0, grads, cfg):
    kw = {**ADAM_DEFAULTS, **cfg}
    p = p0.astype(dtype)
    m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for i, g in enumerate(grads):
        module.adam_step_(p, g.astype(dtype), m, v, vmax if kw.get("amsgrad") else None, step=i + 1, **kw)
    return p, m, v, vmax


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", TAILS + [1000])
@pytest.mark.parametrize("cfg", SGD_CONFIGS, ids=str)
def test_sgd_matches_reference(isa, rng, dtype, n, cfg):
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) for _ in range(STEPS)]
    p, buf = run_sgd(ops, dtype, p0, grads, cfg)
    p64, buf64 = run_sgd(reference, np.float64, p0.astype(dtype), [g.astype(dtype) for g in grads], cfg)
    gmax = max(np.abs(g).max() for g in grads) * 10  # |buf| <= sum of momentum^k |g| < 10 max|g|
    assert_close(p, p64, magnitude=np.abs(p64) + np.abs(p0) + 0.1 * gmax, factor=FACTOR, what="param")
    if cfg["momentum"]:
        assert_close(buf, buf64, magnitude=np.abs(buf64) + gmax, factor=FACTOR, what="momentum_buffer")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", TAILS + [1000])
@pytest.mark.parametrize("cfg", ADAM_CONFIGS, ids=str)
def test_adam_matches_reference(isa, rng, dtype, n, cfg):
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) for _ in range(STEPS)]
    p, m, v, vmax = run_adam(ops, dtype, p0, grads, cfg)
    p64, m64, v64, vmax64 = run_adam(reference, np.float64, p0.astype(dtype), [g.astype(dtype) for g in grads], cfg)
    gmax = max(np.abs(g).max() for g in grads) + 1
    assert_close(p, p64, magnitude=np.abs(p64) + np.abs(p0) + 1e-2 * 10, factor=FACTOR, what="param")
    assert_close(m, m64, magnitude=np.abs(m64) + gmax, factor=FACTOR, what="exp_avg")
    assert_close(v, v64, magnitude=np.abs(v64) + gmax**2, factor=FACTOR, what="exp_avg_sq")
    assert_close(vmax, vmax64, magnitude=np.abs(vmax64) + gmax**2, factor=FACTOR, what="max_exp_avg_sq")


def _torch_run(torch, opt_cls, p0, grads, kwargs):
    tp = torch.nn.Parameter(torch.tensor(p0))
    opt = opt_cls([tp], foreach=False, **kwargs)
    for g in grads:
        tp.grad = torch.tensor(g)
        opt.step()
    return tp, opt.state[tp]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", SGD_CONFIGS, ids=str)
def test_sgd_torch_parity(rng, dtype, cfg):
    torch = pytest.importorskip("torch")
    p0 = rng.standard_normal(257).astype(dtype)
    grads = [rng.standard_normal(257).astype(dtype) for _ in range(STEPS)]
    tp, state = _torch_run(torch, torch.optim.SGD, p0, grads, dict(lr=0.1, **cfg))
    p, buf = run_sgd(ops, dtype, p0, grads, cfg)
    gmax = max(np.abs(g).max() for g in grads) * 10
    assert_close(p, tp.detach().numpy(), magnitude=np.abs(p) + np.abs(p0) + 0.1 * gmax, factor=2 * FACTOR)
    if cfg["momentum"]:
        assert_close(buf, state["momentum_buffer"].numpy(), magnitude=np.abs(buf) + gmax, factor=2 * FACTOR)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", ADAM_CONFIGS, ids=str)
def test_adam_torch_parity(rng, dtype, cfg):
    torch = pytest.importorskip("torch")
    p0 = rng.standard_normal(257).astype(dtype)
    grads = [rng.standard_normal(257).astype(dtype) for _ in range(STEPS)]
    kw = {**ADAM_DEFAULTS, **cfg}
    tkw = dict(lr=kw["lr"], betas=(kw["beta1"], kw["beta2"]), eps=kw["eps"], weight_decay=kw.get("weight_decay", 0.0),
               amsgrad=kw.get("amsgrad", False), maximize=kw.get("maximize", False))
    cls = torch.optim.AdamW if kw.get("decoupled_weight_decay") else torch.optim.Adam
    tp, state = _torch_run(torch, cls, p0, grads, tkw)
    p, m, v, vmax = run_adam(ops, dtype, p0, grads, cfg)
    gmax = max(np.abs(g).max() for g in grads) + 1
    assert_close(p, tp.detach().numpy(), magnitude=np.abs(p) + np.abs(p0) + 0.1, factor=2 * FACTOR)
    assert_close(m, state["exp_avg"].numpy(), magnitude=np.abs(m) + gmax, factor=2 * FACTOR)
    assert_close(v, state["exp_avg_sq"].numpy(), magnitude=np.abs(v) + gmax**2, factor=2 * FACTOR)
    if kw.get("amsgrad"):
        assert_close(vmax, state["max_exp_avg_sq"].numpy(), magnitude=np.abs(vmax) + gmax**2, factor=2 * FACTOR)


def test_multi_dimensional_and_thread_invariance(rng):
    p0 = rng.standard_normal((301, 333)).astype(np.float32)
    g = rng.standard_normal((301, 333)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        seqblocks.set_num_threads(threads)
        p, m, v = p0.copy(), np.ones_like(p0), np.ones_like(p0)
        ops.adam_step_(p, g, m, v, None, step=2, **ADAM_DEFAULTS)
        q, buf = p0.copy(), np.ones_like(p0)
        ops.sgd_step_(q, g, buf, lr=0.1, momentum=0.9, first_step=False)
        results.append((p, m, v, q, buf))
    for r in results[1:]:
        for a, e in zip(r, results[0]):
            np.testing.assert_array_equal(a, e)


def test_sgd_without_momentum_buffer(rng):
    p = rng.standard_normal(10).astype(np.float32)
    g = rng.standard_normal(10).astype(np.float32)
    expected = p - np.float32(0.5) * g
    ops.sgd_step_(p, g, None, lr=0.5, first_step=True)
    assert_close(p, expected, factor=2.0)


def test_first_step_sets_the_buffer(rng):
    p = rng.standard_normal(10).astype(np.float32)
    g = rng.standard_normal(10).astype(np.float32)
    buf = np.full(10, 123.0, np.float32)
    ops.sgd_step_(p, g, buf, lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.0, first_step=True)
    np.testing.assert_array_equal(buf, g)  # no dampening on the first step, as PyTorch


# --- the in-place contract ------------------------------------------------------------------

def _adam_arrays(rng, n=16, dtype=np.float32):
    return [rng.standard_normal(n).astype(dtype) for _ in range(4)]


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("which", ["param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"])
def test_adam_non_contiguous_or_read_only_raises_without_writing(rng, backend, which):
    names = ["param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    g = rng.standard_normal(16).astype(np.float32)
    for defect in ("strided", "read_only"):
        arrays = _adam_arrays(rng)
        base = None
        k = names.index(which)
        if defect == "strided":
            base = rng.standard_normal(32).astype(np.float32)
            arrays[k] = base[::2]
            pattern = rf"{which}: expected a C-contiguous array"
        else:
            arrays[k].flags.writeable = False
            pattern = rf"{which}: expected a writable array"
        before = [a.copy() for a in arrays]
        base_before = None if base is None else base.copy()
        with seqblocks.backend(backend), pytest.raises(ValueError, match=pattern):
            ops.adam_step_(arrays[0], g, arrays[1], arrays[2], arrays[3], step=1, amsgrad=True, **ADAM_DEFAULTS)
        for a, b in zip(arrays, before):
            np.testing.assert_array_equal(a, b)
        if base is not None:
            np.testing.assert_array_equal(base, base_before)


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_sgd_contract(rng, backend):
    p = rng.standard_normal(16).astype(np.float32)
    g = rng.standard_normal(16).astype(np.float32)
    before = p.copy()
    with seqblocks.backend(backend):
        with pytest.raises(ValueError, match="momentum_buffer: expected a C-contiguous array"):
            ops.sgd_step_(p, g, np.zeros(32, np.float32)[::2], lr=0.1, momentum=0.9, first_step=False)
        ro = p.copy()
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="param: expected a writable array"):
            ops.sgd_step_(ro, g, None, lr=0.1, first_step=True)
        with pytest.raises(ValueError, match="momentum_buffer: expected an array of param's shape when momentum != 0"):
            ops.sgd_step_(p, g, None, lr=0.1, momentum=0.9, first_step=True)
        with pytest.raises(TypeError, match="momentum_buffer: expected dtype float32 \\(param's\\), got float64"):
            ops.sgd_step_(p, g, np.zeros(16), lr=0.1, momentum=0.9, first_step=True)
        with pytest.raises(ValueError, match=r"momentum_buffer: expected shape \(16,\) \(param's\), got \(4, 4\)"):
            ops.sgd_step_(p, g, np.zeros((4, 4), np.float32), lr=0.1, momentum=0.9, first_step=True)
        with pytest.raises(TypeError, match="grad: expected dtype float32 \\(param's\\), got float64"):
            ops.sgd_step_(p, g.astype(np.float64), None, lr=0.1, first_step=True)
        with pytest.raises(ValueError, match=r"grad: expected shape \(16,\) \(param's\), got \(15,\)"):
            ops.sgd_step_(p, g[:15], None, lr=0.1, first_step=True)
        with pytest.raises(TypeError, match="param: expected a numpy.ndarray updated in place, got list"):
            ops.sgd_step_([1.0], g, None, lr=0.1, first_step=True)
        with pytest.raises(TypeError, match="param: expected dtype float32 or float64, got int64"):
            ops.sgd_step_(np.ones(16, np.int64), g, None, lr=0.1, first_step=True)
        with pytest.raises(ValueError, match="nesterov: expected momentum > 0 and dampening == 0"):
            ops.sgd_step_(p, g, None, lr=0.1, nesterov=True, first_step=True)
        with pytest.raises(ValueError, match="lr: expected a value >= 0, got -1"):
            ops.sgd_step_(p, g, None, lr=-1, first_step=True)
    np.testing.assert_array_equal(p, before)


def test_adam_bad_scalars_and_strided_grad(rng):
    p, m, v = (rng.standard_normal(16).astype(np.float32) for _ in range(3))
    v = np.abs(v)
    g = rng.standard_normal(32).astype(np.float32)[::2]  # grad is only read: a strided view is fine
    expected = [a.copy() for a in (p, m, v)]
    ops.adam_step_(*expected[:1], np.ascontiguousarray(g), *expected[1:], None, step=1, **ADAM_DEFAULTS)
    ops.adam_step_(p, g, m, v, None, step=1, **ADAM_DEFAULTS)
    for a, e in zip((p, m, v), expected):
        np.testing.assert_array_equal(a, e)
    with pytest.raises(ValueError, match="step: expected an int >= 1"):
        ops.adam_step_(p, g, m, v, None, step=0, **ADAM_DEFAULTS)
    with pytest.raises(ValueError, match=r"beta2: expected a value in \[0, 1\), got 1.0"):
        ops.adam_step_(p, g, m, v, None, step=1, lr=1e-3, beta1=0.9, beta2=1.0, eps=1e-8)
    with pytest.raises(ValueError, match="max_exp_avg_sq: expected an array of param's shape when amsgrad=True"):
        ops.adam_step_(p, g, m, v, None, step=1, amsgrad=True, **ADAM_DEFAULTS)


def test_binding_checks_the_contract_too(rng):
    """The compiled functions check the in-place contract themselves (not only the Python layer)."""
    core = seqblocks._core
    base = rng.standard_normal(32).astype(np.float32)
    before = base.copy()
    g = np.ones(16, np.float32)
    with pytest.raises(ValueError, match="param: expected a C-contiguous array"):
        core.sgd_step_(base[::2], g, None, lr=0.1, first_step=True)
    m, v = np.zeros(16, np.float32), np.zeros(16, np.float32)
    v.flags.writeable = False
    p = base[:16].copy()
    with pytest.raises(ValueError, match="exp_avg_sq: expected a writable array"):
        core.adam_step_(p, g, m, v, None, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    with pytest.raises(TypeError, match="exp_avg: expected the dtype of param"):
        core.adam_step_(p, g, np.zeros(16), np.zeros(16, np.float32), None, step=1, lr=0.1, beta1=0.9,
                        beta2=0.999, eps=1e-8)
    with pytest.raises(ValueError, match="max_exp_avg_sq: expected an array of param's shape when amsgrad=True"):
        core.adam_step_(p, g, m, np.zeros(16, np.float32), None, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
                        amsgrad=True)
    np.testing.assert_array_equal(base, before)
    np.testing.assert_array_equal(p, before[:16])
    assert (m == 0).all()


def test_empty_arrays(isa):
    p, g, m, v = (np.zeros((0, 3), np.float32) for _ in range(4))
    ops.adam_step_(p, g, m, v, None, step=1, **ADAM_DEFAULTS)
    ops.sgd_step_(p, g, m, lr=0.1, momentum=0.9, first_step=True)


def test_zero_dimensional_param():
    p, g, buf = np.array(1.0, np.float32), np.array(0.5, np.float32), np.array(0.0, np.float32)
    ops.sgd_step_(p, g, buf, lr=0.1, momentum=0.9, first_step=True)
    assert p.shape == () and p == np.float32(1.0) - np.float32(0.1) * np.float32(0.5) and buf == 0.5
