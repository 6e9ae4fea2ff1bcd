"""A small tape: ``Tensor`` (a NumPy array plus autograd state) and ``Function`` (one op with a
hand-written backward).

Ops are coarse (a whole linear layer, a whole softmax), so the tape is kept deliberately thin:
every ``Function.apply`` creates one graph node (its ``ctx``), outputs point to that node, and a
node points to the nodes (or leaf tensors) of its inputs. Nothing points from a node to its
outputs, so the graph has no reference cycles and is freed by reference counting as soon as the
last output tensor goes away.

Conventions (PyTorch's, with the differences noted):

- ``Function.forward(ctx, *args)`` receives NumPy arrays where the caller passed Tensors (other
  arguments unchanged) and returns an array or a tuple of arrays; ``backward(ctx, *grads)``
  receives one NumPy array per output and returns one gradient (array or None) per forward
  argument. This keeps the layer a direct wrapper of the ``seqblocks.ops`` pairs.
- ``ctx.needs_grad`` (seqblocks extension) is True when a gradient will be needed, i.e. grad mode
  is on and some input requires grad; pass it as ``needs_grad=`` to the ops forward.
- ``.grad`` is a NumPy array (or None). Gradients accumulate out of place, so an array handed out
  as ``.grad`` is never modified by a later backward.
- After ``backward()`` without ``retain_graph=True`` every node it went through is freed (saved
  arrays released) and any later backward through one of those nodes raises ``RuntimeError``.
  Unlike PyTorch this also holds for nodes that saved nothing, so the rule has no exceptions.
- Grad mode (``no_grad``) is per thread, as in PyTorch.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
import weakref
from typing import Any, Iterable, Sequence

import numpy as np

from . import _core
from ._backend import use_reference

__all__ = ["Function", "Tensor", "backward", "cat", "enable_grad", "is_grad_enabled", "no_grad",
           "set_grad_enabled", "stack", "tensor"]


# --------------------------------------------------------------------------------------------
# grad mode


class _GradMode(threading.local):
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """True unless inside ``no_grad()`` (in this thread)."""
    return _grad_mode.enabled


class _GradModeContext:
    """Context manager / decorator running a block (or function) with grad mode ``mode``."""

    __slots__ = ("_mode", "_prev")

    def __init__(self, mode: bool) -> None:
        self._mode = bool(mode)
        self._prev = []

    def __enter__(self) -> None:
        self._prev.append(_grad_mode.enabled)
        _grad_mode.enabled = self._mode

    def __exit__(self, *exc) -> None:
        _grad_mode.enabled = self._prev.pop()

    def __call__(self, func):
        mode = self._mode

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with _GradModeContext(mode):
                return func(*args, **kwargs)

        return wrapper


class no_grad(_GradModeContext):
    """``with seqblocks.no_grad():``, ``@seqblocks.no_grad()`` or ``@seqblocks.no_grad``: ops
    run in inference mode (``needs_grad=False``, no workspace kept) and no graph is recorded."""

    __slots__ = ()

    def __new__(cls, func=None):
        self = super().__new__(cls)
        if func is not None:  # bare decorator
            self.__init__()
            return self(func)
        return self

    def __init__(self, func=None) -> None:
        super().__init__(False)


class enable_grad(_GradModeContext):
    """Turns grad mode back on (e.g. inside a ``no_grad`` block); also a decorator."""

    __slots__ = ()

    def __new__(cls, func=None):
        self = super().__new__(cls)
        if func is not None:
            self.__init__()
            return self(func)
        return self

    def __init__(self, func=None) -> None:
        super().__init__(True)


class set_grad_enabled(_GradModeContext):
    """``seqblocks.set_grad_enabled(False)`` switches grad mode at once (per thread); used with
    ``with`` it restores the previous mode on exit; as a decorator it applies to each call only."""

    __slots__ = ("_outer",)

    def __init__(self, mode: bool) -> None:
        super().__init__(mode)
        self._outer = _grad_mode.enabled
        _grad_mode.enabled = self._mode

    def __enter__(self) -> None:
        self._prev.append(self._outer)

    def __call__(self, func):
        _grad_mode.enabled = self._outer  # decorating must not change the mode of the caller
        return super().__call__(func)


# --------------------------------------------------------------------------------------------
# Tensor


def _default_float(arr: np.ndarray) -> np.ndarray:
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


# Float arrays of at least this many elements are copied natively, on all threads, into memory
# of the output cache (pages already mapped): NumPy copied 2 MiB into fresh pages in ~140 us at
# 2 threads where this takes ~50, which PyTorch's clone also takes.
_NATIVE_COPY_MIN_SIZE = 65536


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what the native kernels take


def _copy(arr: np.ndarray, dtype) -> np.ndarray:
    """A C-ordered copy of ``arr`` (converted to ``dtype`` when given)."""
    if ((dtype is None or np.dtype(dtype) == arr.dtype) and arr.dtype in _FLOAT_DTYPES
            and arr.size >= _NATIVE_COPY_MIN_SIZE and 1 <= arr.ndim <= 4 and arr.strides[-1] == arr.itemsize
            and not use_reference()):
        out = _core.empty(arr.shape, arr.dtype)
        _core.strided_copy(out, arr)
        return out
    return np.array(arr, dtype=dtype)


def _as_data(data: Any, dtype=None) -> np.ndarray:
    """A fresh array for ``seqblocks.tensor(data)``: Python floats become float32 (PyTorch's
    default dtype), arrays keep their dtype."""
    if isinstance(data, Tensor):
        arr = _copy(data.data, dtype)
    elif isinstance(data, np.ndarray):
        arr = _copy(data, dtype)
    elif hasattr(data, "__array__") or hasattr(data, "numpy"):
        arr = _to_numpy(data)
        arr = _copy(arr, dtype)
    else:
        arr = np.array(data, dtype=dtype)
        if dtype is None:
            arr = _default_float(arr)
    if arr.dtype == object:
        raise TypeError(f"data: expected numbers or an array of numbers, got {type(data).__name__}")
    return arr


def _to_numpy(value: Any) -> np.ndarray:
    """An ndarray from an ndarray, a Tensor (ours or torch's, after detach) or any array-like."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Tensor):
        return value.data
    detach = getattr(value, "detach", None)
    if callable(detach):
        value = detach()
    to_numpy = getattr(value, "numpy", None)
    if callable(to_numpy):
        return np.asarray(to_numpy())
    return np.asarray(value)


class Tensor:
    """An n-dimensional array with autograd state. ``data`` is the NumPy array it wraps."""

    __slots__ = ("data", "grad", "_requires_grad", "_node", "_index", "__weakref__")
    # NumPy ufuncs and binary operators defer to Tensor's reflected methods.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        # wraps an ndarray without copying; Python numbers/lists default to float32 like torch
        if isinstance(data, np.ndarray):
            arr = data
        elif isinstance(data, (list, tuple, float)):
            arr = _default_float(np.asarray(data))
        else:
            arr = np.asarray(data)
        self.data = arr
        self.grad = None
        self._node = None
        self._index = 0
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True

    # -- autograd state -----------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        value = bool(value)
        if self._node is not None and not value:
            raise RuntimeError("you can only change requires_grad flags of leaf tensors; "
                               "use .detach() to get a tensor that does not require grad")
        if value and self.data.dtype.kind not in "fc":
            raise RuntimeError(f"only tensors of floating point dtype can require gradients, got {self.data.dtype}")
        self._requires_grad = value

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self):
        return self._node

    def retain_grad(self) -> None:
        """Also store this non-leaf tensor's gradient in ``.grad`` during backward (a no-op for
        leaves). The graph keeps only a weak reference to the tensor."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on a Tensor that has requires_grad=False")
        if self._node is None:
            return
        retained = self._node.__dict__.setdefault("_retained", {})
        retained[self._index] = weakref.ref(self)

    def detach(self) -> "Tensor":
        """A tensor sharing this one's data, outside the graph."""
        return Tensor(self.data)

    def backward(self, gradient=None, retain_graph: bool | None = None, *, grad=None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``gradient`` (or ``grad=``) may be omitted only for a one-element tensor (taken as 1), as in
        PyTorch. Without ``retain_graph=True`` the graph is freed.
        """
        if grad is not None:
            if gradient is not None:
                raise TypeError("backward: pass the gradient once (gradient or grad)")
            gradient = grad
        backward([self], None if gradient is None else [gradient], retain_graph=retain_graph)

    # -- array protocol -------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied; like ``detach().numpy()`` in PyTorch)."""
        return self.data

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self.data, dtype=dtype, copy=True)
        return self.data if dtype is None else self.data.astype(dtype, copy=False)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"a Tensor with {self.data.size} elements cannot be converted to a Python scalar")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.data.tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    def __format__(self, spec: str) -> str:
        if self.data.ndim == 0:
            return format(self.data.item(), spec)
        return format(repr(self), spec) if spec else repr(self)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ""
        if self.data.dtype not in (np.float32, np.int64, np.bool_):
            extra += f", dtype={self.data.dtype}"
        if self._node is not None:
            extra += f", grad_fn=<{self._node.name()}>"
        elif self._requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # -- arithmetic -------------------------------------------------------------------------
    def __add__(self, other):
        return _Add.apply(self, other)

    def __radd__(self, other):
        return _Add.apply(other, self)

    def __sub__(self, other):
        return _Sub.apply(self, other)

    def __rsub__(self, other):
        return _Sub.apply(other, self)

    def __mul__(self, other):
        return _Mul.apply(self, other)

    def __rmul__(self, other):
        return _Mul.apply(other, self)

    def __truediv__(self, other):
        return _Div.apply(self, other)

    def __rtruediv__(self, other):
        return _Div.apply(other, self)

    def __matmul__(self, other):
        return _MatMul.apply(self, other)

    def __rmatmul__(self, other):
        return _MatMul.apply(other, self)

    def __neg__(self):
        return _Neg.apply(self)

    # element-wise comparisons give boolean tensors outside the graph (as in PyTorch); hashing
    # stays by identity, so Tensors still work as dict keys and set members
    __hash__ = object.__hash__

    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor(op(self.data, other))

    def __eq__(self, other):  # type: ignore[override]
        return self._compare(other, np.equal)

    def __ne__(self, other):  # type: ignore[override]
        return self._compare(other, np.not_equal)

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    def __pos__(self):
        return self

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("exponent: expected a Python number, got a Tensor")
        return _Pow.apply(self, exponent)

    def exp(self):
        return _Exp.apply(self)

    def log(self):
        return _Log.apply(self)

    def sqrt(self):
        return _Pow.apply(self, 0.5)

    def relu(self):
        from .nn import functional as F
        return F.relu(self)

    def tanh(self):
        from .nn import functional as F
        return F.tanh(self)

    def sigmoid(self):
        from .nn import functional as F
        return F.sigmoid(self)

    def softmax(self, dim: int):
        from .nn import functional as F
        return F.softmax(self, dim)

    def log_softmax(self, dim: int):
        from .nn import functional as F
        return F.log_softmax(self, dim)

    # -- reductions and shapes ----------------------------------------------------------------
    def sum(self, dim=None, keepdim: bool = False):
        # (a 0-d tensor accepts dim 0 or -1, as in PyTorch: the whole of it)
        return _Sum.apply(self, _norm_dims(dim, self.data.ndim) if self.data.ndim else None, keepdim)

    def mean(self, dim=None, keepdim: bool = False):
        return _Mean.apply(self, _norm_dims(dim, self.data.ndim) if self.data.ndim else None, keepdim)

    def reshape(self, *shape):
        if len(shape) == 1 and not isinstance(shape[0], int):
            shape = tuple(shape[0])
        return _Reshape.apply(self, shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        s = self.data.shape
        if not s:
            return self.reshape(1)
        start, end = start_dim % len(s), end_dim % len(s)
        return self.reshape(s[:start] + (math.prod(s[start:end + 1]),) + s[end + 1:])

    def unsqueeze(self, dim: int):
        nd = self.data.ndim + 1
        if not -nd <= dim < nd:
            raise IndexError(f"dim: expected in [{-nd}, {nd - 1}], got {dim}")
        s = list(self.data.shape)
        s.insert(dim % nd, 1)
        return self.reshape(tuple(s))

    def squeeze(self, dim: int | None = None):
        s = self.data.shape
        if dim is None:
            return self.reshape(tuple(d for d in s if d != 1))
        d = dim % max(len(s), 1)
        if not s or s[d] != 1:
            return self
        return self.reshape(s[:d] + s[d + 1:])

    def transpose(self, dim0: int, dim1: int):
        return _Transpose.apply(self, dim0, dim1)

    def permute(self, *dims):
        if len(dims) == 1 and not isinstance(dims[0], int):
            dims = tuple(dims[0])
        return _Permute.apply(self, tuple(d % self.data.ndim for d in dims))

    @property
    def T(self):
        return _Permute.apply(self, tuple(range(self.data.ndim - 1, -1, -1)))

    def __getitem__(self, key):
        return _GetItem.apply(self, _index_key(key))

    def clone(self):
        return _Clone.apply(self)

    def to(self, dtype):
        dtype = np.dtype(dtype)
        return self if dtype == self.data.dtype else _Cast.apply(self, dtype)

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def argmax(self, dim: int | None = None, keepdim: bool = False):
        out = np.argmax(self.data, axis=dim, keepdims=keepdim)
        return Tensor(np.asarray(out, dtype=np.int64))


def tensor(data: Any, requires_grad: bool = False, dtype=None) -> Tensor:
    """A new tensor holding a copy of ``data`` (Python floats become float32, arrays keep their
    dtype, as in ``torch.tensor``)."""
    t = Tensor(_as_data(data, None if dtype is None else np.dtype(dtype)))
    if requires_grad:
        t.requires_grad = True
    return t


def _norm_dims(dim, ndim: int):
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"dim: expected in [{-max(ndim, 1)}, {max(ndim, 1) - 1}], got {d}")
        out.append(int(d) % max(ndim, 1))
    return tuple(out)


def _index_key(key):
    if isinstance(key, Tensor):
        return key.data
    if isinstance(key, list):
        return np.asarray([k.data if isinstance(k, Tensor) else k for k in key])
    if isinstance(key, tuple):
        return tuple(_index_key(k) for k in key)
    return key


def _is_advanced(key) -> bool:
    if isinstance(key, tuple):
        return any(_is_advanced(k) for k in key)
    return isinstance(key, np.ndarray) or (isinstance(key, (list,)))


# --------------------------------------------------------------------------------------------
# Function and graph nodes


class _Context:
    """The ``ctx`` of one ``Function.apply`` call, and the graph node of its outputs."""

    __slots__ = ("needs_input_grad", "needs_grad", "_fn", "_edges", "_out_meta", "_freed", "__dict__",
                 "__weakref__")
    # Defaults read from the class until set (they then live in the instance __dict__, which
    # freeing the node clears).
    saved_tensors = ()
    _non_diff = None

    def save_for_backward(self, *arrays) -> None:
        self.saved_tensors = arrays

    def mark_non_differentiable(self, *outputs) -> None:
        self._non_diff = {id(o) for o in outputs}

    def name(self) -> str:
        return f"{self._fn.__name__.lstrip('_')}Backward"

    def __repr__(self) -> str:
        return f"<{self.name()}>"


def _wrap(out, ctx, requires):
    """Output array(s) of ``forward`` as Tensors attached to ``ctx`` when ``requires``."""
    if isinstance(out, tuple):
        outs = []
        meta = []
        non_diff = ctx._non_diff
        for i, o in enumerate(out):
            if o is None:
                outs.append(None)
                meta.append(None)
                continue
            if isinstance(o, Tensor):
                o = o.data
            elif not isinstance(o, np.ndarray):
                o = np.asarray(o)
            t = Tensor.__new__(Tensor)
            t.data = o
            t.grad = None
            if requires and o.dtype.kind == "f" and (non_diff is None or id(o) not in non_diff):
                t._requires_grad = True
                t._node = ctx
                meta.append((o.shape, o.dtype))
            else:
                t._requires_grad = False
                t._node = None
                meta.append(None)
            t._index = i
            outs.append(t)
        ctx._out_meta = tuple(meta)
        return tuple(outs)
    if isinstance(out, Tensor):
        out = out.data
    elif not isinstance(out, np.ndarray):
        out = np.asarray(out)
    t = Tensor.__new__(Tensor)
    t.data = out
    t.grad = None
    t._index = 0
    if requires and out.dtype.kind == "f" and (ctx._non_diff is None or id(out) not in ctx._non_diff):
        t._requires_grad = True
        t._node = ctx
    else:
        t._requires_grad = False
        t._node = None
    return t


class Function:
    """Base class of differentiable ops: subclass with static ``forward(ctx, *args)`` and
    ``backward(ctx, *grad_outputs)``, then call ``MyFn.apply(*args)``.

    forward gets NumPy arrays in place of Tensor arguments and returns an array or a tuple of
    arrays (a multi-output op); backward gets one array per differentiable output (zeros are
    filled in for outputs that received no gradient) and returns one gradient per forward
    argument (None for non-Tensor arguments or when ``ctx.needs_input_grad[i]`` is False).
    """

    @staticmethod
    def forward(ctx, *args):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args):
        ctx = _Context()
        ctx._fn = cls
        if not _grad_mode.enabled:  # inference: no edges to record
            ctx.needs_input_grad = (False,) * len(args)
            ctx.needs_grad = False
            return _wrap(cls.forward(ctx, *[a.data if isinstance(a, Tensor) else a for a in args]), ctx, False)
        arrays = []
        needs = []
        edges = []
        requires = False
        for a in args:
            if isinstance(a, Tensor):
                arrays.append(a.data)
                if a._requires_grad:
                    requires = True
                    needs.append(True)
                    node = a._node
                    d = a.data
                    edges.append((a, 0, d.shape, d.dtype) if node is None else (node, a._index, d.shape, d.dtype))
                    continue
            else:
                arrays.append(a)
            needs.append(False)
            edges.append(None)
        ctx.needs_input_grad = tuple(needs)
        ctx.needs_grad = requires
        out = cls.forward(ctx, *arrays)
        if requires:
            ctx._edges = edges
            ctx._freed = False
            ctx._out_meta = None
        if type(out) is np.ndarray and ctx._non_diff is None:  # the common case, inlined
            t = Tensor.__new__(Tensor)
            t.data = out
            t.grad = None
            t._index = 0
            if requires and out.dtype.kind == "f":
                t._requires_grad = True
                t._node = ctx
            else:
                t._requires_grad = False
                t._node = None
            return t
        return _wrap(out, ctx, requires)


# --------------------------------------------------------------------------------------------
# the backward engine


_FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you call "
    ".backward(). Specify retain_graph=True if you need to backward through the graph a second time."
)


def _leaf_grad(g: np.ndarray, leaf: Tensor, owned: set) -> np.ndarray:
    """``g`` as an array safe to store in ``leaf.grad``: the leaf's dtype, C-contiguous, writable
    and not shared with another leaf or with the graph."""
    dtype = leaf.data.dtype
    if g.dtype != dtype:
        g = g.astype(dtype)
    elif ((isinstance(g.base, np.ndarray) and not _sole_view(g)) or not g.flags.writeable
          or not g.flags.c_contiguous or id(g) in owned):  # (a native output's base is its memory
        g = np.array(g, dtype=dtype, order="C")              # block's owner, not an array)
    owned.add(id(g))
    return g


def _sole_view(g: np.ndarray) -> bool:
    """Whether g is a reshaped view of an array that nothing else references (a backward's output
    put in its input's shape), so that g owns its memory as much as a fresh array would. (The base
    is referenced by g and by getrefcount's own argument.)"""
    return not isinstance(g.base.base, np.ndarray) and sys.getrefcount(g.base) == 2


def _accumulate_leaf(leaf: Tensor, g: np.ndarray, owned: set) -> None:
    if leaf.grad is None:
        leaf.grad = _leaf_grad(g, leaf, owned)
        return
    leaf.grad = _sum(leaf.grad, g.astype(leaf.grad.dtype, copy=False))


def _sum(cur: np.ndarray, g: np.ndarray) -> np.ndarray:
    """cur + g as a new array (gradients handed out are never modified in place). Large ones by
    the native add: all threads, and memory from the output cache instead of fresh pages every
    step -- an encoder layer's parameters are 12 MiB, whose NumPy sum took ~3.5 ms of its 80 ms
    training step at 2 threads; a decoder layer's residual gradients (2 MiB each) ~0.1 ms each."""
    if cur.size >= 65536 and cur.shape == g.shape and cur.dtype == g.dtype and cur.dtype.kind == "f":
        from . import ops  # (ops builds on this module)

        return ops.add_forward(cur, g, needs_grad=False)[0]
    return cur + g


def backward(tensors: Sequence[Tensor], grad_tensors=None, retain_graph: bool | None = None) -> None:
    """Run the backward pass from ``tensors`` (with ``grad_tensors``, or ones for one-element
    tensors), accumulating into the ``.grad`` of every leaf that requires grad.

    Nodes are visited in topological order with explicit stacks (no recursion: chains of any
    length work); a node runs once all of its consumers have delivered their gradients.
    """
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    tensors = list(tensors)
    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    elif isinstance(grad_tensors, (Tensor, np.ndarray)):
        grad_tensors = [grad_tensors]
    if len(grad_tensors) != len(tensors):
        raise RuntimeError(f"grad_tensors: expected {len(tensors)} gradients, got {len(grad_tensors)}")
    retain = bool(retain_graph)
    owned: set = set()
    roots: list = []
    for i, (t, g) in enumerate(zip(tensors, grad_tensors)):
        if not isinstance(t, Tensor):
            raise TypeError(f"tensors[{i}]: expected a Tensor, got {type(t).__name__}")
        if not t._requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        if g is None:
            if t.data.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs "
                                   f"(tensors[{i}] has shape {t.data.shape})")
            g = np.ones(t.data.shape, dtype=t.data.dtype)
        else:
            g = _to_numpy(g)
            if g.shape != t.data.shape:
                raise RuntimeError(f"Mismatch in shape: grad_tensors[{i}] has a shape of {g.shape} and "
                                   f"tensors[{i}] has a shape of {t.data.shape}")
            if g.dtype != t.data.dtype:
                g = g.astype(t.data.dtype)
        if t._node is None:
            owned.add(id(g))  # the caller keeps this array: never store it as-is
            _accumulate_leaf(t, g, owned)
        else:
            roots.append((t._node, t._index, g))
    if not roots:
        return

    # 1. discover the reachable graph and count, for every node, the edges that feed it.
    deps: dict = {}
    stack = []
    for node, _, _ in roots:
        if node not in deps:
            deps[node] = 0
            stack.append(node)
    while stack:
        node = stack.pop()
        if node._freed:
            raise RuntimeError(_FREED_MESSAGE)
        for e in node._edges:
            if e is not None:
                target = e[0]
                if type(target) is _Context:
                    if target in deps:
                        deps[target] += 1
                    else:
                        deps[target] = 1
                        stack.append(target)

    # 2. Kahn's algorithm: run a node when every consumer has delivered its gradient.
    grads: dict = {}
    for node, index, g in roots:
        slots = grads.get(node)
        if slots is None:
            slots = grads[node] = [None] * (len(node._out_meta) if node._out_meta is not None else 1)
        slots[index] = g if slots[index] is None else slots[index] + g
    ready = [node for node, _, _ in roots if deps[node] == 0]
    ready = list(dict.fromkeys(ready))
    while ready:
        node = ready.pop()
        slots = grads.pop(node, None)
        edges = node._edges
        if slots is None or (slots[0] is None if len(slots) == 1 else all(s is None for s in slots)):
            in_grads = (None,) * len(edges)
        else:
            meta = node._out_meta
            if meta is not None:
                for i, s in enumerate(slots):
                    if s is None and meta[i] is not None:
                        slots[i] = np.zeros(meta[i][0], dtype=meta[i][1])
            retained = node.__dict__.get("_retained")
            if retained:
                for index, ref in retained.items():
                    t = ref()
                    if t is not None and slots[index] is not None:
                        g = slots[index]
                        t.grad = np.array(g, copy=True) if t.grad is None else t.grad + g
            in_grads = node._fn.backward(node, *slots)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            if len(in_grads) != len(edges):
                raise RuntimeError(f"function {node.name()} returned an incorrect number of gradients "
                                   f"(expected {len(edges)}, got {len(in_grads)})")
        if not retain:
            node._freed = True
            node.__dict__.clear()  # saved arrays, workspaces and user attributes
        i = -1
        for e, g in zip(edges, in_grads):
            i += 1
            if e is None:
                continue
            target, index, shape, dtype = e
            if g is not None:
                if type(g) is not np.ndarray:
                    g = g.data if isinstance(g, Tensor) else np.asarray(g)
                if g.shape != shape:
                    raise RuntimeError(f"function {node.name()} returned an invalid gradient at index {i} - "
                                       f"got shape {g.shape} but expected shape {shape}")
                if g.dtype != dtype:  # a gradient has its tensor's dtype (mixed-precision graphs)
                    g = g.astype(dtype)
            if type(target) is _Context:
                if g is not None:
                    tslots = grads.get(target)
                    if tslots is None:
                        tslots = grads[target] = [None] * (len(target._out_meta) if target._out_meta is not None else 1)
                    cur = tslots[index]
                    tslots[index] = g if cur is None else _sum(cur, g)
                deps[target] -= 1
                if deps[target] == 0:
                    ready.append(target)
            elif g is not None:
                _accumulate_leaf(target, g, owned)


# --------------------------------------------------------------------------------------------
# Tensor arithmetic (NumPy)


def _unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``g`` down to ``shape`` (the reverse of broadcasting)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


class _Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        if ctx.needs_grad:
            ctx.shapes = (np.shape(a), np.shape(b))
        return np.add(a, b)

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (_unbroadcast(g, sa) if na else None, _unbroadcast(g, sb) if nb else None)


class _Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        if ctx.needs_grad:
            ctx.shapes = (np.shape(a), np.shape(b))
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (_unbroadcast(g, sa) if na else None, _unbroadcast(-g, sb) if nb else None)


class _Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        if ctx.needs_grad:
            ctx.save_for_backward(a, b)
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        return (_unbroadcast(g * b, np.shape(a)) if na else None,
                _unbroadcast(g * a, np.shape(b)) if nb else None)


class _Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        if ctx.needs_grad:
            ctx.save_for_backward(a, b)
        return np.divide(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        ga = _unbroadcast(g / b, np.shape(a)) if na else None
        gb = _unbroadcast(-g * a / (b * b), np.shape(b)) if nb else None
        return ga, gb


class _Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return np.negative(a)

    @staticmethod
    def backward(ctx, g):
        return -g


class _Pow(Function):
    @staticmethod
    def forward(ctx, a, p):
        if ctx.needs_grad:
            ctx.save_for_backward(a)
            ctx.p = p
        return np.power(a, p).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        p = ctx.p
        return (g * p * np.power(a, p - 1)).astype(a.dtype, copy=False), None


class _Exp(Function):
    @staticmethod
    def forward(ctx, a):
        y = np.exp(a)
        if ctx.needs_grad:
            ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved_tensors[0]


class _Log(Function):
    @staticmethod
    def forward(ctx, a):
        if ctx.needs_grad:
            ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.saved_tensors[0]


def _mT(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


class _MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        if ctx.needs_grad:
            ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        if a.ndim == 1 and b.ndim == 1:  # dot product
            return (g * b if na else None), (g * a if nb else None)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = np.expand_dims(g2, -1)
        ga = gb = None
        if na:
            ga = _unbroadcast(np.matmul(g2, _mT(b2)), a2.shape).reshape(a.shape)
        if nb:
            gb = _unbroadcast(np.matmul(_mT(a2), g2), b2.shape).reshape(b.shape)
        return ga, gb


class _Sum(Function):
    """The sum pair of ``seqblocks.ops`` (native and parallel for large float arrays, NumPy's sum
    for others)."""

    @staticmethod
    def forward(ctx, a, dims, keepdim):
        from . import ops  # (ops builds on this module)

        ctx.shape = a.shape
        ctx.dims = dims
        ctx.keepdim = keepdim
        ctx.ws = None
        if a.dtype in _FLOAT_DTYPES:
            y, ctx.ws = ops.sum_forward(a, dims, keepdim)
            return y
        return np.asarray(np.sum(a, axis=dims, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        from . import ops

        if ctx.ws is not None:
            return ops.sum_backward(g, ctx.ws)[0], None, None
        if ctx.dims is not None and not ctx.keepdim:
            g = np.expand_dims(g, ctx.dims)
        out = np.empty(ctx.shape, g.dtype)  # cheaper than np.broadcast_to, and writable
        out[...] = g
        return out, None, None


class _Mean(Function):
    """The sum pair divided by the count (as NumPy's mean: the sum, then one division)."""

    @staticmethod
    def forward(ctx, a, dims, keepdim):
        from . import ops

        ctx.shape = a.shape
        ctx.dims = dims
        ctx.keepdim = keepdim
        ctx.count = math.prod(a.shape) if dims is None else math.prod(a.shape[d] for d in dims)
        ctx.ws = None
        if a.dtype in _FLOAT_DTYPES and ctx.count > 0:
            y, ctx.ws = ops.sum_forward(a, dims, keepdim)
            return np.asarray(y / a.dtype.type(ctx.count))
        return np.asarray(np.mean(a, axis=dims, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        from . import ops

        g = g / max(ctx.count, 1)
        if ctx.ws is not None:
            return ops.sum_backward(g, ctx.ws)[0], None, None
        if ctx.dims is not None and not ctx.keepdim:
            g = np.expand_dims(g, ctx.dims)
        out = np.empty(ctx.shape, g.dtype)
        out[...] = g
        return out, None, None


class _Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


class _Transpose(Function):
    @staticmethod
    def forward(ctx, a, d0, d1):
        ctx.dims = (d0, d1)
        return np.swapaxes(a, d0, d1)

    @staticmethod
    def backward(ctx, g):
        return np.swapaxes(g, *ctx.dims), None, None


class _Permute(Function):
    @staticmethod
    def forward(ctx, a, dims):
        if sorted(dims) != list(range(a.ndim)):
            raise ValueError(f"dims: expected a permutation of {a.ndim} dimensions, got {dims}")
        ctx.dims = dims
        return np.transpose(a, dims)

    @staticmethod
    def backward(ctx, g):
        return np.transpose(g, np.argsort(ctx.dims)), None


class _GetItem(Function):
    @staticmethod
    def forward(ctx, a, key):
        ctx.shape = a.shape
        ctx.dtype = a.dtype
        ctx.key = key
        return np.asarray(a[key])

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.shape, dtype=ctx.dtype)
        if _is_advanced(ctx.key):
            np.add.at(out, ctx.key, g)  # repeated indices accumulate
        else:
            out[ctx.key] = g
        return out, None


class _Clone(Function):
    @staticmethod
    def forward(ctx, a):
        return _copy(a, None)

    @staticmethod
    def backward(ctx, g):
        return g


class _Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype), None


class _Cat(Function):
    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim
        ctx.sizes = [a.shape[dim] for a in arrays]
        return np.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        bounds = np.cumsum(ctx.sizes)[:-1]
        return (None, *np.split(g, bounds, axis=ctx.dim))


class _Stack(Function):
    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim
        return np.stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        n = g.shape[ctx.dim]
        return (None, *(np.take(g, i, axis=ctx.dim) for i in range(n)))


def _check_seq(tensors, name: str) -> list:
    if isinstance(tensors, (Tensor, np.ndarray)):
        raise TypeError(f"{name}: expected a sequence of tensors, got {type(tensors).__name__}")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{name}: expected a non-empty sequence of tensors")
    return tensors


def cat(tensors: Iterable[Tensor], dim: int = 0) -> Tensor:
    """Concatenate along an existing dimension ``dim`` (differentiable)."""
    tensors = _check_seq(tensors, "tensors")
    nd = np.ndim(tensors[0].data if isinstance(tensors[0], Tensor) else tensors[0])
    if not -max(nd, 1) <= dim < max(nd, 1):
        raise IndexError(f"dim: expected in [{-max(nd, 1)}, {max(nd, 1) - 1}], got {dim}")
    return _Cat.apply(dim % max(nd, 1), *tensors)


def stack(tensors: Iterable[Tensor], dim: int = 0) -> Tensor:
    """Stack along a new dimension ``dim`` (differentiable)."""
    tensors = _check_seq(tensors, "tensors")
    nd = np.ndim(tensors[0].data if isinstance(tensors[0], Tensor) else tensors[0]) + 1
    if not -nd <= dim < nd:
        raise IndexError(f"dim: expected in [{-nd}, {nd - 1}], got {dim}")
    return _Stack.apply(dim % nd, *tensors)
