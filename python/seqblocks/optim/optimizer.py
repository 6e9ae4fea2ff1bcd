"""``Optimizer``: parameter groups, per-parameter state, ``zero_grad`` and a ``state_dict`` laid
out like PyTorch's (``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``),
so it can be saved with ``seqblocks.save``."""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import numpy as np

from ..autograd import Tensor, _to_numpy, enable_grad

__all__ = ["Optimizer"]

_required = object()


class Optimizer:
    def __init__(self, params: Iterable, defaults: dict) -> None:
        self.defaults = defaults
        self.state: dict = {}
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            "but got a Tensor")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is _required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        ids = {id(p) for p in group["params"]}
        if len(ids) != len(group["params"]):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        for other in self.param_groups:
            if ids & {id(p) for p in other["params"]}:
                raise ValueError("some parameters appear in more than one parameter group")
        self._validate_group(group)
        self.param_groups.append(group)

    def _validate_group(self, group: dict) -> None:
        pass

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad = None if set_to_none else np.zeros_like(p.grad)

    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grad = p.grad
                    if grad.shape != p.data.shape:
                        raise ValueError(f"grad: expected shape {p.data.shape} (the parameter's), got {grad.shape}")
                    if grad.dtype != p.data.dtype or not grad.flags.c_contiguous:
                        grad = np.ascontiguousarray(grad, dtype=p.data.dtype)
                    self._update(p, grad, group, self.state.setdefault(p, {}))
        return loss

    def _update(self, p: Tensor, grad: np.ndarray, group: dict, state: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- state dict -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Groups with parameter indices instead of parameters, and the state of each indexed
        parameter (arrays are copies)."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state and self.state[p]:
                    state[index[id(p)]] = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        try:
            groups = state_dict["param_groups"]
            saved_state = state_dict["state"]
        except (KeyError, TypeError):
            raise ValueError("state_dict: expected a dict with 'state' and 'param_groups'") from None
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has a different number of parameter groups "
                             f"({len(groups)} vs {len(self.param_groups)})")
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 f"optimizer's group ({len(saved['params'])} vs {len(group['params'])})")
        id_map = {}
        for saved, group in zip(groups, self.param_groups):
            for i, p in zip(saved["params"], group["params"]):
                id_map[i] = p
        new_state: dict = {}
        for key, value in saved_state.items():
            key = int(key)  # serialized keys may come back as strings
            if key not in id_map:
                raise ValueError(f"state_dict: state for parameter index {key} matches no parameter")
            p = id_map[key]
            entry = {}
            for name, v in value.items():
                if v is not None and not isinstance(v, (int, float, bool, str)):
                    arr = _to_numpy(v)
                    if arr.ndim == 0:
                        v = arr.item()
                    else:
                        if arr.shape != p.data.shape:
                            raise ValueError(f"state_dict: state '{name}' of parameter {key} has shape {arr.shape}, "
                                             f"the parameter has {p.data.shape}")
                        v = np.array(arr, dtype=p.data.dtype, order="C")
                entry[name] = v
            new_state[p] = entry
        self.state = new_state
        for saved, group in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    group[k] = copy.deepcopy(v)
            if "betas" in group:
                group["betas"] = tuple(group["betas"])

    def __repr__(self) -> str:
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
