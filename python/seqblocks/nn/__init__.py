"""``seqblocks.nn``: modules with ``torch.nn``'s names, arguments, parameter names and layouts,
so a ``state_dict`` moves between the two unchanged."""

from . import functional, init, utils
from .attention import MultiheadAttention
from .container import ModuleList, Sequential
from .layers import (CrossEntropyLoss, Dropout, Embedding, GELU, Identity, LayerNorm, Linear, LogSoftmax,
                     ReLU, Sigmoid, Softmax, Tanh)
from .module import Module, Parameter
from .seq2seq_attention import AdditiveAttention, CosineAttention, DotAttention, GeneralAttention
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from .transformer import (DecoderOnlyTransformer, EncoderOnlyTransformer, KVCache, Transformer, TransformerDecoder,
                          TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer)

__all__ = ["AdditiveAttention", "CosineAttention", "CrossEntropyLoss", "DotAttention", "Dropout", "Embedding", "GELU",
           "GeneralAttention", "Identity", "LayerNorm", "Linear", "LogSoftmax", "Module", "ModuleList",
           "MultiheadAttention", "Parameter", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "functional", "init",
           "utils"]
__all__ += ["DecoderOnlyTransformer", "EncoderOnlyTransformer", "KVCache", "LearnedPositionalEmbedding",
            "SinusoidalPositionalEncoding", "Transformer", "TransformerDecoder", "TransformerDecoderLayer",
            "TransformerEncoder", "TransformerEncoderLayer"]
