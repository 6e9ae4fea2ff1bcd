"""``seqblocks.nn``: modules with ``torch.nn``'s names, arguments, parameter names and layouts,
so a ``state_dict`` moves between the two unchanged."""

from . import functional, init, utils
from .attention import MultiheadAttention
from .container import ModuleList, Sequential
from .layers import (CrossEntropyLoss, Dropout, Embedding, GELU, Identity, LayerNorm, Linear, LogSoftmax,
                     ReLU, Sigmoid, Softmax, Tanh)
from .module import Module, Parameter
from .seq2seq_attention import AdditiveAttention, CosineAttention, DotAttention, GeneralAttention
from .rnn import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNCell
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from .transformer import (DecoderOnlyTransformer, EncoderOnlyTransformer, KVCache, Transformer, TransformerDecoder,
                          TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer)

__all__ = ["AdditiveAttention", "CosineAttention", "CrossEntropyLoss", "DecoderOnlyTransformer", "DotAttention",
           "Dropout", "Embedding", "EncoderOnlyTransformer", "GELU", "GRU", "GRUCell", "GeneralAttention", "Identity",
           "KVCache", "LSTM", "LSTMCell", "LayerNorm", "LearnedPositionalEmbedding", "Linear", "LogSoftmax", "Module",
           "ModuleList", "MultiheadAttention", "Parameter", "RNN", "RNNCell", "ReLU", "Sequential", "Sigmoid",
           "SinusoidalPositionalEncoding", "Softmax", "Tanh", "Transformer", "TransformerDecoder",
           "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer", "functional", "init", "utils"]
