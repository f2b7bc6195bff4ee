"""fastscale.TextClassifier: a scikit-learn estimator (clone, Pipeline, cross_val_score, GridSearchCV)."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402

import fastscale  # noqa: E402

from .nn.textdata import texts  # noqa: E402

SMALL = dict(num_words=200, embed_dim=16, hidden=8, epochs=4, batch_size=16, learning_rate=1e-2, random_state=0)


def test_import_fastscale_does_not_import_sklearn():
    code = "import sys, fastscale; assert 'sklearn' not in sys.modules; fastscale.TextClassifier; assert 'sklearn' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**__import__("os").environ})


def test_binary_fit_predict_score():
    X, y = texts(300, seed=1)
    Xt, yt = texts(100, seed=2)
    clf = fastscale.TextClassifier(**SMALL).fit(X, y)
    assert list(clf.classes_) == [0, 1]
    p = clf.predict_proba(Xt)
    assert p.shape == (100, 2) and np.allclose(p.sum(1), 1, atol=1e-6)
    assert set(clf.predict(Xt)) <= {0, 1}
    assert clf.score(Xt, yt) > 0.9
    assert clf.decision_function(Xt).shape == (100,)


def test_string_labels_multiclass_softmax():
    X, y = texts(450, classes=3, seed=3)
    names = np.array(["neg", "pos", "meh"])
    clf = fastscale.TextClassifier(**SMALL).fit(X, names[y])
    assert list(clf.classes_) == ["meh", "neg", "pos"]
    assert clf.model_.layers[-1].activation == "softmax" and clf.model_.layers[-1].units == 3
    Xt, yt = texts(150, classes=3, seed=4)
    assert clf.predict_proba(Xt).shape == (150, 3)
    assert clf.score(Xt, names[yt]) > 0.85


def test_deterministic_with_random_state():
    X, y = texts(120, seed=5)
    a = fastscale.TextClassifier(**SMALL).fit(X, y).predict_proba(X)
    b = fastscale.TextClassifier(**SMALL).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test_clone_get_set_params():
    clf = fastscale.TextClassifier(**SMALL)
    c = clone(clf)
    assert c.get_params() == clf.get_params()
    c.set_params(epochs=2, ngrams=2, buckets=64)
    assert c.get_params()["ngrams"] == 2 and clf.get_params()["ngrams"] == 1
    X, y = texts(100, seed=6)
    c.fit(X, y)
    assert c.model_.layers[0].input_dim == 200 + 64  # words + n-gram buckets


def test_maxlen_uses_padded_input():
    X, y = texts(100, seed=7)
    clf = fastscale.TextClassifier(**{**SMALL, "maxlen": 12}).fit(X, y)
    assert clf.model_.metadata == {"input": "padded", "maxlen": 12, "labels": [0, 1]}
    assert clf.predict(X[:5]).shape == (5,)


def test_pipeline_cross_val_and_grid_search():
    X, y = texts(240, seed=8)
    pipe = Pipeline([("lower", FunctionTransformer(lambda xs: [s.lower() for s in xs])),
                     ("clf", fastscale.TextClassifier(**SMALL))])
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.8
    grid = GridSearchCV(fastscale.TextClassifier(**{**SMALL, "hidden": 0}), {"epochs": [1, 4]}, cv=2)
    grid.fit(X, y)
    assert grid.best_params_["epochs"] == 4
    assert grid.score(X, y) > 0.8


def test_errors():
    clf = fastscale.TextClassifier(**SMALL)
    with pytest.raises(NotFittedError):
        clf.predict(["x"])
    with pytest.raises(TypeError, match="single str"):
        clf.fit("one text", [1])
    with pytest.raises(ValueError, match="two classes"):
        clf.fit(["a", "b"], [1, 1])
    with pytest.raises(ValueError, match="3 texts but y has 2"):
        clf.fit(["a", "b", "c"], [0, 1])


def test_fitted_estimator_pickles():
    """scikit-learn's contract (joblib's parallel searches ship estimators by pickle): a fitted
    TextClassifier pickles and predicts the same after."""
    import pickle

    X, y = texts(120, seed=4)
    clf = fastscale.TextClassifier(**SMALL).fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(copy.predict_proba(X), clf.predict_proba(X))


def test_sample_weight_and_class_weight():
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils.validation import has_fit_parameter

    X, y = texts(200, seed=6)
    names = np.array(["neg", "pos"])[y]
    assert has_fit_parameter(fastscale.TextClassifier(), "sample_weight")
    # 'balanced' is sklearn's n / (classes * count), given to fit as per-text weights.
    bal = fastscale.TextClassifier(**SMALL, class_weight="balanced").fit(X, names)
    cw = compute_class_weight("balanced", classes=np.array(["neg", "pos"]), y=names)
    by_hand = fastscale.TextClassifier(**SMALL).fit(X, names, sample_weight=cw[y])
    np.testing.assert_array_equal(bal.predict_proba(X), by_hand.predict_proba(X))
    # A dict keyed by label; labels left out weigh 1.
    d = fastscale.TextClassifier(**SMALL, class_weight={"pos": 3.0}).fit(X, names)
    by_hand = fastscale.TextClassifier(**SMALL).fit(X, names, sample_weight=np.where(y == 1, 3.0, 1.0))
    np.testing.assert_array_equal(d.predict_proba(X), by_hand.predict_proba(X))
    # Weighting the positives up moves the probabilities up.
    plain = fastscale.TextClassifier(**SMALL).fit(X, names)
    assert d.predict_proba(X)[:, 1].mean() > plain.predict_proba(X)[:, 1].mean()
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        fastscale.TextClassifier(**SMALL).fit(X, names, sample_weight=np.ones(3))
