"""SIGKILL in the middle of `save`, 20 times at random moments: the last complete checkpoint
always loads and verifies, and no orphaned temporary file survives the next save."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fastscale import nn

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from fastscale import nn, optim
    path = sys.argv[1]
    model = nn.Sequential([nn.Embedding(20000, 128, mask_zero=True), nn.GlobalAveragePooling1D(),
                           nn.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optim.Adam(), loss="binary_crossentropy", seed=0)
    x = np.ones((8, 10), np.int32)
    model.fit(x, np.ones(8, np.float32), epochs=1, batch_size=8, verbose=0)
    print("ready", flush=True)
    while True:  # each save holds weights + Adam state: ~30 MB, a few tens of ms
        model.save(path)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_during_save_never_loses_the_last_checkpoint(tmp_path):
    path = str(tmp_path / "model.fsm")
    rng = random.Random(0)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    mid_save = 0  # kills that left a temporary file behind, i.e. landed inside a save
    for attempt in range(20):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_save += any(f.endswith(".tmp") for f in os.listdir(tmp_path))
        if attempt == 0 and not os.path.exists(path):
            continue  # killed before its first save completed: nothing to lose yet
        model = nn.load_model(path)  # verifies magic, version and sha256 checksum
        assert model.get_weights()[0].shape == (20000, 128)
    assert os.path.exists(path)
    assert mid_save >= 5, f"only {mid_save} of 20 kills landed inside a save"
    # Each save removes the orphans of killed writers before it starts.
    model = nn.load_model(path)
    model.save(path)
    leftovers = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert leftovers == [], leftovers
    nn.load_model(path)
