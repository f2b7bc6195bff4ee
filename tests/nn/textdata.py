"""Tiny synthetic labelled texts (words), learnable in a few epochs."""
import gzip

import numpy as np

POS = "great wonderful superb moving brilliant delightful".split()
NEG = "awful boring dull terrible waste clumsy".split()
MID = "confusing long strange quiet slow odd".split()
FILLER = "the a film movie plot actor story scene and of to is it this was".split()


def texts(n=300, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    bands = [NEG, POS, MID][:classes]  # label 1 = positive, as in IMDB
    y = rng.integers(0, classes, size=n)
    out = []
    for k in y:
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 20))))
        for _ in range(3):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(bands[k])))
        out.append(" ".join(words) + ("<br /><br />" if rng.random() < 0.3 else ""))
    return out, y


def write_tsv(path, n=300, seed=0, classes=2):
    xs, y = texts(n, classes, seed)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for t, label in zip(xs, y):
            f.write(f"{label}\t{t}\n")
    return xs, y
