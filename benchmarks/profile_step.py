"""Share of a training step of the origin model spent in the C++ kernels vs Python.

    python benchmarks/profile_step.py

Trains 3 epochs of 200 steps each of the origin model (IMDB-like batches of 64, as the CSR
bags fit makes of padded ids) three times, wrapping every function of the cpp extension to
time it, and prints the best run: ms per step, the time inside the kernels and the rest
(Python: the step plan, batch gathering, loss check, metrics, the loop)."""
import time, numpy as np
import fastscale as fs
from fastscale import nn, optim, _backends
from fastscale.bench import imdb_like_batch

cpu = _backends.module("cpp")
EPOCHS = 3  # fit's once-per-fit work (checks, the step plan, the batch views) shared as in real runs
w, ids, off, padded = imdb_like_batch(B=64 * 200, seed=3)  # 200 batches of IMDB-like reviews
x = (ids.astype(np.int32), off)  # fit turns masked padded ids into these bags once, before epoch 1
n = off.shape[0] - 1
y = (np.random.default_rng(0).random(n) > 0.5).astype(np.float32)
model = nn.Sequential([nn.Embedding(10000, 128, mask_zero=True), nn.GlobalAveragePooling1D(),
                       nn.Dense(64, activation="relu"), nn.Dense(1, activation="sigmoid")])
model.compile(optimizer=optim.Adam(learning_rate=1e-3), loss="binary_crossentropy", metrics=["accuracy"])
model.fit((x[0][:off[128]], off[:129]), y[:128], epochs=1, batch_size=64, verbose=0)

# Wrap every function of the extension to accumulate the time spent inside it.
spent = {}
orig = {}
for name in dir(cpu):
    f = getattr(cpu, name)
    if callable(f) and not name.startswith("_"):
        orig[name] = f
        def wrap(*a, __f=f, __n=name, **k):
            t = time.perf_counter()
            try:
                return __f(*a, **k)
            finally:
                spent[__n] = spent.get(__n, 0.0) + time.perf_counter() - t
        setattr(cpu, name, wrap)
best = None
for rep in range(3):
    spent.clear()
    t = time.perf_counter()
    model.fit(x, y, epochs=EPOCHS, batch_size=64, verbose=0)  # shuffled, as fit trains
    total = time.perf_counter() - t
    k = sum(spent.values())
    if best is None or total < best[0]:
        best = (total, k, dict(spent))
total, k, spent = best
steps = EPOCHS * (n // 64)
print(f"{steps} steps: {total / steps * 1e3:.3f} ms/step, in C++ kernels {k / steps * 1e3:.3f} ms/step, "
      f"Python and the rest {100 * (total - k) / total:.1f}%")
for n, s in sorted(spent.items(), key=lambda kv: -kv[1]):
    print(f"  {n:40s} {s / steps * 1e3:8.3f} ms/step")
