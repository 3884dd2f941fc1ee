"""The Keras export of every step family (`export.keras_config`, what `/best` returns) works
on JAX and PyTorch as on TensorFlow (tests/schedules/test_properties.py): deserialized in a
process of that backend, it gives the family's curve at every step, and an optimizer built
with it applies that LR as it trains. JAX's process cannot import TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrsearch.schedules import curve, names
from lrsearch.schedules.base import registry
from lrsearch.schedules.export import keras_config

WITHOUT_TENSORFLOW = Path(__file__).resolve().parents[1] / "without_tensorflow.py"
STEP_FAMILIES = [n for n in names() if not registry.get(n).adaptive]
DEFAULTS = {"piecewise": {"boundaries_epochs": [1, 2], "values": [0.1, 0.05, 0.01]}}
SPE, EPOCHS = 3, 8

SCRIPT = """
import json, sys
import keras
import numpy as np
import lrsearch.schedules.keras  # registers lrsearch>FamilySchedule

STEPS = int(sys.argv[1])
configs = json.loads(sys.stdin.read())
out = {"backend": keras.backend.backend(), "values": {}, "applied": {}}
for family, config in configs.items():
    schedule = keras.optimizers.schedules.deserialize(config)
    out["values"][family] = [float(keras.ops.convert_to_numpy(schedule(step)))
                             for step in range(STEPS)]
    # Two training steps under an optimizer built with it: it then reads the third step's LR.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    model.fit(np.zeros((6, 2)), np.zeros((6, 1)), batch_size=3, epochs=1, verbose=0)
    out["applied"][family] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_keras_export_gives_the_curve_on_every_backend(backend: str, tmp_path: Path
                                                          ) -> None:
    configs = {f: keras_config(f, DEFAULTS.get(f, {}), steps_per_epoch=SPE, epochs=EPOCHS)
               for f in STEP_FAMILIES}
    (tmp_path / "_export_script.py").write_text(SCRIPT)
    command = [sys.executable, str(tmp_path / "_export_script.py"), str(SPE * EPOCHS)]
    if backend == "jax":
        command = [sys.executable, str(WITHOUT_TENSORFLOW), "-m", "_export_script",
                   str(SPE * EPOCHS)]
    out = subprocess.run(command, input=json.dumps(configs), capture_output=True, text=True,
                         timeout=300, env={**os.environ, "KERAS_BACKEND": backend,
                                           "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    for family in STEP_FAMILIES:
        lrs = curve(family, DEFAULTS.get(family, {}), steps_per_epoch=SPE, epochs=EPOCHS)
        np.testing.assert_allclose(result["values"][family], lrs, rtol=1e-5, atol=1e-9,
                                   err_msg=family)
        assert result["applied"][family] == pytest.approx(lrs[2], rel=1e-5), family
