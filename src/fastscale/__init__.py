"""fastscale: fast bag-of-embeddings text models without a deep-learning framework.

Ops (``fastscale.embedding_bag`` and friends) take numpy arrays (cpp / numba / numpy
backends) or cupy arrays (cuda / cupy) and return the same kind.  See ``backends()``.
"""
from ._backends import BackendUnavailableError, backends, get_num_threads, set_num_threads
from .ops import (
    SparseRows,
    adam_step,
    bce_with_logits,
    dense_backward,
    dense_forward,
    embedding,
    embedding_backward,
    embedding_bag,
    embedding_bag_backward,
    masked_mean_pool,
    masked_mean_pool_backward,
    sparse_adam_step,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "SparseRows",
    "__version__",
    "adam_step",
    "backends",
    "bce_with_logits",
    "dense_backward",
    "dense_forward",
    "embedding",
    "embedding_backward",
    "embedding_bag",
    "embedding_bag_backward",
    "get_num_threads",
    "masked_mean_pool",
    "masked_mean_pool_backward",
    "set_num_threads",
    "sparse_adam_step",
]


def __getattr__(name):
    # TextClassifier lives in fastscale.sklearn; imported on first use so that
    # `import fastscale` never imports scikit-learn.
    if name == "TextClassifier":
        from .sklearn import TextClassifier

        return TextClassifier
    raise AttributeError(f"module 'fastscale' has no attribute {name!r}")
