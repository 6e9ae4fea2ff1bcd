"""``seqblocks.nn``: modules with ``torch.nn``'s names, arguments, parameter names and layouts,
so a ``state_dict`` moves between the two unchanged."""

from . import functional, init, utils
from .container import ModuleList, Sequential
from .layers import (CrossEntropyLoss, Dropout, Embedding, GELU, Identity, LayerNorm, Linear, LogSoftmax,
                     ReLU, Sigmoid, Softmax, Tanh)
from .module import Module, Parameter
from .rnn import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNCell

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "CrossEntropyLoss", "Dropout", "Embedding", "GELU", "Identity", "LayerNorm", "Linear", "LogSoftmax",
           "Module", "ModuleList", "Parameter", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "functional",
           "init", "utils"]
