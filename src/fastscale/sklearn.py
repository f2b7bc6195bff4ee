"""``fastscale.TextClassifier``: the origin's classifier as a scikit-learn estimator.

    from fastscale import TextClassifier
    clf = TextClassifier(epochs=5).fit(train_texts, y_train)
    clf.score(test_texts, y_test)

Raw texts in, labels out: tokenizing (Keras rules), the model (embedding -> mean -> Dense
relu -> sigmoid / softmax head) and training are inside.  Any labels (ints, strings) work;
two classes get a sigmoid head, more a softmax head.  Usable in ``Pipeline``,
``cross_val_score`` and ``GridSearchCV`` (``clone`` / ``get_params`` / ``set_params`` from
``BaseEstimator``).  Texts are encoded as bags (no padding) unless ``maxlen`` is set.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from . import _textmodel as R


class TextClassifier(ClassifierMixin, BaseEstimator):
    """Bag-of-embeddings text classifier (fastText-style, trained with fastscale's kernels).

    Parameters mirror the command line: ``num_words`` (vocabulary kept), ``oov_token``,
    ``ngrams`` / ``buckets`` (hashed word n-grams), ``maxlen`` (pad / truncate to this many
    ids; None keeps every token as a bag), ``embed_dim``, ``hidden`` (0: no hidden layer),
    ``epochs``, ``batch_size``, ``learning_rate``, ``lazy`` (lazy Adam on the embedding;
    None: only for tables above 200,000 rows), ``validation_split``, ``random_state``
    (an int makes fit deterministic), ``verbose``, ``class_weight`` (None, ``"balanced"`` or
    ``{label: weight}``, as in scikit-learn's classifiers; missing labels weigh 1).
    ``fit`` takes ``sample_weight``; both weigh each text's loss as ``Sequential.fit`` does.
    """

    def __init__(self, num_words=10000, oov_token="<OOV>", ngrams=1, buckets=None, maxlen=None, embed_dim=128, hidden=64,
                 epochs=10, batch_size=64, learning_rate=1e-3, lazy=None, validation_split=0.0, random_state=None,
                 verbose=0, class_weight=None):
        self.num_words = num_words
        self.oov_token = oov_token
        self.ngrams = ngrams
        self.buckets = buckets
        self.maxlen = maxlen
        self.embed_dim = embed_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lazy = lazy
        self.validation_split = validation_split
        self.random_state = random_state
        self.verbose = verbose
        self.class_weight = class_weight

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"X_types": ["string"]}

    @staticmethod
    def _texts(X, who):
        if isinstance(X, str):
            raise TypeError(f"TextClassifier.{who}: X must be a list of texts, got a single str")
        texts = list(X)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"TextClassifier.{who}: X[{i}] must be a str, got {type(t).__name__}")
        return texts

    def fit(self, X, y, sample_weight=None):
        texts = self._texts(X, "fit")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if len(texts) != y.shape[0]:
            raise ValueError(f"TextClassifier.fit: X has {len(texts)} texts but y has {y.shape[0]} labels")
        check_classification_targets(y)
        self.classes_, idx = R.label_encoding(y)
        class_weight = None
        if self.class_weight is not None:
            from sklearn.utils.class_weight import compute_class_weight

            cw = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
            class_weight = dict(enumerate(cw.tolist()))
        seed = self.random_state
        if seed is not None and not isinstance(seed, (int, np.integer)):
            seed = int(np.random.RandomState(seed).randint(2**31 - 1))  # a RandomState instance
        tok = R.make_tokenizer(self.num_words, self.oov_token, self.ngrams, self.buckets)
        tok.fit_on_texts(texts)
        x, meta = R.fit_encode(tok, texts, input="bags" if self.maxlen is None else "padded", maxlen=self.maxlen)
        n = len(self.classes_)
        model = R.build_model(tok.num_ids, n, self.embed_dim, self.hidden)
        R.compile_model(model, n, self.learning_rate, self.lazy, seed)
        model.tokenizer = tok
        model.metadata = {**meta, "labels": self.classes_.tolist()}
        self.history_ = model.fit(x, idx, epochs=self.epochs, batch_size=self.batch_size,
                                  validation_split=self.validation_split, verbose=self.verbose,
                                  sample_weight=sample_weight, class_weight=class_weight)
        self.model_ = model
        self.tokenizer_ = tok
        return self

    def predict_proba(self, X):
        check_is_fitted(self, "model_")
        texts = self._texts(X, "predict_proba")
        return R.class_probabilities(self.model_, R.encode(self.tokenizer_, texts, self.model_.metadata))

    def predict(self, X):
        check_is_fitted(self, "model_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def decision_function(self, X):
        """Binary: the positive class's log-odds; multi-class: log-probabilities."""
        p = np.clip(self.predict_proba(X).astype(np.float64), 1e-12, 1.0)
        if p.shape[1] == 2:
            return np.log(p[:, 1]) - np.log(p[:, 0])
        return np.log(p)
