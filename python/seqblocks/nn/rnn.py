"""Recurrent modules with ``torch.nn``'s names, arguments, parameter names, layouts, gate order and
initialisation: ``RNN``, ``LSTM``, ``GRU`` and the cells ``RNNCell``, ``LSTMCell``, ``GRUCell``.

Each layer direction is one autograd node over an ops pair (``ops.lstm_layer_forward`` /
``_backward`` ...): the whole time loop runs in one call, forward and backward. ``forward(input,
hx=None, lengths=None)``: ``lengths`` (one int per batch row, 1 <= length <= T) gives PyTorch's
PackedSequence numbers at padded shapes: outputs past a row's length are zero and the final states
are taken at each row's last valid step (the reverse direction starts at each row's own end).
"""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from .._backend import backend as _use_backend
from .._backend import get_backend
from ..autograd import Function, Tensor, _to_numpy, stack, cat
from . import functional as F
from . import init
from .layers import _float_dtype, _positive_int
from .module import Module, Parameter

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


class _LayerFn(Function):
    """One layer direction: apply(x, h0, [c0,] w_ih, w_hh, b_ih, b_hh, [w_hr,] lengths, reverse[, nonlin])."""

    @staticmethod
    def forward(ctx, mode, *args):
        if mode == "LSTM":
            out, ws = ops.lstm_layer_forward(*args, needs_grad=ctx.needs_grad)
            n_grads = 8
        elif mode == "GRU":
            out, ws = ops.gru_layer_forward(*args, needs_grad=ctx.needs_grad)
            n_grads = 6
        else:
            out, ws = ops.rnn_layer_forward(*args, "relu" if mode == "RNN_RELU" else "tanh",
                                            needs_grad=ctx.needs_grad)
            n_grads = 6
        if ctx.needs_grad:
            ctx.ws, ctx.mode, ctx.n_args, ctx.n_grads, ctx.backend = ws, mode, len(args), n_grads, get_backend()
        return out

    @staticmethod
    def backward(ctx, *grads):
        bwd = {"LSTM": ops.lstm_layer_backward, "GRU": ops.gru_layer_backward}.get(ctx.mode, ops.rnn_layer_backward)
        with _use_backend(ctx.backend):
            g = tuple(bwd(tuple(grads), ctx.ws))
        return (None,) + g + (None,) * (ctx.n_args - len(g))


def _lengths(lengths, T: int, B: int):
    if lengths is None:
        return None
    arr = _to_numpy(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},) (one per batch row), got {arr.shape}")
    if B and (arr.min() < 1 or arr.max() > T):
        raise ValueError(f"lengths: expected values in [1, {T}] (the sequence length), got min {arr.min()}, "
                         f"max {arr.max()}")
    return arr.astype(np.int64)


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x))


class RNNBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 dtype=None) -> None:
        super().__init__()
        self.mode = mode
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        if self.hidden_size <= 0:
            raise ValueError(f"hidden_size: expected a positive int, got {hidden_size!r}")
        self.num_layers = _positive_int(num_layers, "num_layers")
        if self.num_layers <= 0:
            raise ValueError(f"num_layers: expected a positive int, got {num_layers!r}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout: expected a number in [0, 1], got {dropout!r}")
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = _positive_int(proj_size, "proj_size")
        if self.proj_size and mode != "LSTM":
            raise ValueError("proj_size: only LSTM supports a projection")
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size: expected less than hidden_size ({hidden_size}), got {proj_size}")
        dtype = _float_dtype(dtype)
        G = _GATES[mode]
        H, Ho = self.hidden_size, self.proj_size or self.hidden_size
        D = 2 if self.bidirectional else 1
        self._flat_names = []
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else Ho * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
                shapes = [(G * H, in_size), (G * H, Ho)]
                if self.bias:
                    names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
                    shapes += [(G * H,), (G * H,)]
                if self.proj_size:
                    names.append(f"weight_hr{sfx}")
                    shapes.append((Ho, H))
                for n, s in zip(names, shapes):
                    setattr(self, n, Parameter(np.empty(s, dtype)))
                self._flat_names += names
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def _layer_params(self, layer: int, d: int):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        g = lambda n: getattr(self, n + sfx, None) if self.bias or not n.startswith("bias") else None  # noqa: E731
        return (g("weight_ih"), g("weight_hh"), g("bias_ih"), g("bias_hh"),
                getattr(self, "weight_hr" + sfx) if self.proj_size else None)

    def forward(self, input, hx=None, lengths=None):
        x = _as_tensor(input)
        if x.ndim not in (2, 3):
            raise ValueError(f"input: expected a 2-D (unbatched) or 3-D array, got shape {x.shape}")
        is_lstm = self.mode == "LSTM"
        unbatched = x.ndim == 2
        if unbatched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        T, B, I = x.shape
        if I != self.input_size:
            raise ValueError(f"input: expected feature size {self.input_size} (input_size), got {I}")
        D = 2 if self.bidirectional else 1
        H, Ho = self.hidden_size, self.proj_size or self.hidden_size
        L = self.num_layers * D
        h0 = c0 = None
        if hx is not None:
            if is_lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise ValueError("hx: expected a tuple (h_0, c_0) for LSTM")
                h0, c0 = _as_tensor(hx[0]), _as_tensor(hx[1])
            else:
                h0 = _as_tensor(hx)
            for name, s, width in (("h_0" if is_lstm else "hx", h0, Ho), ("c_0", c0, H)):
                if s is None:
                    continue
                want = (L, width) if unbatched else (L, B, width)
                if tuple(s.shape) != want:
                    raise ValueError(f"{name}: expected shape {want}, got {tuple(s.shape)}")
            if unbatched:
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1) if c0 is not None else None
        lengths = _lengths(lengths if not unbatched or lengths is None else np.asarray(lengths).reshape(1), T, B)
        h_out, c_out = [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                w_ih, w_hh, b_ih, b_hh, w_hr = self._layer_params(layer, d)
                hk = None if h0 is None else h0[k]
                if is_lstm:
                    ck = None if c0 is None else c0[k]
                    y, hn, cn = _LayerFn.apply("LSTM", layer_in, hk, ck, w_ih, w_hh, b_ih, b_hh, w_hr, lengths,
                                               bool(d))
                    c_out.append(cn)
                else:
                    y, hn = _LayerFn.apply(self.mode, layer_in, hk, w_ih, w_hh, b_ih, b_hh, lengths, bool(d))
                outs.append(y)
                h_out.append(hn)
            layer_in = outs[0] if D == 1 else cat(outs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        output = layer_in
        if len(h_out) == 1:  # one layer, one direction: a view, cheaper than a stack of one
            h_n = h_out[0].unsqueeze(0)
            c_n = c_out[0].unsqueeze(0) if is_lstm else None
        else:
            h_n = stack(h_out, 0)
            c_n = stack(c_out, 0) if is_lstm else None
        if unbatched:
            output = output.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if is_lstm else None
        elif self.batch_first:
            output = output.transpose(0, 1)
        return (output, (h_n, c_n)) if is_lstm else (output, h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, 0, dtype)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """LSTM, gate order i, f, g, o; with ``proj_size`` > 0, h_t = (o * tanh(c_t)) W_hr^T."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 dtype=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, dtype)


class GRU(RNNBase):
    """GRU, gate order r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, dtype=None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
                         dtype)


class _CellBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool, dtype) -> None:
        super().__init__()
        self.mode = mode
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        if self.hidden_size <= 0:
            raise ValueError(f"hidden_size: expected a positive int, got {hidden_size!r}")
        self.bias = bool(bias)
        dtype = _float_dtype(dtype)
        G = _GATES[mode]
        self.weight_ih = Parameter(np.empty((G * hidden_size, input_size), dtype))
        self.weight_hh = Parameter(np.empty((G * hidden_size, hidden_size), dtype))
        if bias:
            self.bias_ih = Parameter(np.empty((G * hidden_size,), dtype))
            self.bias_hh = Parameter(np.empty((G * hidden_size,), dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def _prepare(self, input, states):
        x = _as_tensor(input)
        if x.ndim not in (1, 2):
            raise ValueError(f"input: expected a 1-D (unbatched) or 2-D array, got shape {x.shape}")
        unbatched = x.ndim == 1
        if unbatched:
            x = x.unsqueeze(0)
        if x.shape[1] != self.input_size:
            raise ValueError(f"input: expected feature size {self.input_size} (input_size), got {x.shape[1]}")
        B = x.shape[0]
        out = []
        for name, s in states:
            if s is not None:
                s = _as_tensor(s)
                want = (self.hidden_size,) if unbatched else (B, self.hidden_size)
                if tuple(s.shape) != want:
                    raise ValueError(f"{name}: expected shape {want}, got {tuple(s.shape)}")
                if unbatched:
                    s = s.unsqueeze(0)
            out.append(s)
        return x.unsqueeze(0), out, unbatched

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s


class RNNCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, bias, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        x, (h,), unbatched = self._prepare(input, [("hx", hx)])
        _, hn = _LayerFn.apply(self.mode, x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None,
                               False)
        return hn.squeeze(0) if unbatched else hn


class GRUCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype=None) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, dtype)

    def forward(self, input, hx=None):
        x, (h,), unbatched = self._prepare(input, [("hx", hx)])
        _, hn = _LayerFn.apply("GRU", x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None, False)
        return hn.squeeze(0) if unbatched else hn


class LSTMCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, dtype)

    def forward(self, input, hx=None):
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise ValueError("hx: expected a tuple (h_0, c_0) for LSTMCell")
        h, c = (None, None) if hx is None else hx
        x, (h, c), unbatched = self._prepare(input, [("h_0", h), ("c_0", c)])
        _, hn, cn = _LayerFn.apply("LSTM", x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                                   None, None, False)
        return (hn.squeeze(0), cn.squeeze(0)) if unbatched else (hn, cn)
