"""Scaled dot-product attention and MultiheadAttention, forward (+ backward): seqblocks vs PyTorch
(the cases of `python -m seqblocks bench --only attention`). Peak memory of long causal attention:
`python benchmarks/bench_attention.py --memory` (one fresh process per measurement)."""

import subprocess
import sys

from seqblocks._bench.cases_attention import cases

try:
    from conftest import parametrize_cases, run
except ImportError:  # run as a script (--memory)
    parametrize_cases = run = None

if parametrize_cases is not None:
    @parametrize_cases(cases(quick=False))
    def test_attention(benchmark, case, impl):
        run(benchmark, case, impl)


_CHILD = r"""
import sys
import numpy as np
import seqblocks
from seqblocks import ops
B, H, L, E = 1, 8, {L}, 64
seqblocks.set_num_threads(2)
rng = np.random.default_rng(0)
q, k, v, dout = (rng.standard_normal((B, H, L, E), dtype=np.float32) for _ in range(4))  # no float64 temporaries
{warm}
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])  # KiB
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current RSS (Linux)
base = status("VmHWM:")
out, ws = ops.sdpa_forward(q, k, v, is_causal=True)
dq, dk, dv, _ = ops.sdpa_backward(dout, ws)
peak = status("VmHWM:")
held = sum(a.nbytes for a in (out, ws["stats"], dq, dk, dv)) / 1024
print((peak - base - held) / 1024.0, base / 1024.0, peak / 1024.0)
"""


def peak_extra_mib(L: int) -> float:
    """Peak RSS growth of one causal forward + backward beyond the arrays it returns (MiB), in a
    fresh process whose inputs are allocated (and touched) before the baseline is taken. The
    baseline resets the kernel's peak-RSS counter (/proc/self/clear_refs), because the imports
    alone reach a higher peak than the process holds later. A first call at a tiny size loads the
    kernels and starts the thread pool before the baseline."""
    warm = ("ops.sdpa_backward(dout[..., :8, :], "
            "ops.sdpa_forward(q[..., :8, :], k[..., :8, :], v[..., :8, :], is_causal=True)[1])")
    code = _CHILD.replace("{L}", str(L)).replace("{warm}", warm)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(res.stdout.split()[0])


if __name__ == "__main__" and "--memory" in sys.argv:
    for L in (1024, 8192):
        print(f"causal sdpa fwd+bwd B=1 H=8 L=S={L} E=64 float32: peak extra memory {peak_extra_mib(L):.1f} MiB "
              f"(L x S float32 scores of the 8 heads would take {8 * L * L * 4 / 2**20:.0f} MiB)")
