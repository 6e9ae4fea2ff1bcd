"""Raw kernels over NumPy arrays (native C++ backend).

Each function checks its arguments (clear ``TypeError``/``ValueError`` naming the argument,
the expected and the actual value) and calls the kernel of the ISA in use.
"""

from .gemm import gemm, linear, matmul
from .math import exp, gelu, sigmoid, tanh

__all__ = ["exp", "gelu", "gemm", "linear", "matmul", "sigmoid", "tanh"]
from .layer_norm import layer_norm_backward, layer_norm_forward
from .softmax import log_softmax_backward, log_softmax_forward, softmax_backward, softmax_forward
from .cross_entropy import cross_entropy_backward, cross_entropy_forward

__all__ += ["layer_norm_forward", "layer_norm_backward", "softmax_forward", "softmax_backward",
            "log_softmax_forward", "log_softmax_backward", "cross_entropy_forward", "cross_entropy_backward"]
from .activation import (gelu_backward, gelu_forward, relu_backward, relu_forward, sigmoid_backward,
                         sigmoid_forward, tanh_backward, tanh_forward)
from .dropout import dropout_backward, dropout_forward
from .elementwise import add_backward, add_forward, sum_backward, sum_forward
from .embedding import embedding_backward, embedding_forward
from .linear_pair import linear_backward, linear_forward
from .optim import adam_step_, sgd_step_

__all__ += ["add_backward", "add_forward", "adam_step_", "dropout_backward", "dropout_forward",
            "embedding_backward", "embedding_forward", "gelu_backward", "gelu_forward", "linear_backward",
            "linear_forward", "relu_backward", "relu_forward", "sgd_step_", "sigmoid_backward", "sigmoid_forward",
            "sum_backward", "sum_forward", "tanh_backward", "tanh_forward"]
from .attention import additive_scores_backward, additive_scores_forward, sdpa_backward, sdpa_forward

__all__ += ["additive_scores_backward", "additive_scores_forward", "sdpa_backward", "sdpa_forward"]

from .rnn import (gru_layer_backward, gru_layer_forward, lstm_layer_backward, lstm_layer_forward, rnn_layer_backward,
                  rnn_layer_forward)

__all__ += ["gru_layer_backward", "gru_layer_forward", "lstm_layer_backward", "lstm_layer_forward",
            "rnn_layer_backward", "rnn_layer_forward"]

from .add_layer_norm import add_layer_norm_backward, add_layer_norm_forward

__all__ += ["add_layer_norm_backward", "add_layer_norm_forward"]

from .linear_act import feed_forward_backward, feed_forward_forward, linear_act_backward, linear_act_forward

__all__ += ["feed_forward_backward", "feed_forward_forward", "linear_act_backward", "linear_act_forward"]
