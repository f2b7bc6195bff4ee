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


def padded(tok, texts, maxlen=None):
    """``text.pad_sequences(tok.texts_to_sequences(texts), maxlen)``, from the tokenizer's
    CSR ids: the rows are views of one int32 array, which pad_sequences concatenates, instead
    of lists of Python ints it would read one by one."""
    ids, offsets = tok.texts_to_bags(texts)
    o = offsets.tolist()
    return text.pad_sequences([ids[a:b] for a, b in zip(o, o[1:])], maxlen=maxlen)


def encode(tok, texts, meta):
    """Token ids for ``texts`` in the model's input form (``meta["input"]``)."""
    texts = list(texts)
    if meta["input"] == "bags":
        return tok.texts_to_bags(texts)
    return padded(tok, texts, maxlen=meta["maxlen"])


def fit_encode(tok, texts, input="auto", maxlen=None):
    """Encode the training texts; returns ``(x, meta)`` with the settings to reuse at test time."""
    if input == "auto":
        input = "padded" if tok.ngrams == 1 else "bags"
    if input not in ("padded", "bags"):
        raise ValueError(f"input must be 'auto', 'padded' or 'bags', got {input!r}")
    if input == "bags":
        if maxlen is not None:
            raise ValueError("maxlen applies to padded input; bags keep every token (use input='padded')")
        return tok.texts_to_bags(list(texts)), {"input": "bags", "maxlen": None}
    x = padded(tok, list(texts), maxlen=maxlen)
    return x, {"input": "padded", "maxlen": int(x.shape[1])}


def label_encoding(y):
    """``(classes, indices)``: the sorted distinct labels and each label's index in them."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    classes, idx = np.unique(y, return_inverse=True)
    if classes.shape[0] < 2:
        raise ValueError(f"need at least two classes, got {classes.tolist()}")
    return classes, idx.astype(np.int64)


def build_model(num_ids, n_classes, embed_dim=128, hidden=64, mask_zero=True):
    layers = [nn.Embedding(num_ids, embed_dim, mask_zero=mask_zero), nn.GlobalAveragePooling1D()]
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
