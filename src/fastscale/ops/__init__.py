"""The ops: array in, array out (numpy in -> numpy out, cupy in -> cupy out).

Each module holds one op: its public functions (all argument checks), ``reference()`` in
float64 loops, and its numpy / numba / cpp (/ cupy / cuda) implementations, registered with
``fastscale._backends``.
"""
from ._common import SparseRows
from .adam import adam_step, sparse_adam_step
from .bce_with_logits import bce_with_logits
from .dense import dense_backward, dense_forward
from .embedding import embedding, embedding_backward
from .embedding_bag import embedding_bag, embedding_bag_backward
from .masked_mean_pool import masked_mean_pool, masked_mean_pool_backward


def implementation(name, backend=None):
    """``(backend name, implementation)`` of a registered op for numpy arrays, as its public
    function would pick it (``backend``, else ``FASTSCALE_BACKEND``, else the first usable).

    The implementation does none of the public function's checks: a caller that has checked
    its arrays once and calls the op many times with buffers it owns (``Sequential``'s fused
    training step) uses it to skip them.  ``name``: a key of ``fastscale._backends.registered()``,
    e.g. ``"embedding_bag"`` or ``"adam_step(multi-tensor)"``; the arguments are those the
    op's public function passes (see its module)."""
    from .. import _backends

    return _backends.registered()[name].pick(backend, False)

__all__ = [
    "SparseRows",
    "adam_step",
    "bce_with_logits",
    "dense_backward",
    "dense_forward",
    "embedding",
    "embedding_backward",
    "embedding_bag",
    "embedding_bag_backward",
    "masked_mean_pool",
    "masked_mean_pool_backward",
    "sparse_adam_step",
]
