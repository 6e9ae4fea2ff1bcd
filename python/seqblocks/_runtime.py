"""CPU features, run-time ISA choice and thread control."""

from __future__ import annotations

import contextlib
import operator
import os
import warnings
from typing import Iterator

from . import _core

#: Every ISA seqblocks knows, best first.
ISAS = ("avx512", "avx2", "scalar")


def available_isas() -> list[str]:
    """The ISAs this CPU can run, best first (always ends with ``"scalar"``)."""
    return list(_core.supported_isas())


def get_isa() -> str:
    """The ISA whose kernels are in use."""
    return _core.get_isa()


def _check_isa_name(name: object, arg: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in ISAS:
        raise ValueError(f"{arg}: expected one of {', '.join(map(repr, ISAS))}, got {name!r}")
    return name.strip().lower()


def set_isa(name: str) -> None:
    """Use the kernels of ``name`` ("avx512", "avx2" or "scalar") from now on.

    Raises ValueError for an unknown name or one this CPU cannot run.
    """
    name = _check_isa_name(name, "name")
    if name not in available_isas():
        raise ValueError(
            f"name: this CPU cannot run {name!r}; available: {', '.join(map(repr, available_isas()))}"
        )
    _core.set_isa(name)


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Context manager: run the block with the kernels of ``name``, then restore the previous ISA."""
    previous = get_isa()
    set_isa(name)
    try:
        yield
    finally:
        _core.set_isa(previous)


def set_num_threads(n: int) -> None:
    """Threads used by every native kernel (the default honours ``OMP_NUM_THREADS``)."""
    if isinstance(n, bool):
        raise TypeError("n: expected an int >= 1, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n: expected an int >= 1, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads the native kernels use (1 in a child process forked after they ran)."""
    return _core.get_num_threads()


def empty_cache() -> int:
    """Free the memory seqblocks holds for reuse and return its size in bytes.

    Outputs of the native ops of at least 256 KiB (activations, gradients, workspaces) are carved
    from blocks that are kept, up to 1 GiB in all, when NumPy frees the arrays, and reused by
    later outputs of a similar size: fresh memory would be page-faulted in and zeroed by the OS
    on every call (docs/ops.md, "Output memory"). The kernels' temporaries (a recurrent layer's
    input projection and gradients, GEMM packing buffers) live in blocks kept per calling thread
    and grown to the largest call so far; those of the calling thread are freed too (other
    threads' blocks, at most a few MiB of packing each for OpenMP workers, stay)."""
    return int(_core.output_cache_clear()) + int(_core.thread_buffers_release())


def cpu_info() -> dict:
    """What the CPU offers and what seqblocks uses.

    Keys: ``vendor``, ``brand``, ``features`` (flag -> bool), ``family``, ``model``, ``stepping``
    (CPUID display values, 0 if unknown), ``cache_bytes`` (``l1d`` and ``l2`` per core, ``l3``;
    0 where the CPU does not report one), ``isa`` (in use), ``available_isas`` (runnable here),
    ``compiled_isas``, ``num_threads``.
    """
    info = dict(_core.cpu_features())
    info["isa"] = get_isa()
    info["available_isas"] = available_isas()
    info["compiled_isas"] = list(_core.compiled_isas())
    info["num_threads"] = get_num_threads()
    return info


def _apply_isa_from_environment() -> None:
    """``SEQBLOCKS_ISA`` caps the ISA: an ISA the CPU lacks falls back (with a warning) to the
    best one below it; an unknown value is an error."""
    requested = os.environ.get("SEQBLOCKS_ISA")
    if requested is None or requested.strip() == "":
        return
    name = _check_isa_name(requested, "SEQBLOCKS_ISA")
    available = available_isas()
    choice = next(isa for isa in ISAS[ISAS.index(name):] if isa in available)
    if choice != name:
        warnings.warn(
            f"SEQBLOCKS_ISA={requested!r}: this CPU cannot run {name!r}; using {choice!r}",
            RuntimeWarning,
            stacklevel=3,
        )
    _core.set_isa(choice)


_apply_isa_from_environment()
