"""The global random generator behind ``seqblocks.manual_seed``: parameter initialisation
(``nn.init``) and dropout masks (each dropout call draws a 64-bit seed from it) use it, so a run
is reproducible from one seed."""

from __future__ import annotations

import operator

import numpy as np

__all__ = ["default_generator", "get_rng_state", "initial_seed", "manual_seed", "next_seed", "set_rng_state"]

_state = {"seed": None, "gen": np.random.default_rng()}


def manual_seed(seed: int) -> np.random.Generator:
    """Seed the global generator (PCG64 from ``seed``); returns it."""
    if isinstance(seed, bool):
        raise TypeError("seed: expected an int, got bool")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}") from None
    seed &= (1 << 64) - 1  # like torch.manual_seed, negative seeds wrap
    _state["seed"] = seed
    _state["gen"] = np.random.default_rng(seed)
    return _state["gen"]


def initial_seed() -> int | None:
    """The seed last given to ``manual_seed`` (None if never called: entropy-seeded)."""
    return _state["seed"]


def default_generator() -> np.random.Generator:
    """The global generator (replaced by every ``manual_seed``)."""
    return _state["gen"]


def next_seed() -> int:
    """A 64-bit seed for one dropout call, drawn from the global generator."""
    return int(_state["gen"].integers(0, 1 << 64, dtype=np.uint64))


def get_rng_state() -> dict:
    """The global generator's state (a JSON-able dict: save it with ``seqblocks.save``)."""
    return _state["gen"].bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state from ``get_rng_state`` (e.g. from a checkpoint)."""
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise ValueError("state: expected a dict from seqblocks.get_rng_state()")
    gen = np.random.default_rng()
    gen.bit_generator.state = state
    _state["gen"] = gen
