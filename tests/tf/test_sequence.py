"""DeepRCSequence (a keras.utils.PyDataset) with Keras on the TensorFlow and, if installed, the torch backend."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.support.ranks import REPO

pytestmark = [pytest.mark.tensorflow, pytest.mark.slow]

BODY = """
import sys, numpy as np, pyarrow as pa, keras
from deeprc_core import GlobalTable, LocalCommunicator
from deeprc_tf import DeepRCSequence

n = 640
rng = np.random.default_rng(0)
x = rng.random((n, 3)).astype(np.float32)
table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": (x @ np.array([1.0, -2.0, 0.5])).astype(np.float32)})
seq = DeepRCSequence(GlobalTable(table, LocalCommunicator()), ["a", "b", "c"], "y", 64, shuffle=True, seed=2)
assert len(seq) == 10
first = [seq.batch(i).index.copy() for i in range(len(seq))]
assert sorted(np.concatenate(first)) == list(range(n))
xb, yb = seq[0]
assert xb.shape == (64, 3) and yb.shape == (64,)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1), keras.layers.Reshape(())])
model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
hist = model.fit(seq, epochs=3, verbose=0)
loss = hist.history["loss"]
assert loss[-1] < loss[0], loss
assert seq.epoch >= 3, seq.epoch
again = [seq.batch(i).index.copy() for i in range(len(seq))]
assert any(not np.array_equal(a, b) for a, b in zip(first, again)), "no new shuffle after on_epoch_end"
try:
    seq[len(seq)]
    raise SystemExit("no IndexError past the end")
except IndexError:
    pass
print("BACKEND", keras.backend.backend(), "TF_IMPORTED", "tensorflow" in sys.modules, "LOSS", loss)
"""


def _run(backend: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", BODY], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_sequence_tensorflow_backend() -> None:
    assert "BACKEND tensorflow" in _run("tensorflow")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_sequence_torch_backend() -> None:
    out = _run("torch")
    assert "BACKEND torch" in out
