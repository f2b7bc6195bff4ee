"""The origin's text classifier as one recipe, shared by the command line and the estimator.

tokenize (``text.Tokenizer``) -> ids (padded as the origin does, or CSR bags) ->
``Embedding(mask_zero=True) -> GlobalAveragePooling1D -> Dense(hidden, relu) -> Dense head``
(sigmoid for two classes, softmax for more).  The tokenizer and the encoding settings travel
inside the saved model (``model.tokenizer``, ``model.metadata``), so ``fastscale predict``
needs only the model file.
"""
from __future__ import annotations

import numpy as np

from . import nn, optim, text

LAZY_ABOVE = 200_000  # tables larger than this (hashed n-grams) use lazy Adam by default


def make_tokenizer(num_words=10000, oov_token="<OOV>", ngrams=1, buckets=None):
    kw = {} if buckets is None else {"buckets": int(buckets)}
    return text.Tokenizer(num_words=num_words, oov_token=oov_token, ngrams=ngrams, **kw)


def encode(tok, texts, meta):
    """Token ids for ``texts`` in the model's input form (``meta["input"]``, ``meta["maxlen"]``)."""
    ids, offsets = tok.texts_to_bags(texts if isinstance(texts, (list, tuple)) else list(texts))
    if meta["input"] == "bags":
        return truncate_bags(ids, offsets, meta.get("maxlen"))
    return pad_bags(ids, offsets, meta["maxlen"])


def fit_encode(tok, texts, input="auto", maxlen=None):
    """Encode the training texts; returns ``(x, meta)`` with the settings to reuse at test time.

    ``input="padded"`` is the origin's ``pad_sequences(texts_to_sequences(texts), maxlen)``
    (maxlen None: the longest text).  ``"bags"`` gives CSR ``(ids, offsets)`` without padding,
    each text cut to its last ``maxlen`` ids as the padding would cut it.  With
    ``Embedding(mask_zero=True) -> GlobalAveragePooling1D`` the two train bitwise-identical
    models (padding ids add nothing to a bag), but bags skip building and copying the
    ``(N, maxlen)`` array (247 MB for IMDB's 25,000 reviews padded to 2,470 ids).
    ``"auto"``: bags; for ``ngrams == 1`` they keep the origin's maxlen (the longest
    training text), so a longer test text is cut exactly as the origin cuts it.
    """
    if input not in ("auto", "padded", "bags"):
        raise ValueError(f"input must be 'auto', 'padded' or 'bags', got {input!r}")
    texts = texts if isinstance(texts, (list, tuple)) else list(texts)
    ids, offsets = tok.texts_to_bags(texts)  # right after fit_on_texts(texts): no second tokenizing pass
    longest = int(np.diff(offsets).max()) if len(offsets) > 1 else 0
    if input == "padded":
        maxlen = longest if maxlen is None else int(maxlen)
        return pad_bags(ids, offsets, maxlen), {"input": "padded", "maxlen": maxlen}
    if maxlen is None and input == "auto" and tok.ngrams == 1:
        maxlen = longest
    maxlen = None if maxlen is None else int(maxlen)
    return truncate_bags(ids, offsets, maxlen), {"input": "bags", "maxlen": maxlen}


def truncate_bags(ids, offsets, maxlen):
    """CSR bags with each bag cut to its last ``maxlen`` ids (``pad_sequences``'s default
    ``truncating="pre"``); the inputs themselves when no bag is longer (or maxlen is None)."""
    if maxlen is None:
        return ids, offsets
    lens = np.diff(offsets)
    if not (lens > maxlen).any():
        return ids, offsets
    kept = np.minimum(lens, maxlen)
    new = np.zeros_like(offsets)
    np.cumsum(kept, out=new[1:])
    pos = np.arange(int(new[-1]), dtype=np.int64) + np.repeat(offsets[1:] - kept - new[:-1], kept)
    return ids[pos], new


_PAD_CHUNK = 2048  # rows per boolean mask: bounds the mask to 2048 * maxlen bytes


def pad_bags(ids, offsets, maxlen):
    """CSR bags -> the ``(N, maxlen)`` array ``pad_sequences(sequences, maxlen)`` gives for the
    same sequences (Keras defaults: padding and truncating "pre", value 0, ids' dtype), built
    with one masked store per chunk of rows instead of a Python list per text."""
    ids, offsets = truncate_bags(ids, offsets, maxlen)
    n = len(offsets) - 1
    x = np.zeros((n, maxlen), dtype=ids.dtype)
    if n == 0 or maxlen == 0:
        return x
    first = maxlen - np.diff(offsets)  # column of each row's first id
    cols = np.arange(maxlen)
    for lo in range(0, n, _PAD_CHUNK):
        hi = min(n, lo + _PAD_CHUNK)
        # Row-major order of the mask = each row's ids in order, rows one after the other.
        x[lo:hi][cols >= first[lo:hi, None]] = ids[offsets[lo] : offsets[hi]]
    return x


def label_encoding(y):
    """``(classes, indices)``: the sorted distinct labels and each label's index in them."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    classes, idx = np.unique(y, return_inverse=True)
    if classes.shape[0] < 2:
        raise ValueError(f"need at least two classes, got {classes.tolist()}")
    return classes, idx.astype(np.int64)


# Embedding initialisers by the framework whose default they are.
INITS = {"keras": {"class_name": "RandomUniform", "config": {"minval": -0.05, "maxval": 0.05}},
         "torch": {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 1.0}}}


def build_model(num_ids, n_classes, embed_dim=128, hidden=64, mask_zero=True, init="uniform"):
    layers = [nn.Embedding(num_ids, embed_dim, mask_zero=mask_zero, embeddings_initializer=init),
              nn.GlobalAveragePooling1D()]
    if hidden:
        layers.append(nn.Dense(hidden, activation="relu"))
    if n_classes == 2:
        layers.append(nn.Dense(1, activation="sigmoid"))
    else:
        layers.append(nn.Dense(n_classes, activation="softmax"))
    return nn.Sequential(layers)


def compile_model(model, n_classes, learning_rate=1e-3, lazy=None, seed=None, metrics=("accuracy",)):
    if lazy is None:
        lazy = model.layers[0].input_dim > LAZY_ABOVE
    loss = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=optim.Adam(learning_rate=learning_rate, lazy=bool(lazy)), loss=loss,
                  metrics=list(metrics), seed=seed)
    return model


def class_probabilities(model, x, batch_size=256):
    """``(N, classes)`` probabilities (a sigmoid head gives ``[1 - p, p]``)."""
    p = model.predict(x, batch_size=batch_size)
    if p.shape[1] == 1:
        return np.hstack([1 - p, p])
    return p
