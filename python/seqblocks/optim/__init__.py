"""``seqblocks.optim``: SGD, Adam and AdamW over the fused in-place ``ops.sgd_step_`` /
``ops.adam_step_``, and ``lr_scheduler``."""

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Adam", "AdamW", "Optimizer", "SGD", "lr_scheduler"]
