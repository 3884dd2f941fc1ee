"""The range test steps through its ladder on every Keras backend: the LR the optimizer applies
at step i is ladder[i], for the training-loss sweep and the validation-loss sweep, on
TensorFlow (tf.data batches, the fit-with-callback sweep), JAX and PyTorch (portable batches,
`train_on_batch`); and every variable is restored afterwards. Each backend runs in its own
process (Keras picks its backend once, at import), JAX's without TensorFlow importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrsearch.range_test.sweep import ladder

WITHOUT_TENSORFLOW = Path(__file__).resolve().parents[1] / "without_tensorflow.py"

# An SGD that records the LR it applies at each step: run eagerly (no jit, no tf.function), so
# the value read in `apply` is the one that step uses.
SCRIPT = """
import json
import keras
import numpy as np
from lrsearch.range_test.runner import lr_find
from lrsearch.range_test.sweep import SweepSettings

applied = []

class Recording(keras.optimizers.SGD):
    def apply(self, grads, trainable_variables=None):
        applied.append(float(keras.ops.convert_to_numpy(self.learning_rate)))
        return super().apply(grads, trainable_variables)

rng = np.random.default_rng(0)
x = rng.normal(size=(96, 5)).astype("float32")
y = (x[:, 0] > 0).astype("int64")
model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer=Recording(0.01), loss="sparse_categorical_crossentropy",
              run_eagerly=True)
before = [v.numpy().copy() for v in model.variables]
settings = SweepSettings(min_lr=1e-3, max_lr=1.0, num_iter=8, diverge_threshold=1e9)
out = {"backend": keras.backend.backend()}
train = lr_find(model, x, y, settings, batch_size=16)
out["train"] = {"lrs": train.lrs, "applied": applied[:], "losses": train.losses}
applied.clear()
val = lr_find(model, x, y, settings, batch_size=16, validation=(x[:32], y[:32]))
out["val"] = {"lrs": val.lrs, "applied": applied[:], "losses": val.losses}
out["restored"] = all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.variables))
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_each_step_applies_the_ladders_lr(backend: str) -> None:
    command = [sys.executable, "-c", SCRIPT]
    if backend == "jax":
        command = [sys.executable, str(WITHOUT_TENSORFLOW), "-m", "_range_test_script"]
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend == "jax":  # the launcher runs a module: write the script as one
        folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"range-test-backend-{os.getpid()}"
        folder.mkdir(exist_ok=True)
        (folder / "_range_test_script.py").write_text(SCRIPT)
        env["PYTHONPATH"] = str(folder)
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    expected = list(ladder(1e-3, 1.0, 8))
    for sweep in ("train", "val"):
        assert result[sweep]["lrs"] == pytest.approx(expected, rel=1e-12)
        # float32 variables: the applied LR is the ladder's, rounded to float32
        np.testing.assert_allclose(result[sweep]["applied"], expected, rtol=1e-6)
        assert len(result[sweep]["losses"]) == 8
    assert result["restored"]
