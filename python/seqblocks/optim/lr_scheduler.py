"""Learning-rate schedules with PyTorch's ``step()``/``get_last_lr()`` semantics.

Constructing a scheduler sets ``last_epoch = 0`` and the epoch-0 learning rate (used by the first
``optimizer.step()``); each ``scheduler.step()`` (called after ``optimizer.step()``) advances
``last_epoch`` by one and writes the new rate into every param group. Like PyTorch, StepLR,
CosineAnnealingLR and LinearLR update the *current* group rate recursively (so they compose with
other schedulers); LambdaLR and InverseSqrtLR are closed forms of ``base_lr`` (the group's
``initial_lr``).
"""

from __future__ import annotations

import math

from .optimizer import Optimizer

__all__ = ["CosineAnnealingLR", "InverseSqrtLR", "LRScheduler", "LambdaLR", "LinearLR", "StepLR"]


class LRScheduler:
    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming an optimizer")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch/step and set each group's ``lr``."""
        self._step_count += 1
        self.last_epoch += 1
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The rates set by the last ``step()`` (or the constructor)."""
        return self._last_lr

    def state_dict(self) -> dict:
        """Every attribute except the optimizer (and, for LambdaLR, the lambdas)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)

    def _current(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(last_epoch) (one lambda, or one per param group)."""

    def __init__(self, optimizer: Optimizer, lr_lambda, last_epoch: int = -1) -> None:
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"Expected {n} lr_lambdas, but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size: expected a positive int, got {step_size!r}")
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current()
        return [lr * self.gamma for lr in self._current()]


class CosineAnnealingLR(LRScheduler):
    """eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2, applied recursively as
    PyTorch does (continues periodically past T_max)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        if T_max <= 0:
            raise ValueError(f"T_max: expected a positive int, got {T_max!r}")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current()
        if self._step_count == 1 and t > 0:
            return [lo + (base - lo) * (1 + math.cos(t * math.pi / T)) / 2 for base in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [lr + (base - lo) * (1 - math.cos(math.pi / T)) / 2
                    for base, lr in zip(self.base_lrs, self._current())]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (lr - lo) + lo for lr in self._current()]


class LinearLR(LRScheduler):
    """Scale the rate linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` steps."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
        if not 0 < start_factor <= 1:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
        if not 0 <= end_factor <= 1:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        if t == 0:
            return [lr * self.start_factor for lr in self._current()]
        if self._is_initial or t > self.total_iters:
            return self._current()
        delta = self.end_factor - self.start_factor
        factor = 1.0 + delta / (self.total_iters * self.start_factor + (t - 1) * delta)
        return [lr * factor for lr in self._current()]


class InverseSqrtLR(LRScheduler):
    """Linear warm-up then decay with the inverse square root of the step (Transformer paper).

    With ``s = last_epoch + 1`` the number of the optimizer step the rate is used for (1 for the
    first step) and ``w = warmup_steps``:

    - ``d_model`` given (Vaswani et al. 2017, eq. 3):
      ``lr = base_lr * d_model**-0.5 * min(s**-0.5, s * w**-1.5)``; set the optimizer's ``lr=1.0``
      for the paper's schedule (base_lr is then a multiplier, e.g. 2.0 in some recipes).
    - ``d_model=None`` (fairseq's normalisation, peak = base_lr at ``s = w``):
      ``lr = base_lr * min(s / w, sqrt(w / s))``.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, d_model: int | None = None,
                 last_epoch: int = -1) -> None:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(f"warmup_steps: expected an int >= 1, got {warmup_steps!r}")
        if d_model is not None and (isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1):
            raise ValueError(f"d_model: expected an int >= 1 or None, got {d_model!r}")
        self.warmup_steps = warmup_steps
        self.d_model = d_model
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The multiplier of base_lr for optimizer step number ``step`` (1-based)."""
        s, w = max(step, 1), self.warmup_steps
        if self.d_model is None:
            return min(s / w, math.sqrt(w / s))
        return self.d_model ** -0.5 * min(s ** -0.5, s * w ** -1.5)

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch + 1)
        return [base * f for base in self.base_lrs]
